"""A paper's figures from its finished runs: each figure entry of ``paper.yaml`` names the cells it is drawn
from; the cells are planned exactly as ``reidbench reproduce`` plans them (same scale, ``--set``, run folders),
so a figure finds the runs a reproduction trained. A figure whose cells have not all finished is not drawn:
its result names those cells and the command that runs them."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reidbench import __version__, paths
from reidbench.errors import UnknownNameError
from reidbench.papers.loading import matches
from reidbench.papers.plan import FINISHED, NO_DATA, PlannedCell, plan_cells
from reidbench.papers.schema import Cell, Figure, FigurePanel, Paper
from reidbench.visual.draw import Drawn, draw_bars, draw_curves, draw_sweep
from reidbench.visual.render import draw_maps, draw_rank_lists
from reidbench.visual.runs import FinishedRun, choose_queries

_Key = tuple[str, str, str]  # table, row, dataset group
_Runs = dict[_Key, FinishedRun]
FEW_ROWS = 3


@dataclass
class FigureResult:
    figure: Figure
    drawn: Drawn | None = None
    missing: list[str] = field(default_factory=list)  # cells that must finish first: "Table V / Baseline / M: ..."
    commands: list[str] = field(default_factory=list)  # what runs them
    left_out: list[str] = field(default_factory=list)  # panels never drawn (cited methods), with why
    runs: list[str] = field(default_factory=list)  # run ids drawn from

    @property
    def made(self) -> bool:
        return self.drawn is not None

    @property
    def why_not(self) -> str:
        shown = "; ".join(self.missing[:4]) + (f"; and {len(self.missing) - 4} more" if len(self.missing) > 4 else "")
        return f"{len(self.missing)} cell(s) must run first: {shown}"


def default_out(paper: str, scale: str) -> Path:
    """``figures/<paper>`` for full-scale runs, ``figures/<paper>.<scale>`` for smoke and small ones."""
    return Path("figures") / (paper if scale == "full" else f"{paper}.{scale}")


def select_figures(paper: Paper, figure_id: str | None) -> list[Figure]:
    if figure_id is None:
        return list(paper.figures)
    exact = [f for f in paper.figures if f.id.lower() == figure_id.lower()]
    found = exact or [f for f in paper.figures if matches(figure_id, f.id, f.slug)]
    if not found:
        raise UnknownNameError(f"{paper.key} figure", figure_id, [f.id for f in paper.figures])
    return found


def _cell(paper: Paper, panel: FigurePanel) -> Cell:
    table = paper.table(str(panel.table))
    row = next(r for r in table.rows if r.name == panel.row)
    group = paper.datasets[str(panel.dataset)]
    return Cell(paper.key, table, row, group, row.recipes.get(group.key))


def _key(panel: FigurePanel) -> _Key:
    return str(panel.table), str(panel.row), str(panel.dataset)


def _commands(paper: Paper, pending: list[PlannedCell], scale: str, overrides: list[str]) -> list[str]:
    """``reidbench reproduce`` commands that run the pending cells: one per row when a table contributes a few
    rows, else one for the table; with --dataset when the figure needs one dataset group of it.
    (an exact row name selects that row alone)."""
    commands = []
    for table in dict.fromkeys(p.cell.table.id for p in pending):
        cells = [p.cell for p in pending if p.cell.table.id == table]
        parts = ["reidbench", "reproduce", paper.key, "--table", table]
        rows = list(dict.fromkeys(c.row.name for c in cells))
        groups = list(dict.fromkeys(c.group.key for c in cells))
        dataset = ["--dataset", groups[0]] if len(groups) == 1 else []
        tail = ["--scale", scale, *(a for o in overrides for a in ("--set", o))]
        if len(rows) <= FEW_ROWS:  # a few rows: one command each, so that nothing else of the table trains
            commands += [shlex.join([*parts, "--row", row, *dataset, *tail]) for row in rows]
        else:
            commands.append(shlex.join([*parts, *dataset, *tail]))
    return commands


def _footer(scale: str, runs: list[FinishedRun]) -> str:
    synthetic = any(run.record.get("synthetic") for run in runs)
    ids = list(dict.fromkeys(run.label for run in runs))
    shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    note = " (synthetic data: not comparable with the paper)" if synthetic else ""
    return f"reidbench {__version__} · {scale} scale{note} · runs: {shown}"


def make_figure(paper: Paper, figure: Figure, *, scale: str, out_dir: Path, data_root: Path,
                runs_root: Path | None = None, overrides: list[str] | None = None) -> FigureResult:
    """Draw one figure into ``out_dir/<slug>.png`` when every cell it needs has finished."""
    overrides = list(overrides or [])
    result = FigureResult(figure, left_out=[f"{p.label}: {p.cited}" for p in figure.panels if p.cited])
    drawn_panels = [p for p in figure.panels if not p.cited]
    cells = {_key(p): _cell(paper, p) for p in drawn_panels}
    planned = dict(zip(cells, plan_cells(list(cells.values()), scale, 1, data_root,
                                         runs_root or paths.runs_dir() / "reproduce", overrides, with_cost=False),
                       strict=True))
    pending = [p for p in planned.values() if p.status != FINISHED]
    if pending:
        for item in pending:
            why = f"dataset missing: {item.reason}" if item.status == NO_DATA else "not run yet"
            result.missing.append(f"{item.cell.label}: {why}")
        result.commands = _commands(paper, pending, scale, overrides)
        return result
    runs = {key: FinishedRun(item.runs[0].run_dir, item.evaluation) for key, item in planned.items()}
    result.runs = list(dict.fromkeys(run.label for run in runs.values()))
    out = out_dir / f"{figure.slug}.png"
    title = f"{paper.key} {figure.id}: reproduced ({scale} scale)"
    footer = _footer(scale, list(runs.values()))
    result.drawn = _DRAW[figure.kind](paper, figure, runs, title, footer, out)
    return result


def _image_panels(figure: Figure, runs: _Runs) -> list[tuple[str, FinishedRun | str]]:
    return [(p.label, p.cited if p.cited else runs[_key(p)]) for p in figure.panels]


def _first_run(figure: Figure, runs: _Runs) -> FinishedRun:
    return runs[_key(next(p for p in figure.panels if not p.cited))]


def _ranklist(paper: Paper, figure: Figure, runs: _Runs, title: str, footer: str, out: Path) -> Drawn:
    queries = choose_queries(_first_run(figure, runs).features, figure.queries, figure.seed)
    panels = [(label, run) for label, run in _image_panels(figure, runs) if isinstance(run, FinishedRun)]
    return draw_rank_lists(panels, queries, figure.top, title, footer, out)[0]


def _maps(paper: Paper, figure: Figure, runs: _Runs, title: str, footer: str, out: Path) -> Drawn:
    queries = choose_queries(_first_run(figure, runs).features, figure.queries, figure.seed)
    return draw_maps(figure.kind, _image_panels(figure, runs), queries, title, footer, out, erase=figure.erase,
                     per_map=figure.per_map, seed=figure.seed)


def _reported(paper: Paper, panel: FigurePanel, metric: str) -> float | None:
    cell = _cell(paper, panel)
    return dict(zip(cell.metrics, cell.reported, strict=True)).get(metric)


def _bars(paper: Paper, figure: Figure, runs: _Runs, title: str, footer: str, out: Path) -> Drawn:
    panels = []
    for group in dict.fromkeys(str(p.dataset) for p in figure.panels):
        members = [p for p in figure.panels if p.dataset == group]
        values = {p.label: {m: runs[_key(p)].metrics.get(m, float("nan")) for m in figure.metrics} for p in members}
        reported = {p.label: {m: _reported(paper, p, m) for m in figure.metrics} for p in members}
        panels.append((f"({chr(ord('a') + len(panels))}) {paper.datasets[group].label}", values, reported))
    return draw_bars(panels, figure.metrics, title, footer, out)


def _curve(paper: Paper, figure: Figure, runs: _Runs, title: str, footer: str, out: Path) -> Drawn:
    panels = []
    for group in dict.fromkeys(p.group for p in figure.panels):
        series = {p.label: runs[_key(p)].training_log(figure.value) for p in figure.panels if p.group == group}
        panels.append((group, series))
    return draw_curves(panels, figure.value, title, footer, out)


def _sweep(paper: Paper, figure: Figure, runs: _Runs, title: str, footer: str, out: Path) -> Drawn:
    x_values = list(dict.fromkeys(p.x for p in figure.panels))
    panels = []
    for group in dict.fromkeys(p.group for p in figure.panels):
        for metric in figure.metrics:
            series: dict[str, list[float]] = {}
            reported: dict[str, list[float | None]] = {}
            for p in (p for p in figure.panels if p.group == group):
                series.setdefault(p.label, []).append(runs[_key(p)].metrics.get(metric, float("nan")))
                reported.setdefault(p.label, []).append(_reported(paper, p, metric))
            panels.append((f"{paper.datasets[group].label} {metric}", series, reported))
    return draw_sweep(panels, figure.x_name, x_values, title, footer, out)


_DRAW: dict[str, Callable[..., Drawn]] = {"ranklist": _ranklist, "cam": _maps, "attention": _maps,
                                          "featuremap": _maps, "bars": _bars, "curve": _curve, "sweep": _sweep}


def make_figures(paper: Paper, figure_id: str | None = None, *, scale: str, out_dir: Path, data_root: Path,
                 runs_root: Path | None = None, overrides: list[str] | None = None,
                 say: Callable[[str], None] = print) -> list[FigureResult]:
    results = []
    for figure in select_figures(paper, figure_id):
        result = make_figure(paper, figure, scale=scale, out_dir=out_dir, data_root=data_root,
                             runs_root=runs_root, overrides=overrides)
        say(f"{figure.id}: {'wrote ' + str(result.drawn.path) if result.drawn else 'not made, ' + result.why_not}")
        results.append(result)
    return results
