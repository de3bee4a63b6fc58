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

from reidbench.models.layers import Conv1x1, ConvLayer
from reidbench.models.msinet import CHANNELS, OPERATIONS, Cell, interaction

PRIMITIVES = OPERATIONS  # one operation order for the search and the final network


class MixedPair(nn.Module):
    """Every interaction at once, mixed by the softmax weights the search network sets before each forward."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList([interaction(name, channels) for name in PRIMITIVES])
        self.weights: torch.Tensor | None = None

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.weights is not None, "MSINetSearch sets the mixing weights"
        outs = [op(pair) for op in self.ops]
        return (sum(w * o[0] for w, o in zip(self.weights, outs, strict=True)),
                sum(w * o[1] for w, o in zip(self.weights, outs, strict=True)))


def search_cell(cin: int, cout: int, mid_from: str = "in") -> Cell:
    """The final network's cell with both interaction slots mixed (branch width from ``mid_from``)."""
    mid = (cin if mid_from == "in" else cout) // 4
    return Cell(cin, cout, ["mixed", "mixed"], mid=mid, interaction_factory=lambda _name, channels: MixedPair(channels))


class MSINetSearch(nn.Module):
    def __init__(self, mid_from: str = "in") -> None:
        super().__init__()
        c = CHANNELS
        self.stem = nn.Sequential(ConvLayer(3, c[0], 7, stride=2, padding=3), nn.MaxPool2d(3, 2, 1))
        self.cells = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for stage in range(3):
            self.cells.append(search_cell(c[stage], c[stage + 1], mid_from))
            self.cells.append(search_cell(c[stage + 1], c[stage + 1], mid_from))
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
            cell._op2.weights, cell._op3.weights = weights[2 * index], weights[2 * index + 1]
            x = cell(x)
            if index % 2 == 1 and index // 2 < 2:
                x = self.downsamples[index // 2](x)
        return self.neck(x.mean(dim=(2, 3)))

    def genotype(self) -> list[str]:
        return [PRIMITIVES[i] for i in self.alpha.argmax(dim=-1).tolist()]
