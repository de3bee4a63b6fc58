"""`reidbench env`: versions, devices and directories."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app
from reidbench.envinfo import collect_environment


@app.command("env")
def env_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show Python/torch/torchvision/fvcore versions, CUDA devices, threads and directories."""
    settings = ctx.obj
    info = collect_environment(str(settings.data_root) if settings.data_root else None)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title="reidbench environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in ("reidbench", "python", "platform", "torch", "torchvision", "fvcore", "numpy"):
        table.add_row(key, str(info[key] or "not installed"))
    table.add_row("cuda available", str(info["cuda_available"]))
    table.add_row("cuda version", str(info["cuda_version"] or "-"))
    for device in info["devices"]:
        table.add_row(
            f"cuda:{device['index']}",
            f"{device['name']} ({device['memory_gib']} GiB, sm {device['capability']})",
        )
    table.add_row("torch threads", f"{info['torch_threads']} (cpus: {info['cpu_count']})")
    for key, value in info["directories"].items():
        table.add_row(f"{key} dir", f"{value['path']}  [{value['source']}]")
    for index, value in enumerate(info["recipe_dirs"], 1):
        table.add_row(f"recipes dir {index}", f"{value['path']}  [{value['source']}]")
    Console().print(table)
