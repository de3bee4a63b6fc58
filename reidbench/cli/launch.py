"""The launcher options shared by `reproduce`, `ablate` and `regress`, and `reidbench jobs`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app
from reidbench.launch import IN_PROCESS, KINDS, LOCAL, SLURM, Launcher, load_settings, make_launcher


@dataclass
class LaunchRequest:
    """What the launcher options asked for; the launcher file is read only for a submitit launcher."""

    kind: str
    config: Path | None
    values: dict[str, Any]

    def launcher(self, jobs: int = 1, devices: list[str] | None = None, device: str = "auto",
                 **forced: Any) -> Launcher:
        settings = None
        if self.kind != IN_PROCESS:
            settings = load_settings(self.kind, self.config, **{**self.values, **forced})
        return make_launcher(self.kind, settings, jobs=jobs, devices=devices, device=device)


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


_LAUNCH_OPTIONS = [
    _option("launcher_kind", str, typer.Option(IN_PROCESS, "--launcher", help=(
        f"Where cells train: {', '.join(KINDS)} (submitit jobs on this machine / a Slurm job array; "
        "docs/cluster.md)."))),
    _option("launcher_config", Path | None, typer.Option(None, "--launcher-config", help=(
        "Launcher file with the cluster's defaults (default: ~/.config/reidbench/launcher.yaml)."))),
    _option("partition", str | None, typer.Option(None, "--partition", help="Slurm partition.")),
    _option("account", str | None, typer.Option(None, "--account", help="Slurm account.")),
    _option("time", str | None, typer.Option(None, "--time", help=(
        "Time limit per job: minutes or [D-]HH:MM:SS (default 24:00:00); a task stopped by it requeues "
        "and resumes."))),
    _option("gpus", int | None, typer.Option(None, "--gpus", help=(
        "GPUs per cell, one task (DDP rank) each (default 1 on slurm, 0 = CPU locally)."))),
    _option("cpus", int | None, typer.Option(None, "--cpus", help="CPUs per task.")),
    _option("mem", float | None, typer.Option(None, "--mem", help="Memory per job in GB.")),
    _option("array_parallelism", int | None, typer.Option(None, "--array-parallelism", help=(
        "Cells running at once (slurm: the array's % limit; local default 1)."))),
    _option("sbatch", list[str], typer.Option([], "--sbatch", help=(
        "Extra sbatch option FLAG=VALUE or FLAG, without the dashes (qos=high); repeatable."))),
    _option("log_dir", Path | None, typer.Option(None, "--log-dir", help=(
        "Folder of job logs and submission records (default: <runs>/jobs; on a cluster, a shared folder)."))),
    _option("wait", bool | None, typer.Option(None, "--wait/--no-wait", help=(
        "Wait for the jobs (default: local waits, slurm submits and returns)."))),
]


def launcher_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the launcher options to a command; it receives them as one ``launch: LaunchRequest`` argument."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "launch"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {p.name: kwargs.pop(p.name) for p in _LAUNCH_OPTIONS}
        kind, config = values.pop("launcher_kind"), values.pop("launcher_config")
        values["time_min"], values["mem_gb"] = values.pop("time"), values.pop("mem")
        from reidbench.launch.settings import parse_sbatch_flags

        values["sbatch"] = parse_sbatch_flags(values["sbatch"])
        return command(*args, launch=LaunchRequest(kind, config, values), **kwargs)

    parameters = [*kept, *_LAUNCH_OPTIONS]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


_STYLES = {"done": "green", "running": "cyan", "pending": "dim", "requeued": "yellow", "failed": "red",
           "cancelled": "magenta"}


@app.command("jobs")
def jobs_command(
    label: str = typer.Argument(None, help="Paper key (or regress-<suite>, ablate-<recipe>); all when omitted."),
    cancel: bool = typer.Option(False, "--cancel", help="Stop every pending, running or requeued task."),
    log_dir: Path = typer.Option(None, "--log-dir", help="Folder of job records (default: the launcher file's)."),
    launcher_config: Path = typer.Option(None, "--launcher-config", help="Launcher file (its log_dir)."),
) -> None:
    """The submitted cells: pending, running, requeued, done or failed (with the log and last error line)."""
    from reidbench.errors import ReidbenchError
    from reidbench.launch.jobs import cancel as cancel_tasks
    from reidbench.launch.jobs import read_submissions, statuses, summary_line

    folders = [log_dir] if log_dir else list(dict.fromkeys(
        load_settings(kind, launcher_config).jobs_folder() for kind in (LOCAL, SLURM)))
    submissions = [s for folder in folders for s in read_submissions(folder, label)]
    if not submissions:
        where = " or ".join(str(f / (label or "")) for f in folders)
        raise ReidbenchError(f"no submitted jobs{f' for {label}' if label else ''} under {where}",
                             hint="submit with --launcher local|slurm, or pass --log-dir")
    console = Console()
    if cancel:
        stopped = cancel_tasks(submissions)
        console.print(f"cancelled {len(stopped)} task(s)" + (f": {' '.join(stopped)}" if stopped else ""),
                      markup=False)
    found = statuses(submissions)
    table = Table(title=f"jobs{f' of {label}' if label else ''}")
    for column in ("label", "job", "state", "requeues", "run", "cells"):
        table.add_column(column, overflow="fold")
    for item in found:
        table.add_row(item.label, item.job_id or "-", item.state, str(item.requeues or ""), Path(item.run_dir).name,
                      "; ".join(item.cells), style=_STYLES.get(item.state))
    console.print(table)
    for item in found:  # one unwrapped line each, to copy the log path from
        if item.state in ("failed", "unknown") and (item.error or item.log):
            console.print(f"{item.state} {item.job_id or '-'} {Path(item.run_dir).name}: {item.error}"
                          + (f" — log: {item.log}" if item.log else ""), markup=False, soft_wrap=True,
                          style=_STYLES.get(item.state))
    console.print(summary_line(found), markup=False)
