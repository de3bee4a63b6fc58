"""`reidbench profile MODEL_OR_RECIPE`: parameters and fvcore GMac."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app
from reidbench.models import list_models


@app.command("profile")
def profile_command(
    target: str = typer.Argument(..., help=f"A registered model ({', '.join(list_models())}) or a recipe YAML."),
    input_size: str = typer.Option(None, "--input", help="HxW, e.g. 256x128 (default: the model's)."),
    as_json: bool = typer.Option(False, "--json", help="Print exactly one JSON object."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recount instead of using the cache."),
) -> None:
    """Parameters (all, deploy, backbone) and fvcore GMac at an input size, per module."""
    from reidbench.profile import parse_input, profile_model

    result = profile_model(target, parse_input(input_size) if input_size else None,
                           use_cache=not no_cache)
    if as_json:
        typer.echo(json.dumps(result.summary()))
        return
    console = Console()
    height, width = result.input
    console.print(f"[bold]{result.model}[/bold] at {height}x{width}: params {result.params:,}, "
                  f"deploy (no classifiers) {result.deploy_params:,}, backbone "
                  f"{result.backbone_params:,}; {result.gmacs:.3f} GMac "
                  "(fvcore: one multiply-add = one flop)")
    table = Table(title="per module")
    for column in ("module", "params", "GMac"):
        table.add_column(column, justify="left" if column == "module" else "right")
    for row in result.modules:
        table.add_row(row["module"], f"{row['params']:,}", f"{row['gmacs']:.3f}")
    console.print(table)
    console.print(f"counted: {result.counted}", markup=False)
    skipped = ", ".join(f"{k} x{v}" for k, v in result.skipped_ops.items()) or "none"
    console.print(f"skipped by fvcore (not in the total): {skipped}", markup=False)
