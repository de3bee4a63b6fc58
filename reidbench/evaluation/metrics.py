"""CMC, mAP and mINP under the Market-style and partial-ReID protocols.

The ranking of each query is never materialised: a query's positives are found through a
pid -> gallery index, sorted, and every gallery item closer than the hardest positive is counted
into the gap before the positive that follows it. This is O(G) per query with no sort of the
gallery, which is what makes Market-size evaluation take tens of milliseconds instead of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
import torch

from reidbench.evaluation._checks import float_matrix, float_tensor, id_vector
from reidbench.evaluation._device import compute_device, rows_that_fit

Protocol = Literal["market", "partial"]
APMode = Literal["standard", "matlab"]
PROTOCOLS = ("market", "partial")
AP_MODES = ("standard", "matlab")


@dataclass
class EvaluationResult:
    """Metrics of one evaluation. Fractions are in [0, 1]; per-query arrays cover every query.

    ``ap``, ``inp`` are NaN and ``first_hit`` is -1 for skipped queries (no positive left in the
    gallery after the protocol's filtering); ``first_hit`` is the 0-based rank of the first positive.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int
    num_skipped_queries: int
    ap: np.ndarray
    first_hit: np.ndarray
    inp: np.ndarray
    protocol: str
    ap_mode: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return self.first_hit >= 0

    def rank(self, k: int) -> float:
        """Rank-k accuracy (CMC at k, 1-based)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"k: expected 1..{len(self.cmc)} (max_rank), got {k}")
        return float(self.cmc[k - 1])

    def summary(self, ranks: tuple[int, ...] = (1, 3, 5, 10)) -> dict[str, float]:
        out = {f"R{k}": self.rank(k) for k in ranks if k <= len(self.cmc)}
        out.update(mAP=self.mAP, mINP=self.mINP)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "cmc": self.cmc.tolist(),
            "num_valid_queries": self.num_valid_queries,
            "num_skipped_queries": self.num_skipped_queries,
            "protocol": self.protocol,
            "ap_mode": self.ap_mode,
            **self.settings,
        }


@numba.njit(parallel=True, cache=True, nogil=True)
def _rank_positives(dist, q_pids, q_camids, g_pids, g_camids, by_pid, pid_start, pid_values,
                    camera_filter):  # pragma: no cover - compiled
    num_q, num_g = dist.shape
    ap_std = np.full(num_q, np.nan)
    ap_mat = np.full(num_q, np.nan)
    inp = np.full(num_q, np.nan)
    first_hit = np.full(num_q, -1, np.int64)
    for q in numba.prange(num_q):
        row = dist[q]
        qpid = q_pids[q]
        slot = np.searchsorted(pid_values, qpid)
        if slot >= pid_values.shape[0] or pid_values[slot] != qpid:
            continue
        lo = pid_start[slot]
        hi = pid_start[slot + 1]
        pos_d = np.empty(hi - lo, row.dtype)
        pos_i = np.empty(hi - lo, np.int64)
        n = 0
        for t in range(lo, hi):
            g = by_pid[t]
            if camera_filter and g_camids[g] == q_camids[q]:
                continue  # same id, same camera: junk under the Market protocol
            pos_d[n] = row[g]
            pos_i[n] = g
            n += 1
        if n == 0:
            continue
        # by_pid is ascending within a pid, so a stable sort orders ties by gallery index
        order = np.argsort(pos_d[:n], kind="mergesort")
        pos_d = pos_d[:n][order]
        pos_i = pos_i[:n][order]
        hardest = pos_d[n - 1]
        # gap[k]: negatives ranked after positive k-1 and before positive k
        gap = np.zeros(n + 1, np.int64)
        for g in range(num_g):
            d = row[g]
            if d > hardest or g_pids[g] == qpid:
                continue
            before = 0
            for k in range(n):
                before += (pos_d[k] < d) | ((pos_d[k] == d) & (pos_i[k] < g))
            gap[before] += 1
        negatives = 0
        sum_std = 0.0
        sum_mat = 0.0
        rank = 0
        for k in range(n):
            negatives += gap[k]
            rank = k + negatives  # 0-based rank of positive k among the kept gallery items
            if k == 0:
                first_hit[q] = rank
            precision = (k + 1) / (rank + 1)
            previous = k / rank if rank > 0 else 1.0
            sum_std += precision
            sum_mat += 0.5 * (previous + precision)
        ap_std[q] = sum_std / n
        ap_mat[q] = sum_mat / n
        inp[q] = n / (rank + 1)
    return ap_std, ap_mat, inp, first_hit


# Bytes of temporaries per distance in a block of the device evaluation (sort indices, gathered ids, ranks).
DEVICE_BYTES_PER_ENTRY = 48
DEVICE_CPU_ROWS = 256


def _rank_positives_device(dist, q_pids, q_camids, g_pids, g_camids, camera_filter):
    """What :func:`_rank_positives` returns, computed with torch on ``dist``'s device, a block of queries at
    a time: a stable sort of each row (ties by gallery index), the kept items' ranks by a cumulative sum,
    and AP / INP / first hit from the positives' ranks alone."""
    device = dist.device
    num_q, num_g = dist.shape
    qp, qc = torch.from_numpy(q_pids).to(device), torch.from_numpy(q_camids).to(device)
    gp, gc = torch.from_numpy(g_pids).to(device), torch.from_numpy(g_camids).to(device)
    outputs = {name: np.full(num_q, np.nan) for name in ("ap_std", "ap_mat", "inp")}
    first_hit = np.full(num_q, -1, np.int64)
    step = rows_that_fit(device, DEVICE_BYTES_PER_ENTRY * num_g, DEVICE_CPU_ROWS)
    for start in range(0, num_q, step):
        stop = min(start + step, num_q)
        order = torch.sort(dist[start:stop], dim=1, stable=True).indices
        match = gp[order] == qp[start:stop, None]
        if camera_filter:  # same id, same camera: junk, removed from the ranking
            keep = ~(match & (gc[order] == qc[start:stop, None]))
            kept_rank = keep.cumsum(1) - 1
            good = match & keep
        else:
            kept_rank = torch.arange(num_g, device=device).expand(stop - start, num_g)
            good = match
        del order, match
        row, _column = good.nonzero(as_tuple=True)  # row-major: each row's positives in rank order
        rank = kept_rank[good].double()  # 0-based rank of each positive among the kept items
        count = torch.bincount(row, minlength=stop - start)
        row_start = count.cumsum(0) - count
        k = torch.arange(row.numel(), device=device) - row_start[row]  # 0-based index of the positive
        precision = (k + 1) / (rank + 1)
        previous = torch.where(rank > 0, k / rank.clamp(min=1), torch.ones_like(rank))
        total = torch.zeros(stop - start, dtype=torch.float64, device=device)
        sums = {"ap_std": total.index_add(0, row, precision),
                "ap_mat": total.index_add(0, row, 0.5 * (previous + precision))}
        valid = count > 0
        if not bool(valid.any()):
            continue
        first = torch.full_like(count, -1)
        first[valid] = rank[row_start[valid]].long()
        last = rank[row_start[valid] + count[valid] - 1]
        inp = torch.full_like(total, float("nan"))
        inp[valid] = count[valid] / (last + 1)
        where = slice(start, stop)
        for name, value in sums.items():
            outputs[name][where] = torch.where(valid, value / count.clamp(min=1), float("nan")).cpu().numpy()
        outputs["inp"][where] = inp.cpu().numpy()
        first_hit[where] = first.cpu().numpy()
    return outputs["ap_std"], outputs["ap_mat"], outputs["inp"], first_hit


def evaluate(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    protocol: Protocol = "market",
    ap: APMode = "standard",
    device: Any = None,
) -> EvaluationResult:
    """Rank the gallery for every query and compute CMC, mAP and mINP.

    Args:
        distmat: [Q, G] distances (smaller is closer), numpy array or tensor, float32 or float64.
        q_pids, g_pids, q_camids, g_camids: integer ids of length Q and G.
        max_rank: length of the CMC curve.
        protocol: ``"market"`` removes, per query, the gallery items with the query's id AND
            camera (Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17, VeRi-776, Occluded-Duke,
            P-DukeMTMC); ``"partial"`` removes nothing (Partial-REID, Partial-iLIDS). Queries left
            without a positive are skipped and counted in ``num_skipped_queries``.
        ap: ``"standard"`` is the non-interpolated AP (mean of precision at each positive) that
            Python ReID frameworks report; ``"matlab"`` is the trapezoid AP of the original
            Market-1501 MATLAB evaluation code.
        device: where to rank. By default CPU inputs use the compiled CPU kernel and a CUDA tensor is
            ranked on its GPU; ``"cuda"`` / ``"cuda:N"`` moves the distances there, ``"cpu"`` runs the
            same device code on the CPU. The device code sorts blocks of rows sized to the free memory
            and gives the same ranks, CMC, mAP and mINP (to float64 rounding) as the CPU kernel.

    Ties in distance are broken by gallery index (a stable sort): among gallery items at the same
    distance, the one with the smaller index ranks first. mINP is the mean over valid queries of
    (number of positives) / (1-based rank of the hardest positive).

    Raises:
        ValueError: mismatched lengths, non-finite distances, an empty query or gallery set, an
            unknown protocol or AP mode, or no query with a positive in the gallery.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if ap not in AP_MODES:
        raise ValueError(f"ap: expected one of {AP_MODES}, got {ap!r}")
    if int(max_rank) < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank}")
    target = compute_device(device, distmat)
    dist = float_matrix(distmat, "distmat") if target is None else float_tensor(distmat, "distmat", target)
    num_q, num_g = dist.shape
    if num_q == 0:
        raise ValueError("distmat: expected at least one query row, got an empty query set")
    if num_g == 0:
        raise ValueError("distmat: expected at least one gallery column, got an empty gallery")
    qp = id_vector(q_pids, "q_pids", num_q, "distmat rows")
    gp = id_vector(g_pids, "g_pids", num_g, "distmat columns")
    qc = id_vector(q_camids, "q_camids", num_q, "distmat rows")
    gc = id_vector(g_camids, "g_camids", num_g, "distmat columns")

    if target is None:
        by_pid = np.argsort(gp, kind="stable")
        pid_values, pid_start = np.unique(gp[by_pid], return_index=True)
        pid_start = np.append(pid_start, num_g).astype(np.int64)
        ap_std, ap_mat, inp, first_hit = _rank_positives(
            dist, qp, qc, gp, gc, by_pid, pid_start, pid_values, protocol == "market"
        )
    else:
        ap_std, ap_mat, inp, first_hit = _rank_positives_device(dist, qp, qc, gp, gc, protocol == "market")

    valid = first_hit >= 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            "q_pids: no query has a positive in the gallery under the "
            f"{protocol!r} protocol (expected at least one query id with a gallery match)"
        )
    ap_values = ap_std if ap == "standard" else ap_mat
    hits = np.bincount(first_hit[valid], minlength=max_rank)[:max_rank]
    cmc = np.cumsum(hits) / num_valid
    return EvaluationResult(
        cmc=cmc.astype(np.float64),
        mAP=float(ap_values[valid].mean()),
        mINP=float(inp[valid].mean()),
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
        ap=ap_values,
        first_hit=first_hit,
        inp=inp,
        protocol=protocol,
        ap_mode=ap,
        settings={"max_rank": int(max_rank)},
    )
