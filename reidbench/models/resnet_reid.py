"""ResNet ReID models: torchvision's ResNet-50 and the BoT strong baseline built on it.

BoT (Luo et al., 2019; "ResNet50*" in MASENet's Table I): last stride 1, global average pooling,
a BN neck whose bias is frozen, and a bias-free classifier. Training returns the pre-BN feature
for the triplet loss and the logits for the ID loss; evaluation returns the post-BN feature.
See docs/models.md.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import BNNeck, TrunkWithBNNeck, resnet_trunk, trunk_pretrained_cfg
from reidbench.models.pretrained import get_weights
from reidbench.models.registry import register_model


class BoTResNet(TrunkWithBNNeck):
    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 1, stem_relu: bool = True) -> None:
        super().__init__()
        self.backbone = resnet_trunk(depth, last_stride, stem_relu=stem_relu)
        self.head = BNNeck(self.backbone.out_channels, num_classes)
        self.pretrained_cfg = trunk_pretrained_cfg(self.backbone, depth)



@register_model
def bot_resnet50(num_classes: int = 751, last_stride: int = 1, stem_relu: bool = True) -> BoTResNet:
    """BoT strong baseline: ResNet-50 (last stride 1) + BNNeck; 2048-d test feature."""
    return BoTResNet(num_classes, 50, last_stride, stem_relu)


class ImageNetResNet(ReIDModel):
    """torchvision's classification ResNet, unchanged (the reference for parameter counts)."""

    train_outputs = ("logits",)
    eval_outputs = ("embedding", "logits")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.net = torchvision.models.resnet50(weights=None, num_classes=num_classes)
        self.pretrained_cfg = get_weights("resnet50").with_mapping(rename=(("", "net."),))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(images))))
        return n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x))))).flatten(1)

    def forward_head(self, features: torch.Tensor) -> ModelOutputs:
        logits = self.net.fc(features)
        return {"logits": logits} if self.training else {"embedding": features, "logits": logits}

    def get_classifier(self) -> list[nn.Module]:
        return [self.net.fc]

    def backbone_modules(self) -> list[nn.Module]:
        return [m for name, m in self.net.named_children() if name != "fc"]


@register_model
def resnet50(num_classes: int = 1000) -> ImageNetResNet:
    """torchvision's ImageNet ResNet-50, unchanged (the reference for parameter counts)."""
    return ImageNetResNet(num_classes)
