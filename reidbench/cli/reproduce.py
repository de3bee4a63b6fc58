"""`reidbench reproduce`, `reidbench ablate` and `reidbench leaderboard`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidbench import paths
from reidbench.cli.app import app, data_root_of
from reidbench.cli.launch import LaunchRequest, launcher_options
from reidbench.errors import ReidbenchError
from reidbench.papers.loading import list_papers
from reidbench.papers.reproduce import Reproduction

SCALE_HELP = "full (the paper's schedule), small (subset, short schedule) or smoke (synthetic data)."


def _devices(text: str | None) -> list[str] | None:
    return [d.strip() for d in text.split(",") if d.strip()] if text else None


def plan_table(result: Reproduction) -> Table:
    from reidbench.papers.plan import FINISHED, NO_DATA, READY, RESUME

    table = Table(title=f"{result.paper.key}: {len(result.planned)} cells")
    for column in ("cell", "recipe", "data", "status", "est. TMac"):
        table.add_column(column, overflow="fold")
    styles = {READY: "cyan", RESUME: "yellow", FINISHED: "green"}
    for item in result.planned:
        cost = f"{item.cost_tmac:.3g}" if item.cost_tmac is not None else ""
        status = item.status
        if item.runs and len(item.runs) > 1:
            status += f" ({sum(r.state == FINISHED for r in item.runs)}/{len(item.runs)} seeds done)"
        if item.reason and item.status != NO_DATA:
            status += f": {item.reason}"
        recipe = item.cell.recipe or ""
        if recipe and item.cell.row.overrides:
            recipe += " --set " + " ".join(item.cell.row.overrides)
        if recipe and item.cell.row.eval_overrides:
            recipe += " (re-evaluated: " + ", ".join(item.cell.row.eval_overrides) + ")"
        table.add_row(item.cell.label, recipe, item.data, status, cost,
                      style=styles.get(item.status, "dim"))
    return table


def print_plan(console: Console, result: Reproduction) -> None:
    from reidbench.papers.plan import unique_runs

    console.print(plan_table(result))
    commands = dict.fromkeys(c for p in result.blocked for c in p.reason.split(" ; "))
    for command in commands:
        console.print(f"missing data; install it with: {command}", style="yellow", markup=False)
    counts: dict[str, int] = {}
    for item in result.planned:
        counts[item.status] = counts.get(item.status, 0) + 1
    runs = unique_runs(result.planned)
    console.print(", ".join(f"{n} {status}" for status, n in counts.items())
                  + f"; {len(runs)} run(s) to train (cells with the same resolved recipe share one)",
                  markup=False)


def _finish(console: Console, result: Reproduction) -> None:
    """Exit 1 when a selected cell could not run: missing data (with the command) or a failed run."""
    problems = [f"{p.cell.label}: dataset missing; run `{p.reason}`" for p in result.blocked]
    problems += [f"{run}: {reason}" for run, reason in result.outcome.failed.items()]
    if problems:
        for line in problems:
            console.print(f"not run: {line}", style="red", markup=False)
        raise typer.Exit(1)


@app.command("reproduce")
@launcher_options
def reproduce_command(
    ctx: typer.Context,
    paper: str = typer.Argument(..., help=f"Paper key: {', '.join(list_papers())}."),
    table: str = typer.Option(None, "--table", help="Table or figure (case-insensitive prefix, e.g. 'Table I')."),
    row: str = typer.Option(None, "--row", help="Row (prefix; 'MASENet' selects 'MASENet (Ours)')."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset column (prefix: 'M', 'MS->M', 'msmt17')."),
    scale: str = typer.Option("full", "--scale", help=SCALE_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    seeds: int = typer.Option(1, "--seeds", help="Runs per cell (seeds = recipe seed, +1, ...)."),
    jobs: int = typer.Option(1, "--jobs", help="Cells trained in parallel (one subprocess per device)."),
    devices: str = typer.Option(None, "--devices", help="Comma-separated devices for --jobs (cuda:0,cuda:1)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (when --devices is not given)."),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value applied to every cell's recipe."),
    csv: Path = typer.Option(None, "--csv", help="Leaderboard CSV (default: leaderboards/<paper>.csv at full "
                                                 "scale, leaderboards/<paper>.<scale>.csv at small and smoke)."),
    launch: LaunchRequest = None,
) -> None:
    """Reproduce a paper's tables: plan the cells, train what is missing, write the leaderboard."""
    from reidbench.leaderboard import read_leaderboard, to_rich
    from reidbench.papers.reproduce import plan_reproduction, run_reproduction

    console = Console()
    launcher = None if dry_run else launch.launcher(jobs=jobs, devices=_devices(devices), device=device)
    result = plan_reproduction(paper, table=table, row=row, dataset=dataset, scale=scale, seeds=seeds,
                               data_root=data_root_of(ctx), overrides=overrides, csv=csv)
    print_plan(console, result)
    if dry_run:
        return
    run_reproduction(result, data_root=data_root_of(ctx), launcher=launcher,
                     say=lambda line: console.print(line, markup=False))
    if not result.csv.is_file():  # every cell is with the scheduler: its tasks write the rows
        return
    frame = read_leaderboard(result.csv)
    frame = frame[(frame["scale"] == scale) | (frame["status"] == "not run")]
    selected = {(p.cell.table.id, p.cell.row.name, p.cell.group.label) for p in result.planned}
    keys = zip(frame["table"], frame["row"], frame["dataset"], strict=True)
    frame = frame[[key in selected for key in keys]]
    console.print(to_rich(frame, f"{result.paper.key} leaderboard ({scale}) — {result.csv}"))
    _finish(console, result)


@app.command("ablate")
@launcher_options
def ablate_command(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="A paper key (runs its ablation tables) or a recipe (with --grid)."),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2 over recipe keys; repeatable (cartesian)."),
    table: str = typer.Option(None, "--table", help="Only this ablation table (prefix)."),
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset column (prefix)."),
    scale: str = typer.Option("full", "--scale", help=SCALE_HELP),
    seeds: int = typer.Option(1, "--seeds", help="Runs per cell (paper ablations)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and stop."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value applied to every run."),
    launch: LaunchRequest = None,
) -> None:
    """Run ablations and render them as the paper's table with deltas to the first row."""
    from reidbench.papers.ablate import grid_rows, paper_ablation_rows, plan_grid, render
    from reidbench.papers.plan import FINISHED
    from reidbench.papers.reproduce import reproduce_paper

    console = Console()
    say = lambda line: console.print(line, markup=False)  # noqa: E731
    launcher = None if dry_run else launch.launcher(device=device)
    if target.lower() in list_papers() and not grid:
        result = reproduce_paper(target, table=table, dataset=dataset, scale=scale, seeds=seeds, launcher=launcher,
                                 dry_run=dry_run, data_root=data_root_of(ctx), overrides=overrides,
                                 ablation_only=True, say=say)
        if dry_run:
            print_plan(console, result)
            return
        for table_id, rows in paper_ablation_rows(result):
            console.print(render(rows, f"{result.paper.key} {table_id} ({scale})"))
        _finish(console, result)
        return
    if not grid:
        raise ReidbenchError(f"{target}: not a paper ({', '.join(list_papers())}); a recipe needs --grid key=v1,v2")
    planned = plan_grid(target, grid, scale, paths.runs_dir() / "ablate", overrides)
    if not dry_run:
        todo = [run for _, run in planned if run.state != FINISHED]
        outcome = launcher.launch(todo, data_root_of(ctx), say, label=f"ablate-{Path(target).stem}")
        if outcome.submitted:
            console.print("rerun this command once the jobs are done to see the table", markup=False)
            return
        if outcome.failed:
            for run, reason in outcome.failed.items():
                console.print(f"failed: {run}: {reason}", style="red", markup=False)
    title = f"{target}: grid over {', '.join(g.split('=')[0] for g in grid)} ({scale})"
    console.print(render(grid_rows(planned), title))


@app.command("leaderboard")
def leaderboard_command(
    paper: str = typer.Argument(..., help=f"Paper key: {', '.join(list_papers())} (with --write, 'all' "
                                          "regenerates every paper's files)."),
    output_format: str = typer.Option("table", "--format", help="table, markdown or csv."),
    plot: Path = typer.Option(None, "--plot", help="Also write a reported-vs-reproduced chart (PNG)."),
    scale: str = typer.Option("full", "--scale", help="Which leaderboard: full (leaderboards/<paper>.csv), "
                                                      "small or smoke (leaderboards/<paper>.<scale>.csv)."),
    csv: Path = typer.Option(None, "--csv", help="Leaderboard CSV (default: chosen by --scale)."),
    write: bool = typer.Option(False, "--write", help="Regenerate leaderboards/<paper>.csv and .md: every cell "
                                                      "of the paper, full-scale measurements kept, the rest "
                                                      "'not run' with the reason."),
) -> None:
    """Show a paper's leaderboard: reported beside reproduced, with intervals, deltas and status."""
    from reidbench import leaderboard
    from reidbench.papers.loading import list_papers, load_paper
    from reidbench.papers.publish import write_published
    from reidbench.recipes.loading import SCALES

    if write:
        keys = list_papers() if paper == "all" else [paper]
        for key in keys:
            write_published(load_paper(key), say=lambda line: typer.echo(line))
        return
    spec = load_paper(paper)
    if output_format not in ("table", "markdown", "csv"):
        raise ReidbenchError(f"--format: expected table, markdown or csv, got {output_format!r}")
    if scale not in SCALES:
        raise ReidbenchError(f"--scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    path = csv or leaderboard.leaderboard_path(spec.key, scale=scale)
    if not path.is_file():
        others = [s for s in SCALES if leaderboard.leaderboard_path(spec.key, scale=s).is_file()]
        hint = (f"found the {', '.join(others)} leaderboard: add --scale {others[0]}" if others
                else f"run `reidbench reproduce {spec.key}` first")
        raise ReidbenchError(f"{path}: no leaderboard yet", hint=hint)
    frame = leaderboard.read_leaderboard(path)
    if output_format == "csv":
        typer.echo(leaderboard.to_csv_text(frame), nl=False)
    elif output_format == "markdown":
        typer.echo(leaderboard.to_markdown(frame))
    else:
        Console().print(leaderboard.to_rich(frame, f"{spec.key} leaderboard — {path}"))
    if plot is not None:
        leaderboard.plot(frame, plot, f"{spec.key}: reported vs reproduced")
        Console(stderr=True).print(f"wrote {plot}", markup=False)
