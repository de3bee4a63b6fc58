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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reidbench import leaderboard
from reidbench.data.install import install_command
from reidbench.data.registry import get_dataset
from reidbench.evaluation.atomic import atomic_write
from reidbench.models import list_models
from reidbench.papers.compare import COUNTED, cell_status, counted_note, counted_value, model_numbers, paper_setting
from reidbench.papers.loading import select_cells
from reidbench.papers.plan import CITED, NO_MODEL, train_images, without_recipe
from reidbench.papers.schema import Cell, Paper, Tolerance, metric_kind
from reidbench.recipes.schema import Recipe

DATASET_NOT_INSTALLED, NEEDS_GPU = "dataset not installed", "needs GPU time"
REPRODUCED = "reproduced"
_Key = tuple[str, str, str, str]  # table, row, dataset label, metric


def _reason(cell: Cell, models: set[str], setting: Callable[[Cell], Recipe]) -> str:
    """Why a cell has no full-scale measurement: '<category>: <details>'."""
    if cell.recipe is None:
        status, why = without_recipe(cell, models)
        return f"{status}: {why}"
    if cell.row.model and cell.row.model not in models:  # a recipe exists, its model does not (yet)
        return f"{NO_MODEL}: model {cell.row.model!r} is not in reidbench yet"
    recipe = setting(cell)
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


def _counted(paper: Paper, cell: Cell, metric: str, reported: float | None, models: set[str],
             setting: Callable[[Cell], Recipe]) -> dict | None:
    """A params or GMac row measured without training (the paper's setting), or None when the cell has no
    recipe or its model is not in reidbench."""
    if metric_kind(metric) == "accuracy" or cell.recipe is None or (cell.row.model or "") not in models:
        return None
    numbers = model_numbers(setting(cell), with_gmacs=metric_kind(metric) == "gmacs")
    value = counted_value(cell, metric, numbers)
    status, tolerance = cell_status(paper, cell, metric, reported, value, "full", False)
    return {"reproduced": value, "delta": None if reported is None else value - reported, "status": status,
            "tolerance": tolerance, "params_M": numbers["params_M"], "deploy_params_M": numbers["deploy_params_M"],
            "gmacs": numbers.get("gmacs"), "input": numbers["input"], "model": numbers["model"],
            "note": " ".join(filter(None, [counted_note(cell, metric, numbers), cell.note_for(metric)]))}


def published_frame(paper: Paper, current: pd.DataFrame) -> pd.DataFrame:
    """Every cell's rows: kept measurements (reported value, delta and status refreshed), parameter counts
    (counted at the paper's setting, no training needed) or "not run"."""
    models = set(list_models())
    measured = _measured(current)
    settings: dict[tuple[str, tuple[str, ...]], Recipe] = {}

    def setting(cell: Cell) -> Recipe:  # each recipe and set: loaded once
        key = (str(cell.recipe), tuple(cell.row.overrides))
        if key not in settings:
            settings[key] = paper_setting(cell)
        return settings[key]

    rows = []
    for cell in select_cells(paper):
        reason = None
        for metric, reported in zip(cell.metrics, cell.reported, strict=True):
            base = {"paper": paper.key, "table": cell.table.id, "row": cell.row.name, "dataset": cell.group.label,
                    "metric": metric, "reported": reported, "scale": "full", "recipe": cell.recipe or "",
                    "model": cell.row.model or ""}
            found = measured.get((cell.table.id, cell.row.name, cell.group.label, metric))
            if found is not None:
                value = float(found["reproduced"])
                status, tolerance = cell_status(paper, cell, metric, reported, value, "full",
                                                found.get("synthetic") == "True")
                rows.append({**found, "reported": reported, "tolerance": tolerance, "status": status,
                             "delta": None if reported is None else value - reported})
                continue
            counted = _counted(paper, cell, metric, reported, models, setting)
            if counted is not None:
                rows.append({**base, **counted})
                continue
            reason = reason or _reason(cell, models, setting)
            rows.append({**base, "status": leaderboard.NOT_RUN,
                         "tolerance": cell_status(paper, cell, metric, reported, None, "full", False)[1],
                         "note": " ".join(filter(None, [reason, cell.note_for(metric)]))})
    return pd.DataFrame([leaderboard.text_row(r) for r in rows], columns=leaderboard.COLUMNS)


# ---- Markdown ----------------------------------------------------------------------------------

@dataclass
class CellView:
    """One cell as the Markdown shows it: its metrics' rows and a state."""

    table: str
    row: str
    dataset: str
    rows: list[dict[str, str]]
    # per metric, the paper file's notes on the cell, which the CSV appends to each row's own note
    paper_notes: dict[str, str] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)  # per metric, the printed text where it says more
    inconsistency: str = ""  # one recipe, two printed values: the paper file's note on the pair

    def _own_note(self, row: dict[str, str]) -> str:
        return row["note"].removesuffix(self.paper_notes.get(row["metric"], "")).strip()

    @property
    def not_run(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["status"] == leaderboard.NOT_RUN]

    @property
    def state(self) -> str:
        """reproduced (by training runs), counted (numbers counted without training), or why not run."""
        if any(r["run_ids"] for r in self.rows if r["status"] != leaderboard.NOT_RUN):
            return REPRODUCED
        if self.not_run:
            return self.not_run[0]["note"].split(":", 1)[0]
        return COUNTED

    @property
    def status(self) -> str:
        compared = [f"{r['metric']} {r['status']}" for r in self.rows if r["status"] != leaderboard.NOT_RUN]
        if self.not_run:
            compared.append(f"{'others ' if compared else ''}not run"
                            + (" (paper inconsistency)" if self.inconsistency else ""))
        return " · ".join(compared)

    def values(self, column: str, digits: bool = False) -> str:
        parts = []
        for row in self.rows:
            text = row[column]
            if not text:
                continue
            if digits:
                places = 2 if metric_kind(row["metric"]) == "accuracy" else 3  # 0.01M differences show
                text = f"{float(text):.{places}f}"
                if row["ci95_low"]:
                    text += f" [{float(row['ci95_low']):.{places}f}, {float(row['ci95_high']):.{places}f}]"
            elif row["metric"] in self.printed:
                text = self.printed[row["metric"]]  # "~2.5M" as printed
            elif "." not in text:
                text += ".0"  # as printed: 86.0, not 86
            parts.append(f"{row['metric']} {text}")
        return " · ".join(parts) or "—"

    @property
    def why(self) -> str:
        first = self.rows[0]
        if self.state == REPRODUCED:
            return (f"runs {first['run_ids']} (seeds {first['seeds']}); recipe {first['recipe']} "
                    f"({first['recipe_hash']}); commit {first['git_commit'][:10]}; {first['device']}, torch "
                    f"{first['torch']}; {first['distance']}"
                    + (f", re-ranking k1={first['rerank_k1']}" if first["rerank_k1"] else ""))
        counted = [f"{r['metric']} {self._own_note(r)}" for r in self.rows if r["status"] != leaderboard.NOT_RUN]
        return "; ".join([*([self._own_note(self.not_run[0])] if self.not_run else []), *counted,
                          *([self.inconsistency] if self.inconsistency else [])])


def _views(frame: pd.DataFrame, paper: Paper | None = None) -> list[CellView]:
    cells = {(c.table.id, c.row.name, c.group.label): c for c in (select_cells(paper) if paper else [])}
    views: dict[tuple[str, str, str], CellView] = {}
    for row in frame.to_dict("records"):
        key = (row["table"], row["row"], row["dataset"])
        if key not in views:
            cell = cells.get(key)
            views[key] = CellView(*key, []) if cell is None else CellView(
                *key, [], {m: cell.note_for(m) for m in cell.metrics},
                {m: cell.printed(m) for m in cell.metrics if cell.printed(m)}, cell.inconsistency)
        views[key].rows.append(row)
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
              f"**{len(views)} cells**: {_count(views)}.", "",
              f"A reproduced number matches the paper within {_tolerances(paper.tolerances)}. Parameter counts and "
              "GMac are counted without training, for the paper's setting (its dataset's number of classes, its "
              "input size). Cells marked \"paper inconsistency\" are one recipe that the paper prints with two "
              "different values; each is compared with its own.", ""]
    for table in paper.tables:
        table_views = [v for v in views if v.table == table.id]
        if not table_views:
            continue
        lines += [f"## {table.id}: {_escape(table.caption)}", ""]
        if table.tolerances:
            lines += [f"Tolerance in this table: {_tolerances(table.tolerances)}.", ""]
        shown = [v for v in table_views if v.state != CITED]
        if shown:
            lines += ["| row | dataset | reported | reproduced (95% CI) | status | why not run, how counted, or "
                      "provenance |", "|---|---|---|---|---|---|"]
            for view in shown:
                cells = [view.row, view.dataset, view.values("reported"), view.values("reproduced", digits=True),
                         view.status, view.why]
                lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
            lines.append("")
        cited = list(dict.fromkeys(v.row for v in table_views if v.state == CITED))
        if cited:
            lines += [f"Quoted from other papers, with no model in reidbench (in the CSV as not run): "
                      f"{', '.join(cited)}.", ""]
    return "\n".join(lines)


def _tolerances(tolerances: dict[str, Tolerance]) -> str:
    return ", ".join(f"{tolerance.text()} for {kind}" for kind, tolerance in tolerances.items())


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
