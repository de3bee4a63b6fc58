"""`reidbench train` and `reidbench test`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidbench import paths
from reidbench.cli.app import app, data_root_of
from reidbench.errors import ReidbenchError


@app.command("train")
def train_command(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="Recipe YAML (path, or name under recipes/)."),
    scale: str = typer.Option("full", "--scale", help="full, small or smoke (synthetic data)."),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value; repeatable."),
    base_overrides: list[str] = typer.Option([], "--base-set", help="key.path=value applied to the recipe "
                                             "before the scale (what a paper row's set: does); repeatable."),
    resume: Path = typer.Option(None, "--resume", help="Run folder to resume from its last checkpoint."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Run folder (default: runs/<stamp>-<name>...)."),
    amp: str = typer.Option(None, "--amp", help="Mixed precision: off, fp16 (CUDA, with loss scaling) or bf16 "
                            "(train.amp / train.amp_dtype; default: the recipe's)."),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                       help="NHWC memory format (train.channels_last)."),
    pin_memory: bool = typer.Option(None, "--pin-memory/--no-pin-memory",
                                    help="Pinned batches and non-blocking copies to the GPU (data.pin_memory)."),
    compile_model: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the network "
                                       "(train.compile)."),
) -> None:
    """Train a recipe; writes a run folder with checkpoints, metrics and a run record."""
    from reidbench.engine.build import resolve_device
    from reidbench.engine.throughput import check_explicit_switches, switch_overrides
    from reidbench.engine.trainer import Trainer
    from reidbench.recipes import load_recipe

    switches = switch_overrides(amp, channels_last, pin_memory, compile_model)
    check_explicit_switches(resolve_device(device), amp, pin_memory)
    loaded = load_recipe(recipe, scale=scale, overrides=[*overrides, *switches], base_overrides=base_overrides)
    folder = resume or run_dir
    record = Trainer(loaded, run_dir=folder, device=device, data_root=data_root_of(ctx),
                     resume=resume is not None).run()
    if record.metrics:
        table = Table(title=f"{record.run_id} ({record.scale}{', synthetic data' if record.synthetic else ''})")
        for key in record.metrics:
            table.add_column(key, justify="right")
        table.add_row(*(f"{100 * v:.2f}" for v in record.metrics.values()))
        Console().print(table)


@app.command("test")
def evaluate_checkpoint_command(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="Recipe YAML the checkpoint was trained with."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint (.pt) or state_dict file."),
    scale: str = typer.Option("full", "--scale"),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value; repeatable."),
    out: Path = typer.Option(Path("features.pt"), "--out", help="Features file to write (.pt or .npz)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Extract query/gallery features with a checkpoint, write the features file, print metrics."""
    from reidbench.engine.trainer import evaluate_checkpoint
    from reidbench.recipes import load_recipe

    if out.suffix not in (".pt", ".npz"):
        raise ReidbenchError(f"--out {out}: expected a features file ending in .pt or .npz")
    paths.check_folder(out.absolute().parent, "--out", "features file's folder")
    loaded = load_recipe(recipe, scale=scale, overrides=overrides)
    result, path = evaluate_checkpoint(loaded, checkpoint, out, device=device, data_root=data_root_of(ctx))
    table = Table(title=f"{path} ({result.protocol} protocol)")
    summary = result.summary()
    for key in summary:
        table.add_column(key, justify="right")
    table.add_row(*(f"{100 * v:.2f}" for v in summary.values()))
    Console().print(table)
