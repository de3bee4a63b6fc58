"""OSNet x1_0 (Zhou et al., ICCV 2019; docs/papers/baselines.md): a baseline row of MASENet's and MHSA-Net's tables.

Omni-scale blocks: four streams of 1-4 lite 3x3 convolutions, one shared channel gate (reduction 16)
aggregating them, a 1x1 linear restore and a residual. Attribute names follow torchreid's
``osnet_x1_0`` so that its checkpoints load by name. The 512-d feature after ``fc`` (Linear + BN + ReLU)
is the test embedding; the classifier is used in training only.
"""

from __future__ import annotations

import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import ChannelGate, Conv1x1, Conv1x1Linear, ConvLayer, LightConv3x3, init_osnet_style
from reidbench.models.pretrained import get_weights
from reidbench.models.registry import register_model


class OSBlock(nn.Module):
    def __init__(self, cin: int, cout: int, bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid = cout // bottleneck_reduction
        self.conv1 = Conv1x1(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1Linear(mid, cout)
        self.downsample = Conv1x1Linear(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = sum(self.gate.gate(stream(x1)) for stream in (self.conv2a, self.conv2b, self.conv2c, self.conv2d))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(x2) + identity)


def _stage(cin: int, cout: int, transition: bool) -> nn.Sequential:
    layers: list[nn.Module] = [OSBlock(cin, cout), OSBlock(cout, cout)]
    if transition:  # 1x1 conv then 2x2 average pooling, between stages
        layers.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*layers)


class OSNet(ReIDModel):
    train_outputs = ("embedding", "logits")
    eval_outputs = ("embedding",)

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (64, 256, 384, 512),
                 feature_dim: int = 512) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(channels[0], channels[1], transition=True)
        self.conv3 = _stage(channels[1], channels[2], transition=True)
        self.conv4 = _stage(channels[2], channels[3], transition=False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(feature_dim, num_classes)
        init_osnet_style(self)
        self.pretrained_cfg = get_weights("osnet_x1_0_imagenet")  # torchreid's ImageNet checkpoint, by name

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(images))
        return self.conv5(self.conv4(self.conv3(self.conv2(x))))

    def get_classifier(self) -> list[nn.Module]:
        return [self.classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5]  # before pooling; fc is the neck

    def forward_head(self, feature_map: torch.Tensor) -> ModelOutputs:
        feature = self.fc(self.global_avgpool(feature_map).flatten(1))
        if not self.training:
            return {"embedding": feature}
        return {"embedding": feature, "logits": self.classifier(feature)}


@register_model
def osnet_x1_0(num_classes: int = 751, feature_dim: int = 512) -> OSNet:
    """OSNet x1_0: 2.170M parameters without the classifier, 0.997 GMac at 256x128."""
    return OSNet(num_classes, feature_dim=feature_dim)
