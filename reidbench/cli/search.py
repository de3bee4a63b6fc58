"""`reidbench search msinet --data NAME`: MSINet's architecture search, writing a genotype file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from reidbench.cli.app import app, data_root_of
from reidbench.errors import UnknownNameError


@app.command("search")
def search_command(
    ctx: typer.Context,
    family: str = typer.Argument(..., help="Model family to search (msinet)."),
    data: str = typer.Option(..., "--data", help="Dataset whose training ids drive the search."),
    root: Path = typer.Option(None, "--root", help="Data root (default: configured)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Search on the built-in synthetic miniature."),
    out: Path = typer.Option(Path("genotype.yaml"), "--out", help="Genotype file to write."),
    epochs: int = typer.Option(350, "--epochs"),
    batch_size: int = typer.Option(64, "--batch-size"),
    num_instances: int = typer.Option(4, "--num-instances"),
    height: int = typer.Option(256, "--height"),
    width: int = typer.Option(128, "--width"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    mid_from: str = typer.Option("in", "--mid-from", help="in (official search cells) or out (final net)."),
) -> None:
    """Search MSINet's interaction genotype (twin-contrastive, first-order DARTS); write a YAML genotype."""
    from reidbench.data.parsers import parse_dataset
    from reidbench.data.registry import get_dataset
    from reidbench.engine.build import resolve_device
    from reidbench.engine.search import search_msinet

    if family != "msinet":
        raise UnknownNameError("search family", family, ["msinet"])
    spec = get_dataset(data)
    base = root or data_root_of(ctx)
    if synthetic:
        from reidbench.data.synth import ensure_synthetic

        base = base / "synthetic" / f"{spec.name}-search"
        ensure_synthetic(spec.name, base)
    split = parse_dataset(spec.name, base)
    result = search_msinet(split.train, out, epochs, batch_size, num_instances, height, width, seed,
                           resolve_device(device), mid_from=mid_from,
                           meta={"dataset": spec.name, "synthetic": split.synthetic})
    Console().print(f"genotype {' '.join(result.genotype)} written to {result.path}; use it with "
                    f"--set model.genotype={result.path}", markup=False)
