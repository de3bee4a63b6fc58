"""`reidbench bench rerank`: exact CPU re-ranking against the previous row-wise implementation, in one process.

Full Market size (3,368 + 15,913) runs ``rerank`` from the three distance matrices; MSMT17 size
(11,659 + 82,161, 2048-d features) runs ``rerank_features``. Each is timed with its peak extra memory beside
the row-wise baseline (``evaluation.reference``) on the same inputs, and the two results are compared.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import torch

from reidbench.bench.evaluation import MARKET_SIZE, synthetic_problem
from reidbench.bench.memory import measure_peak
from reidbench.evaluation import compute_distance, evaluate, rerank, rerank_features
from reidbench.evaluation.reference import rerank_features_rowwise, rerank_rowwise

MSMT17_SIZE = {"num_query": 11659, "num_gallery": 82161, "num_ids": 3060, "num_cams": 15}
SIZES = {"market": MARKET_SIZE, "msmt17": MSMT17_SIZE}
FEATURE_DIM = {"market": 256, "msmt17": 2048}
# The goals on 2 CPU cores: seconds and GiB of peak extra memory
GOALS = {"market": {"seconds": 2.5}, "msmt17": {"seconds": 150.0, "peak_gib": 6.0}}
COMPARED_ROWS = 256  # rows of the two results kept to compare them


def scaled(size: dict[str, int], fraction: float) -> dict[str, int]:
    """A problem ``fraction`` of the size (identities and items scaled, at least a handful of each)."""
    return {"num_query": max(8, round(size["num_query"] * fraction)),
            "num_gallery": max(40, round(size["num_gallery"] * fraction)),
            "num_ids": max(4, round(size["num_ids"] * fraction)), "num_cams": size["num_cams"]}


def _run(fn: Any) -> dict[str, Any]:
    gc.collect()
    result, seconds, peak = measure_peak(fn)
    result = result.numpy() if isinstance(result, torch.Tensor) else result
    return {"result": result, "seconds": seconds, "peak_gib": peak / 2**30}


def run_rerank_benchmark(sizes: tuple[str, ...] = ("market", "msmt17"), fraction: float = 1.0,
                         baseline: bool = True, seed: int = 0) -> dict[str, Any]:
    figures: dict[str, Any] = {"threads": torch.get_num_threads(), "fraction": fraction}
    for name in sizes:
        size = scaled(SIZES[name], fraction)
        problem = synthetic_problem(**size, dim=FEATURE_DIM[name], seed=seed)
        labels = (problem.q_pids, problem.g_pids, problem.q_camids, problem.g_camids)
        if name == "market":
            matrices = tuple(compute_distance(a, b).numpy() for a, b in (
                (problem.query, problem.gallery), (problem.query, problem.query), (problem.gallery, problem.gallery)))
            what = "rerank(q_g, q_q, g_g)"

            def ours(m: tuple = matrices) -> Any:
                return rerank(*m)

            def theirs(m: tuple = matrices) -> Any:
                return rerank_rowwise(*m)
            warm = (matrices[0][:20, :80], matrices[1][:20, :20], matrices[2][:80, :80])
            rerank(*warm), rerank_rowwise(*warm)  # compile / load the kernels outside the timings
        else:
            what = f"rerank_features, {problem.query.shape[1]}-d"

            def ours(p: Any = problem) -> Any:
                return rerank_features(p.query, p.gallery)

            def theirs(p: Any = problem) -> Any:
                return rerank_features_rowwise(p.query, p.gallery)
            rerank_features(problem.query[:20], problem.gallery[:80])
            rerank_features_rowwise(problem.query[:20], problem.gallery[:80])
        entry: dict[str, Any] = {"what": what, "items": f"{size['num_query']} + {size['num_gallery']}"}
        run = _run(ours)
        entry.update(seconds=run["seconds"], peak_gib=run["peak_gib"], mAP=evaluate(run["result"], *labels).mAP)
        kept = run.pop("result")[:COMPARED_ROWS].copy()
        if baseline:
            old = _run(theirs)
            entry.update(baseline_seconds=old["seconds"], baseline_peak_gib=old["peak_gib"],
                         speedup=old["seconds"] / run["seconds"],
                         max_abs_difference=float(np.abs(old["result"][:COMPARED_ROWS] - kept).max()),
                         baseline_mAP=evaluate(old["result"], *labels).mAP)
            del old
        if fraction == 1.0:
            goal = GOALS[name]
            entry["goal"] = goal
            entry["meets_goal"] = bool(entry["seconds"] <= goal["seconds"]
                                       and entry["peak_gib"] <= goal.get("peak_gib", float("inf")))
        figures[name] = entry
        del problem, run, kept
    return figures
