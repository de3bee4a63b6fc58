"""`reidbench bench ...`: benchmarks that print figures."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app
from reidbench.errors import ReidbenchError, UnknownNameError

bench_app = typer.Typer(help="Benchmarks that print measured figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench", help="Benchmarks that print measured figures (eval, rerank, train, data, gpu).")


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


def _sizes(value: str) -> tuple[str, ...]:
    from reidbench.bench.rerank import SIZES

    sizes = tuple(part.strip() for part in value.split(",") if part.strip())
    for size in sizes:
        if size not in SIZES:
            raise UnknownNameError("--sizes value", size, tuple(SIZES))
    return sizes


@bench_app.command("rerank")
def bench_rerank(
    sizes: str = typer.Option("market,msmt17", "--sizes", help="Comma-separated: market (rerank from matrices, "
                              "3,368 + 15,913), msmt17 (rerank_features, 11,659 + 82,161, 2048-d)."),
    fraction: float = typer.Option(1.0, "--fraction", help="Scale both sizes by this (a quick check: 0.05)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run the row-wise baseline."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Exact CPU re-ranking against the previous row-wise implementation: time, peak memory, ratio, difference."""
    from reidbench.bench.rerank import run_rerank_benchmark
    from reidbench.envinfo import device_summary

    if not 0 < fraction <= 1:
        raise ReidbenchError(f"--fraction: expected a number in (0, 1], got {fraction}")
    figures = run_rerank_benchmark(_sizes(sizes), fraction=fraction, baseline=baseline)
    figures["device"] = device_summary()
    if as_json:
        typer.echo(json.dumps(figures))
        return
    table = Table(title=f"exact re-ranking on the CPU ({figures['device']}, {figures['threads']} threads"
                        f"{'' if fraction == 1 else f', {fraction:g} of full size'})")
    for column in ("size", "what", "seconds", "peak extra GiB", "row-wise baseline s / GiB", "speed-up",
                   "max |difference|", "goal"):
        table.add_column(column, justify="left" if column in ("size", "what") else "right")
    for name in _sizes(sizes):
        entry = figures[name]
        goal = entry.get("goal")
        table.add_row(
            f"{name} ({entry['items']})", entry["what"], f"{entry['seconds']:.2f}", f"{entry['peak_gib']:.2f}",
            f"{entry['baseline_seconds']:.2f} / {entry['baseline_peak_gib']:.2f}" if baseline else "",
            f"{entry['speedup']:.1f}x" if baseline else "",
            f"{entry['max_abs_difference']:.1e}" if baseline else "",
            "" if goal is None else (f"<= {goal['seconds']:g} s" + (f", {goal['peak_gib']:g} GiB" if "peak_gib" in goal
                                                                     else "") + (" met" if entry["meets_goal"]
                                                                                 else " NOT met")))
    Console().print(table)


@bench_app.command("gpu")
def bench_gpu(
    sizes: str = typer.Option("market,msmt17", "--sizes", help="Evaluation sizes: market, msmt17."),
    models: str = typer.Option("all", "--models", help="Comma-separated paper models, or all."),
    steps: int = typer.Option(8, "--steps", help="Timed training steps per configuration (after 3 warm-up)."),
    cpu_baseline: bool = typer.Option(True, "--cpu-baseline/--no-cpu-baseline",
                                      help="Run evaluate and re-ranking with the CPU kernels too."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The GPU path beside the CPU path: evaluation and re-ranking, training images/s per paper model
    (batch 64; fp32 / bf16 / fp16; channels_last off / on), loader images/s. Needs CUDA."""
    from reidbench.bench.gpu import PAPER_MODELS, require_cuda, run_gpu_benchmark

    require_cuda()
    chosen = tuple(PAPER_MODELS) if models == "all" else tuple(m.strip() for m in models.split(",") if m.strip())
    for model in chosen:
        if model not in PAPER_MODELS:
            raise UnknownNameError("--models value", model, tuple(PAPER_MODELS))
    figures = run_gpu_benchmark(_sizes(sizes), chosen, steps=steps, cpu_baseline=cpu_baseline)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    print_gpu_figures(figures)


def print_gpu_figures(figures: dict) -> None:
    """The tables of `reidbench bench gpu` (also rendered by scripts/gpu_check.sh from its JSON)."""
    console = Console(width=160)
    console.print(f"{figures['gpu']}, torch {figures['torch']}, CUDA {figures['cuda']}, {figures['date']}")
    evaluation = Table(title="evaluation and re-ranking: GPU vs CPU kernels (seconds)")
    for column in ("size", "distance+evaluate GPU", "CPU", "ratio", "rerank_features GPU", "CPU", "ratio",
                   "same ranks", "max |rerank diff|"):
        evaluation.add_column(column, justify="right")
    for size, entry in figures["evaluation"].items():
        cpu = "cpu_evaluate_s" in entry
        evaluation.add_row(
            f"{size} ({entry['items']})", f"{entry['distance_s'] + entry['evaluate_s']:.3f}",
            f"{entry['cpu_distance_s'] + entry['cpu_evaluate_s']:.3f}" if cpu else "",
            f"{entry['evaluate_speedup']:.1f}x" if cpu else "", f"{entry['rerank_features_s']:.2f}",
            f"{entry['cpu_rerank_features_s']:.2f}" if cpu else "", f"{entry['rerank_speedup']:.1f}x" if cpu else "",
            str(entry.get("same_ranks", "")), f"{entry['rerank_max_abs_difference']:.1e}" if cpu else "")
    console.print(evaluation)
    training = Table(title="training images/s at batch 64 (trainer step, batches on the GPU)")
    for column in ("model", "input", "fp32", "fp32 NHWC", "bf16", "bf16 NHWC", "fp16", "fp16 NHWC"):
        training.add_column(column, justify="right")
    rows: dict[str, dict[str, float]] = {}
    for entry in figures["training"]:
        key = entry["precision"].split(" (")[0].replace("amp ", "") + (" NHWC" if entry["channels_last"] else "")
        rows.setdefault(f"{entry['model']}|{entry['input'][0]}x{entry['input'][1]}", {})[key] = entry["images_per_s"]
    for model_input, rates in rows.items():
        model, size = model_input.split("|")
        training.add_row(model, size, *(f"{rates.get(k, float('nan')):.0f}" for k in (
            "fp32", "fp32 NHWC", "bf16", "bf16 NHWC", "fp16", "fp16 NHWC")))
    console.print(training)
    loader = figures["loader"]
    console.print(f"loader: {loader['loader_images_per_s']:.0f} images/s decoded and augmented with "
                  f"{loader['workers']} workers at {loader['input'][0]}x{loader['input'][1]}")
