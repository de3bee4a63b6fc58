"""Query-gallery distances, computed in row chunks so that large problems fit in memory."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from reidbench.evaluation._checks import to_numpy
from reidbench.evaluation._device import compute_device, full_precision_matmul, rows_that_fit

Metric = Literal["euclidean", "sqeuclidean", "cosine"]
METRICS = ("euclidean", "sqeuclidean", "cosine")
# Rows per chunk: bounds the temporaries to about chunk x G elements beside the output.
DEFAULT_CHUNK_ROWS = 1024


def as_features(value: Any, name: str) -> torch.Tensor:
    """A 2-D floating tensor of finite features (numpy arrays are wrapped without a copy)."""
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(to_numpy(value, name))
    )
    if tensor.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [N, D] feature matrix, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        tensor = tensor.double()
    elif tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    if tensor.numel() and not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: expected finite features, found NaN or inf")
    return tensor


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def prepare_features(features: torch.Tensor, metric: str, normalize: bool) -> torch.Tensor:
    """L2-normalise when asked, or always for cosine (cosine distance = 1 - dot of unit vectors)."""
    if normalize or metric == "cosine":
        return torch.nn.functional.normalize(features, p=2, dim=1)
    return features


def distance_block(q: torch.Tensor, g: torch.Tensor, g_sqnorm: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances of prepared features q [R, D] to g [C, D] given g's squared norms, [R, C] (the one formula)."""
    if metric == "cosine":
        return (1.0 - q @ g.T).clamp_(min=0.0)
    out = torch.addmm(g_sqnorm.unsqueeze(0), q, g.T, alpha=-2.0)
    out.add_(q.pow(2).sum(1, keepdim=True)).clamp_(min=0.0)
    return out.sqrt_() if metric == "euclidean" else out


def compute_distance(
    query: Any,
    gallery: Any,
    metric: Metric = "euclidean",
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: Any = None,
) -> torch.Tensor:
    """Distances between query and gallery features, [Q, G], on the device that computed them.

    ``euclidean`` and ``sqeuclidean`` use ||q||^2 + ||g||^2 - 2 q.g, clamped at 0; ``cosine`` is
    1 - cos(q, g). ``normalize`` L2-normalises both sides first. Rows are processed ``chunk_rows``
    at a time, so the temporaries stay at about chunk_rows x G elements: an MSMT17-size problem
    (11,659 x 82,161) needs its 3.8 GB float32 output and little more. ``device`` (``"cuda"``,
    ``"cuda:N"``, ``"cpu"``) moves the features there first; by default the work stays where the
    inputs are (CUDA tensors compute on their GPU). On CUDA the blocks are sized to the free memory and
    the products run in full float32 precision (no TF32). float64 inputs give float64 distances, all
    others float32.
    """
    check_metric(metric)
    target = compute_device(device, query, gallery)
    q = as_features(query, "query")
    g = as_features(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"gallery: expected feature dimension {q.shape[1]} (as query), got {g.shape[1]}"
        )
    if target is not None:
        q, g = q.to(target), g.to(target)
    elif q.device != g.device:
        raise ValueError(f"gallery: expected device {q.device} (as query), got {g.device}")
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    q = prepare_features(q.to(dtype), metric, normalize)
    g = prepare_features(g.to(dtype), metric, normalize)
    g_sqnorm = g.pow(2).sum(1)
    out = torch.empty(q.shape[0], g.shape[0], dtype=dtype, device=q.device)
    # a block's product and its norms-added copy beside the output
    step = rows_that_fit(q.device, 2 * g.shape[0] * g.element_size(), int(chunk_rows))
    with full_precision_matmul(q.device):
        for start in range(0, q.shape[0], step):
            out[start : start + step] = distance_block(q[start : start + step], g, g_sqnorm, metric)
    return out


def gathered_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances between paired features a[p] and b[p], [P, D] each, [P].

    Uses the same formula as :func:`compute_distance`, so the values agree with a dense matrix
    up to float rounding. The features must already be prepared (normalised for cosine).
    """
    dot = (a * b).sum(-1)
    if metric == "cosine":
        return (1.0 - dot).clamp_(min=0.0)
    sq = (a.pow(2).sum(-1) + b.pow(2).sum(-1) - 2.0 * dot).clamp_(min=0.0)
    return sq.sqrt_() if metric == "euclidean" else sq


def _shortest_path(step_cost: torch.Tensor) -> torch.Tensor:
    """Cheapest right/down path through [..., H, K] costs from (0, 0) to (H-1, K-1)."""
    height, width = step_cost.shape[-2:]
    row = torch.cumsum(step_cost[..., 0, :], dim=-1)  # first row: only moves right
    prev = list(row.unbind(-1))
    for i in range(1, height):
        current = [prev[0] + step_cost[..., i, 0]]
        for j in range(1, width):
            current.append(torch.minimum(prev[j], current[j - 1]) + step_cost[..., i, j])
        prev = current
    return prev[-1]


def aligned_local_distance(query: torch.Tensor, gallery: torch.Tensor, chunk_elements: int = 2**25
                           ) -> torch.Tensor:
    """AlignedReID's dynamically matched local (DMLI) distance between stripe features, [Q, G].

    ``query`` [Q, H, C] and ``gallery`` [G, K, C] hold one C-d feature per horizontal stripe (already
    normalised as the model wants). Stripe distances D_ij = ||q_i - g_j|| are squashed to
    (e^D - 1) / (e^D + 1) = tanh(D / 2); the distance is the cheapest right/down path through that
    H x K matrix (Zhang et al., 2017). Differentiable (the training loss uses it); computed in query
    chunks of at most ``chunk_elements`` stripe pairs, on the inputs' device.
    """
    if query.ndim != 3 or gallery.ndim != 3:
        raise ValueError(f"local features: expected [N, stripes, C] tensors, got {tuple(query.shape)} "
                         f"and {tuple(gallery.shape)}")
    if query.shape[2] != gallery.shape[2]:
        raise ValueError(f"gallery local features: expected {query.shape[2]} channels (as query), "
                         f"got {gallery.shape[2]}")
    num_q, height, channels = query.shape
    num_g, width, _ = gallery.shape
    flat_g = gallery.reshape(num_g * width, channels)
    rows = max(1, chunk_elements // max(1, num_g * height * width))
    parts = []
    for start in range(0, num_q, rows):
        q = query[start:start + rows]
        d = torch.cdist(q.reshape(-1, channels), flat_g)  # [q*H, G*K]
        d = d.view(q.shape[0], height, num_g, width).permute(0, 2, 1, 3)
        parts.append(_shortest_path(torch.tanh(d / 2)))
    if not parts:
        return query.new_zeros((0, num_g))
    return torch.cat(parts)
