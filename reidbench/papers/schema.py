"""A paper as data: its tables and figures, rows and columns, and the values exactly as printed.

A table's columns are dataset groups (``M``, ``MS->M``, ...) times metrics (``R1``, ``mAP``, ...).
A *cell* here is one row on one dataset group: one training run measures all of its metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Metric names as the evaluation summary writes them, plus what profiling counts (params and GMac columns).
METRICS = ("R1", "R3", "R5", "R10", "mAP", "mINP", "params_M", "GMac")
TABLE_KINDS = ("results", "params", "architecture")
# The kind of number each metric is: a paper's (or a table's) `tolerance:` gives one tolerance per kind.
METRIC_KINDS = {"params_M": "params", "GMac": "gmacs"}  # every other metric: accuracy, in percentage points
KIND_UNITS = {"accuracy": " pt", "params": "M", "gmacs": " GMac"}
DEFAULT_TOLERANCES = {"accuracy": 1.0, "params": "0.5%", "gmacs": "0.5%"}
# Which parameters a printed count covers: all of them, all but the classifiers, the backbone alone.
PARAMS_CONVENTIONS = {"total": "all parameters, classifiers included", "deploy": "without classifiers",
                      "backbone": "backbone only"}
_CITATION = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")
_PRINTED_NUMBER = re.compile(r"^\s*~?\s*(\d+(?:\.(\d+))?)\s*M?\s*$")


def metric_kind(metric: str) -> str:
    return METRIC_KINDS.get(metric, "accuracy")


def printed_number(text: str) -> tuple[float, int] | None:
    """A printed count ("2.3M", "~24M", "11.80") as (value, digits after the point); None if it is not one."""
    match = _PRINTED_NUMBER.match(text)
    return (float(match.group(1)), len(match.group(2) or "")) if match else None


@dataclass(frozen=True)
class Tolerance:
    """How far a reproduced number may lie from the printed one, for one kind of number: ``value`` in the
    kind's unit (points, millions of parameters, GMac); with ``relative``, ``value`` percent of the printed
    number; with ``rounding``, half a unit of the printed number's last digit (a count printed "2.3M" matches
    every count that rounds to it)."""

    kind: str
    value: float = 0.0
    relative: bool = False
    rounding: bool = False

    def bound(self, reported: float, printed: str | None = None) -> float:
        if self.rounding:
            parsed = printed_number(printed) if printed else None
            digits = parsed[1] if parsed else len(f"{reported:g}".partition(".")[2])
            return 0.5 * 10.0**-digits
        return abs(reported) * self.value / 100 if self.relative else self.value

    def text(self, reported: float | None = None, printed: str | None = None) -> str:
        """``±1 pt``, ``±0.01M``, ``±0.5%``, ``±0.05M, rounding of 2.3M``."""
        if self.rounding:
            if reported is None:
                return "± half the printed last digit"
            shown = printed or f"{reported:g}"
            return f"±{self.bound(reported, printed):g}{KIND_UNITS[self.kind]}, rounding of {shown}"
        return f"±{self.value:g}%" if self.relative else f"±{self.value:g}{KIND_UNITS[self.kind]}"


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
    params_convention: str | None = None  # this row's printed count covers other parameters than the table's

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
    params_convention: str = "total"  # what the table's parameter counts cover (PARAMS_CONVENTIONS)
    # a printed per-row column holding a parameter count (a row's `extra`, "Params": "~2.5M"): compared as
    # params_M on the row's cell of the table's first dataset group
    params_column: str | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)  # per kind, over the paper's


@dataclass(frozen=True)
class Inconsistency:
    """Cells the paper prints with different values for one and the same recipe ("one recipe, two reported
    numbers"): each is compared with its own value, and marked as the paper's inconsistency."""

    cells: tuple[str, ...]  # "Table 1 / AaP-ReID / C"
    note: str


@dataclass
class Paper:
    key: str  # "masenet"
    title: str
    citation: str
    source: str  # where the printed values come from (the publication)
    tolerances: dict[str, Tolerance]  # per kind of number (metric_kind)
    datasets: dict[str, DatasetColumn]
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    docs: str = ""  # the repository's notes on this paper (docs/papers/<key>.md)
    inconsistencies: list[Inconsistency] = field(default_factory=list)

    def table(self, table_id: str) -> Table:
        for table in self.tables:
            if table.id == table_id:
                return table
        raise KeyError(table_id)

    def tolerance(self, table: Table, metric: str) -> Tolerance:
        kind = metric_kind(metric)
        return table.tolerances.get(kind) or self.tolerances[kind]


@dataclass
class Cell:
    """One row of one table on one dataset group, with what it takes to reproduce it."""

    paper: str
    table: Table
    row: Row
    group: DatasetColumn
    recipe: str | None
    inconsistency: str = ""  # the paper prints this cell's recipe elsewhere with other values (Inconsistency)

    @property
    def printed_params(self) -> str | None:
        """The row's printed parameter count when the table prints one per row and this is the cell that
        compares it (the table's first dataset group)."""
        if self.table.params_column is None or self.group.key != self.table.groups[0]:
            return None
        return self.row.extra.get(self.table.params_column)

    @property
    def metrics(self) -> list[str]:
        return [*self.table.metrics, *(["params_M"] if self.printed_params else [])]

    @property
    def reported(self) -> list[float | None]:
        values = self.row.values.get(self.group.key)
        out = list(values) if values is not None else [None] * len(self.table.metrics)
        printed = printed_number(self.printed_params) if self.printed_params else None
        return out + ([printed[0]] if printed else [])

    def printed(self, metric: str) -> str | None:
        """A value's text as printed, where it says more than the number ("~2.5M")."""
        return self.printed_params if metric == "params_M" else None

    @property
    def params_convention(self) -> str:
        return self.row.params_convention or self.table.params_convention

    def note_for(self, metric: str | None = None) -> str:
        """The paper file's notes on this cell (and metric), the inconsistency it belongs to, and which
        parameters a params count covers."""
        parts = [self.row.note_for(self.group.key, metric), self.inconsistency]
        if metric_kind(metric or "") == "params":
            parts.append(f"Params {self.params_convention}: {PARAMS_CONVENTIONS[self.params_convention]}.")
        return " ".join(p for p in parts if p)

    @property
    def label(self) -> str:
        return f"{self.table.id} / {self.row.name} / {self.group.key}"
