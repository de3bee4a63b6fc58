"""A paper as data: its tables and figures, rows and columns, and the values exactly as printed.

Figures (``figures:``) name the cells they are drawn from; ``reidbench figures`` renders them.

A table's columns are dataset groups (``M``, ``MS->M``, ...) times metrics (``R1``, ``mAP``, ...).
A *cell* here is one row on one dataset group: one training run measures all of its metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Metric names as the evaluation summary writes them, plus the parameter count of params tables.
METRICS = ("R1", "R3", "R5", "R10", "mAP", "mINP", "params_M")
TABLE_KINDS = ("results", "params", "architecture")
_CITATION = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")


@dataclass(frozen=True)
class DatasetColumn:
    """One column group: what is trained on and what is tested on."""

    key: str  # as printed in the paper: "M", "MS->M", "CUHK03-Detected"
    train: str
    test: str
    variant: str | None = None

    @property
    def label(self) -> str:
        """The leaderboard's dataset: ``market1501``, ``msmt17->market1501``, ``cuhk03 (detected)``."""
        name = self.test if self.train == self.test else f"{self.train}->{self.test}"
        return f"{name} ({self.variant})" if self.variant else name

    @property
    def slug(self) -> str:
        """Recipe-file naming: ``market1501``, ``msmt17_to_market1501``, ``cuhk03_detected``."""
        name = self.test if self.train == self.test else f"{self.train}_to_{self.test}"
        return f"{name}_{self.variant}" if self.variant else name


@dataclass
class Row:
    name: str  # as printed, citation included: "MSINet [9]", "MASENet (Ours)"
    values: dict[str, list[float | None]]  # group key -> values in the table's metric order; None = "-"
    cited: bool = False  # the numbers are quoted from another paper
    model: str | None = None  # the registry model this row needs (None: a cited method we do not build)
    recipes: dict[str, str] = field(default_factory=dict)  # group key -> recipe that reproduces the cell
    extra: dict[str, str] = field(default_factory=dict)  # other printed columns ("Params": "~2.5M")
    notes: dict[str, str] = field(default_factory=dict)  # "*" (whole row), a group key, or "group/metric"
    overrides: list[str] = field(default_factory=list)  # `set:` recipe overrides (key=value) for this row
    # `evaluate:` eval-only overrides ("eval.rerank.enabled=true"): the cell re-evaluates the features of the run
    # trained without them (re-ranked rows share the training run of the plain row)
    eval_overrides: list[str] = field(default_factory=list)

    @property
    def plain_name(self) -> str:
        """The name without its citation: "MSINet [9]" -> "MSINet"."""
        return _CITATION.sub("", self.name).strip()

    def note_for(self, group: str, metric: str | None = None) -> str:
        parts = [self.notes.get("*"), self.notes.get(group)]
        if metric:
            parts.append(self.notes.get(f"{group}/{metric}"))
        return " ".join(p for p in parts if p)


@dataclass
class Table:
    id: str  # "Table I", "Fig. 3"
    caption: str
    kind: str  # results | params | architecture
    groups: list[str]
    metrics: list[str]
    rows: list[Row]
    ablation: bool = False  # rendered by `reidbench ablate PAPER`
    printed: bool = True  # False: the values exist only as a figure (bars), nothing to transcribe
    notes: list[str] = field(default_factory=list)
    content: dict[str, Any] = field(default_factory=dict)  # architecture tables: what they print


FIGURE_KINDS = ("ranklist", "cam", "attention", "featuremap", "curve", "bars", "sweep")
#: kinds drawn from a model on query images (the others are drawn from metrics)
IMAGE_KINDS = ("ranklist", "cam", "attention", "featuremap")


@dataclass(frozen=True)
class FigurePanel:
    """One model of a figure (a row of maps, a line, a bar): a cell of one of the paper's tables, or a method
    the paper cites and reidbench does not build (``cited`` says why it is left out)."""

    label: str
    table: str | None = None
    row: str | None = None
    dataset: str | None = None  # the table's column group key ("M")
    cited: str = ""
    group: str = ""  # curve: the subplot; sweep: the dataset group of the subplot
    x: Any = None  # sweep: the swept value


@dataclass
class Figure:
    """A figure of the paper as data: what it shows, from which cells, on which images."""

    id: str  # as printed: "Fig. 4", "Figure 5"
    kind: str  # one of FIGURE_KINDS
    caption: str
    panels: list[FigurePanel]
    queries: int = 4  # image kinds: how many query images (drawn by `seed` unless the figure lists them)
    seed: int = 0
    top: int = 10  # ranklist: gallery images per query
    erase: tuple[float, float] | None = None  # featuremap: erase a random rectangle of this area fraction first
    per_map: bool = False  # featuremap: one map per attention map of the model (per head)
    value: str = "total"  # curve: the metrics.jsonl key drawn against the epoch
    metrics: list[str] = field(default_factory=list)  # bars, sweep
    x_name: str = ""  # sweep: what is swept ("K")
    notes: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """File name stem: "Fig. 4" -> "fig-4", "Figure 5" -> "figure-5"."""
        return re.sub(r"[^a-z0-9]+", "-", self.id.lower()).strip("-")


@dataclass
class Paper:
    key: str  # "masenet"
    title: str
    citation: str
    source: str  # where the printed values come from (the publication)
    tolerance: float  # percentage points within which a reproduction counts as matching the paper
    datasets: dict[str, DatasetColumn]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    docs: str = ""  # the repository's notes on this paper (docs/papers/<key>.md)
    figures: list[Figure] = field(default_factory=list)

    def table(self, table_id: str) -> Table:
        for table in self.tables:
            if table.id == table_id:
                return table
        raise KeyError(table_id)


@dataclass
class Cell:
    """One row of one table on one dataset group, with what it takes to reproduce it."""

    paper: str
    table: Table
    row: Row
    group: DatasetColumn
    recipe: str | None

    @property
    def metrics(self) -> list[str]:
        return self.table.metrics

    @property
    def reported(self) -> list[float | None]:
        values = self.row.values.get(self.group.key)
        return list(values) if values is not None else [None] * len(self.table.metrics)

    @property
    def label(self) -> str:
        return f"{self.table.id} / {self.row.name} / {self.group.key}"
