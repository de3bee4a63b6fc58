"""A small CNN for smoke runs, tests and CI regression on CPU (not a paper model)."""

from __future__ import annotations

from torch import nn

from reidbench.models.layers import BNNeck, TrunkWithBNNeck
from reidbench.models.registry import register_model


def small_trunk(width: int = 32) -> nn.Sequential:
    """Four conv-BN-ReLU-maxpool blocks (stride 16, ``4 * width`` channels): a trunk for CPU smoke runs."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         block(4 * width, 4 * width))


class SmallCNN(TrunkWithBNNeck):
    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.backbone = small_trunk(width)
        self.head = BNNeck(4 * width, num_classes)


@register_model
def small_cnn(num_classes: int = 751, width: int = 32) -> SmallCNN:
    """Four conv blocks + BNNeck (BoT-style outputs): fast enough for CPU smoke runs."""
    return SmallCNN(num_classes, width)
