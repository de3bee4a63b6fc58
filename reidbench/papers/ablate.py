"""Ablations: a paper's ablation tables, or a grid over any recipe keys, rendered with deltas to the first row."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidbench.errors import ReidbenchError
from reidbench.papers.plan import FINISHED, PlannedRun, find_run_dir, run_state
from reidbench.recipes.loading import load_recipe, parse_override, recipe_hash, resolve_path


@dataclass
class AblationRow:
    label: str
    values: dict[str, float | None]  # column ("M R1") -> reproduced value in %, None when not run
    reported: dict[str, float | None]


def parse_grid(grid: list[str]) -> list[list[str]]:
    """``key=v1,v2`` options -> the list of override combinations (cartesian product, in order)."""
    axes = []
    for text in grid:
        keys, _ = parse_override(text)  # checks the key=value shape
        key, raw = text.split("=", 1)
        values = [v for v in raw.split(",") if v != ""]
        if not values:
            raise ReidbenchError(f"--grid {text!r}: expected key=v1,v2,... with at least one value")
        axes.append([f"{key}={v}" for v in values])
    if not axes:
        raise ReidbenchError("--grid: give at least one key=v1,v2 to ablate a recipe",
                             hint="or name a paper (e.g. `reidbench ablate masenet`) to run its ablation tables")
    return [list(combo) for combo in itertools.product(*axes)]


def plan_grid(recipe: str, grid: list[str], scale: str, runs_root: Path,
              overrides: list[str] | None = None) -> list[tuple[str, PlannedRun]]:
    """One run per grid point: (label, run)."""
    file = resolve_path(recipe)
    planned = []
    for combo in parse_grid(grid):
        loaded = load_recipe(file, scale=scale, overrides=[*(overrides or []), *combo])
        digest = recipe_hash(loaded)
        run_dir = find_run_dir(runs_root, loaded, digest)
        run = PlannedRun(file, loaded, [*(overrides or []), *combo], digest, run_dir, run_state(run_dir))
        planned.append((" ".join(combo), run))
    return planned


def grid_rows(planned: list[tuple[str, PlannedRun]], metrics: tuple[str, ...] = ("R1", "mAP")) -> list[AblationRow]:
    rows = []
    for label, run in planned:
        values: dict[str, float | None] = dict.fromkeys(metrics)
        if run_state(run.run_dir) == FINISHED:
            record = json.loads((run.run_dir / "run.json").read_text())
            values = {m: 100 * record["metrics"][m] for m in metrics}
        rows.append(AblationRow(label, values, {}))
    return rows


def render(rows: list[AblationRow], title: str) -> Any:
    """A rich table: each column's value with its delta to the first row; reported beside when known."""
    from rich.table import Table

    columns = list(dict.fromkeys(c for r in rows for c in r.values))
    has_reported = any(v is not None for r in rows for v in r.reported.values())
    table = Table(title=title)
    table.add_column("row")
    for column in columns:
        table.add_column(column, justify="right")
        if has_reported:
            table.add_column(f"{column} (paper)", justify="right")
    first = rows[0] if rows else None

    def show(value: float | None, base: float | None, is_first: bool) -> str:
        if value is None:
            return "not run"
        if is_first or base is None:
            return f"{value:.2f}"
        return f"{value:.2f} ({value - base:+.2f})"

    for index, row in enumerate(rows):
        cells = [row.label]
        for column in columns:
            cells.append(show(row.values.get(column), first.values.get(column) if first else None, index == 0))
            if has_reported:
                cells.append(show(row.reported.get(column), first.reported.get(column) if first else None,
                                  index == 0))
        table.add_row(*cells)
    return table


def paper_ablation_rows(result: Any) -> list[tuple[str, list[AblationRow]]]:
    """A reproduction's ablation tables as rows of reproduced and reported values, table by table."""
    measured = {(r["table"], r["row"], r["dataset"], r["metric"]): r for r in result.outcome.rows}
    tables = []
    for table_id in dict.fromkeys(p.cell.table.id for p in result.planned):
        spec = result.paper.table(table_id)
        rows = []
        for row_spec in spec.rows:
            values: dict[str, float | None] = {}
            reported: dict[str, float | None] = {}
            for item in (p for p in result.planned if p.cell.table.id == table_id and p.cell.row is row_spec):
                for metric, rep in zip(item.cell.metrics, item.cell.reported, strict=True):
                    column = f"{item.cell.group.key} {metric}"
                    found = measured.get((table_id, row_spec.name, item.cell.group.label, metric), {})
                    value = found.get("reproduced")
                    values[column] = None if value in (None, "") else float(value)
                    reported[column] = rep
            if values:
                rows.append(AblationRow(row_spec.name, values, reported))
        tables.append((table_id, rows))
    return tables
