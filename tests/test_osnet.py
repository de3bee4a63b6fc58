"""OSNet x1_0 and what its torchreid recipe needs: plain shuffled batches and fixbase epochs; row variants
applied before the scale."""

from __future__ import annotations

import pytest
import torch

from reidbench.data.samplers import IdentityBatchSampler
from reidbench.engine.trainer import Trainer
from reidbench.errors import ReidbenchError
from reidbench.models import create_model
from reidbench.profile import parameter_counts, profile_config
from reidbench.recipes.loading import load_recipe

OSNET = "osnet/osnet_x1_0_market1501"


def test_osnet_parameters_flops_and_outputs():
    model = create_model("osnet_x1_0", num_classes=751)
    total, deploy, backbone = parameter_counts(model)
    assert deploy / 1e6 == pytest.approx(2.170, abs=0.005)  # docs/papers/baselines.md (paper: 2.2M)
    assert total - deploy == 512 * 751 + 751 and backbone < deploy  # classifier; fc neck outside the backbone
    assert profile_config("osnet_x1_0", {}, (256, 128), use_cache=False).gmacs == pytest.approx(0.997, rel=0.02)
    out = model(torch.randn(4, 3, 128, 64))
    assert out["embedding"].shape == (4, 512) and out["logits"].shape == (4, 751)
    out["logits"].sum().backward()
    model.eval()
    assert set(model(torch.randn(2, 3, 128, 64))) == {"embedding"}


def test_random_sampler_uses_each_image_at_most_once_and_shards():
    pids = [i // 5 for i in range(50)]
    full = IdentityBatchSampler(pids, batch_size=8, num_instances=4, mode="random", seed=3)
    batches = list(full)
    flat = [i for b in batches for i in b]
    assert len(batches) == 6 and all(len(b) == 8 for b in batches) and len(set(flat)) == len(flat) == 48
    ranks = [list(IdentityBatchSampler(pids, 8, 4, "random", 3, rank, 2)) for rank in (0, 1)]
    assert ranks[0] + ranks[1] != [] and sorted(ranks[0] + ranks[1]) == sorted(batches)
    with pytest.raises(ReidbenchError, match="batch_size"):
        IdentityBatchSampler(pids[:5], batch_size=8, num_instances=4, mode="random")


def test_fixbase_epoch_trains_only_the_open_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    recipe = load_recipe(OSNET, scale="smoke", overrides=["model.pretrained=false", "data.batch_size=16"])
    assert recipe.train.fixbase_epochs == 1 and recipe.data.sampler.name == "random"
    trainer = Trainer(recipe, run_dir=tmp_path / "run", device="cpu", quiet=True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(0)
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # frozen body: weights and BN statistics kept
    trainer.train_epoch(1)
    assert not torch.equal(before["conv1.conv.weight"], trainer.model.state_dict()["conv1.conv.weight"])


def test_frozen_bnneck_bias_stays_frozen_through_fixbase(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    recipe = load_recipe("bot/resnet50_market1501", scale="smoke",
                         overrides=["train.fixbase_epochs=1", "train.open_layers=[head]", "model.width=8"])
    trainer = Trainer(recipe, run_dir=tmp_path / "run", device="cpu", quiet=True)
    trainer.train_epoch(0)
    trainer.train_epoch(1)
    assert not trainer.model.head.bottleneck.bias.requires_grad
    bad = load_recipe("bot/resnet50_market1501", scale="smoke",
                      overrides=["train.fixbase_epochs=1", "train.open_layers=[fc]", "model.width=8"])
    with pytest.raises(ReidbenchError, match="open_layers"):
        Trainer(bad, run_dir=tmp_path / "bad", device="cpu", quiet=True)


def test_a_row_variant_applies_before_the_scale():
    shrunk = load_recipe(OSNET, scale="smoke", base_overrides=["train.epochs=350", "optim.name=sgd"])
    assert shrunk.train.epochs == 2 and shrunk.optim.name == "sgd"
    forced = load_recipe(OSNET, scale="smoke", overrides=["train.epochs=350"])
    assert forced.train.epochs == 350
