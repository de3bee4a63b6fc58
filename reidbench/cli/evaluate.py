"""`reidbench evaluate FEATURES_FILE`: metrics from a features file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from reidbench.cli.app import app
from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.evaluation import AP_MODES, METRICS, PROTOCOLS
from reidbench.evaluation.features import evaluate_feature_set, load_features
from reidbench.recipes.schema import RerankSection


def _choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise UnknownNameError(f"{option} value", value, choices)
    return value


def _rerank_options(rerank: bool, k1: int | None, k2: int | None, lambda_value: float | None
                    ) -> tuple[int, int, float]:
    """--k1/--k2/--lambda-value only mean something with --rerank: refused without it, checked with it."""
    given = {"--k1": k1, "--k2": k2, "--lambda-value": lambda_value}
    if not rerank:
        named = [option for option, value in given.items() if value is not None]
        if named:
            raise ReidbenchError(f"{', '.join(named)}: re-ranking option{'s' if len(named) > 1 else ''} given "
                                 "without --rerank", hint="add --rerank, or drop " + " and ".join(named))
    default = RerankSection()
    k1 = default.k1 if k1 is None else k1
    k2 = default.k2 if k2 is None else k2
    lambda_value = default.lambda_value if lambda_value is None else lambda_value
    for option, ok, expected, value in (("--k1", k1 >= 1, "a positive integer", k1),
                                        ("--k2", k2 >= 1, "a positive integer", k2),
                                        ("--lambda-value", 0 <= lambda_value <= 1, "a number in [0, 1]", lambda_value)):
        if not ok:
            raise ReidbenchError(f"{option}: expected {expected}, got {value}")
    return k1, k2, lambda_value


@app.command("evaluate")
def evaluate_command(
    features_file: Path = typer.Argument(..., help="Features file (.pt or .npz) from `reidbench test`."),
    metric: str = typer.Option("euclidean", "--metric", help=f"Distance: {', '.join(METRICS)}."),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise features first."),
    rerank: bool = typer.Option(False, "--rerank", help="k-reciprocal re-ranking."),
    k1: int | None = typer.Option(None, "--k1", help="Re-ranking k1 (with --rerank; default 20)."),
    k2: int | None = typer.Option(None, "--k2", help="Re-ranking k2 (with --rerank; default 6)."),
    lambda_value: float | None = typer.Option(
        None, "--lambda-value", help="Re-ranking weight of the original distance (with --rerank; default 0.3)."),
    protocol: str | None = typer.Option(
        None, "--protocol", help="market or partial (default: the file's, else market)."
    ),
    ap: str = typer.Option("standard", "--ap", help="standard or matlab (trapezoid) AP."),
    local: bool = typer.Option(False, "--local", help="Add the DMLI local distance of the file's "
                               "query_local/gallery_local stripes (AlignedReID++ / AaP-ReID)."),
    device: str = typer.Option("cpu", "--device", help="cpu (compiled CPU kernels), auto, cuda or cuda:N "
                               "(distances, re-ranking and ranking on that GPU; the same numbers)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Compute R1/R5/R10, mAP and mINP from a features file."""
    from reidbench.engine.build import resolve_device
    from reidbench.engine.features import evaluation_device

    compute_on = evaluation_device(resolve_device(device))
    _choice(metric, METRICS, "--metric")
    _choice(ap, AP_MODES, "--ap")
    if protocol is not None:
        _choice(protocol, PROTOCOLS, "--protocol")
    k1, k2, lambda_value = _rerank_options(rerank, k1, k2, lambda_value)
    try:
        features = load_features(features_file)
        result = evaluate_feature_set(
            features, metric=metric, normalize=normalize, rerank=rerank, k1=k1, k2=k2,
            lambda_value=lambda_value, protocol=protocol, ap=ap, local=local, device=compute_on,
        )
    except ValueError as error:
        raise ReidbenchError(f"{features_file}: {error}" if str(features_file) not in str(error)
                             else str(error)) from error
    summary = result.summary()
    if as_json:
        record = {
            "file": str(features_file),
            **summary,
            "num_query": int(len(result.first_hit)),
            "num_valid_queries": result.num_valid_queries,
            "num_skipped_queries": result.num_skipped_queries,
            "protocol": result.protocol,
            "ap_mode": result.ap_mode,
            "device": compute_on or "cpu",
            **{k: v for k, v in result.settings.items() if k != "max_rank"},
            "meta": features.meta,
        }
        typer.echo(json.dumps(record))
        return
    rr = result.settings["rerank"]
    title = (f"{features_file.name}: {metric}{' normalised' if normalize else ''}"
             f"{' + DMLI local' if local else ''}, "
             f"{result.protocol} protocol, {ap} AP"
             + (f", re-ranked k1={rr['k1']} k2={rr['k2']} lambda_value={rr['lambda_value']}" if rr else ""))
    table = Table(title=title)
    for key in summary:
        table.add_column(key, justify="right")
    table.add_row(*(f"{100 * value:.2f}" for value in summary.values()))
    console = Console()
    console.print(table)
    console.print(
        f"{result.num_valid_queries} queries evaluated, {result.num_skipped_queries} skipped "
        "(no positive in the gallery); values in %"
    )
