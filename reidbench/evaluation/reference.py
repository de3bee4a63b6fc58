"""Slow, dense, straightforward implementations kept as baselines for benchmarks and checks.

These follow the published algorithms step by step with dense matrices and per-item loops. They
are the yardstick the fast implementations are measured against, not something to call on real
data: the dense re-ranking needs O((Q+G)^2) memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from reidbench.evaluation.distance import compute_distance, distance_block
from reidbench.evaluation.neighbours import smallest_k
from reidbench.evaluation.rerank import ROW_CHUNK, _DenseRows, _FeatureRows, _final_distance, _v_matrix


def evaluate_argsort(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> dict[str, float]:
    """Market protocol by sorting every query's gallery (stable argsort); returns CMC/mAP/mINP."""
    order = np.argsort(distmat, axis=1, kind="stable")
    matches = g_pids[order] == q_pids[:, None]
    keep = ~((g_pids[order] == q_pids[:, None]) & (g_camids[order] == q_camids[:, None]))
    cmc_sum = np.zeros(max_rank)
    aps, inps = [], []
    for i in range(distmat.shape[0]):
        hits = matches[i][keep[i]]
        if not hits.any():
            continue
        positions = np.flatnonzero(hits)
        curve = np.zeros(max_rank)
        if positions[0] < max_rank:
            curve[positions[0] :] = 1
        cmc_sum += curve
        aps.append(np.mean(np.arange(1, len(positions) + 1) / (positions + 1)))
        inps.append(len(positions) / (positions[-1] + 1))
    n = len(aps)
    return {"cmc": cmc_sum / n, "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps)), "n": n}


def _reciprocal(ranks: np.ndarray, item: int, k: int) -> np.ndarray:
    forward = ranks[item, : k + 1]
    backward = ranks[forward, : k + 1]
    return forward[np.any(backward == item, axis=1)]


def rerank_dense(
    q_g: np.ndarray,
    q_q: np.ndarray,
    g_g: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) on the dense (Q+G) x (Q+G) matrix."""
    nq = q_g.shape[0]
    top = np.concatenate([q_q, q_g], axis=1)
    bottom = np.concatenate([q_g.T, g_g], axis=1)
    original = np.concatenate([top, bottom], axis=0).astype(np.float32) ** 2
    original = (original / original.max(axis=0)).T  # row i scaled by the max of column i
    n = original.shape[0]
    ranks = np.argsort(original, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n), np.float32)
    for i in range(n):
        recip = _reciprocal(ranks, i, k1)
        expanded = [recip]
        for candidate in recip:
            cand = _reciprocal(ranks, candidate, half)
            if len(np.intersect1d(cand, recip)) > 2.0 / 3.0 * len(cand):
                expanded.append(cand)
        members = np.unique(np.concatenate(expanded))
        weight = np.exp(-original[i, members])
        v[i, members] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[ranks[i, :k2]].mean(axis=0) for i in range(n)])
    jaccard = np.zeros((nq, n), np.float32)
    for i in range(nq):
        shared = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1.0 - shared / (2.0 - shared)
    final = jaccard * (1 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:]


def _rowwise_rerank(source: Any, rows: Any, k1: int, k2: int, lambda_value: float,
                    original: Callable[[], np.ndarray]) -> np.ndarray:
    """The sparse re-ranking as reidbench computed it before its CPU k-NN kernels (the speed baseline of
    `reidbench bench rerank`): every row of the working matrix materialised block by block (transposed
    copies from matrices, full products from features), ``torch.topk`` on each, and the query-gallery
    distances fetched again for the final combination. Same result as :func:`rerank`."""
    n = source.num_query + source.num_gallery
    k = max(k1 + 1, k2)
    ranks = np.empty((n, k), np.int64)
    maxima = np.empty(n, np.float32)
    for start, block in rows:
        stop = start + block.shape[0]
        ranks[start:stop] = smallest_k(block, k)[1].numpy()
        maxima[start:stop] = block.max(dim=1).values.numpy()
    col_max_sq = maxima.astype(np.float64) ** 2
    v = _v_matrix(source, ranks, col_max_sq, k1, k2, on_cpu=False)  # features gathered as before
    gallery_columns = v[source.num_query:].tocsc()
    gallery_columns.sort_indices()
    out = np.empty((source.num_query, source.num_gallery), np.float32)
    _final_distance(out, original(), v.indptr, v.indices, v.data, gallery_columns.indptr,
                    gallery_columns.indices, gallery_columns.data, col_max_sq, float(lambda_value))
    return out


def rerank_rowwise(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
                   lambda_value: float = 0.3) -> np.ndarray:
    """:func:`rerank` by the row-wise baseline (float32 matrices)."""
    source = _DenseRows(*(torch.from_numpy(np.ascontiguousarray(m, np.float32)) for m in (q_g, q_q, g_g)))
    rows = ((start, block.contiguous()) for start, block in source.rows(ROW_CHUNK))
    return _rowwise_rerank(source, rows, k1, k2, lambda_value, lambda: source.q_g.numpy())


def rerank_features_rowwise(query: torch.Tensor, gallery: torch.Tensor, metric: str = "euclidean", k1: int = 20,
                            k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """:func:`rerank_features` by the row-wise baseline (float32 features, CPU)."""
    source = _FeatureRows(query.float(), gallery.float(), metric)
    everything = torch.cat([source.query, source.gallery])

    def rows() -> Any:
        for start in range(0, everything.shape[0], ROW_CHUNK):
            block = everything[start : start + ROW_CHUNK]
            yield start, distance_block(block, everything, source.sqnorm, metric).float()

    def original() -> np.ndarray:
        return compute_distance(source.query, source.gallery, metric).numpy()

    return _rowwise_rerank(source, rows(), k1, k2, lambda_value, original)
