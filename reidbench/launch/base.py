"""The launcher interface: train planned runs somewhere, report what finished, failed or was handed to a scheduler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Say = Callable[[str], None]
# Work done where a run finished, right after it (a reproduction merges the leaderboard rows of the cells it
# completes); keyed by run folder. It must pickle: a cluster task runs it on the compute node. A ``labels``
# attribute (the cells it completes) is recorded with the submitted job and shown by `reidbench jobs`.
AfterRun = Mapping[str, Callable[[], Any]]


@dataclass
class Outcome:
    trained: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run folder -> reason
    rows: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[Any] = field(default_factory=list)  # planned cells stopped by missing data
    submitted: dict[str, str] = field(default_factory=dict)  # run folder -> scheduler job id (not waited for)


class Launcher(ABC):
    """Trains a list of planned runs (``reidbench.papers.plan.PlannedRun``), each exactly once."""

    name: str = ""

    @abstractmethod
    def launch(self, runs: list[Any], data_root: Path, say: Say, label: str = "runs",
               after: AfterRun | None = None) -> Outcome:
        """Train ``runs``; ``label`` names the batch (paper key, suite) where jobs are recorded."""


def prepare_synthetic_data(runs: list[Any], data_root: Path) -> None:
    """Generate each synthetic miniature once, here: runs started in parallel would race to write it."""
    from reidbench.engine.build import load_split

    for run in runs:
        if run.recipe.data.synthetic:
            load_split(run.recipe, "train", data_root)
            load_split(run.recipe, "test", data_root)
