"""The device code of evaluate / compute_distance / rerank / rerank_features against the CPU reference.

Every test runs the device implementation with ``device="cpu"`` (always) and on CUDA when a GPU is present:
same ranks and first hits, metrics to float64 rounding, distances and re-ranked distances within 1e-5.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from reidbench.evaluation import compute_distance, evaluate, rerank, rerank_features
from reidbench.evaluation.reference import rerank_dense
from tests.test_evaluation_metrics import random_problem
from tests.test_rerank import features, matrices

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs CUDA"))]
rerank_module = sys.modules["reidbench.evaluation.rerank"]  # the package re-exports a function of that name
metrics_module = sys.modules["reidbench.evaluation.metrics"]


def assert_same_result(got, expected):
    np.testing.assert_array_equal(got.first_hit, expected.first_hit)
    np.testing.assert_allclose(got.cmc, expected.cmc, atol=1e-12)
    np.testing.assert_allclose(got.ap, expected.ap, atol=1e-12)  # NaN where skipped, on both sides
    np.testing.assert_allclose(got.inp, expected.inp, atol=1e-12)
    assert got.mAP == pytest.approx(expected.mAP, abs=1e-12)
    assert got.mINP == pytest.approx(expected.mINP, abs=1e-12)
    assert got.num_skipped_queries == expected.num_skipped_queries


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("protocol", ["market", "partial"])
@pytest.mark.parametrize("ap", ["standard", "matlab"])
def test_device_evaluate_matches_cpu_kernel_with_ties(device, protocol, ap, monkeypatch):
    monkeypatch.setattr(metrics_module, "DEVICE_CPU_ROWS", 7)  # several blocks of queries
    for seed in range(3):
        problem = random_problem(seed, num_q=40, num_g=150, quantize=5 if seed else None)  # exact ties
        expected = evaluate(*problem, protocol=protocol, ap=ap)
        assert_same_result(evaluate(*problem, protocol=protocol, ap=ap, device=device), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_device_evaluate_reads_tensors_in_place_and_counts_skipped_queries(device):
    dist, qp, gp, qc, gc = random_problem(4, num_q=30, num_g=90, ids=40)
    qp[:3] = 999  # queries without any gallery match
    expected = evaluate(dist, qp, gp, qc, gc)
    got = evaluate(torch.from_numpy(dist).float().to(device), qp, gp, qc, gc, device=device)
    assert expected.num_skipped_queries >= 3
    np.testing.assert_array_equal(got.first_hit, evaluate(dist.astype(np.float32), qp, gp, qc, gc).first_hit)
    assert got.num_skipped_queries == expected.num_skipped_queries


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric, normalize", [("euclidean", False), ("sqeuclidean", False), ("cosine", False),
                                               ("euclidean", True)])
def test_device_distance_matches_cpu(device, metric, normalize):
    qf, gf, *_ = features(0, 50, 230, ids=40)
    expected = compute_distance(qf, gf, metric, normalize)
    got = compute_distance(qf, gf, metric, normalize, chunk_rows=9, device=device)
    assert got.device.type == device and got.dtype == torch.float32
    np.testing.assert_allclose(got.cpu().numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (7, 1, 0.5), (10, 3, 0.0)])
def test_device_rerank_matches_dense_reference(device, k1, k2, lam, monkeypatch):
    qf, gf, *_ = features(1, 60, 260, ids=45)
    q_g, q_q, g_g = matrices(qf, gf)
    expected = rerank_dense(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    monkeypatch.setattr(rerank_module, "ROW_CHUNK", 37)  # row blocks across the query/gallery boundary
    monkeypatch.setattr(rerank_module, "JACCARD_TRIPLES", 4000)  # many blocks of queries
    monkeypatch.setattr(rerank_module, "GATHER_BUDGET", 300)
    from_matrices = rerank(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam, device=device)
    from_features = rerank_features(qf, gf, k1=k1, k2=k2, lambda_value=lam, device=device)
    for got in (from_matrices, from_features):
        assert got.device.type == device and got.shape == (60, 260)
        np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_device_rerank_breaks_exact_ties_like_a_stable_sort(device):
    # L1 distances between points of a small grid: hundreds of exact ties in every row
    rng = np.random.default_rng(3)
    points = rng.integers(0, 6, size=(260, 3)).astype(np.float32)
    d = np.abs(points[:, None] - points[None]).sum(-1).astype(np.float32)
    q_g, q_q, g_g = d[:60, 60:], d[:60, :60], d[60:, 60:]
    expected = rerank_dense(q_g, q_q, g_g, k1=10, k2=3)
    np.testing.assert_allclose(rerank(q_g, q_q, g_g, k1=10, k2=3, device=device).cpu().numpy(), expected,
                               atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_device_rerank_refuses_what_the_cpu_path_refuses(device):
    q_g, q_q, g_g = (np.random.default_rng(0).random(shape) for shape in ((3, 6), (3, 3), (6, 6)))
    with pytest.raises(ValueError, match="q_g: expected finite"):
        rerank(np.full((3, 6), np.nan), q_q, g_g, k1=3, k2=2, device=device)
    with pytest.raises(ValueError, match="non-negative"):
        rerank(-q_g, q_q, g_g, k1=3, k2=2, device=device)


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="device: expected cpu, cuda or cuda:N"):
        compute_distance(np.ones((2, 3)), np.ones((4, 3)), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            evaluate(np.ones((2, 3)), [0, 1], [0, 1, 2], [0, 0], [1, 1, 1], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_stay_on_their_gpu_and_match_the_cpu():
    qf, gf, qp, gp, qc, gc = features(2, 120, 600, ids=100)
    q, g = torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda()
    dist = compute_distance(q, g)
    assert dist.is_cuda
    assert_same_result(evaluate(dist, qp, gp, qc, gc), evaluate(compute_distance(qf, gf), qp, gp, qc, gc))
    reranked = rerank_features(q, g)
    assert reranked.is_cuda
    np.testing.assert_allclose(reranked.cpu().numpy(), rerank_features(qf, gf).numpy(), atol=1e-5)
