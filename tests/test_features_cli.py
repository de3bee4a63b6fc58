"""Features files and `reidbench evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reidbench.evaluation import compute_distance, evaluate, rerank_features
from reidbench.evaluation.features import FeatureSet, load_features, save_features


def feature_set(seed=0, num_q=30, num_g=150, ids=25) -> FeatureSet:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ids, 16))
    qp = rng.integers(0, ids, num_q)
    gp = np.concatenate([np.arange(ids), rng.integers(0, ids, num_g - ids)])
    return FeatureSet(
        query_features=torch.from_numpy((centres[qp] + rng.normal(size=(num_q, 16))).astype(np.float32)),
        gallery_features=torch.from_numpy((centres[gp] + rng.normal(size=(num_g, 16))).astype(np.float32)),
        query_pids=qp, query_camids=rng.integers(0, 3, num_q),
        gallery_pids=gp, gallery_camids=rng.integers(0, 3, num_g),
        query_paths=[f"q/{i}.jpg" for i in range(num_q)],
        meta={"dataset": "synthetic-test", "synthetic": True},
    )


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_features_round_trip(tmp_path, suffix):
    original = feature_set()
    path = save_features(tmp_path / f"feats{suffix}", original)
    loaded = load_features(path)
    torch.testing.assert_close(loaded.query_features, original.query_features)
    np.testing.assert_array_equal(loaded.gallery_pids, original.gallery_pids)
    assert loaded.query_paths == original.query_paths and loaded.gallery_paths is None
    assert loaded.meta == original.meta and loaded.protocol == "market"
    assert [p.name for p in tmp_path.iterdir()] == [f"feats{suffix}"]  # no temporary left


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_cli_evaluate_json_matches_library(run_cli, tmp_path, suffix):
    fs = feature_set()
    path = save_features(tmp_path / f"f{suffix}", fs)
    code, out, _ = run_cli("evaluate", str(path), "--json")
    assert code == 0
    record = json.loads(out)
    expected = evaluate(compute_distance(fs.query_features, fs.gallery_features), fs.query_pids,
                        fs.gallery_pids, fs.query_camids, fs.gallery_camids)
    assert record["mAP"] == pytest.approx(expected.mAP)
    assert record["R1"] == pytest.approx(expected.rank(1))
    assert record["mINP"] == pytest.approx(expected.mINP)
    assert record["metric"] == "euclidean" and record["rerank"] is None
    assert record["meta"]["synthetic"] is True


def test_cli_evaluate_rerank_and_table(run_cli, tmp_path):
    fs = feature_set(1)
    path = save_features(tmp_path / "f.pt", fs)
    code, out, _ = run_cli("evaluate", str(path), "--rerank", "--k1", "10", "--k2", "3",
                           "--metric", "cosine", "--json")
    assert code == 0
    record = json.loads(out)
    expected = evaluate(rerank_features(fs.query_features, fs.gallery_features, "cosine", 10, 3),
                        fs.query_pids, fs.gallery_pids, fs.query_camids, fs.gallery_camids)
    assert record["mAP"] == pytest.approx(expected.mAP)
    assert record["rerank"] == {"k1": 10, "k2": 3, "lambda_value": 0.3}
    code, out, _ = run_cli("evaluate", str(path), "--normalize")
    assert code == 0
    assert "mAP" in out and "R10" in out and "queries evaluated" in out


def test_cli_evaluate_on_a_device_gives_the_same_numbers(run_cli, tmp_path):
    path = save_features(tmp_path / "f.pt", feature_set(2))
    records = {}
    for device in ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]:
        code, out, _ = run_cli("evaluate", str(path), "--rerank", "--k1", "8", "--k2", "3", "--device", device,
                               "--json")
        assert code == 0
        records[device] = json.loads(out)
        assert records[device]["device"].startswith(device)
    for record in records.values():
        assert record["mAP"] == pytest.approx(records["cpu"]["mAP"], abs=1e-6)
        assert record["R1"] == records["cpu"]["R1"]


@pytest.mark.parametrize("device, message", [("cuda:x", "expected cpu, cuda or cuda:N"),
                                             ("cuda:99", "CUDA")])
def test_cli_evaluate_bad_device_is_one_line(run_cli, tmp_path, device, message):
    path = save_features(tmp_path / "f.pt", feature_set())
    code, _, err = run_cli("evaluate", str(path), "--device", device)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and message in lines[0] and "--device" in lines[0]


def test_cli_evaluate_bad_file_is_one_line(run_cli, tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, query_features=np.zeros((2, 4), np.float32))
    code, _, err = run_cli("evaluate", str(path))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.npz" in lines[0] and "gallery_features" in lines[0]


def test_cli_evaluate_mismatched_lengths(run_cli, tmp_path):
    fs = feature_set()
    fs.query_pids = fs.query_pids[:-1]
    path = save_features(tmp_path / "bad.pt", fs)
    code, _, err = run_cli("evaluate", str(path))
    assert code == 2 and "query_pids: expected length 30" in err


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Leaderboards, features and checkpoints are readable like any file the user creates (not mkstemp's 0600)."""
    import os
    import stat

    from reidbench.evaluation.atomic import atomic_write

    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "board.csv", lambda handle: handle.write(b"a,b\n"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"a,b\n"
    assert not list(tmp_path.glob(".board.csv.*"))  # no temporary left behind
