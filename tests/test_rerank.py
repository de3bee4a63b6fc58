"""Sparse re-ranking against the dense, straightforward formulation (<= 2,000 items, 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.evaluation import compute_distance, evaluate, rerank, rerank_features
from reidbench.evaluation.neighbours import NeighbourState, smallest_k
from reidbench.evaluation.reference import rerank_dense, rerank_features_rowwise, rerank_rowwise


def features(seed, num_q, num_g, ids, dim=24, noise=0.9):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, dim))
    qp = rng.integers(0, ids, num_q)
    gp = np.concatenate([np.arange(ids), rng.integers(0, ids, num_g - ids)])
    qf = (centres[qp] + noise * rng.normal(size=(num_q, dim))).astype(np.float32)
    gf = (centres[gp] + noise * rng.normal(size=(num_g, dim))).astype(np.float32)
    return qf, gf, qp, gp, rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)


def matrices(qf, gf, metric="euclidean"):
    return tuple(compute_distance(a, b, metric).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf)))


@pytest.mark.parametrize(
    "seed, num_q, num_g, k1, k2, lam",
    [
        (0, 40, 200, 20, 6, 0.3),
        (1, 100, 500, 20, 6, 0.3),
        (2, 60, 300, 10, 3, 0.5),
        (3, 50, 250, 7, 1, 0.3),  # no query expansion; odd k1 (round-half-even radius)
        (4, 30, 150, 20, 6, 0.0),
        (5, 30, 150, 5, 2, 1.0),
    ],
)
def test_rerank_matches_dense_formulation(seed, num_q, num_g, k1, k2, lam):
    qf, gf, *_ = features(seed, num_q, num_g, ids=num_g // 6)
    q_g, q_q, g_g = matrices(qf, gf)
    expected = rerank_dense(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    got = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (num_q, num_g) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_rerank_at_2000_items_matches_dense():
    qf, gf, *_ = features(7, 350, 1650, ids=300, dim=64)
    q_g, q_q, g_g = matrices(qf, gf)
    np.testing.assert_allclose(rerank(q_g, q_q, g_g).numpy(), rerank_dense(q_g, q_q, g_g), atol=1e-5)


def test_lambda_one_is_the_row_normalised_squared_distance():
    qf, gf, *_ = features(3, 20, 80, ids=10)
    q_g, q_q, g_g = matrices(qf, gf)
    got = rerank(q_g, q_q, g_g, k1=5, k2=2, lambda_value=1.0).numpy()
    row_max = np.maximum(q_q.max(axis=0), q_g.max(axis=1))  # max of column i of the combined matrix
    np.testing.assert_allclose(got, q_g**2 / row_max[:, None] ** 2, rtol=1e-5)


@pytest.mark.parametrize("metric, normalize", [("euclidean", False), ("cosine", False),
                                               ("euclidean", True), ("sqeuclidean", False)])
def test_rerank_features_equals_rerank_of_distance_matrices(metric, normalize):
    qf, gf, *_ = features(5, 80, 400, ids=60)
    q = compute_distance(qf, gf, metric, normalize).numpy()
    qq = compute_distance(qf, qf, metric, normalize).numpy()
    gg = compute_distance(gf, gf, metric, normalize).numpy()
    expected = rerank_dense(q, qq, gg)
    got = rerank_features(qf, gf, metric=metric, normalize=normalize)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_rerank_features_in_small_chunks(monkeypatch):
    import sys

    module = sys.modules["reidbench.evaluation.rerank"]  # the package re-exports a function of that name
    neighbours = sys.modules["reidbench.evaluation.neighbours"]

    qf, gf, *_ = features(9, 70, 330, ids=50)
    whole = rerank_features(qf, gf).numpy()
    # blocks of 17 items: pairs of blocks straddle the query/gallery boundary, the last one is partial
    monkeypatch.setattr(module, "PAIR_BLOCK", 17)
    monkeypatch.setattr(neighbours, "COLUMN_GROUP", 5)
    np.testing.assert_allclose(rerank_features(qf, gf).numpy(), whole, atol=1e-6)


def test_rerank_features_at_2000_items_matches_dense():
    qf, gf, *_ = features(8, 350, 1650, ids=300, dim=64)
    np.testing.assert_allclose(rerank_features(qf, gf).numpy(), rerank_dense(*matrices(qf, gf)), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_neighbour_kernels_select_like_a_stable_sort(seed):
    rng = np.random.default_rng(seed)
    block = np.round(rng.random((70, 130)) * 12).astype(np.float32)  # every row full of exact ties
    k = 21
    by_rows = NeighbourState(70, k)
    by_rows.scan_rows(block[:, 60:], 0, 60)  # any order of the pieces
    by_rows.scan_rows(block[:, :60], 0, 0)
    np.testing.assert_array_equal(by_rows.index, np.argsort(block, axis=1, kind="stable")[:, :k])
    np.testing.assert_array_equal(by_rows.maximum, block.max(axis=1))
    by_columns = NeighbourState(130, k)
    by_columns.scan_columns(block[:33], 0, 0)
    by_columns.scan_columns(block[33:], 0, 33)
    np.testing.assert_array_equal(by_columns.index, np.argsort(block.T, axis=1, kind="stable")[:, :k])
    values, index = smallest_k(torch.from_numpy(block), k)
    np.testing.assert_array_equal(index.numpy(), np.argsort(block, axis=1, kind="stable")[:, :k])
    assert not by_rows.bad.any() and not by_columns.bad.any()
    block[5, 7] = np.nan
    block[9, 3] = -1.0
    flagged = NeighbourState(70, k)
    flagged.scan_rows(block, 0, 0)
    assert np.flatnonzero(flagged.bad).tolist() == [5, 9]


def test_rowwise_baseline_gives_the_same_result():
    # the benchmark's baseline must compute the same thing for its ratios to mean anything
    qf, gf, *_ = features(6, 60, 240, ids=40)
    np.testing.assert_allclose(rerank_rowwise(*matrices(qf, gf)), rerank(*matrices(qf, gf)).numpy(), atol=1e-6)
    np.testing.assert_allclose(rerank_features_rowwise(torch.from_numpy(qf), torch.from_numpy(gf)),
                               rerank_features(qf, gf).numpy(), atol=1e-6)


def test_rerank_improves_map_on_structured_data():
    qf, gf, qp, gp, qc, gc = features(11, 150, 900, ids=150, dim=32, noise=1.3)
    plain = evaluate(compute_distance(qf, gf), qp, gp, qc, gc)
    reranked = evaluate(rerank_features(qf, gf), qp, gp, qc, gc)
    assert reranked.mAP > plain.mAP


def test_rerank_accepts_a_sum_of_distances():
    # AlignedReID++ ranks by global + local distance: any non-negative matrix is accepted.
    qf, gf, *_ = features(2, 30, 120, ids=20)
    q_g, q_q, g_g = matrices(qf, gf)
    local = tuple(np.abs(np.random.default_rng(0).normal(size=m.shape)).astype(np.float32)
                  for m in (q_g, q_q, g_g))
    local = (local[0], (local[1] + local[1].T) / 2, (local[2] + local[2].T) / 2)
    combined = tuple(a + b for a, b in zip((q_g, q_q, g_g), local, strict=True))
    np.testing.assert_allclose(rerank(*combined).numpy(), rerank_dense(*combined), atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"q_q": np.zeros((3, 4))}, "q_q: expected a square"),
        ({"g_g": np.zeros((5, 6))}, "g_g: expected a square"),
        ({"q_g": np.full((3, 6), np.nan)}, "q_g: expected finite"),
        ({"q_g": -np.ones((3, 6))}, "non-negative"),
        ({"k1": 0}, "k1: expected a positive integer"),
        ({"lambda_value": 1.5}, r"lambda_value: expected a value in \[0, 1\]"),
        ({"k1": 20}, "k1: expected k1 \\+ 1 and k2 <= the number of items"),
    ],
)
def test_rerank_bad_input(args, message):
    rng = np.random.default_rng(0)
    base = {"q_g": rng.random((3, 6)), "q_q": rng.random((3, 3)), "g_g": rng.random((6, 6)),
            "k1": 3, "k2": 2}
    with pytest.raises(ValueError, match=message):
        rerank(**{**base, **args})
