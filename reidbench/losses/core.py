"""Cross-entropy with label smoothing, batch-hard triplet, center loss; and the loss set.

A recipe lists terms ``{name, output, weight, ...options}``; the loss set applies each term to the
named model output, so multi-head models (MSINet's two heads, BoT's BNNeck, MHSA-Net's terms)
are recipes rather than special code paths.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.evaluation.distance import aligned_local_distance
from reidbench.recipes.schema import LossTerm


class CrossEntropy(nn.Module):
    """Softmax cross-entropy on logits [N, classes]; on [N, H, classes] (one classifier per feature, MGN)
    the mean over the H classifiers."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        if logits.ndim == 3:  # [N, classes, H] against the same target for every head
            logits, targets = logits.transpose(1, 2), targets[:, None].expand(-1, logits.shape[1])
        return nn.functional.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


def pairwise_distance(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    x = x.float()
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=1e-12)
    return d if squared else d.sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet: for each anchor the farthest positive and the closest negative.

    ``margin=None`` gives the soft-margin form log(1 + exp(d_ap - d_an)). ``mine_with`` names
    another output whose distances choose the hard samples (AlignedReID++ mines the local
    branch's triplets with the global distance). ``distance="dmli"`` reads stripe features
    [N, H, C] and uses AlignedReID's shortest-path local distance; the mining output then uses
    the Euclidean distance. Otherwise features [N, H, D] (one feature per branch, MGN) give one batch-hard
    triplet loss per branch, averaged.
    """

    def __init__(self, margin: float | None = 0.3, normalize: bool = False,
                 distance: str = "euclidean", mine_with: str | None = None) -> None:
        super().__init__()
        if distance not in ("euclidean", "sqeuclidean", "dmli"):
            raise ReidbenchError(f"loss triplet distance: expected euclidean, sqeuclidean or dmli, got {distance!r}")
        self.margin, self.normalize, self.mine_with = margin, normalize, mine_with
        self.squared = distance == "sqeuclidean"
        self.aligned = distance == "dmli"

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                outputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if features.ndim == 3 and not self.aligned:
            return torch.stack([self(features[:, h], targets, outputs) for h in range(features.shape[1])]).mean()
        if self.normalize:
            features = nn.functional.normalize(features.float(), dim=-1)
        if self.aligned:
            if features.ndim != 3:
                raise ReidbenchError(f"loss triplet distance dmli: expected stripe features [N, H, C], got "
                                     f"shape {tuple(features.shape)}")
            dist = aligned_local_distance(features.float(), features.float())
        else:
            dist = pairwise_distance(features, self.squared)
        mining = dist
        if self.mine_with is not None:
            if outputs is None or self.mine_with not in outputs:
                raise ReidbenchError(f"loss triplet mine_with: model has no output {self.mine_with!r}")
            mining = pairwise_distance(outputs[self.mine_with].detach(), self.squared)
        same = targets[:, None] == targets[None, :]
        pos_index = mining.masked_fill(~same, -math.inf).argmax(1)
        neg_index = mining.masked_fill(same, math.inf).argmin(1)
        rows = torch.arange(len(targets), device=dist.device)
        d_ap, d_an = dist[rows, pos_index], dist[rows, neg_index]
        if self.margin is None:
            return nn.functional.softplus(d_ap - d_an).mean()
        return nn.functional.relu(d_ap - d_an + self.margin).mean()


class CenterLoss(nn.Module):
    """Wen et al. 2016: squared distance to a learned per-class centre (its own optimiser). ``feat_dim``
    defaults to the width of the model output the term is applied to (the trainer measures it)."""

    def __init__(self, num_classes: int = 751, feat_dim: int = 2048) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        return (features.float() - self.centers[targets]).pow(2).sum(1).clamp(1e-12, 1e12).mean()


class SpatialAlignLoss(nn.Module):
    """MSINet-SAM's loss (docs/papers/masenet.md, "MSINet-SAM") on scores [B + 1, B, M] from the align module.

    For anchor i: the mean cosine distance between its position-energy profile and its correlation
    kernels with each positive (same id, itself included), plus the mean pairwise cosine distance
    among its kernels with the n negatives. ``negative_pairs="all"`` (the released code) averages over all
    n x n pairs, the n self-pairs (distance 0) included; ``"distinct"`` over the n (n - 1) pairs of two
    different negatives, which makes the negative term n / (n - 1) times larger.
    """

    NEGATIVE_PAIRS = ("all", "distinct")

    def __init__(self, negative_pairs: str = "all") -> None:
        super().__init__()
        if negative_pairs not in self.NEGATIVE_PAIRS:
            raise ReidbenchError(f"loss spatial_align negative_pairs: expected one of "
                                 f"{', '.join(self.NEGATIVE_PAIRS)}, got {negative_pairs!r}")
        self.negative_pairs = negative_pairs

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        batch = targets.shape[0]
        kernels = nn.functional.normalize(scores[:batch].float(), dim=-1)  # [i, j, M]
        pos = nn.functional.normalize(scores[batch].float(), dim=-1)  # [i, M]
        same = targets[:, None] == targets[None, :]
        align = 1.0 - torch.einsum("im,ijm->ij", pos, kernels)
        pos_term = (align * same).sum(1) / same.sum(1)
        pairwise = 1.0 - torch.einsum("ijm,ikm->ijk", kernels, kernels)  # [i, j, k]
        neg = ~same
        pair_mask = neg[:, :, None] & neg[:, None, :]
        if self.negative_pairs == "distinct":
            pair_mask = pair_mask & ~torch.eye(batch, dtype=torch.bool, device=targets.device)[None]
        neg_term = (pairwise * pair_mask).sum((1, 2)) / pair_mask.sum((1, 2)).clamp(min=1)
        return (pos_term + neg_term).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "spatial_align": SpatialAlignLoss,
    "cross_entropy": CrossEntropy,
    "triplet": TripletLoss,
    "center": CenterLoss,
}


def model_output(outputs: dict[str, Any], key: str, term: str) -> torch.Tensor:
    """The output a loss term reads: a contract field, or ``aux.<name>`` for a family's further tensors."""
    field, _, name = key.partition(".")
    value = outputs.get(field)
    if field == "aux" and isinstance(value, dict):
        value = value.get(name)
    if not isinstance(value, torch.Tensor):
        available = [k for k in outputs if k != "aux"] + [f"aux.{k}" for k in outputs.get("aux") or {}]
        raise ReidbenchError(f"loss {term}: the model has no output {key!r} (it returns {', '.join(available)})")
    return value


class LossSet(nn.Module):
    def __init__(self, terms: list[LossTerm], modules: list[nn.Module]) -> None:
        super().__init__()
        self.terms = terms
        self.losses = nn.ModuleList(modules)
        self.names = [f"{t.name}:{t.output}" for t in terms]

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros((), device=targets.device)
        values = {}
        for name, term, loss in zip(self.names, self.terms, self.losses, strict=True):
            if term.weight == 0:  # switched off (an ablation): not computed, its output need not exist
                continue
            value = loss(model_output(outputs, term.output, name), targets, outputs=outputs)
            values[name] = value.detach()
            total = total + term.weight * value
        return total, values

    def center_parameters(self) -> list[nn.Parameter]:
        return [p for loss in self.losses if isinstance(loss, CenterLoss) for p in loss.parameters()]


def build_losses(terms: list[LossTerm], num_classes: int,
                 feature_dims: Callable[[str], int] | None = None) -> LossSet:
    """The recipe's loss terms; ``feature_dims(output)`` gives the width of a model output (a centre loss's
    ``feat_dim`` when the recipe does not set it)."""
    modules = []
    for term in terms:
        if term.name not in LOSSES:
            raise UnknownNameError("loss", term.name, LOSSES)
        cls = LOSSES[term.name]
        accepted = inspect.signature(cls.__init__).parameters
        options = dict(term.options)
        if term.name == "center":
            options.setdefault("num_classes", num_classes)
            if "feat_dim" not in options and feature_dims is not None:
                options["feat_dim"] = feature_dims(term.output)
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ReidbenchError(f"loss {term.name}: unknown option(s) {', '.join(unknown)}; "
                                 f"expected some of: {', '.join(k for k in accepted if k != 'self')}")
        modules.append(cls(**options))
    return LossSet(terms, modules)
