"""`reidbench bench eval`: evaluation and re-ranking speed on a synthetic Market-size problem."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reidbench.bench.memory import measure_peak
from reidbench.evaluation import compute_distance, evaluate, rerank
from reidbench.evaluation.reference import evaluate_argsort, rerank_dense

MARKET_SIZE = {"num_query": 3368, "num_gallery": 15913, "num_ids": 751, "num_cams": 6}


@dataclass
class SyntheticProblem:
    query: torch.Tensor
    gallery: torch.Tensor
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray


def synthetic_problem(
    num_query: int, num_gallery: int, num_ids: int, num_cams: int, dim: int = 256,
    noise: float = 1.5, seed: int = 0,
) -> SyntheticProblem:
    """Features of a ReID-like problem: identity centres, a per-camera shift, per-image noise.

    Every query identity appears in the gallery, as in Market-1501, and ids are spread over
    cameras so that the Market protocol has same-camera matches to remove.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim)).astype(np.float32)
    cam_shift = 0.4 * rng.normal(size=(num_cams, dim)).astype(np.float32)
    g_pids = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, num_gallery - num_ids)])
    q_pids = rng.integers(0, num_ids, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)

    def features(pids: np.ndarray, cams: np.ndarray) -> torch.Tensor:
        noise_term = noise * rng.normal(size=(len(pids), dim)).astype(np.float32)
        return torch.from_numpy(centres[pids] + cam_shift[cams] + noise_term)

    return SyntheticProblem(
        features(q_pids, q_cams), features(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams
    )


def _median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_eval_benchmark(
    repeats: int = 5, baseline_repeats: int = 1, rerank_baseline_size: int = 2000, seed: int = 0,
    num_query: int = MARKET_SIZE["num_query"], num_gallery: int = MARKET_SIZE["num_gallery"],
) -> dict[str, Any]:
    """Time evaluate vs a numpy argsort evaluator, and rerank (time, peak extra memory).

    Everything runs in this process on the same inputs; ratios compare like with like. The dense
    published re-ranking needs ~7 GB at full Market size, so it is compared at a subset size.
    """
    problem = synthetic_problem(num_query, num_gallery, MARKET_SIZE["num_ids"],
                                MARKET_SIZE["num_cams"], seed=seed)
    args = (problem.q_pids, problem.g_pids, problem.q_camids, problem.g_camids)
    q_g = compute_distance(problem.query, problem.gallery).numpy()
    # Warm up (numba compiles on first use, or loads its cache) on the first 8 queries.
    evaluate(q_g[:8], problem.q_pids[:8], problem.g_pids, problem.q_camids[:8], problem.g_camids)
    figures: dict[str, Any] = {
        "problem": f"{num_query} x {num_gallery}, {MARKET_SIZE['num_ids']} ids, "
                   f"{MARKET_SIZE['num_cams']} cameras, float32",
        "threads": torch.get_num_threads(),
    }
    fast_time, fast = _median_time(lambda: evaluate(q_g, *args), repeats)
    base_time, base = _median_time(lambda: evaluate_argsort(q_g, *args), baseline_repeats)
    figures["evaluate_s"] = fast_time
    figures["numpy_argsort_evaluate_s"] = base_time
    figures["evaluate_speedup"] = base_time / fast_time
    figures["mAP"] = fast.mAP
    figures["mAP_agrees_with_baseline"] = bool(abs(fast.mAP - base["mAP"]) < 1e-9)
    rng = np.random.default_rng(seed)
    # Uniform random distances put the hardest positive far away for every query: the worst case.
    worst = rng.random(q_g.shape, dtype=np.float32)
    figures["evaluate_random_distances_s"], _ = _median_time(
        lambda: evaluate(worst, *args), repeats
    )

    q_q = compute_distance(problem.query, problem.query).numpy()
    g_g = compute_distance(problem.gallery, problem.gallery).numpy()
    small_q, small_g = _subset_sizes(rerank_baseline_size, num_query, num_gallery)
    sub = (q_g[:small_q, :small_g], q_q[:small_q, :small_q], g_g[:small_g, :small_g])
    rerank(*sub)  # compile/warm up
    gc.collect()
    _, rerank_time, rerank_memory = measure_peak(lambda: rerank(q_g, q_q, g_g))
    figures["rerank_s"] = rerank_time
    figures["rerank_peak_extra_gib"] = rerank_memory / 2**30
    small_fast, _ = _median_time(lambda: rerank(*sub), 1)
    small_dense, _ = _median_time(lambda: rerank_dense(*sub), 1)
    figures["rerank_subset"] = f"{small_q} + {small_g}"
    figures["rerank_subset_s"] = small_fast
    figures["dense_rerank_subset_s"] = small_dense
    figures["rerank_subset_speedup"] = small_dense / small_fast
    return figures


def _subset_sizes(total: int, num_query: int, num_gallery: int) -> tuple[int, int]:
    share = num_query / (num_query + num_gallery)
    small_q = max(1, min(num_query, round(total * share)))
    return small_q, max(1, min(num_gallery, total - small_q))
