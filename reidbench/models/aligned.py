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
import torchvision
from torch import nn

from reidbench.models.layers import ATTENTIONS, build_attention
from reidbench.models.registry import register_model

_RESNETS = {
    18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    34: (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    101: (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
}


def _insert_attention(net: torchvision.models.ResNet, attention: str, layers: list[int], reduction: int) -> None:
    for index in layers:
        for block in getattr(net, f"layer{index}"):
            # the block's last conv, before its last BN: conv3 in a Bottleneck, conv2 in a BasicBlock
            name = "conv3" if isinstance(block, torchvision.models.resnet.Bottleneck) else "conv2"
            conv = getattr(block, name)
            setattr(block, name, nn.Sequential(conv, build_attention(attention, conv.out_channels, reduction)))


def resnet_trunk(depth: int, last_stride: int, pretrained: bool, attention: str = "none",
                 attention_layers: list[int] | None = None, reduction: int = 16) -> tuple[nn.Sequential, int]:
    """A torchvision ResNet without its pooling and fc, with the last stride and attention chosen."""
    if depth not in _RESNETS:
        raise ValueError(f"depth: expected one of {sorted(_RESNETS)}, got {depth!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride: expected 1 or 2, got {last_stride!r}")
    build, weights = _RESNETS[depth]
    net = build(weights=weights if pretrained else None)
    if last_stride == 1:
        first = net.layer4[0]
        strided = first.conv2 if isinstance(first, torchvision.models.resnet.Bottleneck) else first.conv1
        strided.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
    if attention != "none":
        if attention not in ATTENTIONS:
            raise ValueError(f"attention: expected none or one of {', '.join(ATTENTIONS)}, got {attention!r}")
        layers = attention_layers or [3, 4]
        if any(i not in (1, 2, 3, 4) for i in layers):
            raise ValueError(f"attention_layers: expected ResNet layers among 1-4, got {layers!r}")
        _insert_attention(net, attention, layers, reduction)
    channels = net.fc.in_features
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4), channels


class AlignedReID(nn.Module):
    def __init__(self, num_classes: int, depth: int = 50, last_stride: int = 2, attention: str = "none",
                 attention_layers: list[int] | None = None, reduction: int = 16, band: bool = False,
                 dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw",
                 pretrained: bool = False) -> None:
        super().__init__()
        if local_test not in ("raw", "branch"):
            raise ValueError(f"local_test: expected raw or branch, got {local_test!r}")
        self.backbone, channels = resnet_trunk(depth, last_stride, pretrained, attention, attention_layers,
                                               reduction)
        self.band = band
        if band:
            self.band_bn = nn.BatchNorm2d(channels)
            self.band_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)
        self.local_bn = nn.BatchNorm2d(channels)
        self.local_conv = nn.Conv2d(channels, local_dim, 1)
        self.local_test = local_test
        self.pretrained = pretrained

    def _local_branch(self, feature_map: torch.Tensor) -> torch.Tensor:
        stripes = torch.relu(self.local_bn(feature_map)).amax(dim=3, keepdim=True)
        return nn.functional.normalize(self.local_conv(stripes).squeeze(3).transpose(1, 2), dim=2)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feature_map = self.backbone(images)
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
                   dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw",
                   pretrained: bool = False) -> AlignedReID:
    """AlignedReID++ as released: ResNet-50, last stride 2, global + DMLI local branch (25.31M, Market)."""
    return AlignedReID(num_classes, depth, last_stride, attention, attention_layers, reduction, band, dropout,
                       local_dim, local_test, pretrained)


@register_model
def aap_reid(num_classes: int = 751, depth: int = 50, last_stride: int = 1, attention: str = "cwa",
             attention_layers: list[int] | None = None, reduction: int = 16, band: bool = True,
             dropout: float = 0.5, local_dim: int = 128, local_test: str = "raw",
             pretrained: bool = False) -> AlignedReID:
    """AaP-ReID: AlignedReID++ with last stride 1, BaND and CWA in layers 3-4 (27.69M, Market)."""
    return AlignedReID(num_classes, depth, last_stride, attention, attention_layers or [3, 4], reduction,
                       band, dropout, local_dim, local_test, pretrained)
