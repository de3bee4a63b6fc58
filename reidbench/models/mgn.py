"""MGN, the Multiple Granularity Network (Wang et al., ACM MM 2018), docs/papers/mgn.md: a baseline row
of MASENet's Table III.

A ResNet trunk is shared up to the first block of layer3. Each branch then owns a copy of the rest of
layer3 and of layer4: the global branch keeps layer4's stride 2, the part branches use stride 1. Every
branch max-pools its map into one global feature; part branch ``i`` also pools ``stripes[i]``
horizontal stripes (paper: 2 and 3). Each of the 3 + 5 pooled features is reduced to 256-d by its own
1x1 conv + BN + ReLU and classified by its own bias-free linear layer. Outputs: ``global`` [N, 3, 256]
(the triplet loss reads it), ``parts`` [N, 5, 256], ``logits`` [N, 8, classes] (all eight classifiers;
the softmax loss averages them), ``embedding`` [N, 2048] (the eight features concatenated).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import resnet_trunk
from reidbench.models.layers.trunks import set_last_stride
from reidbench.models.pretrained import get_weights
from reidbench.models.registry import register_model

POOLS = {"max": nn.functional.adaptive_max_pool2d, "avg": nn.functional.adaptive_avg_pool2d}


class MGNBranch(nn.Module):
    """A branch's own layer3 blocks 1.. and layer4. Block indices follow torchvision (``layer3.0`` is the
    shared block, an identity here), so ImageNet weights load by name."""

    def __init__(self, layer3: nn.Sequential, layer4: nn.Module) -> None:
        super().__init__()
        self.layer3 = nn.Sequential(nn.Identity(), *copy.deepcopy(list(layer3)[1:]))
        self.layer4 = copy.deepcopy(layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(x))


def reduction(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv -> BN -> ReLU, initialised as the widely used MGN re-implementation does."""
    block = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    nn.init.kaiming_normal_(block[0].weight, mode="fan_in")
    nn.init.normal_(block[1].weight, mean=1.0, std=0.02)
    nn.init.zeros_(block[1].bias)
    return block


class MGN(ReIDModel):
    default_input = (384, 128)
    train_outputs = ("global", "parts", "logits")
    eval_outputs = ("embedding",)

    def __init__(self, num_classes: int, depth: int = 50, stripes: list[int] | None = None, feature_dim: int = 256,
                 pool: str = "max", classifier_bias: bool = False) -> None:
        super().__init__()
        stripes = [2, 3] if stripes is None else list(stripes)
        if not stripes or any(not isinstance(n, int) or n < 1 for n in stripes):
            raise ValueError(f"stripes: expected a list of positive stripe counts, one per part branch, got "
                             f"{stripes!r}")
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {', '.join(POOLS)}, got {pool!r}")
        self.stripes, self.pool = stripes, POOLS[pool]
        trunk = resnet_trunk(depth, last_stride=2)
        part_trunk = copy.deepcopy(trunk)
        set_last_stride(part_trunk, 1)
        branches = [MGNBranch(trunk.layer3, trunk.layer4)]
        branches += [MGNBranch(part_trunk.layer3, part_trunk.layer4) for _ in stripes]
        # the shared part: stem, layer1, layer2 and the first block of layer3 (its forward stops there)
        trunk.layer3, trunk.layer4 = nn.Sequential(trunk.layer3[0]), nn.Identity()
        self.backbone = trunk
        self.branches = nn.ModuleList(branches)
        count = len(branches) + sum(stripes)
        self.reductions = nn.ModuleList(reduction(trunk.out_channels, feature_dim) for _ in range(count))
        self.classifiers = nn.ModuleList(nn.Linear(feature_dim, num_classes, bias=classifier_bias)
                                         for _ in range(count))
        for fc in self.classifiers:
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
        blocks = len(self.branches[0].layer3)
        # ImageNet layer3 blocks 1.. and layer4 load into the global branch, then into each part branch
        own = tuple((f"layer3.{b}.", f"branches.0.layer3.{b}.") for b in range(1, blocks))
        copies = tuple((f"branches.0.{layer}.", f"branches.{i}.{layer}.")
                       for i in range(1, len(branches)) for layer in ("layer3", "layer4"))
        self.pretrained_cfg = get_weights(f"resnet{depth}").with_mapping(
            skip_prefixes=("fc.",), rename=(*own, ("layer4.", "branches.0.layer4."), ("", "backbone.")),
            duplicate=copies)

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        shared = self.backbone(images)
        return [branch(shared) for branch in self.branches]

    def forward_head(self, maps: list[torch.Tensor]) -> ModelOutputs:
        pooled = [self.pool(m, 1) for m in maps]  # one global feature per branch
        for m, n in zip(maps[1:], self.stripes, strict=True):
            stripes = self.pool(m, (n, 1))
            pooled += [stripes[:, :, i : i + 1] for i in range(n)]
        reduced = [r(p).flatten(1) for r, p in zip(self.reductions, pooled, strict=True)]
        if not self.training:
            return {"embedding": torch.cat(reduced, dim=1)}
        branches = len(self.branches)
        return {"global": torch.stack(reduced[:branches], dim=1), "parts": torch.stack(reduced[branches:], dim=1),
                "logits": torch.stack([fc(f) for fc, f in zip(self.classifiers, reduced, strict=True)], dim=1)}

    def get_classifier(self) -> list[nn.Module]:
        return list(self.classifiers)

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone, self.branches]

    def feature_map(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[0]  # the global branch's map


@register_model
def mgn(num_classes: int = 751, depth: int = 50, stripes: list[int] | None = None, feature_dim: int = 256,
        pool: str = "max", classifier_bias: bool = False) -> MGN:
    """MGN on ResNet-50 (paper): 3 branches, 2 + 3 stripes, eight 256-d features (2048-d test feature);
    68.81M parameters without classifiers, 11.92 GMac at 384x128."""
    return MGN(num_classes, depth, stripes, feature_dim, pool, classifier_bias)
