"""`reidbench regress`."""

from __future__ import annotations

import typer
from rich.console import Console

from reidbench.cli.app import app, data_root_of
from reidbench.cli.launch import LaunchRequest, launcher_options
from reidbench.launch import IN_PROCESS


@app.command("regress")
@launcher_options
def regress_command(
    ctx: typer.Context,
    suite: str = typer.Option("ci", "--suite", help="ci (synthetic data, CPU) or small (real datasets when present)."),
    update: bool = typer.Option(False, "--update", help="Measure the spread, rewrite the golden file, print the diff."),
    case: list[str] = typer.Option([], "--case", help="Only these cases; repeatable."),
    repeats: int = typer.Option(None, "--repeats", help="Runs per case for --update (default: the suite's)."),
    launch: LaunchRequest = None,
) -> None:
    """Train each main model on small data with fixed seeds and compare with the committed golden file."""
    from reidbench.regress import render, run_suite

    console = Console()
    # the comparison needs every run: a cluster launcher always waits here; in-process uses the suite's device
    launcher = None if launch.kind == IN_PROCESS else launch.launcher(wait=True)
    report, diff = run_suite(suite, update=update, data_root=data_root_of(ctx),
                             cases=case or None, repeats=repeats, launcher=launcher,
                             say=lambda line: console.print(line, markup=False))
    if update:
        console.print(diff or "golden file unchanged", markup=False, highlight=False)
        for case_name, reason in report.skipped.items():
            console.print(f"skipped {case_name}: {reason}", style="yellow", markup=False)
        return
    console.print(render(report))
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    if report.failed:
        failed = sorted({c.case for c in report.checks if c.status == "FAIL"})
        console.print(f"regression: {', '.join(failed)} outside tolerance", style="bold red", markup=False)
        raise typer.Exit(1)
