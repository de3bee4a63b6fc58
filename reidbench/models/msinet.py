"""MSINet (Gu et al., CVPR 2023), MSINet-SAM, and MASENet (MSINet + SE + SGE).

Architecture with shapes, and every choice where papers and code differ: docs/papers/masenet.md.

Macro layout: 7x7 stem + max-pool, three stages of two searched cells with a
1x1-conv + avg-pool downsampling between stages, channels 64/256/384/512, no last downsampling.
Head: a 512-d global branch on the final map and a 256-d two-stripe local branch on the
stage-2 output, each with a bias-free FC + BN neck (BN bias frozen) and a classifier; the test
feature is cat(global, local) = 768-d (pre-BN). Parameter names follow the official code so that
its checkpoints load by name.

MASENet adds SE on each cell's fused residual (before the identity add) and SGE on each cell's
output by default; the positions, SE reduction, SGE groups and SGE initialisation are options, as
are the ablation switches ``se`` and ``sge`` (the four rows of the paper's Fig. 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import (
    ChannelGate,
    Conv1x1,
    Conv1x1Linear,
    ConvLayer,
    CrossAttention,
    Exchange,
    LightConv3x3,
    PairIdentity,
    SEAttention,
    SpatialGroupEnhance,
    init_osnet_style,
)
from reidbench.models.pretrained import get_weights
from reidbench.models.registry import register_model

OPERATIONS = ("none", "exc", "ag", "cross_att")
GENOTYPES: dict[str, list[str]] = {
    # The official searched genotype (MSMT17 search); MASENet's Table II is the same.
    "msmt": ["ag", "ag", "exc", "ag", "cross_att", "ag", "ag", "none", "ag", "cross_att", "exc", "cross_att"],
}
CHANNELS = (64, 256, 384, 512)
SE_POSITIONS = ("cell_residual", "branch", "stage_end")
SGE_POSITIONS = ("cell_out", "cell_residual", "stage_end", "backbone_end")


def resolve_genotype(genotype: str | list[str]) -> list[str]:
    """A genotype by name, from a YAML file (a list of 12 op names, or {genotype: [...]}), or a list."""
    if isinstance(genotype, list):
        ops = genotype
    elif genotype in GENOTYPES:
        ops = GENOTYPES[genotype]
    elif Path(genotype).is_file():
        data = yaml.safe_load(Path(genotype).read_text())
        ops = data.get("genotype") if isinstance(data, dict) else data
    else:
        raise ReidbenchError(f"genotype {genotype!r}: expected one of {', '.join(GENOTYPES)} or a genotype file")
    if not isinstance(ops, list) or len(ops) != 12 or any(op not in OPERATIONS for op in ops):
        raise ReidbenchError(f"genotype {genotype!r}: expected 12 operations from {', '.join(OPERATIONS)}, "
                             f"got {ops!r}")
    return list(ops)


def interaction(name: str, channels: int) -> nn.Module:
    if name == "ag":
        return ChannelGate(channels)  # one gate shared by both branches
    return {"none": PairIdentity, "exc": Exchange, "cross_att": CrossAttention}[name]()


class Cell(nn.Module):
    """Two branches (receptive fields 3->5 and 7->13) with two interaction modules, fused by 1x1."""

    def __init__(self, cin: int, cout: int, ops: list[str], se: dict[str, Any] | None = None,
                 sge: dict[str, Any] | None = None, mid: int | None = None,
                 interaction_factory: Any = None) -> None:
        """``ops``: the two interaction names of the genotype; the search network passes its own
        ``interaction_factory`` (name, channels) -> module and may size the branches with ``mid``."""
        super().__init__()
        mid = mid or cout // 4
        make = interaction_factory or interaction
        self.conv1a, self.conv1b = Conv1x1(cin, mid), Conv1x1(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self._op2 = make(ops[0], mid)
        self.conv3a = LightConv3x3(mid, mid)
        self.conv3b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self._op3 = make(ops[1], mid)
        self.conv4a, self.conv4b = Conv1x1Linear(mid, cout), Conv1x1Linear(mid, cout)
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else None
        se, sge = se or {}, sge or {}
        self.se_position, self.sge_position = se.get("position"), sge.get("position")
        if self.se_position == "cell_residual":
            self.se = SEAttention(cout, se["reduction"])
        elif self.se_position == "branch":
            self.se_a, self.se_b = SEAttention(mid, se["reduction"]), SEAttention(mid, se["reduction"])
        if self.sge_position in ("cell_out", "cell_residual"):
            self.sge = SpatialGroupEnhance(sge["groups"], sge["init"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv2a(self.conv1a(x)), self.conv2b(self.conv1b(x))
        a, b = self._op2((a, b))
        a, b = self.conv3a(a), self.conv3b(b)
        a, b = self._op3((a, b))
        if self.se_position == "branch":
            a, b = self.se_a(a), self.se_b(b)
        fused = self.conv4a(a) + self.conv4b(b)
        if self.se_position == "cell_residual":
            fused = self.se(fused)
        if self.sge_position == "cell_residual":
            fused = self.sge(fused)
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(fused + identity)
        return self.sge(out) if self.sge_position == "cell_out" else out


class PositionEnergy(nn.Module):
    """DANet position-attention energy q^T k within each image (SAM's "pos" scores)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query_conv(x).flatten(2).transpose(1, 2)
        return torch.bmm(q, self.key_conv(x).flatten(2))  # [B, M, M]


class AlignModule(nn.Module):
    """SAM: cross-image correlation kernels and within-image position energy.

    Returns scores [B + 1, B, M]: rows 0..B-1 are max over image g's positions of the
    correlation with each position of image p; row B is each image's position-energy maximum.
    Training only: it adds no inference cost.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pos_pam = PositionEnergy(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        m = height * width
        flat = x.flatten(2)  # [B, C, M]
        corr = torch.einsum("gcm,pcn->gpnm", flat, flat)  # [g, p, p's positions, g's positions]
        kernel = corr.reshape(batch, batch, m, m).max(dim=3).values
        pos = self.pos_pam(x).max(dim=2).values.unsqueeze(0)  # [1, B, M]
        return torch.cat([kernel, pos], dim=0)


class MSINet(ReIDModel):
    train_outputs = ("global", "logits", "local", "local_logits", "sam")
    eval_outputs = ("embedding", "global", "local")

    def __init__(self, num_classes: int = 751, genotype: str | list[str] = "msmt", sam: bool = False,
                 se: dict[str, Any] | None = None, sge: dict[str, Any] | None = None) -> None:
        super().__init__()
        ops = resolve_genotype(genotype)
        self.genotype = ops
        c = CHANNELS
        self.conv1 = ConvLayer(3, c[0], 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cell_se = se if se and se["position"] in ("cell_residual", "branch") else None
        cell_sge = sge if sge and sge["position"] in ("cell_out", "cell_residual") else None
        self.cells = nn.ModuleList()
        self.stage_se = nn.ModuleList() if se and se["position"] == "stage_end" else None
        self.stage_sge = nn.ModuleList() if sge and sge["position"] == "stage_end" else None
        for stage in range(3):
            cin, cout = c[stage], c[stage + 1]
            self.cells.append(Cell(cin, cout, ops[4 * stage : 4 * stage + 2], cell_se, cell_sge))
            self.cells.append(Cell(cout, cout, ops[4 * stage + 2 : 4 * stage + 4], cell_se, cell_sge))
            if stage != 2:
                self.cells.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
            if self.stage_se is not None:
                self.stage_se.append(SEAttention(cout, se["reduction"]))
            if self.stage_sge is not None:
                self.stage_sge.append(SpatialGroupEnhance(sge["groups"], sge["init"]))
        self.final_sge = SpatialGroupEnhance(sge["groups"], sge["init"]) \
            if sge and sge["position"] == "backbone_end" else None
        # global branch
        self.fc = nn.Linear(c[3], c[3], bias=False)
        self.head = nn.BatchNorm1d(c[3])
        self.head.bias.requires_grad_(False)
        self.classifier = nn.Linear(c[3], num_classes)
        # local (two-stripe) branch on the stage-2 output
        self.f_conv = nn.Conv2d(c[2], 128, 1)
        self.f_fc = nn.Linear(256, 256, bias=False)
        self.f_head = nn.BatchNorm1d(256)
        self.f_head.bias.requires_grad_(False)
        self.f_classifier = nn.Linear(256, num_classes)
        self.align_module = AlignModule(c[3]) if sam else None
        init_osnet_style(self)
        # the official checkpoint, by name; classifiers of another dataset and MASENet's SE/SGE stay initialised
        self.pretrained_cfg = get_weights("msinet_msmt")

    def featuremaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        local_input = x
        stage_ends = {1: 0, 4: 1, 7: 2}
        for index, cell in enumerate(self.cells):
            x = cell(x)
            if index in stage_ends:
                stage = stage_ends[index]
                if self.stage_se is not None:
                    x = self.stage_se[stage](x)
                if self.stage_sge is not None:
                    x = self.stage_sge[stage](x)
            if index == 5:
                local_input = x
        if self.final_sge is not None:
            x = self.final_sge(x)
        return x, local_input

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.featuremaps(images)

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor]) -> ModelOutputs:
        x, f_x = features
        v = x.mean(dim=(2, 3))
        f = self.f_conv(f_x)
        half = f.shape[2] // 2
        f_v = torch.cat([f[:, :, :half].mean(dim=(2, 3)), f[:, :, half:].mean(dim=(2, 3))], dim=1)
        if not self.training:
            return {"embedding": torch.cat([v, f_v], dim=1), "global": v, "local": f_v}
        out = {"global": v, "logits": self.classifier(self.head(self.fc(v))),
               "local": f_v, "local_logits": self.f_classifier(self.f_head(self.f_fc(f_v)))}
        if self.align_module is not None:
            out["sam"] = self.align_module(x)
        return out

    def get_classifier(self) -> list[nn.Module]:
        return [self.classifier, self.f_classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.conv1, self.cells]  # stem + cells (the official backbone count)

    def feature_map(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return features[0]  # the final map (the global branch's input)

    def sge_modules(self) -> list[tuple[str, SpatialGroupEnhance]]:
        """MASENet's SGE modules in forward order, named by where they sit."""
        found: list[tuple[str, SpatialGroupEnhance]] = []
        cells = [cell for cell in self.cells if isinstance(cell, Cell)]
        found += [(f"SGE cell {i}", cell.sge) for i, cell in enumerate(cells, start=1) if hasattr(cell, "sge")]
        found += [(f"SGE stage {i}", sge) for i, sge in enumerate(self.stage_sge or [], start=1)]
        if self.final_sge is not None:
            found.append(("SGE backbone end", self.final_sge))
        return found

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """MASENet: each SGE's spatial weights, averaged over its groups, [N, h, w] (MSINet has none)."""
        modules = self.sge_modules()
        for _, module in modules:
            module.recorded = []
        try:
            self.forward_features(images)
            return {name: module.recorded[0].mean(dim=1) for name, module in modules}
        finally:
            for _, module in modules:
                module.recorded = None


def _attention(se: bool, sge: bool, se_reduction: int, se_position: str, sge_groups: int,
               sge_position: str, sge_init: str) -> tuple[dict | None, dict | None]:
    if se_position not in SE_POSITIONS:
        raise ReidbenchError(f"model se_position: expected one of {', '.join(SE_POSITIONS)}, got {se_position!r}")
    if sge_position not in SGE_POSITIONS:
        raise ReidbenchError(f"model sge_position: expected one of {', '.join(SGE_POSITIONS)}, "
                             f"got {sge_position!r}")
    if sge_init not in ("original", "ea"):
        raise ReidbenchError(f"model sge_init: expected original or ea, got {sge_init!r}")
    return ({"position": se_position, "reduction": se_reduction} if se else None,
            {"position": sge_position, "groups": sge_groups, "init": sge_init} if sge else None)


@register_model
def msinet(num_classes: int = 751, genotype: str | list[str] = "msmt") -> MSINet:
    """MSINet x1.0 with the searched genotype; 2.328M parameters without classifiers."""
    return MSINet(num_classes, genotype)


@register_model
def msinet_sam(num_classes: int = 751, genotype: str | list[str] = "msmt") -> MSINet:
    """MSINet with the spatial alignment module (training-only); 2.394M without classifiers."""
    return MSINet(num_classes, genotype, sam=True)


@register_model
def masenet(num_classes: int = 751, genotype: str | list[str] = "msmt", se: bool = True, sge: bool = True,
            se_reduction: int = 16, se_position: str = "cell_residual", sge_groups: int = 8,
            sge_position: str = "cell_out", sge_init: str = "original", sam: bool = False) -> MSINet:
    """MASENet: MSINet + SE (fused residual, r=16, no bias) + SGE (cell output, 8 groups)."""
    se_cfg, sge_cfg = _attention(se, sge, se_reduction, se_position, sge_groups, sge_position, sge_init)
    return MSINet(num_classes, genotype, sam=sam, se=se_cfg, sge=sge_cfg)
