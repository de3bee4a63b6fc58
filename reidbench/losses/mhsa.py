"""MHSA-Net's own loss terms (docs/papers/mhsa-net.md): FDRT and IHTL on the K head embeddings [N, K, D],
ACM on the attention weights [N, K, J]. Each has the paper's reading and the released code's (option
``reading`` or ``distance``); its weight (lambda1, lambda2, lambda3) is the loss term's ``weight``.

=========  =======================================================  =============================================
term       paper (default)                                          released code
=========  =======================================================  =============================================
``fdrt``   (1/K^2) ||G - I||_1, G = Gram of the L2-normalised       ||G - I||_F / 25, G = Gram of the raw heads,
           heads; mean over the batch                               then L2-normalised by rows and by columns;
                                                                    summed over the batch
``ihtl``   squared Euclidean; the hardest positive is another       Euclidean (``distance: euclidean``); the anchor
           image of the id (``include_self: false``)                itself counts as a positive (``include_self:
                                                                    true``)
``acm``    sum min(alpha, gamma)^2 per image; mean over the batch   sum of alpha[alpha < gamma] over the batch
=========  =======================================================  =============================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.losses.core import LOSSES, pairwise_distance

READINGS = ("paper", "released")
RELEASED_FDRT_DIVISOR = 25.0  # the released code divides the Frobenius norm by 25 (not by K^2)


def _check_reading(term: str, reading: str) -> None:
    if reading not in READINGS:
        raise ReidbenchError(f"loss {term} reading: expected one of {', '.join(READINGS)}, got {reading!r}")


def _heads(term: str, parts: torch.Tensor) -> torch.Tensor:
    if parts.ndim != 3:
        raise ReidbenchError(f"loss {term}: expected head embeddings [N, K, D], got shape {tuple(parts.shape)}")
    return parts.float()


class FeatureDiversity(nn.Module):
    """FDRT: how far the Gram matrix of each image's K heads is from the identity."""

    def __init__(self, reading: str = "paper") -> None:
        super().__init__()
        _check_reading("fdrt", reading)
        self.reading = reading

    def forward(self, parts: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        parts = _heads("fdrt", parts)
        identity = torch.eye(parts.shape[1], device=parts.device)
        if self.reading == "paper":
            unit = nn.functional.normalize(parts, dim=2)
            gram = unit @ unit.transpose(1, 2)
            return (gram - identity).abs().mean(dim=(1, 2)).mean()
        gram = parts @ parts.transpose(1, 2)
        gram = nn.functional.normalize(nn.functional.normalize(gram, dim=2), dim=1)  # rows, then columns
        frobenius = (gram - identity).pow(2).sum(dim=(1, 2)).clamp(min=1e-12).sqrt()
        return (frobenius / RELEASED_FDRT_DIVISOR).sum()


class ImprovedHardTriplet(nn.Module):
    """IHTL: soft-margin batch-hard triplet where an image pair's distance is the largest (positives) or the
    smallest (negatives) of the K x K distances between their heads."""

    def __init__(self, distance: str = "sqeuclidean", include_self: bool = False) -> None:
        super().__init__()
        if distance not in ("euclidean", "sqeuclidean"):
            raise ReidbenchError(f"loss ihtl distance: expected euclidean or sqeuclidean, got {distance!r}")
        self.squared, self.include_self = distance == "sqeuclidean", include_self

    def forward(self, parts: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        parts = _heads("ihtl", parts)
        n, k, _dim = parts.shape
        dist = pairwise_distance(parts.reshape(n * k, -1), self.squared).view(n, k, n, k)
        farthest, nearest = dist.amax(dim=(1, 3)), dist.amin(dim=(1, 3))  # [N, N] per image pair
        same = targets[:, None] == targets[None, :]
        positive = same if self.include_self else same & ~torch.eye(n, dtype=torch.bool, device=same.device)
        d_ap = farthest.masked_fill(~positive, -math.inf).amax(dim=1)
        d_an = nearest.masked_fill(same, math.inf).amin(dim=1)
        valid = torch.isfinite(d_ap) & torch.isfinite(d_an)  # anchors with a positive and a negative
        if not valid.any():
            return parts.sum() * 0.0
        return nn.functional.softplus(d_ap[valid] - d_an[valid]).mean()


class AttentionCompetition(nn.Module):
    """ACM: pushes the attention weights below ``gamma`` towards zero."""

    def __init__(self, gamma: float = 1e-3, reading: str = "paper") -> None:
        super().__init__()
        _check_reading("acm", reading)
        if gamma <= 0:
            raise ReidbenchError(f"loss acm gamma: expected a positive threshold, got {gamma!r}")
        self.gamma, self.reading = gamma, reading

    def forward(self, attention: torch.Tensor, targets: torch.Tensor, **_: Any) -> torch.Tensor:
        alpha = attention.float()
        if self.reading == "paper":
            return alpha.clamp(max=self.gamma).pow(2).flatten(1).sum(dim=1).mean()
        return alpha[alpha < self.gamma].sum()


LOSSES.update(fdrt=FeatureDiversity, ihtl=ImprovedHardTriplet, acm=AttentionCompetition)
