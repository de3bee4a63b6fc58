"""`reidbench bench ...`: benchmarks that print figures."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app

bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench", help="Benchmarks that print measured figures (eval, train, data).")


@bench_app.command("eval")
def bench_eval(
    repeats: int = typer.Option(5, "--repeats", help="Timed repeats of evaluate (median shown)."),
    rerank_baseline_size: int = typer.Option(
        2000, "--rerank-baseline-size", help="Items (Q+G) at which dense re-ranking is compared."
    ),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Time evaluate and rerank on a synthetic Market-size problem against baselines."""
    from reidbench.bench.evaluation import run_eval_benchmark
    from reidbench.envinfo import device_summary

    figures = run_eval_benchmark(
        repeats=repeats, rerank_baseline_size=rerank_baseline_size, seed=seed
    )
    figures["device"] = device_summary()
    if as_json:
        typer.echo(json.dumps(figures))
        return
    table = Table(title=f"evaluation benchmark: {figures['problem']} ({figures['device']}, "
                        f"{figures['threads']} threads)")
    table.add_column("what")
    table.add_column("reidbench", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row("evaluate, median s", f"{figures['evaluate_s']:.3f}",
                  f"{figures['numpy_argsort_evaluate_s']:.3f} (numpy argsort)",
                  f"{figures['evaluate_speedup']:.1f}x")
    table.add_row("evaluate, uniform random distances (worst case), s",
                  f"{figures['evaluate_random_distances_s']:.3f}", "", "")
    table.add_row("rerank full size, s", f"{figures['rerank_s']:.2f}", "", "")
    table.add_row("rerank full size, peak extra GiB", f"{figures['rerank_peak_extra_gib']:.2f}",
                  "", "")
    table.add_row(f"rerank {figures['rerank_subset']} items, s", f"{figures['rerank_subset_s']:.3f}",
                  f"{figures['dense_rerank_subset_s']:.3f} (dense original)",
                  f"{figures['rerank_subset_speedup']:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"mAP {100 * figures['mAP']:.2f}% "
                  f"(agrees with the baseline: {figures['mAP_agrees_with_baseline']})")


def _print_figures(title: str, figures: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(figures))
        return
    table = Table(title=title, show_header=False)
    for key, value in figures.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


@bench_app.command("train")
def bench_train(model: str = typer.Option("bot_resnet50", "--model"),
                height: int = typer.Option(128, "--height"), width: int = typer.Option(64, "--width"),
                batch: int = typer.Option(16, "--batch"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Trainer overhead: its epoch vs a bare PyTorch loop with the same steps, model and data."""
    from reidbench.bench.training import run_train_benchmark

    _print_figures("trainer vs bare loop (seconds per epoch, best of 2)",
                   run_train_benchmark(model, height, width, batch), as_json)


@bench_app.command("data")
def bench_data(height: int = typer.Option(256, "--height"), width: int = typer.Option(128, "--width"),
               workers: int = typer.Option(2, "--workers"), batches: int = typer.Option(20, "--batches"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Decode + augmentation throughput of the loader vs ResNet-50 training throughput."""
    from reidbench.bench.training import run_data_benchmark

    _print_figures("data loader vs model training (images/s)",
                   run_data_benchmark(height, width, workers=workers, batches=batches), as_json)
