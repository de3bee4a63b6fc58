"""The documentation a user is pointed at exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS_MENTION = re.compile(r"docs/[\w./-]+\.md")
OUTSIDE = re.compile(r"METHODS\.md|DATASETS\.md|ARCHITECTURE\.md|shared/|(?<!docs/)\bpapers/[\w-]+\.md")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "mailto:"))]
    assert any(t.startswith("docs/") for t in targets), "the README links the docs"
    for target in targets:
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), f"README links {target}, which does not exist"
        if anchor:
            assert anchor in _anchors((ROOT / path).read_text()), f"README links {target}: no such heading"


def test_code_and_recipes_point_only_at_files_in_the_repository():
    files = [*(ROOT / "reidbench").rglob("*.py"), *(ROOT / "recipes").rglob("*.yaml")]
    for file in files:
        text = file.read_text()
        outside = OUTSIDE.search(text)
        assert outside is None, f"{file.relative_to(ROOT)} points at {outside.group(0)}, outside the repository"
        for mention in DOCS_MENTION.findall(text):
            assert (ROOT / mention).is_file(), f"{file.relative_to(ROOT)} points at {mention}, which does not exist"


def test_every_paper_file_names_its_docs_page():
    for paper in sorted((ROOT / "recipes").glob("*/paper.yaml")):
        match = re.search(r"^docs: (\S+)$", paper.read_text(), flags=re.M)
        assert match and (ROOT / match.group(1)).is_file(), f"{paper.relative_to(ROOT)}: docs: page missing"
