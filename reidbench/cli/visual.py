"""`reidbench figures`, `reidbench visualize ranks|cam|attention` and `reidbench report`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app, data_root_of
from reidbench.errors import ReidbenchError
from reidbench.papers.loading import list_papers

visualize = typer.Typer(name="visualize", no_args_is_help=True, rich_markup_mode=None,
                        help="Draw a finished run: rank lists, Grad-CAM maps, the model's own attention maps.")
app.add_typer(visualize)

SCALE_HELP = "Which runs: full, small or smoke (the scale `reidbench reproduce` ran them at)."
SET_HELP = "key.path=value applied to every cell's recipe (the same --set the reproduction used)."


def _check_scale(scale: str) -> None:
    from reidbench.recipes.loading import SCALES

    if scale not in SCALES:
        raise ReidbenchError(f"--scale: expected one of {', '.join(SCALES)}, got {scale!r}")


def _figure_table(paper: str, results: list) -> Table:
    table = Table(title=f"{paper} figures")
    for column in ("figure", "kind", "result"):
        table.add_column(column, overflow="fold")
    for result in results:
        figure = result.figure
        if result.made:
            text = f"wrote {result.drawn.path}"
            if result.left_out:
                text += "; left out: " + "; ".join(result.left_out)
            table.add_row(figure.id, figure.kind, text, style="green")
        else:
            table.add_row(figure.id, figure.kind, f"not made yet: {len(result.missing)} cell(s) must run first",
                          style="yellow")
    return table


@app.command("figures")
def figures_command(
    ctx: typer.Context,
    paper: str = typer.Argument(..., help=f"Paper key: {', '.join(list_papers())}."),
    figure: str = typer.Option(None, "--figure", help="Only this figure (as printed, e.g. 'Fig. 4'; prefix)."),
    out: Path = typer.Option(None, "--out", help="Folder for the PNG files (default: figures/<paper>, "
                                                 "figures/<paper>.<scale> below full scale)."),
    scale: str = typer.Option("full", "--scale", help=SCALE_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Draw a paper's figures from its finished runs; name those that cannot be drawn yet and what to run."""
    from reidbench import paths
    from reidbench.papers.loading import load_paper
    from reidbench.visual.figures import default_out, make_figures

    _check_scale(scale)
    spec = load_paper(paper)
    if not spec.figures:
        raise ReidbenchError(f"{spec.key}: the paper file lists no figures", hint="add a figures: section "
                             "(docs/figures.md)")
    folder = out or default_out(spec.key, scale)
    paths.check_folder(folder, "--out", "figures folder")
    console = Console()
    results = make_figures(spec, figure, scale=scale, out_dir=folder, data_root=data_root_of(ctx),
                           overrides=overrides, say=lambda _line: None)
    console.print(_figure_table(spec.key, results))
    pending = [r for r in results if not r.made]
    for result in pending:
        console.print(f"{result.figure.id} not made yet: {result.why_not}", style="yellow", markup=False,
                      soft_wrap=True)
    for command in dict.fromkeys(c for r in pending for c in r.commands):
        console.print(f"to draw the rest, run first: {command}", style="yellow", markup=False, soft_wrap=True)
    if pending:
        raise typer.Exit(1)


def _run_and_queries(run_dir: Path, query: list[int], count: int, seed: int):
    from reidbench.visual.runs import FinishedRun, choose_queries

    run = FinishedRun(run_dir)
    return run, choose_queries(run.features, count, seed, query)


def _out(run_dir: Path, out: Path | None, name: str) -> Path:
    from reidbench import paths

    path = out or run_dir / "visualize" / f"{name}.png"
    if path.suffix != ".png":
        raise ReidbenchError(f"--out {path}: expected a .png file")
    paths.check_folder(path.absolute().parent, "--out", "image's folder")
    return path


QUERY_HELP = "Query index (0-based, in the run's features.pt); repeatable. Default: --count drawn by --seed."
# the options every `visualize` command shares
RUN_DIR = typer.Argument(..., help="A finished run folder.")
QUERY = typer.Option([], "--query", help=QUERY_HELP)
COUNT = typer.Option(4, "--count", help="Queries drawn when --query is not given.")
SEED = typer.Option(0, "--seed", help="Draws the queries (same seed, same queries).")


@visualize.command("ranks")
def ranks_command(
    run_dir: Path = RUN_DIR,
    query: list[int] = QUERY,
    count: int = COUNT,
    seed: int = SEED,
    top: int = typer.Option(10, "--top", help="Gallery images per query."),
    out: Path = typer.Option(None, "--out", help="PNG file (default: RUN_DIR/visualize/ranks.png)."),
) -> None:
    """Top-k rank lists: each gallery image with its distance, framed green (same identity) or red."""
    from reidbench.visual.render import draw_rank_lists

    if top < 1 or count < 1:
        raise ReidbenchError(f"--top/--count: expected positive integers, got {top} / {count}")
    run, queries = _run_and_queries(run_dir, query, count, seed)
    path = _out(run_dir, out, "ranks")
    title = f"{run.label}: top-{top} rank lists"
    drawn, lists = draw_rank_lists([(run.label, run)], queries, top, title, f"{run.settings.metric} distance", path)
    for ranked in lists:
        marks = " ".join(f"{'+' if ok else 'x'}{d:.3g}" for ok, d in zip(ranked.correct, ranked.distances,
                                                                        strict=True))
        typer.echo(f"query {ranked.query} (pid {ranked.pid}): {marks}")
    typer.echo(f"wrote {drawn.path} (+ right identity, x wrong)")


def _maps_command(kind: str, run_dir: Path, query: list[int], count: int, seed: int, out: Path | None) -> None:
    from reidbench.visual.render import draw_maps

    run, queries = _run_and_queries(run_dir, query, count, seed)
    path = _out(run_dir, out, kind)
    what = "Grad-CAM of the test feature" if kind == "cam" else "the model's own attention maps"
    drawn = draw_maps(kind, [(run.recipe.model.name, run)], queries, f"{run.label}: {what}",
                      f"scale {run.record.get('scale')} · run {run.label}", path, per_map=kind == "attention")
    typer.echo(f"wrote {drawn.path}")


@visualize.command("cam")
def cam_command(
    run_dir: Path = RUN_DIR,
    query: list[int] = QUERY,
    count: int = COUNT,
    seed: int = SEED,
    out: Path = typer.Option(None, "--out", help="PNG file (default: RUN_DIR/visualize/cam.png)."),
) -> None:
    """Grad-CAM (captum) of the last feature map for the run's test feature, over the query images."""
    _maps_command("cam", run_dir, query, count, seed, out)


@visualize.command("attention")
def attention_command(
    run_dir: Path = RUN_DIR,
    query: list[int] = QUERY,
    count: int = COUNT,
    seed: int = SEED,
    out: Path = typer.Option(None, "--out", help="PNG file (default: RUN_DIR/visualize/attention.png)."),
) -> None:
    """The model's own attention maps (MHSA-Net: alpha per head; MASENet: each SGE's spatial weights)."""
    _maps_command("attention", run_dir, query, count, seed, out)


@app.command("report")
def report_command(
    ctx: typer.Context,
    paper: str = typer.Argument(..., help=f"Paper key: {', '.join(list_papers())}."),
    out: Path = typer.Option(..., "--out", help="Folder for the page (index.html) and its images."),
    scale: str = typer.Option("full", "--scale", help="Which leaderboard and runs: full, small or smoke."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """One static HTML page: leaderboard (reported vs reproduced, CIs, provenance), ablations, figures."""
    from reidbench import paths
    from reidbench.papers.loading import load_paper
    from reidbench.visual.report import write_report

    _check_scale(scale)
    spec = load_paper(paper)
    paths.check_folder(out, "--out", "report folder")
    page = write_report(spec, out, scale=scale, data_root=data_root_of(ctx), overrides=overrides)
    typer.echo(f"wrote {page} (open it in a browser: file://{page.absolute()})")
