"""MHSA-Net (Tan et al., TNNLS 2023) and its Baseline, docs/papers/mhsa-net.md.

Shapes at 384 x 128 with the ResNet-50 trunk (last stride 1): Q [N, 2048, 24, 8], J = 192 positions.

- GFB (the "Baseline" alone): q* = ReLU(BN(1x1 conv 2048->D (GAP(Q)))), D = 512.
- MHSAM: attention scores MLP(Q^T) [N, J, K] -> softmax -> alpha; the K heads P = FC(pool(alpha * Q)) [N, K, D].
- Fusion of the heads into p*: SAFFM (learned weights), CONCAT ([N, K * D]) or SUM (Table VIII).
- RLM (training only): z from LayerNorm(q* + P_k) summed over the heads.
- Test feature cat(q*, p*) (1024-d); the other eval outputs let a recipe rank by p* alone (MHSA-Net*)
  or by one head (Table VI) without training again.

The paper's equations and the released code disagree in eight places; ``reading`` picks all of
them at once ("paper", the default, or "released") and each has its own option that overrides the
reading (``None`` = the reading's choice):

============================  ==========================  ==========================================
option                        paper                       released code
============================  ==========================  ==========================================
``attention_depth``           2 (C -> C/4 -> K)           3 (C -> C/2 -> C/8 -> K), all bias-free
``attention_softmax``         heads (over K per pixel)    positions (over the J positions per head)
``head_pool``                 mean (AvgPool of alpha*Q)   sum (alpha^T Q)
``extra_bottleneck``          none                        twice (a random Bottleneck after layer4,
                                                          computed once per branch as coded)
``saffm``                     per_channel (weights over   per_head (one weight per head from
                              the D x K matrix, K->2D->K) vec(P): K*D -> 4D -> D -> K, no ReLU)
``layer_norms``               rlm (Z = LN(q* + P_k))      rlm_twice_and_fused (z = LN(sum LN(q* + P_k)),
                                                          p* = LN(sum beta_k P_k), one shared LN)
``shared_classifier``         false (one per output)      true (one classifier for q*, p* and z)
``init`` (after the trunk)    default (PyTorch's layer    released (GFB conv Kaiming fan-in, its BN
                              defaults, classifiers       weight N(1, 0.02); classifier Kaiming
                              N(0, 0.001))                fan-out; hidden MLP layers and the head FC
                                                          Xavier uniform; see ``released_init``)
============================  ==========================  ==========================================

The released code also drops the CE loss on q* and uses other loss readings; those are recipe keys
of the loss terms (``reidbench/losses/mhsa.py``).

``attention_maps`` returns alpha per head on Q's grid (the figures' per-head maps).

Outputs in training: ``global`` q*, ``logits`` (q*), ``local`` p*, ``local_logits`` (p*), ``parts`` P
[N, K, D], ``attention`` alpha [N, K, J], ``aux`` {``residual``: z, ``residual_logits``} (without RLM: no
``aux`` entries). In eval: ``embedding`` cat(q*, p*), ``global`` q*, ``local`` p*, ``parts`` P.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torchvision
from torch import nn

from reidbench.models.contract import ModelOutputs, ReIDModel
from reidbench.models.layers import resnet_trunk, trunk_pretrained_cfg
from reidbench.models.pretrained import PretrainedCfg
from reidbench.models.registry import register_model
from reidbench.models.small import small_trunk

TRUNKS = ("resnet50", "small")
FUSIONS = ("saffm", "concat", "sum")


@dataclass(frozen=True)
class Reading:
    """Where the paper's equations and the released code differ (see the module docstring)."""

    attention_depth: int
    attention_softmax: str
    head_pool: str
    extra_bottleneck: str
    saffm: str
    layer_norms: str
    shared_classifier: bool
    init: str


READINGS = {
    "paper": Reading(attention_depth=2, attention_softmax="heads", head_pool="mean", extra_bottleneck="none",
                     saffm="per_channel", layer_norms="rlm", shared_classifier=False, init="default"),
    "released": Reading(attention_depth=3, attention_softmax="positions", head_pool="sum",
                        extra_bottleneck="twice", saffm="per_head", layer_norms="rlm_twice_and_fused",
                        shared_classifier=True, init="released"),
}
CHOICES = {"attention_depth": (2, 3), "attention_softmax": ("heads", "positions"), "head_pool": ("mean", "sum"),
           "extra_bottleneck": ("none", "once", "twice"), "saffm": ("per_channel", "per_head"),
           "layer_norms": ("rlm", "rlm_twice_and_fused"), "shared_classifier": (False, True),
           "init": ("default", "released")}


def resolve_reading(reading: str, **overrides: object) -> Reading:
    """The reading's choices with the options that are not None put over them."""
    if reading not in READINGS:
        raise ValueError(f"reading: expected one of {', '.join(READINGS)}, got {reading!r}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    for key, value in chosen.items():
        if value not in CHOICES[key]:
            raise ValueError(f"{key}: expected one of {', '.join(map(str, CHOICES[key]))}, got {value!r}")
    return replace(READINGS[reading], **chosen)


def build_trunk(trunk: str, small_width: int) -> tuple[nn.Module, int, PretrainedCfg | None]:
    """(trunk, its output channels, its ImageNet weights): ResNet-50 with last stride 1, or a small CNN."""
    if trunk == "resnet50":
        net = resnet_trunk(50, last_stride=1)
        return net, net.out_channels, trunk_pretrained_cfg(net, 50)
    if trunk == "small":
        return small_trunk(small_width), 4 * small_width, None
    raise ValueError(f"trunk: expected one of {', '.join(TRUNKS)}, got {trunk!r}")


class GlobalFeatureBranch(nn.Module):
    """GFB: q* = ReLU(BN(1x1 conv C -> D (GAP(Q)))) (the conv has a bias, as released)."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(channels, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.reduction(feature_map.mean(dim=(2, 3), keepdim=True)).flatten(1)


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    nn.init.normal_(layer.weight, std=0.001)
    nn.init.zeros_(layer.bias)
    return layer


class MultiHeadSelfAttention(nn.Module):
    """MHSAM: alpha [N, K, J] from a bias-free MLP over the positions' features, and the K heads [N, K, D]."""

    def __init__(self, channels: int, dim: int, heads: int, depth: int, softmax_over: str, pool: str) -> None:
        super().__init__()
        widths = [channels, channels // 4] if depth == 2 else [channels, channels // 2, channels // 8]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(cin, cout, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-1], heads, bias=False))
        self.scores = nn.Sequential(*layers)
        self.head_fc = nn.Linear(channels, dim)  # omega_3, b_3
        self.softmax_over, self.pool = softmax_over, pool

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = feature_map.flatten(2).transpose(1, 2)  # [N, J, C]
        scores = self.scores(tokens)  # [N, J, K]
        alpha = scores.softmax(dim=2 if self.softmax_over == "heads" else 1).transpose(1, 2)  # [N, K, J]
        pooled = alpha @ tokens  # [N, K, C]: sum over the positions of alpha * Q
        if self.pool == "mean":
            pooled = pooled / tokens.shape[1]
        return alpha, self.head_fc(pooled)


class ChannelFusion(nn.Module):
    """SAFFM as the paper writes it: for each of the D channels, weights over the K heads
    beta = softmax_K(omega_5 ReLU(omega_4 P*)) with P* = P^T [N, D, K]; p* = sum_k beta * P."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(heads, 2 * dim, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(2 * dim, heads, bias=False))

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        transposed = parts.transpose(1, 2)  # [N, D, K]
        beta = self.mlp(transposed).softmax(dim=2)
        return (beta * transposed).sum(dim=2)


class HeadFusion(nn.Module):
    """SAFFM as released: one weight per head, beta = softmax_K(fc3(fc2(fc1(vec(P))))) without ReLU."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(heads * dim, 4 * dim), nn.Linear(4 * dim, dim), nn.Linear(dim, heads))

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        beta = self.mlp(parts.flatten(1)).softmax(dim=1)  # [N, K]
        return (beta.unsqueeze(2) * parts).sum(dim=1)


class MHSANet(ReIDModel):
    default_input = (384, 128)
    train_outputs = ("global", "logits", "local", "local_logits", "parts", "attention", "aux")
    eval_outputs = ("embedding", "global", "local", "parts")

    def __init__(self, num_classes: int, heads: int, reading: Reading, fusion: str = "saffm", rlm: bool = True,
                 dim: int = 512, trunk: str = "resnet50", small_width: int = 32) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads: expected a positive integer, got {heads!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {fusion!r}")
        if fusion == "concat" and reading.shared_classifier:
            raise ValueError("shared_classifier: expected false with fusion concat (p* is K x D wide, z is D)")
        self.backbone, channels, self.pretrained_cfg = build_trunk(trunk, small_width)
        self.reading, self.fusion_name, self.rlm, self.heads = reading, fusion, rlm, heads
        self.bottleneck_calls = {"none": 0, "once": 1, "twice": 2}[reading.extra_bottleneck]
        if self.bottleneck_calls:
            self.extra_bottleneck = torchvision.models.resnet.Bottleneck(channels, channels // 4)
        self.gfb = GlobalFeatureBranch(channels, dim)
        self.mhsam = MultiHeadSelfAttention(channels, dim, heads, reading.attention_depth,
                                            reading.attention_softmax, reading.head_pool)
        if fusion == "saffm":
            self.fusion = ChannelFusion(heads, dim) if reading.saffm == "per_channel" else HeadFusion(heads, dim)
        if rlm or (fusion == "saffm" and reading.layer_norms == "rlm_twice_and_fused"):
            self.layer_norm = nn.LayerNorm(dim)  # one LayerNorm, shared where the released code reuses it
        # shared (released): one classifier, which its code applies to q*, p* and z (q*'s logits unused there)
        shared = reading.shared_classifier
        self.gfb_classifier = _classifier(dim, num_classes)
        fused_dim = heads * dim if fusion == "concat" else dim
        self.fused_classifier = self.gfb_classifier if shared else _classifier(fused_dim, num_classes)
        if rlm:
            self.residual_classifier = self.gfb_classifier if shared else _classifier(dim, num_classes)
        if reading.init == "released":
            released_init(self)

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q for the GFB and Q for the MHSAM: the same map, except that the released code computes its extra
        Bottleneck once for each branch (identical values, twice the cost and two BN statistics updates)."""
        feature_map = self.backbone(images)
        if self.bottleneck_calls == 0:
            return feature_map, feature_map
        first = self.extra_bottleneck(feature_map)
        return first, (self.extra_bottleneck(feature_map) if self.bottleneck_calls == 2 else first)

    def fuse(self, parts: torch.Tensor) -> torch.Tensor:
        """p* from the heads [N, K, D]."""
        if self.fusion_name == "concat":
            return parts.flatten(1)
        if self.fusion_name == "sum":
            return parts.sum(dim=1)
        fused = self.fusion(parts)
        return self.layer_norm(fused) if self.reading.layer_norms == "rlm_twice_and_fused" else fused

    def residual(self, q_star: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """RLM: z from LayerNorm(q* repeated K times + P), summed over the heads."""
        z = self.layer_norm(q_star.unsqueeze(1) + parts).sum(dim=1)
        return self.layer_norm(z) if self.reading.layer_norms == "rlm_twice_and_fused" else z

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor]) -> ModelOutputs:
        gfb_map, mhsam_map = features
        q_star = self.gfb(gfb_map)
        alpha, parts = self.mhsam(mhsam_map)
        p_star = self.fuse(parts)
        if not self.training:
            return {"embedding": torch.cat([q_star, p_star], dim=1), "global": q_star, "local": p_star,
                    "parts": parts}
        aux = {}
        if self.rlm:
            z = self.residual(q_star, parts)
            aux = {"residual": z, "residual_logits": self.residual_classifier(z)}
        return {"global": q_star, "logits": self.gfb_classifier(q_star), "local": p_star,
                "local_logits": self.fused_classifier(p_star), "parts": parts, "attention": alpha, "aux": aux}

    def feature_map(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return features[1]  # Q as the MHSAM sees it

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """alpha of each head over the positions of Q: ``head 1`` .. ``head K``, each [N, h, w]."""
        mhsam_map = self.forward_features(images)[1]
        alpha, _ = self.mhsam(mhsam_map)  # [N, K, J]
        grid = alpha.reshape(alpha.shape[0], alpha.shape[1], *mhsam_map.shape[2:])
        return {f"head {k + 1}": grid[:, k] for k in range(grid.shape[1])}

    def get_classifier(self) -> list[nn.Module]:
        modules = [self.gfb_classifier, self.fused_classifier] + ([self.residual_classifier] if self.rlm else [])
        return list({id(m): m for m in modules}.values())  # a shared classifier once

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]


def released_init(model: MHSANet) -> None:
    """The released code's initialisation of the layers after the trunk (``init: released``): the GFB's 1x1
    conv Kaiming normal (fan-in) with a zero bias and its BN weight N(1, 0.02) with a zero bias; each
    classifier Kaiming normal (fan-out) with a zero bias; the hidden layers of the attention and SAFFM MLPs
    (all but their last layer) and the heads' FC Xavier uniform, the heads' FC with a zero bias. The rest keeps
    PyTorch's defaults, as released: the MLPs' last layers, the SAFFM biases, the LayerNorm, the extra
    Bottleneck."""
    conv, bn = model.gfb.reduction[0], model.gfb.reduction[1]
    nn.init.kaiming_normal_(conv.weight, mode="fan_in")
    nn.init.zeros_(conv.bias)
    nn.init.normal_(bn.weight, mean=1.0, std=0.02)
    nn.init.zeros_(bn.bias)
    for classifier in model.get_classifier():
        nn.init.kaiming_normal_(classifier.weight, mode="fan_out")
        nn.init.zeros_(classifier.bias)
    mlps = [model.mhsam.scores] + ([model.fusion.mlp] if hasattr(model, "fusion") else [])
    for mlp in mlps:
        for layer in [m for m in mlp if isinstance(m, nn.Linear)][:-1]:
            nn.init.xavier_uniform_(layer.weight)
    nn.init.xavier_uniform_(model.mhsam.head_fc.weight)
    nn.init.zeros_(model.mhsam.head_fc.bias)


class MHSABaseline(ReIDModel):
    """The tables' "Baseline": the trunk and the GFB alone, trained with CE on q*, tested with q*."""

    default_input = (384, 128)
    train_outputs = ("global", "logits")
    eval_outputs = ("embedding", "global")

    def __init__(self, num_classes: int, dim: int = 512, trunk: str = "resnet50", small_width: int = 32) -> None:
        super().__init__()
        self.backbone, channels, self.pretrained_cfg = build_trunk(trunk, small_width)
        self.gfb = GlobalFeatureBranch(channels, dim)
        self.gfb_classifier = _classifier(dim, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def forward_head(self, feature_map: torch.Tensor) -> ModelOutputs:
        q_star = self.gfb(feature_map)
        if not self.training:
            return {"embedding": q_star, "global": q_star}
        return {"global": q_star, "logits": self.gfb_classifier(q_star)}

    def get_classifier(self) -> list[nn.Module]:
        return [self.gfb_classifier]

    def backbone_modules(self) -> list[nn.Module]:
        return [self.backbone]


@register_model
def mhsa_net(num_classes: int = 751, heads: int = 8, reading: str = "paper", fusion: str = "saffm",
             rlm: bool = True, dim: int = 512, trunk: str = "resnet50", small_width: int = 32,
             attention_depth: int | None = None, attention_softmax: str | None = None, head_pool: str | None = None,
             extra_bottleneck: str | None = None, saffm: str | None = None, layer_norms: str | None = None,
             shared_classifier: bool | None = None, init: str | None = None) -> MHSANet:
    """MHSA-Net: ResNet-50 (last stride 1) + GFB + MHSAM with K heads + SAFFM + RLM; test feature cat(q*, p*).
    Paper reading 26.68M without classifiers, 6.33 GMac at 384x128; released reading 41.88M, 8.29 GMac."""
    choices = resolve_reading(reading, attention_depth=attention_depth, attention_softmax=attention_softmax,
                              head_pool=head_pool, extra_bottleneck=extra_bottleneck, saffm=saffm,
                              layer_norms=layer_norms, shared_classifier=shared_classifier, init=init)
    return MHSANet(num_classes, heads, choices, fusion, rlm, dim, trunk, small_width)


@register_model
def mhsa_baseline(num_classes: int = 751, dim: int = 512, trunk: str = "resnet50",
                  small_width: int = 32) -> MHSABaseline:
    """MHSA-Net's Baseline: ResNet-50 (last stride 1) + GFB (q*, 512-d), CE only."""
    return MHSABaseline(num_classes, dim, trunk, small_width)
