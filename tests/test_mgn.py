"""MGN: counts against the open re-implementation, branch structure and strides, ImageNet weights copied into
every branch, the multi-head losses and the paper's recipe."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.losses.core import CrossEntropy, TripletLoss
from reidbench.models import create_model
from reidbench.models.pretrained import load_pretrained
from reidbench.recipes import load_recipe


def test_profile_matches_the_reimplementation_count(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh profile
    code, out, err = run_cli("profile", "mgn", "--json")
    assert code == 0, err
    result = json.loads(out)
    # seathiefwang/MGN-pytorch with 256-d reductions: 68,807,744 without classifiers (METHODS.md 6.4)
    assert result["deploy_params"] == 68_807_744
    assert result["params"] - result["deploy_params"] == 8 * 256 * 751  # eight bias-free classifiers
    assert result["input"] == [384, 128] and result["gmacs"] == pytest.approx(11.92, rel=0.005)


def test_branches_own_their_layers_and_strides():
    model = create_model("mgn", num_classes=10, depth=18)
    shared = {id(p) for p in model.backbone.parameters()}
    per_branch = [{id(p) for p in b.parameters()} for b in model.branches]
    assert len(per_branch) == 3 and not any(shared & b for b in per_branch)
    assert not (per_branch[0] & per_branch[1]) and not (per_branch[1] & per_branch[2])
    maps = model.forward_features(torch.randn(2, 3, 384, 128))
    assert [tuple(m.shape[2:]) for m in maps] == [(12, 4), (24, 8), (24, 8)]  # global stride 2, parts stride 1
    assert len(model.reductions) == len(model.classifiers) == 8


def test_outputs_losses_and_test_feature():
    torch.manual_seed(0)
    model = create_model("mgn", num_classes=6, depth=18)
    out = model(torch.randn(8, 3, 128, 64))
    assert set(out) == set(model.train_outputs)
    assert out["global"].shape == (8, 3, 256) and out["parts"].shape == (8, 5, 256)
    assert out["logits"].shape == (8, 8, 6)
    targets = torch.arange(4).repeat_interleave(2)
    ce = CrossEntropy()(out["logits"], targets)
    per_head = [nn.functional.cross_entropy(out["logits"][:, h], targets) for h in range(8)]
    assert ce.item() == pytest.approx(torch.stack(per_head).mean().item(), rel=1e-5)
    triplet = TripletLoss(margin=1.2)
    tri = triplet(out["global"], targets)
    assert tri.item() == pytest.approx(torch.stack([triplet(out["global"][:, b], targets)
                                                    for b in range(3)]).mean().item(), rel=1e-5)
    (ce + tri).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        test = model(torch.randn(2, 3, 384, 128))
    assert set(test) == {"embedding"} and test["embedding"].shape == (2, 2048)


def test_imagenet_weights_load_into_every_branch(tmp_path):
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet, path)
    model = create_model("mgn", num_classes=10, depth=18)
    report = load_pretrained(model, model.pretrained_cfg, path)
    assert report.unexpected == [] and report.skipped_shape == []
    assert all(k.startswith(("reductions.", "classifiers.")) for k in report.missing)
    state = model.state_dict()
    assert torch.equal(state["backbone.layer3.0.conv1.weight"], imagenet["layer3.0.conv1.weight"])
    for branch in range(3):
        assert torch.equal(state[f"branches.{branch}.layer3.1.conv2.weight"], imagenet["layer3.1.conv2.weight"])
        assert torch.equal(state[f"branches.{branch}.layer4.0.downsample.0.weight"],
                           imagenet["layer4.0.downsample.0.weight"])


def test_options_are_checked_and_named():
    with pytest.raises(ReidbenchError, match=r"model.pool: expected .* \(model mgn\)"):
        create_model("mgn", depth=18, pool="min")
    with pytest.raises(ReidbenchError, match="stripes"):
        create_model("mgn", depth=18, stripes=[])
    avg = create_model("mgn", num_classes=4, depth=18, pool="avg", stripes=[4], classifier_bias=True)
    avg.eval()
    assert avg(torch.randn(1, 3, 128, 64))["embedding"].shape == (1, (2 + 4) * 256)
    assert avg.classifiers[0].bias is not None


def test_recipe_states_the_paper_choices():
    recipe = load_recipe("mgn/mgn_market1501")
    assert (recipe.data.height, recipe.data.width, recipe.data.batch_size) == (384, 128, 16)
    assert recipe.data.sampler.name == "random_identity" and recipe.data.sampler.num_instances == 4
    assert (recipe.optim.name, recipe.optim.lr, recipe.optim.momentum) == ("sgd", 0.01, 0.9)
    assert (recipe.schedule.milestones, recipe.train.epochs) == ([40, 60], 80)
    assert next(t for t in recipe.loss if t.name == "triplet").options["margin"] == 1.2
    assert recipe.eval.flip and recipe.eval.normalize and recipe.model.options["pool"] == "max"
    smoke = load_recipe("mgn/mgn_msmt17", scale="smoke")
    assert smoke.model.options["depth"] == 18 and smoke.data.train == "msmt17"


@pytest.mark.slow
@pytest.mark.parametrize("row", ["MGN", "CDNet"])
def test_masenet_baseline_cells_train_at_smoke_scale(row, run_cli, monkeypatch, tmp_path):
    for name in ("REIDBENCH_DATA", "REIDBENCH_RUNS", "REIDBENCH_LEADERBOARDS", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    code, out, err = run_cli("reproduce", "masenet", "--table", "Table III", "--row", row, "--scale", "smoke",
                             "--set", "train.epochs=1", "--set", "train.eval_every=1")
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "reidbench_leaderboards" / "masenet.csv", dtype=str, keep_default_na=False)
    assert set(frame["dataset"]) == {"market1501", "msmt17"} and set(frame["metric"]) == {"R1", "mAP"}
    assert set(frame["status"]) == {"not comparable (synthetic data)"}
    assert set(frame["model"]) == {row.lower()}
