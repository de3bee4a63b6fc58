"""Access to the real reference files in ../shared/data/reference, outside the repository (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(os.environ.get(
    "REIDBENCH_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"))


def reference(*parts: str) -> Path:
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference file {path} not available")
    return path
