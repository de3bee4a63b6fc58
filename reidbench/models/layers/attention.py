"""Attention modules shared by model families: SE and SGE (MASENet), and the channel / spatial
attentions AaP-ReID compares (CWA, BAM, SP, the repository's ECA).

Every module maps a feature map [N, C, H, W] to one of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SEAttention(nn.Module):
    """Squeeze-and-excitation with bias-free linear layers (the SEAttention form MASENet names)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class SpatialGroupEnhance(nn.Module):
    """SGE (Li et al., 2019): per group, attention from the similarity of each position to the
    group's mean feature, normalised over space, scaled/shifted by one (weight, bias) per group.

    ``init="original"`` (weight 0, bias 1, as the SGE paper) or ``"ea"`` (weight 0, bias 0).
    """

    def __init__(self, groups: int = 8, init: str = "original") -> None:
        super().__init__()
        if init not in ("original", "ea"):
            raise ValueError(f"sge_init: expected original or ea, got {init!r}")
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.full((1, groups, 1, 1), 1.0 if init == "original" else 0.0))
        # set to a list by a model that shows its spatial weights (MSINet.attention_maps): each forward appends them
        self.recorded: list[torch.Tensor] | None = None

    def spatial_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate of each group at each position, sigmoid(attention): [N, G, H, W]."""
        batch, channels, height, width = x.shape
        grouped = x.reshape(batch * self.groups, channels // self.groups, height, width)
        similarity = (grouped * grouped.mean(dim=(2, 3), keepdim=True)).sum(dim=1)  # [B*G, H, W]
        flat = similarity.reshape(batch * self.groups, -1)
        flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + 1e-5)
        attention = flat.reshape(batch, self.groups, height, width) * self.weight + self.bias
        return torch.sigmoid(attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weights = self.spatial_weights(x)
        if self.recorded is not None:
            self.recorded.append(weights.detach())
        grouped = x.reshape(batch * self.groups, channels // self.groups, height, width)
        gated = grouped * weights.reshape(batch * self.groups, 1, height, width)
        return gated.reshape(batch, channels, height, width)


class ChannelMLP(nn.Module):
    """GAP -> Linear(C, C/r) -> BN1d -> ReLU -> Linear(C/r, C): the channel logits of AaP-ReID's CWA
    (paper eq. 1-3) and of BAM's channel branch (linear layers with bias)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.bn(self.fc1(x.mean(dim=(2, 3))))))[:, :, None, None]


class ChannelWiseAttention(nn.Module):
    """AaP-ReID's CWA: ``f * sigmoid(MLP(GAP(f)))`` (``fusion="mul"``, CWA(x), the released code).

    ``fusion="add"`` is the paper's CWA(+) ("element-wise addition"), which the code does not contain;
    read here literally as ``f + sigmoid(MLP(GAP(f)))`` (same parameters, as Table 3 prints).
    """

    def __init__(self, channels: int, reduction: int = 16, fusion: str = "mul") -> None:
        super().__init__()
        if fusion not in ("mul", "add"):
            raise ValueError(f"cwa fusion: expected mul or add, got {fusion!r}")
        self.fusion = fusion
        self.mlp = ChannelMLP(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.mlp(x))
        return x * weights if self.fusion == "mul" else x + weights


class SpatialBranch(nn.Module):
    """BAM's spatial branch: 1x1 reduce, two dilated 3x3 convs, 1x1 to one map (convs with bias)."""

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BottleneckAttention(nn.Module):
    """BAM (Park et al., 2018): ``x * (1 + sigmoid(M_c(x) + M_s(x)))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel = ChannelMLP(channels, reduction)
        self.spatial = SpatialBranch(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1 + torch.sigmoid(self.channel(x) + self.spatial(x)))


class SpatialAttention(nn.Module):
    """The "SP" row of AaP-ReID's Table 3: ``x * sigmoid(M_s(x))`` with BAM's spatial branch."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.spatial = SpatialBranch(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(x))


class PooledECA(nn.Module):
    """The AaP-ReID repository's ``eca_layer``: ``x * sigmoid(conv_k(GAP(x)) + conv_k(GMP(x)))`` with
    two bias-free 1-D convolutions over channels (not Wang et al.'s single-pool adaptive-k ECA)."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.avg_conv = nn.Conv1d(1, 1, kernel, padding=kernel // 2, bias=False)
        self.max_conv = nn.Conv1d(1, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.avg_conv(x.mean(dim=(2, 3))[:, None, :])
        peak = self.max_conv(x.amax(dim=(2, 3))[:, None, :])
        return x * torch.sigmoid(avg + peak)[:, 0, :, None, None]


#: attention modules by recipe name (timm's ``create_attn`` in spirit): name -> constructor(channels, reduction)
ATTENTION_REGISTRY: dict[str, Callable[[int, int], nn.Module]] = {
    "cwa": lambda channels, reduction: ChannelWiseAttention(channels, reduction, "mul"),
    "cwa_add": lambda channels, reduction: ChannelWiseAttention(channels, reduction, "add"),
    "bam": BottleneckAttention,
    "sp": SpatialAttention,
    "eca": lambda channels, reduction: PooledECA(channels),
    "se": SEAttention,
}
ATTENTIONS = tuple(ATTENTION_REGISTRY)


def build_attention(name: str, channels: int, reduction: int = 16) -> nn.Module:
    """An attention module by recipe name (see ``ATTENTION_REGISTRY``)."""
    if name not in ATTENTION_REGISTRY:
        raise ValueError(f"attention: expected one of {', '.join(ATTENTIONS)}, got {name!r}")
    return ATTENTION_REGISTRY[name](channels, reduction)
