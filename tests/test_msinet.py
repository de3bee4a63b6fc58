"""MSINet, MSINet-SAM and MASENet: sizes against docs/papers/masenet.md, shapes, training, checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reidbench.engine.trainer import Trainer
from reidbench.errors import ReidbenchError
from reidbench.losses.core import SpatialAlignLoss
from reidbench.models import create_model
from reidbench.models.msinet import GENOTYPES, resolve_genotype
from reidbench.models.pretrained import load_pretrained
from reidbench.profile import count_flops, parameter_counts
from reidbench.recipes import load_recipe


@pytest.mark.parametrize("name, options, expected", [
    ("msinet", {}, 2.328),
    ("msinet_sam", {}, 2.394),
    ("masenet", {}, 2.447),
    ("masenet", {"se_reduction": 8}, 2.566),       # docs/papers/masenet.md: r=8 -> 2.566M
    ("masenet", {"se_position": "branch"}, 2.343),  # SE per branch on mid channels -> 2.343M
])
def test_parameter_counts_without_classifiers(name, options, expected):
    _total, deploy, _backbone = parameter_counts(create_model(name, num_classes=751, **options))
    assert deploy / 1e6 == pytest.approx(expected, abs=0.005)


def test_msinet_totals_and_gmacs():
    model = create_model("msinet", num_classes=751)
    total, _deploy, backbone = parameter_counts(model)
    assert total == 2_906_305 and backbone / 1e6 == pytest.approx(1.950, abs=0.001)
    gmacs, _skipped, _ = count_flops(model, 256, 128)
    assert gmacs == pytest.approx(1.148, rel=0.02)
    assert count_flops(create_model("masenet"), 256, 128)[0] == pytest.approx(1.148, rel=0.02)


@pytest.mark.parametrize("name", ["msinet", "msinet_sam", "masenet"])
def test_shapes_and_backward(name):
    model = create_model(name, num_classes=10)
    model.train()
    out = model(torch.randn(4, 3, 128, 64))
    assert out["global"].shape == (4, 512) and out["local"].shape == (4, 256)
    assert out["logits"].shape == (4, 10) and out["local_logits"].shape == (4, 10)
    loss = out["logits"].sum() + out["local_logits"].sum()
    if name == "msinet_sam":
        assert out["sam"].shape == (5, 4, 8 * 4)
        loss = loss + SpatialAlignLoss()(out["sam"], torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "gamma" not in n)
    model.eval()
    with torch.no_grad():
        test = model(torch.randn(2, 3, 256, 128))
    assert test["embedding"].shape == (2, 768) and "sam" not in test
    vehicle = model(torch.randn(1, 3, 256, 256))["embedding"]
    assert vehicle.shape == (1, 768)


def test_genotype_is_data():
    assert GENOTYPES["msmt"] == ["ag", "ag", "exc", "ag", "cross_att", "ag", "ag", "none", "ag",
                                 "cross_att", "exc", "cross_att"]
    model = create_model("msinet")
    assert model.genotype == GENOTYPES["msmt"]
    with pytest.raises(ReidbenchError, match="12 operations"):
        resolve_genotype(["ag"] * 11)


def test_genotype_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("genotype: [none, none, exc, exc, ag, ag, cross_att, cross_att, none, ag, exc, none]\n")
    model = create_model("msinet", genotype=str(path))
    assert model.genotype[0] == "none" and type(model.cells[0]._op2).__name__ == "PairIdentity"


def test_masenet_ablation_switches_and_options():
    base = parameter_counts(create_model("masenet", se=False, sge=False))[1]
    assert base == parameter_counts(create_model("msinet"))[1]
    assert parameter_counts(create_model("masenet", se=True, sge=False))[1] - base == 118_784
    assert parameter_counts(create_model("masenet", se=False, sge=True))[1] - base == 96
    model = create_model("masenet", sge_init="ea", sge_position="backbone_end", se_position="stage_end")
    assert model.final_sge is not None and float(model.final_sge.bias.detach().mean()) == 0.0
    with pytest.raises(ReidbenchError, match="sge_position"):
        create_model("masenet", sge_position="everywhere")


def test_partial_load_of_an_official_checkpoint_into_masenet(tmp_path):
    source = create_model("msinet", num_classes=4101)  # another dataset's classifier
    path = tmp_path / "msinet_msmt.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 350}, path)
    target = create_model("masenet", num_classes=751)
    report = load_pretrained(target, target.pretrained_cfg, path)
    assert target.pretrained_report is report
    assert set(report.skipped_shape) == {"classifier.weight", "classifier.bias",
                                         "f_classifier.weight", "f_classifier.bias"}
    assert report.missing and all(".se." in k or ".sge." in k for k in report.missing)
    assert report.unexpected == []
    key = "cells.0.conv1a.conv.weight"
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])
    with pytest.raises(ReidbenchError, match="weights download msinet_msmt"):
        load_pretrained(target, target.pretrained_cfg, tmp_path / "absent.pth.tar")


def _sam_scores() -> torch.Tensor:
    """Three identities, one image each (every anchor's only positive is itself, its two negatives the others),
    M = 2 positions: each anchor's profile is (1, 1), its kernel with itself (1, 0), with its first negative
    (1, 0) and with its second (0, 1)."""
    kernels = torch.zeros(3, 3, 2)
    for i in range(3):
        first, second = [j for j in range(3) if j != i]
        kernels[i, i] = kernels[i, first] = torch.tensor([1.0, 0.0])
        kernels[i, second] = torch.tensor([0.0, 1.0])
    return torch.cat([kernels, torch.ones(1, 3, 2)])


@pytest.mark.parametrize("negative_pairs, negative_term", [
    ("all", (0 + 1 + 1 + 0) / 4),  # released: the 2 x 2 pairs of negatives, the two self-pairs (0) included
    ("distinct", (1 + 1) / 2),     # the two pairs of different negatives only: n / (n - 1) = 2 times larger
])
def test_spatial_align_loss_by_hand(negative_pairs, negative_term):
    positive_term = 1 - 1 / 2**0.5  # cosine distance between (1, 1) and (1, 0)
    loss = SpatialAlignLoss(negative_pairs)(_sam_scores(), torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx(positive_term + negative_term, abs=1e-6)
    assert SpatialAlignLoss().negative_pairs == "all"  # the released behaviour is the default
    recipe = load_recipe("masenet/msinet_sam_market1501", overrides=[f"loss.4.negative_pairs={negative_pairs}"])
    assert recipe.loss[4].options == {"negative_pairs": negative_pairs}
    with pytest.raises(ReidbenchError, match="negative_pairs: expected one of all, distinct"):
        load_recipe("masenet/msinet_sam_market1501", overrides=["loss.4.negative_pairs=some"])


def test_table_one_and_fig3_recipes_load():
    names = [p.stem for p in Path("recipes/masenet").glob("*.yaml") if p.stem not in ("msinet_base", "paper")]
    assert len(names) == 12 + 8
    veri = load_recipe("masenet/masenet_veri776")
    assert (veri.data.height, veri.data.width) == (256, 256) and veri.model.name == "masenet"
    cross = load_recipe("masenet/msinet_msmt17_to_market1501")
    assert (cross.data.train, cross.data.test, cross.train.epochs) == ("msmt17", "market1501", 250)
    assert cross.data.transforms.erasing == 0 and cross.data.transforms.color_jitter == [0.4, 0.4, 0.3, 0.0]
    sam = load_recipe("masenet/msinet_sam_market1501")
    assert sam.loss[-1].name == "spatial_align" and sam.loss[-1].weight == 2.0
    fig = load_recipe("masenet/fig3_se_market1501")
    assert fig.model.options["se"] is True and fig.model.options["sge"] is False
    assert fig.reported.table == "Fig. 3" and fig.reported.row == "+SE"


def test_short_training_on_synthetic_data_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    recipe = load_recipe("masenet/msinet_sam_market1501", scale="smoke", overrides=[
        "data.synthetic_ids=12", "data.synthetic_images_per_id=6", "data.batch_size=8",
        "data.sampler.num_instances=2", "train.epochs=4", "train.eval_every=4", "optim.lr=0.01"])
    record = Trainer(recipe, run_dir=tmp_path / "run", device="cpu", quiet=True).run()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["total"] for line in lines if "total" in line]  # the optimised objective
    assert losses[-1] < losses[0]
    assert "spatial_align:sam" in lines[0]
    assert record.pretrained.startswith("requested but unavailable")  # no checkpoint here, and it says so


def test_tcm_split_shares_the_middle_identities():
    from reidbench.data.records import ImageRecord
    from reidbench.engine.search import tcm_split

    records = [ImageRecord(Path(f"{pid}_{i}.jpg"), pid, 0) for pid in range(10) for i in range(4)]
    train, val = tcm_split(records)
    train_ids = {int(r.path.name.split("_")[0]) for r in train}
    val_ids = {int(r.path.name.split("_")[0]) for r in val}
    assert train_ids == set(range(6)) and val_ids == set(range(2, 10))  # 3n/5 train, 4n/5 val, 2n/5 shared
    assert sorted({r.pid for r in train}) == list(range(6)) and sorted({r.pid for r in val}) == list(range(8))


def test_search_on_a_synthetic_miniature_writes_a_usable_genotype(tmp_path, run_cli):
    out = tmp_path / "genotype.yaml"
    code, stdout, stderr = run_cli("--data-root", str(tmp_path / "data"), "search", "msinet", "--data",
                                   "market1501", "--synthetic", "--epochs", "1", "--batch-size", "8",
                                   "--num-instances", "2", "--height", "64", "--width", "32", "--device",
                                   "cpu", "--out", str(out))
    assert code == 0, stderr
    genotype = resolve_genotype(str(out))
    assert len(genotype) == 12
    model = create_model("masenet", genotype=str(out))
    assert model.genotype == genotype
    recipe = load_recipe("masenet/masenet_market1501", overrides=[f"model.genotype={out}"])
    assert recipe.model.options["genotype"] == str(out)
