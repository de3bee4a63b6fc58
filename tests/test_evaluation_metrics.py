"""evaluate() against a plain per-query oracle, on random problems and on edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.evaluation import compute_distance, evaluate


def oracle(dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, protocol="market", ap="standard"):
    """One query at a time: sort by (distance, index), drop junk, walk the ranking."""
    cmc_hits, aps, inps, first = [], [], [], []
    for i in range(len(q_pids)):
        order = sorted(range(len(g_pids)), key=lambda j: (dist[i][j], j))
        kept = [j for j in order
                if not (protocol == "market" and g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        good = [g_pids[j] == q_pids[i] for j in kept]
        if not any(good):
            first.append(-1)
            continue
        positions = [r for r, is_good in enumerate(good) if is_good]
        first.append(positions[0])
        cmc_hits.append(positions[0])
        total = 0.0
        for k, r in enumerate(positions):
            precision = (k + 1) / (r + 1)
            if ap == "standard":
                total += precision
            else:
                previous = k / r if r > 0 else 1.0
                total += (previous + precision) / 2
        aps.append(total / len(positions))
        inps.append(len(positions) / (positions[-1] + 1))
    n = len(aps)
    cmc = np.array([sum(h <= r for h in cmc_hits) / n for r in range(max_rank)]) if n else None
    return {"cmc": cmc, "mAP": np.mean(aps) if n else None, "mINP": np.mean(inps) if n else None,
            "n": n, "first": np.array(first)}


def random_problem(seed, num_q=30, num_g=120, ids=15, cams=3, quantize=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    dist = rng.random((num_q, num_g))
    if quantize:
        dist = np.round(dist * quantize) / quantize  # many exact ties
    return (dist.astype(dtype), rng.integers(0, ids, num_q), rng.integers(0, ids, num_g),
            rng.integers(0, cams, num_q), rng.integers(0, cams, num_g))


def assert_matches(problem, **kwargs):
    result = evaluate(*problem, **kwargs)
    expected = oracle(*problem, **kwargs)
    assert result.num_valid_queries == expected["n"]
    assert result.num_skipped_queries == len(problem[1]) - expected["n"]
    np.testing.assert_allclose(result.cmc, expected["cmc"], atol=1e-12)
    assert result.mAP == pytest.approx(expected["mAP"], abs=1e-12)
    assert result.mINP == pytest.approx(expected["mINP"], abs=1e-12)
    np.testing.assert_array_equal(result.first_hit, expected["first"])
    assert np.isnan(result.ap[result.first_hit < 0]).all()
    return result


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ap", ["standard", "matlab"])
def test_random_problems_match_oracle(seed, ap):
    assert_matches(random_problem(seed), ap=ap)


@pytest.mark.parametrize("protocol", ["market", "partial"])
def test_ties_are_broken_by_gallery_index(protocol):
    for seed in range(4):
        assert_matches(random_problem(seed, quantize=4), protocol=protocol)
    # hand-made: positive at index 2 ties with negatives at 0 and 3 -> rank 1 (after index 0)
    dist = np.array([[0.5, 0.9, 0.5, 0.5]])
    result = evaluate(dist, [1], [2, 3, 1, 4], [0], [1, 1, 1, 1])
    assert result.first_hit[0] == 1
    assert result.mAP == pytest.approx(0.5)


def test_all_ties_give_index_order():
    dist = np.zeros((1, 5))
    result = evaluate(dist, [7], [1, 7, 2, 7, 3], [0], [1, 1, 1, 1, 1])
    # ranking is the gallery order: positives at ranks 1 and 3 (0-based)
    assert result.first_hit[0] == 1
    assert result.mAP == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert result.mINP == pytest.approx(2 / 4)


def test_float32_and_tensor_inputs_agree_with_float64():
    dist, qp, gp, qc, gc = random_problem(11, num_q=50, num_g=300)
    exact = evaluate(dist, qp, gp, qc, gc)
    as32 = assert_matches((dist.astype(np.float32), qp, gp, qc, gc))
    tensors = evaluate(torch.from_numpy(dist), torch.from_numpy(qp), torch.from_numpy(gp),
                       torch.from_numpy(qc), torch.from_numpy(gc))
    assert tensors.mAP == exact.mAP
    assert as32.mAP == pytest.approx(exact.mAP, abs=1e-6)


def test_market_protocol_removes_same_id_same_camera_and_skips_queries():
    # query 0: its only same-id items are in its own camera -> skipped
    # query 1: the same-camera same-id item is closest but removed; the positive ranks first
    dist = np.array([[0.1, 0.2, 0.3, 0.4],
                     [0.2, 0.1, 0.9, 0.3]])
    g_pids = np.array([5, 6, 5, 6])
    g_cams = np.array([0, 0, 0, 1])
    result = evaluate(dist, [5, 6], g_pids, [0, 0], g_cams)
    assert result.num_skipped_queries == 1 and result.num_valid_queries == 1
    assert result.first_hit.tolist() == [-1, 1]  # index 0 (id 5) ranks before the positive
    partial = evaluate(dist, [5, 6], g_pids, [0, 0], g_cams, protocol="partial")
    assert partial.num_valid_queries == 2
    assert partial.first_hit.tolist() == [0, 0]


def test_gallery_all_junk_for_a_query_is_skipped_not_counted():
    dist = np.array([[0.1, 0.2], [0.3, 0.1]])
    result = evaluate(dist, [1, 2], [1, 2], [0, 0], [0, 1])
    assert result.num_skipped_queries == 1
    assert result.mAP == 1.0 and result.cmc[0] == 1.0


def test_single_gallery_item():
    result = evaluate(np.array([[0.4]]), [3], [3], [0], [1], max_rank=5)
    assert result.cmc.tolist() == [1.0] * 5
    assert result.mAP == 1.0 and result.mINP == 1.0


def test_distractor_id_zero_counts_as_a_negative():
    dist = np.array([[0.1, 0.2, 0.3]])
    result = evaluate(dist, [4], [0, 4, 0], [0], [1, 1, 1])
    assert result.first_hit[0] == 1
    assert result.mAP == pytest.approx(0.5)


def test_matlab_trapezoid_ap_values():
    # positives at ranks 0 and 2: standard AP = (1 + 2/3) / 2; trapezoid = ((1+1)/2 + (1/2+2/3)/2) / 2
    dist = np.array([[0.1, 0.2, 0.3]])
    args = (dist, [1], [1, 2, 1], [0], [1, 1, 1])
    assert evaluate(*args).mAP == pytest.approx((1 + 2 / 3) / 2)
    assert evaluate(*args, ap="matlab").mAP == pytest.approx((1.0 + (0.5 + 2 / 3) / 2) / 2)


def test_cmc_has_max_rank_entries_and_is_monotone():
    problem = random_problem(3, num_g=20)
    result = evaluate(*problem, max_rank=50)
    assert len(result.cmc) == 50
    assert np.all(np.diff(result.cmc) >= 0) and result.cmc[-1] == 1.0
    assert result.rank(1) == result.cmc[0]


def test_realistic_features_end_to_end():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    qp, gp = rng.integers(0, 20, 40), np.concatenate([np.arange(20), rng.integers(0, 20, 160)])
    qf = centres[qp] + 0.8 * rng.normal(size=(40, 32))
    gf = centres[gp] + 0.8 * rng.normal(size=(180, 32))
    qc, gc = rng.integers(0, 4, 40), rng.integers(0, 4, 180)
    dist = compute_distance(qf, gf).numpy()
    result = assert_matches((dist, qp, gp, qc, gc))
    assert result.mAP > 0.5  # features carry identity


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: {**a, "q_pids": a["q_pids"][:-1]}, "q_pids: expected length"),
        (lambda a: {**a, "g_camids": a["g_camids"][:-1]}, "g_camids: expected length"),
        (lambda a: {**a, "distmat": np.where(np.eye(*a["distmat"].shape) > 0, np.nan, a["distmat"])},
         "distmat: expected finite"),
        (lambda a: {**a, "distmat": np.full_like(a["distmat"], np.inf)}, "distmat: expected finite"),
        (lambda a: {**a, "distmat": np.zeros((0, 4)), "q_pids": [], "q_camids": []},
         "empty query set"),
        (lambda a: {**a, "distmat": a["distmat"][0]}, "distmat: expected a 2-D"),
        (lambda a: {**a, "protocol": "cuhk"}, "protocol: expected one of"),
        (lambda a: {**a, "ap": "11point"}, "ap: expected one of"),
        (lambda a: {**a, "q_pids": np.array([100, 101, 102])}, "no query has a positive"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(mutate, message):
    base = {"distmat": np.random.default_rng(0).random((3, 4)), "q_pids": np.array([1, 2, 1]),
            "g_pids": np.array([1, 2, 1, 2]), "q_camids": np.zeros(3, int),
            "g_camids": np.ones(4, int)}
    with pytest.raises(ValueError, match=message):
        evaluate(**mutate(base))


def test_compute_distance_metrics():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    euclid = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    np.testing.assert_allclose(compute_distance(q, g).numpy(), euclid, atol=1e-9)
    np.testing.assert_allclose(compute_distance(q, g, "sqeuclidean", chunk_rows=2).numpy(),
                               euclid**2, atol=1e-9)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(compute_distance(q, g, "cosine").numpy(), 1 - qn @ gn.T, atol=1e-9)
    np.testing.assert_allclose(compute_distance(q, g, normalize=True).numpy(),
                               np.sqrt(((qn[:, None] - gn[None]) ** 2).sum(-1)), atol=1e-7)
    assert compute_distance(q.astype(np.float32), g.astype(np.float32)).dtype == torch.float32
    with pytest.raises(ValueError, match="metric"):
        compute_distance(q, g, "manhattan")
    with pytest.raises(ValueError, match="gallery: expected feature dimension 5"):
        compute_distance(q, g[:, :3])
    with pytest.raises(ValueError, match="query: expected finite"):
        compute_distance(np.full((2, 5), np.nan), g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compute_distance_on_cuda_matches_cpu():
    q, g = torch.randn(100, 64), torch.randn(300, 64)
    gpu = compute_distance(q.cuda(), g.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), compute_distance(q, g), atol=1e-4, rtol=1e-4)
