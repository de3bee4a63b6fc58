"""AlignedReID++ (Luo et al., 2019) and AaP-ReID (attention in the ResNet bottlenecks); docs/papers/aap-reid.md.

Both are the same network with switches (every one a recipe key), so that AaP-ReID's cumulative
ablation (Table 1) and its attention comparison (Table 3) are recipes:

- ``depth``: torchvision ResNet-18/34/50/101 trunk; ``last_stride`` 2 (AlignedReID++) or 1 (AaP).
- ``attention`` (none | cwa | cwa_add | bam | sp | eca) inserted in every block of ``attention_layers``
  (AaP-ReID: layers 3 and 4; "CWA-all": 1-4): in a Bottleneck it acts on conv3's output before bn3,
  in a BasicBlock on conv2's output before bn2 (the released code's placement).
- ``band``: BaND, training-time ReLU(BN2d) before pooling and Dropout(0.5) after it; the dropped-out
  feature feeds both the classifier and the global triplet loss.
- Local branch (training): BN2d -> ReLU -> max over the width -> 1x1 conv to ``local_dim`` -> L2 per
  stripe, for the DMLI triplet loss whose hard samples are mined with the global distance.
- Test: the global feature is GAP of the raw map; the local feature is, as in the official code,
  the width-max of the raw map L2-normalised per stripe (``local_test="raw"``), or the trained
  branch (``"branch"``), a choice the official code does not offer.

Outputs in training: ``global`` [N, C], ``logits``, ``local`` [N, H, local_dim]; in eval:
``embedding`` (= global GAP) and ``local`` [N, H, C'] stripes.
"""

from __future__ import annotations

import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import resnet_trunk, trunk_pretrained_cfg
from reidbench.models.registry import register_model


class AlignedReID(ReIDModel):
    train_outputs = ("global", "logits", "local")
    eval_outputs = ("embedding", "local")

    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 2, attention: str = "none",
                 attention_layers: list[int] | None = None, reduction: int = 16, band: bool = False,
                 dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw") -> None:
        super().__init__()
        if local_test not in ("raw", "branch"):
            raise ValueError(f"local_test: expected raw or branch, got {local_test!r}")
        self.backbone = resnet_trunk(depth, last_stride, attention=attention, attention_layers=attention_layers,
                                     reduction=reduction)
        self.pretrained_cfg = trunk_pretrained_cfg(self.backbone, depth)
        channels = self.backbone.out_channels
        self.band = band
        if band:
            self.band_bn = nn.BatchNorm2d(channels)
            self.band_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        self.local_bn = nn.BatchNorm2d(channels)
        self.local_conv = nn.Conv2d(channels, local_dim, 1)
        self.local_test = local_test

    def _local_branch(self, feature_map: torch.Tensor) -> torch.Tensor:
        stripes = torch.relu(self.local_bn(feature_map)).amax(dim=3, keepdim=True)
        return nn.functional.normalize(self.local_conv(stripes).squeeze(3).transpose(1, 2), dim=2)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def get_classifier(self) -> list[nn.Module]:
        return [self.classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def forward_head(self, feature_map: torch.Tensor) -> ModelOutputs:
        if not self.training:
            if self.local_test == "raw":
                local = nn.functional.normalize(feature_map.amax(dim=3).transpose(1, 2), dim=2)
            else:
                local = self._local_branch(feature_map)
            return {"embedding": feature_map.mean(dim=(2, 3)), "local": local}
        pooled = torch.relu(self.band_bn(feature_map)) if self.band else feature_map
        global_feat = pooled.mean(dim=(2, 3))
        if self.band:
            global_feat = self.band_dropout(global_feat)
        return {"global": global_feat, "logits": self.classifier(global_feat),
                "local": self._local_branch(feature_map)}


@register_model
def alignedreid_pp(num_classes: int = 751, depth: int = 50, last_stride: int = 2, attention: str = "none",
                   attention_layers: list[int] | None = None, reduction: int = 16, band: bool = False,
                   dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw") -> AlignedReID:
    """AlignedReID++ as released: ResNet-50, last stride 2, global + DMLI local branch (25.31M, Market)."""
    return AlignedReID(num_classes, depth, last_stride, attention, attention_layers, reduction, band, dropout,
                       local_dim, local_test)


@register_model
def aap_reid(num_classes: int = 751, depth: int = 50, last_stride: int = 1, attention: str = "cwa",
             attention_layers: list[int] | None = None, reduction: int = 16, band: bool = True,
             dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw") -> AlignedReID:
    """AaP-ReID: AlignedReID++ with last stride 1, BaND and CWA in layers 3-4 (27.69M, Market)."""
    return AlignedReID(num_classes, depth, last_stride, attention, attention_layers or [3, 4], reduction,
                       band, dropout, local_dim, local_test)
