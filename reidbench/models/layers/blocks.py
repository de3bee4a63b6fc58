"""Convolution blocks and MSINet's branch-interaction operations. Attribute names follow the public
reference implementations (OSNet / MSINet) so that their checkpoints load by name."""

from __future__ import annotations

import torch
from torch import nn


def init_osnet_style(model: nn.Module, conv_mode: str = "fan_out", linear_std: float = 0.01) -> None:
    """The initialisation of OSNet-family code: Kaiming convolutions, BN weight 1 / bias 0, linear layers
    N(0, linear_std) with zero bias. OSNet and MSINet use fan-out and 0.01; CDNet's released code uses
    fan-in and 0.001."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvLayer(nn.Module):
    """conv (no bias) + BN + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(ConvLayer):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)


class Conv1x1Linear(nn.Module):
    """1x1 conv (no bias) + BN, no activation."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """OSNet's lite 3x3: pointwise conv -> depthwise 3x3 conv -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


Pair = tuple[torch.Tensor, torch.Tensor]


class PairIdentity(nn.Module):
    def forward(self, pair: Pair) -> Pair:
        return pair


class Exchange(nn.Module):
    def forward(self, pair: Pair) -> Pair:
        return pair[1], pair[0]


class ChannelGate(nn.Module):
    """OSNet's channel gate, one module applied to both branches: x * sigmoid(MLP(GAP(x)))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))

    def forward(self, pair: Pair) -> Pair:
        return self.gate(pair[0]), self.gate(pair[1])


class CrossAttention(nn.Module):
    """DANet channel attention with swapped keys: E_a = A B^T, softmax(max(E) - E), gamma shared."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def _attend(self, energy: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(energy.max(dim=-1, keepdim=True).values - energy, dim=-1)
        return self.gamma * torch.bmm(weights, values)

    def forward(self, pair: Pair) -> Pair:
        a, b = pair
        batch, channels, height, width = a.shape
        fa, fb = a.reshape(batch, channels, -1), b.reshape(batch, channels, -1)
        out_a = self._attend(torch.bmm(fa, fb.transpose(1, 2)), fa).view_as(a) + a
        out_b = self._attend(torch.bmm(fb, fa.transpose(1, 2)), fb).view_as(b) + b
        return out_a, out_b
