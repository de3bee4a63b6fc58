"""CDNet (Li, Wu, Zheng, CVPR 2021), docs/papers/cdnet.md: a baseline row of MASENet's Tables I and III.

The macro frame MSINet later reused: a 7x7 stem and max-pool, three stages of two CDBlocks with
channels 64 -> 256 -> 384 -> 512, a 1x1 conv + 2x2 average pool between stages. A CDBlock ``[k1, k2, r]``
stacks ``r`` CBlocks; a CBlock squeezes to a quarter of its output channels, runs two streams of
``k1 // 2`` and ``k2 // 2`` lite 3x3 convolutions (receptive fields k1 and k2), weights each stream with one
shared channel gate (reduction 4, the released code's "adaptive fuse"), sums them and restores the
channels with a linear 1x1, plus a residual. The searched kernels are data (:data:`GENOTYPES`).

Head (the released FBL neck): a 512-d global feature (GAP of the last map) and a 256-d local feature
(1x1 conv 384 -> 128 on the stage-2 output, two horizontal stripes); dropout on both in training; each
goes through Linear -> BN -> ReLU (512) to its classifier. The test feature is cat(global, local), 768-d,
before the fc layers. No published ImageNet checkpoint exists: the model trains from scratch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import ChannelGate, Conv1x1, Conv1x1Linear, ConvLayer, LightConv3x3, init_osnet_style
from reidbench.models.registry import register_model

#: searched CDBlocks, two per stage, as [k1, k2, r] (released geno/cdnet_sample_top2_best_genotype.json)
GENOTYPES: dict[str, list[list[int]]] = {
    "top2": [[3, 5, 1], [3, 7, 2], [5, 7, 2], [5, 9, 1], [5, 7, 2], [5, 7, 1]],
}
CHANNELS = (64, 256, 384, 512)


def resolve_genotype(genotype: str | list[list[int]]) -> list[list[int]]:
    """A genotype by name or as six [k1, k2, r] lists; ValueError naming the option otherwise."""
    blocks = GENOTYPES.get(genotype) if isinstance(genotype, str) else genotype
    valid = isinstance(blocks, list) and len(blocks) == 6 and all(
        isinstance(b, list) and len(b) == 3 and all(isinstance(v, int) and v >= 1 for v in b)
        and b[0] % 2 == 1 and b[1] % 2 == 1 and b[0] >= 3 and b[1] >= 3 for b in blocks)
    if not valid:
        raise ValueError(f"genotype: expected one of {', '.join(GENOTYPES)} or six [k1, k2, r] lists "
                         f"(odd kernels >= 3, r >= 1), got {genotype!r}")
    return [list(b) for b in blocks]


class CBlock(nn.Module):
    """Two streams of lite 3x3 convs (receptive fields k1, k2) weighted by one shared gate, summed."""

    def __init__(self, cin: int, cout: int, k1: int, k2: int, gate_reduction: int = 4) -> None:
        super().__init__()
        mid = cout // 4
        self.squeeze = Conv1x1(cin, mid)
        self.conv1 = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(k1 // 2)))
        self.conv2 = nn.Sequential(*(LightConv3x3(mid, mid) for _ in range(k2 // 2)))
        self.adaption = ChannelGate(mid, gate_reduction)
        self.restore = Conv1x1Linear(mid, cout)
        self.expand = Conv1x1Linear(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        fused = self.adaption.gate(self.conv1(squeezed)) + self.adaption.gate(self.conv2(squeezed))
        identity = x if self.expand is None else self.expand(x)
        return torch.relu(self.restore(fused) + identity)


def cd_block(cin: int, cout: int, k1: int, k2: int, repeats: int) -> nn.Sequential:
    """``repeats`` CBlocks; only the first changes the channel count."""
    return nn.Sequential(*(CBlock(cin if i == 0 else cout, cout, k1, k2) for i in range(repeats)))


def fc_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class CDNet(ReIDModel):
    train_outputs = ("global", "logits", "local", "local_logits")
    eval_outputs = ("embedding", "global", "local")

    def __init__(self, num_classes: int, genotype: str | list[list[int]] = "top2", dropout: float = 0.2,
                 fc_dim: int = 512, local_channels: int = 128) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.genotype = resolve_genotype(genotype)
        c = CHANNELS
        self.stem = nn.Sequential(ConvLayer(3, c[0], 7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, padding=1))
        self.cells = nn.ModuleList()
        for stage in range(3):
            first, second = self.genotype[2 * stage], self.genotype[2 * stage + 1]
            self.cells.append(cd_block(c[stage], c[stage + 1], *first))
            self.cells.append(cd_block(c[stage + 1], c[stage + 1], *second))
            if stage != 2:  # 1x1 conv, then 2x2 average pooling between stages
                self.cells.append(nn.Sequential(Conv1x1(c[stage + 1], c[stage + 1]), nn.AvgPool2d(2, stride=2)))
        # FBL neck: local stripes on the stage-2 output, global on the last map
        self.squeeze = nn.Conv2d(c[2], local_channels, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.global_fcs = fc_bn_relu(c[3], fc_dim)
        self.local_fcs = fc_bn_relu(2 * local_channels, fc_dim)
        self.global_classifier = nn.Linear(fc_dim, num_classes)
        self.local_classifier = nn.Linear(fc_dim, num_classes)
        init_osnet_style(self, conv_mode="fan_in", linear_std=1e-3)  # the released code's initialisation

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(images)
        local_input = x
        for index, cell in enumerate(self.cells):
            x = cell(x)
            if index == 5:  # after the second downsampling: 384 x H/16 x W/16
                local_input = x
        return x, local_input

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor]) -> ModelOutputs:
        x, local_input = features
        stripes = self.squeeze(local_input).chunk(2, dim=2)
        local = torch.cat([s.mean(dim=(2, 3)) for s in stripes], dim=1)
        global_feat = x.mean(dim=(2, 3))
        if not self.training:
            return {"embedding": torch.cat([global_feat, local], dim=1), "global": global_feat, "local": local}
        global_feat, local = self.drop(global_feat), self.drop(local)
        return {"global": global_feat, "logits": self.global_classifier(self.global_fcs(global_feat)),
                "local": local, "local_logits": self.local_classifier(self.local_fcs(local))}

    def get_classifier(self) -> list[nn.Module]:
        return [self.global_classifier, self.local_classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.stem, self.cells]  # the paper's 1.8M: stem + cells, without the FBL neck

    def feature_map(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return features[0]  # the final map (the global branch's input)


@register_model
def cdnet(num_classes: int = 751, genotype: Any = "top2", dropout: float = 0.2) -> CDNet:
    """CDNet with the searched top-2 genotype and the FBL neck: backbone 1.747M, 2.193M without
    classifiers, 0.971 GMac at 256x128; 768-d test feature."""
    return CDNet(num_classes, genotype, dropout)
