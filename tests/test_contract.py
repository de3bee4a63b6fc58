"""The model contract at work: a new family is one module plus recipes, and every command handles it.

The toy family, its recipe and a one-table paper are written to a temporary folder; nothing of the
project is edited. `train`, `test`, `profile` and `reproduce --scale smoke` then run on them.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch

from reidbench.models import MODELS, create_model, list_models
from reidbench.models.contract import OUTPUT_FIELDS, ReIDModel
from reidbench.models.registry import model_options

TOY_FAMILY = '''
import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import BNNeck
from reidbench.models.registry import register_model


class ToyNet(ReIDModel):
    default_input = (64, 32)
    train_outputs = ("global", "embedding", "logits")
    eval_outputs = ("embedding", "global")

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width: expected a positive integer, got {width!r}")
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.neck = BNNeck(width, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)

    def forward_head(self, features: torch.Tensor) -> ModelOutputs:
        return self.neck(features)

    def get_classifier(self) -> list[nn.Module]:
        return [self.neck.classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.trunk]


@register_model
def toy_contract_net(num_classes: int = 751, width: int = 8) -> ToyNet:
    """A toy family for the contract test."""
    return ToyNet(num_classes, width)
'''

TOY_RECIPE = """
name: toy_market1501
reported: {paper: toy, table: Table 1, row: ToyNet, column: M}
model: {name: toy_contract_net, width: 8}
data: {train: market1501, test: market1501, height: 64, width: 32, batch_size: 8, workers: 0,
       synthetic: true, synthetic_ids: 8, synthetic_images_per_id: 4, sampler: {name: pk, num_instances: 2}}
loss:
  - {name: cross_entropy, output: logits, weight: 1.0}
  - {name: triplet, output: global, weight: 1.0, options: {margin: 0.3}}
optim: {name: adam, lr: 3.5e-4}
schedule: {name: constant, warmup_epochs: 0}
train: {epochs: 1, eval_every: 1}
eval: {feature: embedding, metric: cosine}
"""

TOY_PAPER = """
paper: toy
title: A toy paper
citation: Toy
tolerance: 1.0
datasets:
  M: {train: market1501, test: market1501}
tables:
  - id: Table 1
    caption: Toy results.
    groups: [M]
    metrics: [mAP, R1]
    rows:
      - {name: ToyNet, model: toy_contract_net, recipe: toy/toy_market1501, values: {M: [50.0, 70.0]}}
"""


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "toy_family_contract.py").write_text(textwrap.dedent(TOY_FAMILY))
    recipes = tmp_path / "recipes" / "toy"
    recipes.mkdir(parents=True)
    (recipes / "toy_market1501.yaml").write_text(TOY_RECIPE)
    (recipes / "paper.yaml").write_text(TOY_PAPER)
    for variable, folder in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"),
                             ("REIDBENCH_LEADERBOARDS", "leaderboards"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("REIDBENCH_RECIPES", str(tmp_path / "recipes"))
    monkeypatch.syspath_prepend(str(package))
    importlib.import_module("toy_family_contract")
    yield tmp_path
    MODELS.pop("toy_contract_net", None)
    sys.modules.pop("toy_family_contract", None)


def test_a_new_family_runs_through_every_command(toy_family, run_cli):
    tmp = toy_family
    code, _, err = run_cli("train", "toy/toy_market1501", "--device", "cpu", "--run-dir", str(tmp / "run"))
    assert code == 0, err
    record = json.loads((tmp / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["model"] == "toy_contract_net"
    assert record["pretrained"].startswith("not requested")

    code, out, err = run_cli("test", "toy/toy_market1501", "--checkpoint", str(tmp / "run/checkpoints/last.pt"),
                             "--out", str(tmp / "features.pt"), "--device", "cpu")
    assert code == 0, err
    assert (tmp / "features.pt").is_file() and "mAP" in out

    code, out, err = run_cli("profile", "toy_contract_net", "--json", "--no-cache")
    assert code == 0, err
    profile = json.loads(out)
    assert profile["input"] == [64, 32]  # the model's default_input
    assert profile["params"] - profile["deploy_params"] == 8 * 751  # the classifier named by get_classifier()
    assert profile["backbone_params"] == 3 * 8 * 9 + 8 + 2 * 8

    code, out, err = run_cli("reproduce", "toy", "--scale", "smoke", "--device", "cpu")
    assert code == 0, err
    board = (tmp / "leaderboards" / "toy.smoke.csv").read_text()  # smoke rows are kept apart from reproductions
    assert "ToyNet" in board and "toy_contract_net" in board


def test_bad_option_values_are_one_line_user_errors(toy_family, run_cli):
    code, _, err = run_cli("train", "toy/toy_market1501", "--set", "model.width=0", "--device", "cpu")
    assert code == 2
    assert err.strip().splitlines() == ["error: model.width: expected a positive integer, got 0 "
                                        "(model toy_contract_net)"]
    code, _, err = run_cli("reproduce", "aap-reid", "--dry-run", "--set", "model.attention=cbam")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "model.attention" in err and "cbam" in err


@pytest.mark.parametrize("name", [n for n in list_models() if n != "toy_contract_net"])
def test_every_registered_model_keeps_the_contract(name):
    small = {"resnet50": {}, "msinet": {}, "osnet_x1_0": {}}.get(name, {})
    model = create_model(name, num_classes=5, **small)
    assert isinstance(model, ReIDModel)
    assert set(model.train_outputs) | set(model.eval_outputs) <= set(OUTPUT_FIELDS)
    classifier = {id(p) for m in model.get_classifier() for p in m.parameters()}
    assert classifier, "a model has a classifier"
    assert all(p.shape[0] == 5 for m in model.get_classifier() for p in m.parameters() if p.ndim == 2)
    assert not classifier & {id(p) for m in model.backbone_modules() for p in m.parameters()}
    assert "pretrained" not in model_options(name)  # weights are loaded by create_model, not constructors
    height, width = model.default_input
    model.eval()
    with torch.no_grad():
        features = model.forward_features(torch.zeros(1, 3, height, width))
        out = model.forward_head(features)
    assert set(out) == set(model.eval_outputs)
    if name != "resnet50":  # torchvision's classifier pools inside its trunk: no spatial map to draw
        assert model.feature_map(features).ndim == 4  # what activation maps and Grad-CAM explain


def test_a_full_scale_run_without_its_pretrained_weights_stops_before_training(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    code, _, err = run_cli("train", "bot/resnet50_market1501", "--scale", "full", "--device", "cpu",
                           "--set", "data.synthetic=true", "--set", "data.synthetic_ids=4",
                           "--set", "data.synthetic_images_per_id=3", "--run-dir", str(run))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "reidbench weights download resnet50" in lines[0]
    assert "full-scale run does not start" in lines[0]
    assert not run.exists()  # nothing trained, nothing written
