"""Heads shared by families: BoT's BNNeck, and the trunk + BNNeck model shape several families share."""

from __future__ import annotations

import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel


class BNNeck(nn.Module):
    """GAP -> BatchNorm (bias frozen at 0) -> bias-free linear classifier (BoT).

    Outputs: ``global`` (pre-BN, for the triplet loss), ``embedding`` (post-BN, the test feature) and,
    in training, ``logits``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = nn.BatchNorm1d(in_features)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feature_map: torch.Tensor) -> dict[str, torch.Tensor]:
        global_feat = feature_map.mean(dim=(2, 3)) if feature_map.ndim == 4 else feature_map
        bn_feat = self.bottleneck(global_feat)
        if not self.training:
            return {"embedding": bn_feat, "global": global_feat}
        return {"global": global_feat, "embedding": bn_feat, "logits": self.classifier(bn_feat)}


class TrunkWithBNNeck(ReIDModel):
    """A model that is ``self.backbone`` (feature map) followed by ``self.head`` (a BNNeck): BoT and the
    small smoke-test CNN. Subclasses build the two modules."""

    train_outputs = ("global", "embedding", "logits")
    eval_outputs = ("embedding", "global")
    backbone: nn.Module
    head: BNNeck

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward_head(self, features: torch.Tensor) -> ModelOutputs:
        return self.head(features)  # type: ignore[return-value]  # BNNeck's outputs are contract fields

    def get_classifier(self) -> list[nn.Module]:
        return [self.head.classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]
