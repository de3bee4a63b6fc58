"""FSAFCMN: ResNet50-IBN-a with bottleneck self-attention, ECA and multi-level feature fusion,
docs/papers/fsafcmn.md.

The paper publishes no code, so every open choice is an option (a recipe key ``model.<option>``):

- trunk: ``resnet_trunk(depth, last_stride)`` (default ResNet-50, last stride 2: conv5 is 8 x 4 at 256 x 128)
  with a ``block_hook`` that puts IBN-a (IBN-Net: InstanceNorm with affine on the first half of the channels,
  BatchNorm on the rest) in place of ``bn1`` of every block of layers 1-3 (``ibn``); ``depth`` 18 / 34
  (IBN-Net's basic-block ResNet-IBN-a, attention in place of each block's second 3x3 conv) exists only for
  CPU-sized runs such as the regression suite's;
- ``attention``: BoTNet's multi-head self-attention replaces ``conv2`` (the 3x3 conv) of every bottleneck
  of layers 3 and 4 (conv4_x, conv5_x): timm's ``BottleneckAttn`` (1x1 q/k/v without bias, content logits
  ``q.k / sqrt(d)`` plus 2-D relative-position logits ``q.(r_h[dy] + r_w[dx])``, works on H != W; the
  stride-2 first block attends at its input resolution, then average-pools 2x2), ``relative`` (default),
  ``absolute`` (learned per-row + per-column embeddings of the key's position) or ``none``; ``heads``,
  ``qkv_bias``, ``scale_position_logits`` (divide the position logits by sqrt(d) too);
- ``eca``: timm's ``EcaModule`` (Wang et al., adaptive kernel 3 / 5 / 7) after the stem and after each
  stage (``stage``, default: 5 modules), after ``bn3`` of every bottleneck (``block``) or ``none``;
- ``fusion``: conv3 and conv4 max-pooled to conv5's size and concatenated with conv5 (``concat``, 3584
  channels), summed with conv5 after 1x1 conv + BN projections to 2048 (``sum``) or conv5 alone (``none``);
- head: BoT's BNNeck (GAP, BatchNorm with frozen bias, bias-free classifier).

The position tables are sized for one input, so the model takes ``input_size`` (height, width) and a
recipe that changes ``data.height`` / ``data.width`` sets ``model.input_size`` with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers.bottleneck_attn import BottleneckAttn
from timm.layers.eca import EcaModule
from timm.layers.weight_init import trunc_normal_
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import BNNeck, resnet_trunk, trunk_pretrained_cfg
from reidbench.models.registry import register_model

ATTENTION_KINDS = ("relative", "absolute", "none")
ECA_PLACEMENTS = ("stage", "block", "none")
FUSIONS = ("concat", "sum", "none")
ATTENTION_LAYERS = (3, 4)  # conv4_x and conv5_x
IBN_LAYERS = (1, 2, 3)  # IBN-a: layers 1-3; layer 4 stays BatchNorm
DEPTHS = (18, 34, 50)  # 50 is the paper's; 18 and 34 are for CPU-sized runs (docs/papers/fsafcmn.md)


class IBN(nn.Module):
    """IBN-Net's IBN-a normalisation: InstanceNorm2d (affine) on the first ``int(ratio * channels)``
    channels, BatchNorm2d on the others. Submodule names ``IN`` / ``BN`` are those of the published
    checkpoints (``layer1.0.bn1.IN.weight``)."""

    def __init__(self, channels: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)  # noqa: N815 - checkpoint key
        self.BN = nn.BatchNorm2d(channels - self.half)  # noqa: N815 - checkpoint key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), dim=1)


class BatchNormThenECA(nn.BatchNorm2d):
    """A bottleneck's ``bn3`` followed by ECA (ECA-Net's placement). Being a BatchNorm2d, it keeps the
    parameter names of ``bn3``, so ImageNet weights still load into it by name."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.eca = EcaModule(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(super().forward(x))


class AbsolutePositionLogits(nn.Module):
    """Logits ``q_i . (e_h[y_j] + e_w[x_j])``: a learned embedding of the key's row plus one of its column,
    one per head (``heads * d`` channels in all, the full-width absolute form of public BoTNet ports)."""

    def __init__(self, feat_size: tuple[int, int], heads: int, dim_head: int, std: float) -> None:
        super().__init__()
        self.height, self.width = feat_size
        self.heads = heads
        self.height_emb = nn.Parameter(torch.empty(heads, self.height, dim_head))
        self.width_emb = nn.Parameter(torch.empty(heads, self.width, dim_head))
        trunc_normal_(self.height_emb, std=std)
        trunc_normal_(self.width_emb, std=std)

    def forward(self, q: torch.Tensor) -> torch.Tensor:  # q: [B * heads, H * W, d]
        positions = (self.height_emb[:, :, None, :] + self.width_emb[:, None, :, :]).flatten(1, 2)  # [h, HW, d]
        batch_heads, tokens, dim = q.shape
        logits = q.reshape(-1, self.heads, tokens, dim) @ positions.transpose(-1, -2)[None]
        return logits.reshape(batch_heads, tokens, tokens)


class AbsolutePositionAttn(BottleneckAttn):
    """timm's ``BottleneckAttn`` with :class:`AbsolutePositionLogits` in place of its relative logits."""

    def __init__(self, dim: int, feat_size: tuple[int, int], stride: int, num_heads: int, qkv_bias: bool,
                 scale_pos_embed: bool) -> None:
        super().__init__(dim, feat_size=feat_size, stride=stride, num_heads=num_heads, qkv_bias=qkv_bias,
                         scale_pos_embed=scale_pos_embed)
        self.pos_embed = AbsolutePositionLogits(feat_size, num_heads, self.dim_head_qk, self.scale)

    def reset_parameters(self) -> None:
        trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)  # timm's fan-in init


def block_input_size(input_size: tuple[int, int], layer: int, block: int, last_stride: int) -> tuple[int, int]:
    """The feature-map size entering block ``block`` of ResNet layer ``layer`` (stem /4; layers 2-3 halve in
    their first block, layer 4 divides by ``last_stride``)."""
    if block == 0:
        divisor = {1: 4, 2: 4, 3: 8, 4: 16}[layer]
    else:
        divisor = {1: 4, 2: 8, 3: 16, 4: 16 * last_stride}[layer]
    return input_size[0] // divisor, input_size[1] // divisor


def _check_options(input_size: tuple[int, int], heads: int, attention: str, eca: str, fusion: str) -> None:
    if len(input_size) != 2 or any(not isinstance(v, int) or v <= 0 or v % 32 for v in input_size):
        raise ValueError(f"input_size: expected [height, width], positive multiples of 32, got {list(input_size)!r}")
    for name, value, allowed in (("attention", attention, ATTENTION_KINDS), ("eca", eca, ECA_PLACEMENTS),
                                 ("fusion", fusion, FUSIONS)):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    if not isinstance(heads, int) or heads < 1 or 256 % heads:
        raise ValueError(f"heads: expected a positive divisor of 256 (the attention width of conv4_x), got {heads!r}")


class FSAFCMN(ReIDModel):
    train_outputs = ("global", "embedding", "logits")
    eval_outputs = ("embedding", "global")

    def __init__(self, num_classes: int, input_size: Sequence[int] = (256, 128), last_stride: int = 2,
                 ibn: bool = True, attention: str = "relative", heads: int = 4, qkv_bias: bool = False,
                 scale_position_logits: bool = False, eca: str = "stage", fusion: str = "concat",
                 depth: int = 50) -> None:
        super().__init__()
        size = tuple(input_size)
        _check_options(size, heads, attention, eca, fusion)
        self.input_size: tuple[int, int] = size  # type: ignore[assignment]
        self.default_input = self.input_size  # profile at the size the position tables are built for
        self.fusion = fusion
        replaced: list[str] = []

        def hook(layer: int, index: int, block: nn.Module) -> None:
            if ibn and layer in IBN_LAYERS:
                block.bn1 = IBN(block.bn1.num_features)
            if attention != "none" and layer in ATTENTION_LAYERS:
                planes, stride = block.conv2.in_channels, block.conv2.stride[0]
                # a bottleneck strides in conv2; a basic block in conv1, so its conv2 sees the block's output size
                feat_size = block_input_size(size, layer, index if bottleneck else 1, last_stride)
                if attention == "relative":
                    block.conv2 = BottleneckAttn(planes, feat_size=feat_size, stride=stride, num_heads=heads,
                                                 qkv_bias=qkv_bias, scale_pos_embed=scale_position_logits)
                else:
                    block.conv2 = AbsolutePositionAttn(planes, feat_size, stride, heads, qkv_bias,
                                                       scale_position_logits)
                replaced.append(f"layer{layer}.{index}.conv2.")
            if eca == "block":
                last_bn = "bn3" if bottleneck else "bn2"
                setattr(block, last_bn, BatchNormThenECA(getattr(block, last_bn).num_features))

        if depth not in DEPTHS:
            raise ValueError(f"depth: expected one of {', '.join(map(str, DEPTHS))}, got {depth!r}")
        bottleneck = depth == 50
        self.backbone = resnet_trunk(depth, last_stride, block_hook=hook)
        stage_channels = (64, *((stage[-1].bn3 if bottleneck else stage[-1].bn2).num_features
                                for stage in self.backbone.stages()))
        # ECA after the stem (conv1_x, after its max-pool) and after each of layer1-4 (conv2_x-conv5_x)
        self.stage_eca = nn.ModuleList(EcaModule(c) for c in stage_channels) if eca == "stage" else None
        c3, c4, c5 = stage_channels[2:]
        if fusion == "sum":
            self.projections = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c5, 1, bias=False), nn.BatchNorm2d(c5))
                                             for c in (c3, c4))
        self.head = BNNeck(c3 + c4 + c5 if fusion == "concat" else c5, num_classes)
        cfg = trunk_pretrained_cfg(self.backbone, depth, weights=f"resnet{depth}_ibn_a" if ibn else None)
        # the 3x3 convs that attention replaced have nothing to load into
        self.pretrained_cfg = cfg.with_mapping(skip_prefixes=(*cfg.skip_prefixes, *replaced), rename=cfg.rename)

    def _gate(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.stage_eca[index](x) if self.stage_eca is not None else x

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The conv3_x, conv4_x and conv5_x outputs (after their ECA)."""
        if tuple(images.shape[-2:]) != self.input_size:
            height, width = images.shape[-2:]
            raise ReidbenchError(f"model.options.input_size: the self-attention position tables are built for "
                                 f"{self.input_size[0]}x{self.input_size[1]} images, got {height}x{width}",
                                 hint=f"set model.input_size=[{height}, {width}] in the recipe, with "
                                      f"data.height/data.width")
        x = self._gate(0, self.backbone.stem(images))
        maps = []
        for index, stage in enumerate(self.backbone.stages(), start=1):
            x = self._gate(index, stage(x))
            maps.append(x)
        return maps[1:]

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """conv3 and conv4 max-pooled to conv5's size (4x4 and 2x2 windows at last stride 2), then fused."""
        c3, c4, c5 = maps
        if self.fusion == "none":
            return c5
        pooled = [nn.functional.max_pool2d(c, c.shape[-2] // c5.shape[-2]) if c.shape[-2] != c5.shape[-2] else c
                  for c in (c3, c4)]
        if self.fusion == "concat":
            return torch.cat((*pooled, c5), dim=1)
        return c5 + sum(project(c) for project, c in zip(self.projections, pooled, strict=True))

    def forward_head(self, features: list[torch.Tensor]) -> ModelOutputs:
        return self.head(self.fuse(features))  # type: ignore[return-value]  # BNNeck's outputs are contract fields

    def get_classifier(self) -> list[nn.Module]:
        return [self.head.classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone] + ([self.stage_eca] if self.stage_eca is not None else [])


@register_model
def fsafcmn(num_classes: int = 751, input_size: Sequence[int] = (256, 128), last_stride: int = 2, ibn: bool = True,
            attention: str = "relative", heads: int = 4, qkv_bias: bool = False,
            scale_position_logits: bool = False, eca: str = "stage", fusion: str = "concat",
            depth: int = 50) -> FSAFCMN:
    """FSAFCMN: ResNet50-IBN-a (last stride 2) + 4-head relative-position self-attention in conv4_x/conv5_x +
    ECA after each stage + conv3/conv4/conv5 concatenation (3584-d) + BNNeck; 16.47M without classifier."""
    return FSAFCMN(num_classes, input_size, last_stride, ibn, attention, heads, qkv_bias, scale_position_logits,
                   eca, fusion, depth)
