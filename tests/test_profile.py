"""Parameter counts and fvcore FLOPs, with attention counted."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from reidbench.profile import count_flops, parameter_counts, profile_model


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_torchvision_resnet50_parameter_count():
    result = profile_model("resnet50")
    assert result.params == 25_557_032
    assert result.deploy_params == 25_557_032 - 2048 * 1000 - 1000  # without fc


def test_resnet50_backbone_gmacs_at_256x128_last_stride_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name: bot_resnet50\n  last_stride: 2\n  num_classes: 751\n")
    result = profile_model(str(recipe), (256, 128))
    backbone = next(m for m in result.modules if m["module"] == "backbone")
    assert backbone["gmacs"] == pytest.approx(2.68, abs=0.02)
    assert result.backbone_params == 23_508_032
    assert result.deploy_params == result.params - 751 * 2048  # classifier excluded, neck kept
    stride1 = profile_model("bot_resnet50", (256, 128))
    assert stride1.gmacs > result.gmacs * 1.4  # last stride 1 quadruples layer4's work


class Attention(nn.Module):
    def __init__(self, dim: int = 32, use_sdpa: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 8, stride=8)
        self.use_sdpa = use_sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # [B, N, C]
        if self.use_sdpa:
            return nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)
        weights = torch.softmax(tokens @ tokens.transpose(1, 2), dim=-1)
        return weights @ tokens


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attention_matmuls_and_softmax_are_counted(use_sdpa):
    model = Attention(32, use_sdpa)
    gmacs, skipped, _ = count_flops(model, 64, 64)
    conv = 32 * 3 * 8 * 8 * 64  # 64 output positions
    tokens, dim = 64, 32
    attention = 2 * tokens * tokens * dim + tokens * tokens  # QK^T, AV, softmax
    assert gmacs * 1e9 == pytest.approx(conv + attention)
    assert "aten::softmax" not in skipped and "aten::scaled_dot_product_attention" not in skipped


def test_multihead_attention_module_is_counted():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 32, 8, stride=8)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.proj(x).flatten(2).transpose(1, 2)  # 16 tokens of width 32
            return self.attn(tokens, tokens, tokens, need_weights=False)[0]

    gmacs, _, _ = count_flops(Block(), 32, 32)
    conv = 32 * 3 * 8 * 8 * 16
    # projections 4 * N * E^2 + attention 2 * N^2 * E, N = 16 tokens, E = 32
    assert gmacs * 1e9 - conv >= 4 * 16 * 32 * 32 + 2 * 16 * 16 * 32


def test_doubling_height_roughly_doubles_cnn_flops():
    single = profile_model("resnet50", (256, 128)).gmacs
    double = profile_model("resnet50", (512, 128)).gmacs
    assert double / single == pytest.approx(2.0, rel=0.05)


def test_parameter_counts_follow_the_model_contract():
    """Classifier and backbone come from get_classifier() / backbone_modules(), whatever the modules are named."""
    from reidbench.models.contract import ReIDModel

    class Toy(ReIDModel):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 4)  # a neck, not a classifier, despite its name
            self.ids = nn.Linear(4, 10)

        def get_classifier(self) -> list[nn.Module]:
            return [self.ids]

        def backbone_modules(self) -> list[nn.Module]:
            return [self.trunk]

    assert parameter_counts(Toy()) == (20 + 20 + 50, 40, 20)


def test_profile_is_cached(tmp_path):
    first = profile_model("resnet50", (128, 64))
    files = list((tmp_path / "cache" / "reidbench" / "profiles").iterdir())
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    data["gmacs"] = 123.0
    files[0].write_text(json.dumps(data))
    assert profile_model("resnet50", (128, 64)).gmacs == 123.0
    assert profile_model("resnet50", (128, 64), use_cache=False).gmacs == first.gmacs


def test_cli_json_contract(run_cli):
    code, out, _ = run_cli("profile", "resnet50", "--input", "256x128", "--json")
    assert code == 0
    record = json.loads(out)
    assert set(record) == {"model", "input", "params", "deploy_params", "backbone_params", "gmacs",
                           "skipped_ops"}
    assert record["input"] == [256, 128] and isinstance(record["params"], int)
    assert isinstance(record["gmacs"], float) and record["skipped_ops"]["aten::add_"] == 16


def test_cli_table_and_bad_input(run_cli):
    code, out, _ = run_cli("profile", "resnet50", "--input", "128x64")
    assert code == 0 and "GMac" in out and "skipped by fvcore" in out and "layer4" in out
    code, _, err = run_cli("profile", "resnet50", "--input", "256by128")
    assert code == 2 and "--input: expected HxW" in err
    code, _, err = run_cli("profile", "resnet_50")
    assert code == 2 and "did you mean" in err
