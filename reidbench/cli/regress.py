"""`reidbench regress`."""

from __future__ import annotations

import typer
from rich.console import Console

from reidbench.cli.app import app, data_root_of
from reidbench.cli.launch import LaunchRequest, launcher_options
from reidbench.errors import ReidbenchError
from reidbench.launch import IN_PROCESS


@app.command("regress")
@launcher_options
def regress_command(
    ctx: typer.Context,
    suite: str = typer.Option("ci", "--suite", help="ci (synthetic data, CPU) or small (real datasets when present)."),
    update: bool = typer.Option(False, "--update", help="Sample seeds x threads (x --python interpreters), "
                                                        "rewrite the golden file, print the diff."),
    case: list[str] = typer.Option([], "--case", help="Only these cases; repeatable."),
    tolerances: str = typer.Option("auto", "--tolerances",
                                   help="auto (same-env only in the golden run's environment), same-env or "
                                        "cross-env."),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads for the runs (default: torch's)."),
    python: list[str] = typer.Option([], "--python", help="With --update: another interpreter (another torch "
                                                          "version) whose runs join the samples; repeatable."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Runs trained at once, each in its own process with "
                                                      "cores / jobs threads (the comparison: cases) or at their "
                                                      "own thread counts (--update: samples)."),
    launch: LaunchRequest = None,
) -> None:
    """Train each main model on small data with fixed seeds and compare with the committed golden file."""
    import torch

    from reidbench.regress import render, run_suite

    if python and not update:
        raise ReidbenchError(f"--python {python[0]}: only with --update (it adds another torch's runs to the samples)")
    if threads:
        torch.set_num_threads(threads)
    console = Console()
    # the comparison needs every run: a cluster launcher always waits here; in-process trains in this process
    launcher = None if launch.kind == IN_PROCESS else launch.launcher(wait=True)
    report, diff = run_suite(suite, update=update, data_root=data_root_of(ctx),
                             cases=case or None, tolerance_mode=tolerances, pythons=python, jobs=jobs,
                             launcher=launcher,
                             say=lambda line: console.print(line, markup=False, highlight=False))
    if update:
        console.print(diff or "golden file unchanged", markup=False, highlight=False)
        return
    console.print(render(report))
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    if report.failed:
        failed = sorted({c.case for c in report.checks if c.status == "FAIL"})
        console.print(f"regression: {', '.join(failed)} outside tolerance", style="bold red", markup=False)
        raise typer.Exit(1)
