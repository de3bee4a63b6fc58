"""AlignedReID++ and AaP-ReID: parameter counts against the paper, shapes, the DMLI local distance in the
loss and in evaluation, and the AaP-ReID paper cells (ablation switches, re-ranked rows sharing a run)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from reidbench.evaluation import compute_distance, evaluate, rerank
from reidbench.evaluation.distance import aligned_local_distance
from reidbench.evaluation.features import FeatureSet, evaluate_feature_set, load_features, save_features
from reidbench.losses.core import TripletLoss
from reidbench.models import create_model
from reidbench.models.layers import ChannelWiseAttention
from reidbench.papers.reproduce import plan_reproduction


def _params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# docs/papers/aap-reid.md: all parameters (classifier, local branch and BaND BN included), torchvision ResNets.
@pytest.mark.parametrize(("name", "options", "classes", "expected"), [
    ("alignedreid_pp", {}, 751, 25.3132), ("alignedreid_pp", {}, 702, 25.2128), ("alignedreid_pp", {}, 767, 25.3460),
    ("aap_reid", {"attention_layers": [1, 2, 3, 4]}, 751, 27.8502),
    ("aap_reid", {"attention_layers": [1, 2, 3, 4]}, 767, 27.8830),
    ("aap_reid", {}, 751, 27.6912), ("aap_reid", {}, 702, 27.5908), ("aap_reid", {}, 767, 27.7240),
    ("aap_reid", {"depth": 18, "attention": "bam"}, 751, 11.8012),
    ("aap_reid", {"depth": 18, "attention": "sp"}, 751, 11.7175),
    ("aap_reid", {"depth": 34, "attention": "eca"}, 751, 21.7377),
    ("aap_reid", {"depth": 50, "attention": "bam"}, 751, 30.2056),
    ("aap_reid", {"depth": 50, "attention": "sp"}, 751, 27.8317),
    ("aap_reid", {"depth": 50, "attention": "eca"}, 751, 25.3173),
    ("aap_reid", {"depth": 101, "attention": "cwa_add"}, 751, 48.9322),
])
def test_parameter_counts_match_the_paper_tables(name, options, classes, expected):
    assert _params_m(create_model(name, num_classes=classes, **options)) == pytest.approx(expected, abs=1e-4)


def test_cwa_sits_on_conv3_before_bn3_in_layers_3_and_4_only():
    model = create_model("aap_reid", num_classes=10)
    layers = model.backbone.stages()  # layer1..layer4
    with_cwa = [sum(isinstance(b.conv3, torch.nn.Sequential) for b in layer) for layer in layers]
    assert with_cwa == [0, 0, 6, 3]
    block = layers[2][0]
    assert isinstance(block.conv3[0], torch.nn.Conv2d) and isinstance(block.conv3[1], ChannelWiseAttention)
    assert isinstance(block.bn3, torch.nn.BatchNorm2d)  # the attention output then goes through bn3
    first = layers[3][0]  # last stride 1
    assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)


def test_outputs_in_training_and_eval():
    model = create_model("aap_reid", num_classes=7, depth=18)
    images = torch.randn(4, 3, 128, 64)
    out = model(images)
    assert out["global"].shape == (4, 512) and out["logits"].shape == (4, 7)
    assert out["local"].shape == (4, 8, 128)  # 8 stripes at 128x64 with last stride 1
    assert torch.allclose(out["local"].norm(dim=2), torch.ones(4, 8), atol=1e-5)
    loss = out["logits"].logsumexp(1).mean() + out["local"].sum()
    loss.backward()
    assert model.local_conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        test = model(images)
    assert test["embedding"].shape == (4, 512)
    assert test["local"].shape == (4, 8, 512)  # official test: raw map stripes, not the trained branch
    with torch.no_grad():
        raw = model.backbone(images)
    assert torch.allclose(test["embedding"], raw.mean(dim=(2, 3)), atol=1e-6)


def _dmli_oracle(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a.double(), b.double())
    d = (d.exp() - 1) / (d.exp() + 1)
    h, w = d.shape
    s = [[0.0] * w for _ in range(h)]
    for i in range(h):
        for j in range(w):
            best = 0.0 if i == j == 0 else min(s[i - 1][j] if i else np.inf, s[i][j - 1] if j else np.inf)
            s[i][j] = best + float(d[i, j])
    return s[-1][-1]


def test_dmli_distance_matches_the_shortest_path_oracle():
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(5, 6, 8, generator=gen), torch.randn(7, 6, 8, generator=gen)
    got = aligned_local_distance(q, g, chunk_elements=100)  # several chunks
    want = torch.tensor([[_dmli_oracle(q[i], g[j]) for j in range(7)] for i in range(5)], dtype=torch.float64)
    assert torch.allclose(got.double(), want, atol=1e-5)
    # aligned parts match better than the same parts shifted: the point of the alignment
    shifted = torch.roll(q, 1, dims=1)
    assert aligned_local_distance(q[:1], shifted[:1]) < aligned_local_distance(q[:1], g[:1]).min()
    with pytest.raises(ValueError, match="stripes"):
        aligned_local_distance(torch.randn(3, 8), g)


def test_local_triplet_uses_the_samples_mined_with_the_global_distance():
    targets = torch.tensor([0, 0, 1, 1])
    local = torch.nn.functional.normalize(torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1)), dim=2)
    glob = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    loss = TripletLoss(margin=0.3, distance="dmli", mine_with="global")
    value = loss(local, targets, outputs={"global": glob, "local": local})
    g = torch.cdist(glob, glob)
    same = targets[:, None] == targets[None, :]
    pos = g.masked_fill(~same, -1).argmax(1)
    neg = g.masked_fill(same, 1e9).argmin(1)
    d = aligned_local_distance(local, local)
    rows = torch.arange(4)
    want = torch.relu(d[rows, pos] - d[rows, neg] + 0.3).mean()
    assert torch.allclose(value, want, atol=1e-6)


def _feature_set(rng: np.random.Generator) -> FeatureSet:
    q_pids, g_pids = np.arange(6) % 3, np.arange(12) % 3
    centres = rng.standard_normal((3, 16)).astype(np.float32)
    local_centres = rng.standard_normal((3, 4, 8)).astype(np.float32)
    return FeatureSet(
        query_features=torch.from_numpy(centres[q_pids] + rng.standard_normal((6, 16), dtype=np.float32)),
        gallery_features=torch.from_numpy(centres[g_pids] + rng.standard_normal((12, 16), dtype=np.float32)),
        query_pids=q_pids, query_camids=np.zeros(6, np.int64), gallery_pids=g_pids,
        gallery_camids=np.ones(12, np.int64),
        query_local=torch.nn.functional.normalize(torch.from_numpy(
            local_centres[q_pids] + rng.standard_normal((6, 4, 8), dtype=np.float32)), dim=2),
        gallery_local=torch.nn.functional.normalize(torch.from_numpy(
            local_centres[g_pids] + rng.standard_normal((12, 4, 8), dtype=np.float32)), dim=2),
    )


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_global_plus_local_evaluation_and_features_file(tmp_path, suffix):
    features = _feature_set(np.random.default_rng(0))
    path = save_features(tmp_path / f"f{suffix}", features)
    loaded = load_features(path)
    assert torch.equal(loaded.query_local, features.query_local)
    got = evaluate_feature_set(loaded, metric="sqeuclidean", normalize=True, local=True)
    dist = (compute_distance(features.query_features, features.gallery_features, "sqeuclidean", True)
            + aligned_local_distance(features.query_local, features.gallery_local))
    want = evaluate(dist, features.query_pids, features.gallery_pids, features.query_camids, features.gallery_camids)
    assert got.mAP == pytest.approx(want.mAP) and got.settings["local"] is True
    ranked = evaluate_feature_set(loaded, metric="sqeuclidean", normalize=True, local=True, rerank=True, k1=5, k2=3)
    q, g, ql, gl = features.query_features, features.gallery_features, features.query_local, features.gallery_local
    q_q = compute_distance(q, q, "sqeuclidean", True) + aligned_local_distance(ql, ql)
    g_g = compute_distance(g, g, "sqeuclidean", True) + aligned_local_distance(gl, gl)
    want_rr = evaluate(rerank(dist, q_q, g_g, k1=5, k2=3), features.query_pids, features.gallery_pids,
                       features.query_camids, features.gallery_camids)
    assert ranked.mAP == pytest.approx(want_rr.mAP)
    without = FeatureSet(**{**features.__dict__, "query_local": None, "gallery_local": None})
    with pytest.raises(ValueError, match="query_local"):
        evaluate_feature_set(without, local=True)


def test_aap_paper_rows_reuse_runs_and_record_rerank(tmp_path, monkeypatch, run_cli):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    plan = plan_reproduction("aap-reid", table="Table 1", dataset="M", scale="smoke", data_root=tmp_path / "data")
    hashes = {p.cell.row.name: p.runs[0].hash for p in plan.planned}
    assert len(set(hashes.values())) == 5  # five trained variants; the "*" rows re-evaluate them
    assert hashes["AaP-ReID*"] == hashes["AaP-ReID"] and hashes["Baseline*"] == hashes["Baseline"]
    stride = next(p for p in plan.planned if p.cell.row.name == "Stride impact").runs[0].recipe.model
    assert stride.name == "aap_reid" and stride.options["band"] is False and stride.options["attention"] == "none"
    code, out, err = run_cli("reproduce", "aap-reid", "--table", "Table 1", "--row", "AaP", "--dataset", "M",
                             "--scale", "smoke", "--set", "model.depth=18", "--set", "model.pretrained=false",
                             "--set", "train.epochs=1", "--set", "train.eval_every=1")
    assert code == 0, err
    runs = list((tmp_path / "runs").rglob("run.json"))
    assert len(runs) == 1  # AaP-ReID and AaP-ReID* share one training run
    record = json.loads(runs[0].read_text())
    assert record["eval_settings"]["local_feature"] == "local" and record["eval_settings"]["rerank"] is None
    frame = pd.read_csv(tmp_path / "lb" / "aap-reid.smoke.csv")
    plain = frame[(frame["row"] == "AaP-ReID") & (frame["metric"] == "mAP")].iloc[0]
    ranked = frame[(frame["row"] == "AaP-ReID*") & (frame["metric"] == "mAP")].iloc[0]
    assert plain["run_ids"] == ranked["run_ids"] and pd.isna(plain["rerank_k1"]) and ranked["rerank_k1"] == 20
    assert plain["reproduced"] == pytest.approx(100 * record["metrics"]["mAP"], abs=1e-3)
    features = load_features(runs[0].parent / "features.pt")
    want = evaluate_feature_set(features, "sqeuclidean", True, rerank=True, local=True)
    assert ranked["reproduced"] == pytest.approx(100 * want.mAP, abs=1e-3)
    assert ranked["distance"] == "sqeuclidean + DMLI local"


def test_pretrained_trunk_loads_torchvision_weights_by_name(tmp_path):
    """An ImageNet state_dict in torchvision's format loads into the trunk, attention-wrapped convs included,
    with nothing of the trunk missing (weights cannot be downloaded here: the file is written by the test)."""
    from reidbench.models.pretrained import load_pretrained

    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("aap_reid", num_classes=5, depth=18)
    report = load_pretrained(model, model.pretrained_cfg, path)
    assert not [k for k in report.missing if k.startswith("backbone.") and ".1." not in k.split("conv2")[-1][:3]]
    assert report.unexpected == [] and report.skipped_shape == []
    assert torch.equal(model.backbone.layer3[0].conv2[0].weight, reference.layer3[0].conv2.weight)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_cli_evaluate_local(tmp_path, run_cli):
    features = _feature_set(np.random.default_rng(3))
    path = save_features(tmp_path / "f.pt", features)
    code, out, err = run_cli("evaluate", str(path), "--metric", "sqeuclidean", "--normalize", "--local", "--json")
    assert code == 0, err
    record = json.loads(out)
    want = evaluate_feature_set(features, "sqeuclidean", True, local=True)
    assert record["mAP"] == pytest.approx(want.mAP) and record["local"] is True
    bare = save_features(tmp_path / "g.pt", FeatureSet(**{**features.__dict__, "query_local": None,
                                                          "gallery_local": None}))
    code, out, err = run_cli("evaluate", str(bare), "--local")
    assert code == 2 and "query_local" in err and "Traceback" not in err


def test_gmacs_match_the_reproduced_figures(tmp_path, monkeypatch):
    """docs/papers/aap-reid.md (fvcore, 256x128): AlignedReID++ 2.684 GMac, AaP-ReID 4.072 (last stride 1)."""
    from reidbench.profile import profile_config

    for name, expected in (("alignedreid_pp", 2.684), ("aap_reid", 4.072)):
        profile = profile_config(name, {}, (256, 128), use_cache=False)
        assert profile.gmacs == pytest.approx(expected, rel=0.005)
        assert profile.params == round(1e6 * {"alignedreid_pp": 25.313199, "aap_reid": 27.691183}[name])
