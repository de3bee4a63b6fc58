"""CDNet: the released counts, the searched genotype as data, the FBL neck's outputs and the released recipe."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms import v2

from reidbench.data.transforms import train_transform
from reidbench.errors import ReidbenchError
from reidbench.losses import build_losses
from reidbench.models import create_model
from reidbench.models.cdnet import GENOTYPES, CBlock
from reidbench.recipes import load_recipe


def test_profile_prints_the_backbone_and_deploy_counts(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a fresh profile
    code, out, err = run_cli("profile", "cdnet", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["backbone_params"] / 1e6 == pytest.approx(1.747, abs=5e-4)  # the paper's "1.8M"
    assert result["deploy_params"] / 1e6 == pytest.approx(2.193, abs=5e-4)  # with the FBL neck
    assert result["params"] - result["deploy_params"] == 2 * (512 * 751 + 751)  # two classifiers
    assert result["input"] == [256, 128] and result["gmacs"] == pytest.approx(0.971, rel=0.005)
    code, out, _ = run_cli("profile", "cdnet")
    assert code == 0 and "backbone" in out and "1,747,448" in out


def test_genotype_is_data_and_sets_the_stream_depths():
    assert GENOTYPES["top2"] == [[3, 5, 1], [3, 7, 2], [5, 7, 2], [5, 9, 1], [5, 7, 2], [5, 7, 1]]
    model = create_model("cdnet")
    blocks = [model.cells[i] for i in (0, 1, 3, 4, 6, 7)]
    assert [len(b) for b in blocks] == [r for _k1, _k2, r in GENOTYPES["top2"]]  # r stacked CBlocks
    stage2 = blocks[3][0]
    assert (len(stage2.conv1), len(stage2.conv2)) == (2, 4)  # [5, 9]: 5 // 2 and 9 // 2 lite 3x3 convs
    gate = CBlock(384, 384, 5, 9).adaption  # one gate for both streams, reduction 4 on 96 channels
    assert gate.fc1.out_channels == 24
    with pytest.raises(ReidbenchError, match=r"model.genotype: expected .* \(model cdnet\)"):
        create_model("cdnet", genotype=[[3, 4, 1]] * 6)
    with pytest.raises(ReidbenchError, match="dropout"):
        create_model("cdnet", dropout=1.5)


def test_fbl_neck_outputs_train_and_test():
    torch.manual_seed(0)
    model = create_model("cdnet", num_classes=10)
    images = torch.randn(8, 3, 128, 64)
    out = model(images)
    assert set(out) == set(model.train_outputs)
    assert out["global"].shape == (8, 512) and out["local"].shape == (8, 256)
    assert out["logits"].shape == (8, 10) and out["local_logits"].shape == (8, 10)
    assert (out["global"] == 0).float().mean() > 0.1  # dropout 0.2 on the features in training
    recipe = load_recipe("cdnet/cdnet_market1501")
    total, values = build_losses(recipe.loss, 10)(out, torch.arange(4).repeat_interleave(2))
    total.backward()
    assert torch.isfinite(total) and len(values) == 4
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        test = model(images)
        again = model(images)
    assert test["embedding"].shape == (8, 768)
    assert torch.equal(test["embedding"], torch.cat([test["global"], test["local"]], dim=1))
    assert torch.equal(test["embedding"], again["embedding"])  # no dropout at test time


def test_recipe_is_the_released_configuration():
    recipe = load_recipe("cdnet/cdnet_market1501")
    assert recipe.model.name == "cdnet" and recipe.model.options["pretrained"] is False
    assert (recipe.optim.name, recipe.optim.lr, recipe.optim.weight_decay) == ("sgd", 0.065, 5e-4)
    s = recipe.schedule
    assert (s.milestones, s.warmup_epochs, recipe.train.epochs) == ([150, 225, 300], 0, 350)
    assert all(t.options.get("label_smoothing", 0.0) == 0.0 for t in recipe.loss if t.name == "cross_entropy")
    assert [t.options["margin"] for t in recipe.loss if t.name == "triplet"] == [0.3, 0.3]
    assert recipe.eval.normalize and recipe.data.batch_size == 64
    erasing = [s for s in train_transform(recipe.data.transforms, 256, 128).transforms
               if isinstance(s, v2.RandomErasing)]
    assert erasing[0].scale == (0.02, 0.04)  # the released erasing area
    bad = load_recipe("cdnet/cdnet_market1501", overrides=["data.transforms.erasing_area=[0.4]"])
    with pytest.raises(ReidbenchError, match="erasing_area: expected"):
        train_transform(bad.data.transforms, 256, 128)
    assert load_recipe("cdnet/cdnet_msmt17").data.train == "msmt17"
