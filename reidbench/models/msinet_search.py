"""MSINet's search network (docs/papers/masenet.md, "Architecture search"): every interaction slot is a
softmax-weighted mix of the four operations, with architecture parameters alpha [12, 4]; the genotype is
the argmax.

The official search cell sizes its branches from the cell's input channels (in // 4) while the
final network uses out // 4; ``mid_from="in"`` keeps the official behaviour, ``"out"`` matches the
final network.
"""

from __future__ import annotations

import torch
from torch import nn

from reidbench.models.layers import (
    ChannelGate,
    Conv1x1,
    Conv1x1Linear,
    ConvLayer,
    CrossAttention,
    Exchange,
    LightConv3x3,
    PairIdentity,
)
from reidbench.models.msinet import CHANNELS

PRIMITIVES = ("none", "ag", "cross_att", "exc")


class MixedPair(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList([PairIdentity(), ChannelGate(channels), CrossAttention(), Exchange()])

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor):
        outs = [op(pair) for op in self.ops]
        return (sum(w * o[0] for w, o in zip(weights, outs, strict=True)),
                sum(w * o[1] for w, o in zip(weights, outs, strict=True)))


class SearchCell(nn.Module):
    def __init__(self, cin: int, cout: int, mid_from: str = "in") -> None:
        super().__init__()
        mid = (cin if mid_from == "in" else cout) // 4
        self.conv1a, self.conv1b = Conv1x1(cin, mid), Conv1x1(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.mix1 = MixedPair(mid)
        self.conv3a = LightConv3x3(mid, mid)
        self.conv3b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.mix2 = MixedPair(mid)
        self.conv4a, self.conv4b = Conv1x1Linear(mid, cout), Conv1x1Linear(mid, cout)
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        a, b = self.mix1((self.conv2a(self.conv1a(x)), self.conv2b(self.conv1b(x))), w1)
        a, b = self.mix2((self.conv3a(a), self.conv3b(b)), w2)
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv4a(a) + self.conv4b(b) + identity)


class MSINetSearch(nn.Module):
    def __init__(self, mid_from: str = "in") -> None:
        super().__init__()
        c = CHANNELS
        self.stem = nn.Sequential(ConvLayer(3, c[0], 7, stride=2, padding=3), nn.MaxPool2d(3, 2, 1))
        self.cells = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for stage in range(3):
            self.cells.append(SearchCell(c[stage], c[stage + 1], mid_from))
            self.cells.append(SearchCell(c[stage + 1], c[stage + 1], mid_from))
            if stage != 2:
                self.downsamples.append(nn.Sequential(Conv1x1(c[stage + 1], c[stage + 1]), nn.AvgPool2d(2, 2)))
        self.neck = nn.BatchNorm1d(c[3])
        self.alpha = nn.Parameter(1e-3 * torch.randn(12, len(PRIMITIVES)))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.alpha, dim=-1)
        x = self.stem(images)
        for index, cell in enumerate(self.cells):
            x = cell(x, weights[2 * index], weights[2 * index + 1])
            if index % 2 == 1 and index // 2 < 2:
                x = self.downsamples[index // 2](x)
        return self.neck(x.mean(dim=(2, 3)))

    def genotype(self) -> list[str]:
        return [PRIMITIVES[i] for i in self.alpha.argmax(dim=-1).tolist()]
