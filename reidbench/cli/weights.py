"""`reidbench weights ...`: list, download, verify pretrained weights."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app

weights_app = typer.Typer(help="Pretrained weights: list, download, verify.", no_args_is_help=True)
app.add_typer(weights_app, name="weights", help="Pretrained weights: list, download, verify.")


@weights_app.command("list")
def weights_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Known weights, their sources and whether they are in the cache."""
    from reidbench.weights import list_weights

    rows = list_weights()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="pretrained weights")
    for column in ("name", "status", "file", "source", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["status"], row["file"], row["source"], row["description"])
    Console().print(table)


@weights_app.command("download")
def weights_download(name: str = typer.Argument(...),
                     url: str | None = typer.Option(None, "--url", help="Mirror URL.")) -> None:
    """Download weights into torch hub's cache and check their hash."""
    from reidbench.weights import download_weights

    Console().print(f"saved {download_weights(name, url)}", markup=False)


@weights_app.command("verify")
def weights_verify(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Check that cached weights exist, match their hash prefix and load."""
    from reidbench.weights import verify_weights

    report = verify_weights(name)
    typer.echo(json.dumps(report) if as_json else f"{report['name']}: {report['status']} ({report['path']})")
    raise typer.Exit(0 if report["ok"] else 1)
