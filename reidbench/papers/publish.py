"""The leaderboards the repository commits: ``leaderboards/<paper>.csv`` and ``leaderboards/<paper>.md``.

Every cell of the paper (a row on a dataset group, one CSV row per metric) appears with its status.
A full-scale measurement that ``reidbench reproduce`` merged into the CSV stays as it is, numbers and
provenance (run ids, recipe hash, commit, device); only its reported value, delta and status follow the
paper file. Every other cell is "not run" with the reason, decided from the repository alone (paper file,
model registry, recipes, dataset registry) so that the files do not depend on the machine that wrote them:

- ``cited``: quoted from another paper, no model in reidbench;
- ``model not available`` / ``no recipe``: the row's model or its recipe is not in reidbench yet;
- ``dataset not installed``: a dataset the recipe needs is distributed by request or by hand;
- ``needs GPU time``: everything is in place (the data downloads with one command); no full-scale run yet.

Smoke and small runs never appear here: ``reproduce`` writes them to ``<paper>.<scale>.csv``.
``reidbench leaderboard PAPER --write`` (or ``all``) regenerates both files; a test fails when the
committed ones differ from what it would write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reidbench import leaderboard
from reidbench.data.install import install_command
from reidbench.data.registry import get_dataset
from reidbench.evaluation.atomic import atomic_write
from reidbench.models import list_models
from reidbench.papers.loading import select_cells
from reidbench.papers.plan import CITED, NO_MODEL, train_images, without_recipe
from reidbench.papers.schema import Cell, Paper
from reidbench.recipes.loading import load_recipe

DATASET_NOT_INSTALLED, NEEDS_GPU = "dataset not installed", "needs GPU time"
REPRODUCED = "reproduced"
_Key = tuple[str, str, str, str]  # table, row, dataset label, metric


def _reason(cell: Cell, models: set[str]) -> str:
    """Why a cell has no full-scale measurement: '<category>: <details>'."""
    if cell.recipe is None:
        status, why = without_recipe(cell, models)
        return f"{status}: {why}"
    if cell.row.model and cell.row.model not in models:  # a recipe exists, its model does not (yet)
        return f"{NO_MODEL}: model {cell.row.model!r} is not in reidbench yet"
    recipe = load_recipe(cell.recipe, scale="full", base_overrides=cell.row.overrides)
    training = (f"{recipe.train.epochs} epochs x {train_images(recipe):,} {recipe.data.train} images ({cell.recipe}"
                + (f" --set {' '.join(cell.row.overrides)}" if cell.row.overrides else "") + ")")
    if cell.row.eval_overrides:
        training += ", re-evaluated with " + " ".join(cell.row.eval_overrides)
    datasets = dict.fromkeys([recipe.data.train, recipe.data.test])
    by_hand = [name for name in datasets if not install_command(name).startswith("reidbench data download")]
    if by_hand:
        spec = get_dataset(by_hand[0])
        return (f"{DATASET_NOT_INSTALLED}: {spec.title} is {spec.access} (`{install_command(spec.name)}`); "
                f"then GPU time: {training}")
    commands = " and ".join(f"`{install_command(name)}`" for name in datasets)
    return f"{NEEDS_GPU}: {training}; data: {commands}"


def _measured(current: pd.DataFrame) -> dict[_Key, dict[str, str]]:
    """Full-scale rows measured by runs (``reproduce`` merged them), by cell and metric."""
    rows = current.to_dict("records")
    return {(r["table"], r["row"], r["dataset"], r["metric"]): r for r in rows
            if r.get("scale") == "full" and r.get("status") != leaderboard.NOT_RUN and r.get("run_ids")}


def published_frame(paper: Paper, current: pd.DataFrame) -> pd.DataFrame:
    """Every cell's rows: kept measurements (reported value, delta and status refreshed) or "not run"."""
    models = set(list_models())
    measured = _measured(current)
    rows = []
    for cell in select_cells(paper):
        reason = None
        for metric, reported in zip(cell.metrics, cell.reported, strict=True):
            found = measured.get((cell.table.id, cell.row.name, cell.group.label, metric))
            if found is not None:
                value = float(found["reproduced"])
                rows.append({**found, "reported": reported, "tolerance": paper.tolerance,
                             "delta": None if reported is None else value - reported,
                             "status": leaderboard.status_of(reported, value, paper.tolerance, "full",
                                                             found.get("synthetic") == "True")})
                continue
            reason = reason or _reason(cell, models)
            note = " ".join(filter(None, [reason, cell.row.note_for(cell.group.key, metric)]))
            rows.append({"paper": paper.key, "table": cell.table.id, "row": cell.row.name,
                         "dataset": cell.group.label, "metric": metric, "reported": reported,
                         "status": leaderboard.NOT_RUN, "tolerance": paper.tolerance, "scale": "full",
                         "recipe": cell.recipe or "", "model": cell.row.model or "", "note": note})
    return pd.DataFrame([leaderboard.text_row(r) for r in rows], columns=leaderboard.COLUMNS)


# ---- Markdown ----------------------------------------------------------------------------------

@dataclass
class CellView:
    """One cell as the Markdown shows it: its metrics' rows and a state."""

    table: str
    row: str
    dataset: str
    rows: list[dict[str, str]]
    paper_note: str = ""  # the paper file's note on the cell, which the CSV appends to the reason

    @property
    def state(self) -> str:
        first = self.rows[0]
        if first["status"] != leaderboard.NOT_RUN:
            return REPRODUCED
        return first["note"].split(":", 1)[0]

    def values(self, column: str, digits: bool = False) -> str:
        parts = []
        for row in self.rows:
            text = row[column]
            if not text:
                continue
            if digits:
                text = f"{float(text):.2f}"
                if row["ci95_low"]:
                    text += f" [{float(row['ci95_low']):.2f}, {float(row['ci95_high']):.2f}]"
            elif "." not in text:
                text += ".0"  # as printed: 86.0, not 86
            parts.append(f"{row['metric']} {text}")
        return " · ".join(parts) or "—"

    @property
    def why(self) -> str:
        first = self.rows[0]
        if self.state != REPRODUCED:
            return first["note"].removesuffix(self.paper_note).strip()
        return (f"runs {first['run_ids']} (seeds {first['seeds']}); recipe {first['recipe']} ({first['recipe_hash']}); "
                f"commit {first['git_commit'][:10]}; {first['device']}, torch {first['torch']}; "
                f"{first['distance']}" + (f", re-ranking k1={first['rerank_k1']}" if first["rerank_k1"] else ""))


def _views(frame: pd.DataFrame, paper: Paper | None = None) -> list[CellView]:
    notes = {}
    for cell in select_cells(paper) if paper else []:
        notes[(cell.table.id, cell.row.name, cell.group.label)] = cell.row.note_for(cell.group.key, cell.metrics[0])
    views: dict[tuple[str, str, str], CellView] = {}
    for row in frame.to_dict("records"):
        key = (row["table"], row["row"], row["dataset"])
        views.setdefault(key, CellView(*key, [], notes.get(key, ""))).rows.append(row)
    return list(views.values())


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _count(views: list[CellView]) -> str:
    counts: dict[str, int] = {}
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def render_markdown(paper: Paper, frame: pd.DataFrame) -> str:
    """The committed Markdown twin of the CSV: a summary, then one line per cell, table by table."""
    views = _views(frame, paper)
    csv_name = leaderboard.leaderboard_path(paper.key, Path(".")).name
    lines = [f"# {paper.title}", ""]
    about = f"Paper key `{paper.key}`: {paper.citation}." + (f" Source: {paper.source}." if paper.source else "")
    if paper.docs:
        about += f" How reidbench reproduces it, and what differs from the paper: [{paper.docs}](../{paper.docs})."
    lines += [about, "",
              f"Generated by `reidbench leaderboard {paper.key} --write` from `recipes/{paper.key}/paper.yaml` and "
              f"the full-scale rows that `reidbench reproduce {paper.key}` merged into [`{csv_name}`]({csv_name}) "
              "(all columns and provenance are there); do not edit by hand. Only full-scale runs on the real "
              "datasets appear; smoke and small runs go to files that are not committed.", "",
              f"**{len(views)} cells**: {_count(views)}.", ""]
    for table in paper.tables:
        table_views = [v for v in views if v.table == table.id]
        if not table_views:
            continue
        lines += [f"## {table.id}: {_escape(table.caption)}", ""]
        shown = [v for v in table_views if v.state != CITED]
        if shown:
            lines += ["| row | dataset | reported | reproduced (95% CI) | status | why not run, or provenance |",
                      "|---|---|---|---|---|---|"]
            for view in shown:
                status = "not run" if view.state != REPRODUCED else " · ".join(
                    f"{r['metric']} {r['status']}" for r in view.rows)
                cells = [view.row, view.dataset, view.values("reported"), view.values("reproduced", digits=True),
                         status, view.why]
                lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
            lines.append("")
        cited = list(dict.fromkeys(v.row for v in table_views if v.state == CITED))
        if cited:
            lines += [f"Quoted from other papers, with no model in reidbench (in the CSV as not run): "
                      f"{', '.join(cited)}.", ""]
    return "\n".join(lines)


def markdown_path(paper_key: str, directory: Path | None = None) -> Path:
    return leaderboard.leaderboard_path(paper_key, directory).with_suffix(".md")


def write_published(paper: Paper, directory: Path | None = None,
                    say: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Regenerate ``<paper>.csv`` (keeping its full-scale measurements) and ``<paper>.md``."""
    csv_path = leaderboard.leaderboard_path(paper.key, directory)
    frame = leaderboard.rewrite(csv_path, lambda current: published_frame(paper, current))
    md_path = markdown_path(paper.key, directory)
    text = render_markdown(paper, frame)
    atomic_write(md_path, lambda handle: handle.write(text.encode()))
    say(f"wrote {csv_path} and {md_path}: {len(frame)} rows; cells: {_count(_views(frame))}")
    return csv_path, md_path
