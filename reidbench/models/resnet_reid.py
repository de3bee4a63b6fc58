"""ResNet ReID models: torchvision's ResNet-50 and the BoT strong baseline built on it.

BoT (Luo et al., 2019; "ResNet50*" in MASENet's Table I): last stride 1, global average pooling,
a BN neck whose bias is frozen, and a bias-free classifier. Training returns the pre-BN feature
for the triplet loss and the logits for the ID loss; evaluation returns the post-BN feature.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from reidbench.models.registry import register_model


def _resnet50_trunk(last_stride: int, pretrained: bool) -> nn.Sequential:
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    net = torchvision.models.resnet50(weights=weights)
    if last_stride != 2:
        net.layer4[0].conv2.stride = (last_stride, last_stride)
        net.layer4[0].downsample[0].stride = (last_stride, last_stride)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)


class BNNeckHead(nn.Module):
    """GAP -> BatchNorm (bias frozen at 0) -> bias-free linear classifier."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = nn.BatchNorm1d(in_features)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        global_feat = feature_map.mean(dim=(2, 3))
        bn_feat = self.bottleneck(global_feat)
        if not self.training:
            return {"embedding": bn_feat, "global": global_feat}
        return {"global": global_feat, "embedding": bn_feat, "logits": self.classifier(bn_feat)}


class BoTResNet50(nn.Module):
    def __init__(self, num_classes: int, last_stride: int = 1, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone = _resnet50_trunk(last_stride, pretrained)
        self.head = BNNeckHead(2048, num_classes)
        self.pretrained = pretrained

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(images))


@register_model
def bot_resnet50(num_classes: int = 751, last_stride: int = 1, pretrained: bool = False) -> BoTResNet50:
    """BoT strong baseline: ResNet-50 (last stride 1) + BNNeck; 2048-d test feature."""
    return BoTResNet50(num_classes, last_stride, pretrained)


@register_model
def resnet50(num_classes: int = 1000, pretrained: bool = False) -> nn.Module:
    """torchvision's ImageNet ResNet-50, unchanged (the reference for parameter counts)."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.resnet50(weights=weights, num_classes=num_classes)
