"""One ResNet trunk builder for every ResNet-based family (BoT, AlignedReID++ / AaP-ReID, MHSA-Net,
FSAFCMN, ...): torchvision's ResNet-18/34/50/101 without pooling and fc, with

- ``last_stride`` 1 or 2 (the first block of layer4; ReID models usually use 1);
- ``stem_relu``: the ReLU after the stem's BatchNorm (torchvision has it; BoT's released code
  leaves it out, see ``docs/models.md``);
- ``attention`` from the attention registry inserted after each block's last convolution, before
  its last BatchNorm, in ``attention_layers`` (AaP-ReID's placement);
- ``block_hook``: a family's own per-block change (IBN, self-attention), applied before attention.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1`` ...), so torchvision's ImageNet
weights load by name through :func:`reidbench.models.pretrained.load_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from reidbench.models.layers.attention import ATTENTIONS, build_attention
from reidbench.models.pretrained import PretrainedCfg, get_weights

_BUILDERS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
             50: torchvision.models.resnet50, 101: torchvision.models.resnet101}


class ResNetTrunk(nn.Module):
    """Stem + layer1-4 of a torchvision ResNet; returns the last feature map."""

    def __init__(self, net: torchvision.models.ResNet, stem_relu: bool = True) -> None:
        super().__init__()
        self.conv1, self.bn1, self.maxpool = net.conv1, net.bn1, net.maxpool
        self.relu = net.relu if stem_relu else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels: int = net.fc.in_features
        self.wrapped_convs: list[str] = []  # convs wrapped as Sequential(conv, attention): "layer3.0.conv3"

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]


def _last_conv_name(block: nn.Module) -> str:
    return "conv3" if isinstance(block, torchvision.models.resnet.Bottleneck) else "conv2"


def set_last_stride(trunk: ResNetTrunk, stride: int) -> None:
    first = trunk.layer4[0]
    strided = first.conv2 if isinstance(first, torchvision.models.resnet.Bottleneck) else first.conv1
    strided.stride = (stride, stride)
    first.downsample[0].stride = (stride, stride)


def insert_attention(trunk: ResNetTrunk, attention: str, layers: list[int], reduction: int) -> None:
    for index in layers:
        for block_index, block in enumerate(getattr(trunk, f"layer{index}")):
            name = _last_conv_name(block)  # the block's last conv, before its last BN
            conv = getattr(block, name)
            setattr(block, name, nn.Sequential(conv, build_attention(attention, conv.out_channels, reduction)))
            trunk.wrapped_convs.append(f"layer{index}.{block_index}.{name}")


def resnet_trunk(depth: int = 50, last_stride: int = 1, *, stem_relu: bool = True, attention: str = "none",
                 attention_layers: list[int] | None = None, reduction: int = 16,
                 block_hook: Callable[[int, int, nn.Module], None] | None = None) -> ResNetTrunk:
    """Build the trunk (random init; published weights come through ``trunk_pretrained_cfg``).

    ``block_hook(layer_index, block_index, block)`` may replace parts of a block in place.
    Raises ``ValueError`` naming the option on a bad value (``create_model`` turns it into a user error).
    """
    if depth not in _BUILDERS:
        raise ValueError(f"depth: expected one of {sorted(_BUILDERS)}, got {depth!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride: expected 1 or 2, got {last_stride!r}")
    trunk = ResNetTrunk(_BUILDERS[depth](weights=None), stem_relu=stem_relu)
    if last_stride == 1:
        set_last_stride(trunk, 1)
    if block_hook is not None:
        for layer_index, layer in enumerate(trunk.stages(), start=1):
            for block_index, block in enumerate(layer):
                block_hook(layer_index, block_index, block)
    if attention != "none":
        if attention not in ATTENTIONS:
            raise ValueError(f"attention: expected none or one of {', '.join(ATTENTIONS)}, got {attention!r}")
        layers = attention_layers or [3, 4]
        if any(i not in (1, 2, 3, 4) for i in layers):
            raise ValueError(f"attention_layers: expected ResNet layers among 1-4, got {layers!r}")
        insert_attention(trunk, attention, layers, reduction)
    return trunk


def trunk_pretrained_cfg(trunk: ResNetTrunk, depth: int, prefix: str = "backbone.",
                         weights: str | None = None) -> PretrainedCfg:
    """The ImageNet file of a ResNet depth (or ``weights`` by name), loaded into ``trunk`` at ``prefix``:
    its fc is skipped, and convs that attention wrapped (``conv3`` -> ``conv3.0``) are renamed."""
    wrapped = tuple((f"{name}.", f"{prefix}{name}.0.") for name in trunk.wrapped_convs)
    return get_weights(weights or f"resnet{depth}").with_mapping(skip_prefixes=("fc.",),
                                                                 rename=(*wrapped, ("", prefix)))
