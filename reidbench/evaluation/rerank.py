"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without the dense (Q+G) x (Q+G) matrices.

The published implementation builds the full original-distance matrix, its argsort and a dense
V matrix over all Q+G items: more than 35 GB at MSMT17 size. Everything it computes is sparse:

- the k-reciprocal sets need only each item's k1+1 nearest neighbours (and k2 for query expansion);
- V has non-zeros only on each item's expanded k-reciprocal set (at most a few hundred per row);
- the Jaccard distance of query i and item j is non-trivial only where V[i] and V[j] share a column.

So this module keeps the top-k structure, V as a sparse matrix, and computes Jaccard distances
through V's inverted index, writing straight into the [Q, G] output. The result equals the
original formulation up to float32 rounding, with one documented choice the original leaves to
numpy's unstable quicksort: ties in distance are ordered by item index.

Where the time goes and how it is cut (docs/speed.md):

- On the CPU, the nearest neighbours come from streaming kernels (``neighbours.py``) that read each
  distance once, by rows or by columns, without sorting or copying. From features, the pairwise
  distances are computed once per unordered pair of blocks (half the products of a full matrix),
  each block serving the k-NN of its rows and of its columns, and the query-gallery blocks are kept
  in the output buffer, so the final combination does not compute them again.
- On a torch device (``device="cuda"``, or ``"cpu"`` to run the same code on the CPU), rows of the
  distance matrix are computed in blocks sized to the free memory, their neighbours taken with an
  exact ``torch.topk``, and the Jaccard distances accumulated from V's inverted index with
  ``index_add`` in blocks of queries. The sparse set logic in between runs on the CPU either way.

Conventions of the original kept here: the combined matrix is squared and each row i is divided by
the maximum of column i (equal to row-normalisation for the symmetric matrices it receives);
the expansion radius is round(k1 / 2) with numpy's half-to-even rounding; a candidate's set is
added when more than 2/3 of it lies in the query's set.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
import torch

from reidbench.evaluation._checks import float_matrix, float_tensor
from reidbench.evaluation._device import compute_device, full_precision_matmul, rows_that_fit
from reidbench.evaluation.distance import (
    as_features,
    check_metric,
    distance_block,
    gathered_distance,
    prepare_features,
)
from reidbench.evaluation.neighbours import NeighbourState, smallest_k

ROW_CHUNK = 512  # rows per block of the device path on the CPU
PAIR_BLOCK = 2048  # items per side of a block of the CPU pairwise pass over features
GATHER_BUDGET = 1 << 24  # elements of the [pairs, D] temporaries when gathering features on a device
JACCARD_TRIPLES = 1 << 24  # (query, shared item, gallery item) triples per block of the device Jaccard
JACCARD_BYTES_PER_TRIPLE = 64


def _check_params(k1: int, k2: int, lambda_value: float, num_items: int) -> None:
    if int(k1) != k1 or k1 < 1:
        raise ValueError(f"k1: expected a positive integer, got {k1}")
    if int(k2) != k2 or k2 < 1:
        raise ValueError(f"k2: expected a positive integer, got {k2}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value: expected a value in [0, 1], got {lambda_value}")
    if max(k1 + 1, k2) > num_items:
        raise ValueError(
            f"k1: expected k1 + 1 and k2 <= the number of items ({num_items}), got k1={k1}, k2={k2}"
        )


@numba.njit(parallel=True, cache=True)
def _expanded_sets(ranks, k1, k_half):  # pragma: no cover - compiled
    """Each item's k-reciprocal set expanded with its candidates' half-size sets (sorted, unique)."""
    n = ranks.shape[0]
    width = (k1 + 1) * (k_half + 2)
    out = np.zeros((n, width), np.int32)
    counts = np.zeros(n, np.int64)
    for i in numba.prange(n):
        recip = np.empty(k1 + 1, np.int64)
        n_recip = 0
        for a in range(k1 + 1):
            c = ranks[i, a]
            for b in range(k1 + 1):
                if ranks[c, b] == i:
                    recip[n_recip] = c
                    n_recip += 1
                    break
        expanded = np.empty(width, np.int64)
        n_exp = 0
        for a in range(n_recip):
            expanded[n_exp] = recip[a]
            n_exp += 1
        cand = np.empty(k_half + 1, np.int64)
        for a in range(n_recip):
            c = recip[a]
            n_cand = 0
            for b in range(k_half + 1):
                x = ranks[c, b]
                for t in range(k_half + 1):
                    if ranks[x, t] == c:
                        cand[n_cand] = x
                        n_cand += 1
                        break
            shared = 0
            for b in range(n_cand):
                for t in range(n_recip):
                    if cand[b] == recip[t]:
                        shared += 1
                        break
            if shared > (2.0 / 3.0) * n_cand:
                for b in range(n_cand):
                    expanded[n_exp] = cand[b]
                    n_exp += 1
        unique = np.unique(expanded[:n_exp])
        counts[i] = unique.shape[0]
        out[i, : unique.shape[0]] = unique
    return out, counts


@numba.njit(parallel=True, cache=True)
def _final_distance(out, original, indptr, indices, data, g_indptr, g_indices, g_data, col_max_sq,
                    lambda_value):  # pragma: no cover - compiled
    """out[i, j] = (1 - lambda) Jaccard(V[i], V[Q + j]) + lambda original[i, j]^2 / col_max_sq[i].

    ``g_*`` is V's gallery rows by column (the inverted index). ``out`` may be ``original`` itself:
    each entry is read before it is written.
    """
    num_gallery = out.shape[1]
    for i in numba.prange(out.shape[0]):
        shared = np.zeros(num_gallery, np.float64)
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            v = data[p]
            for t in range(g_indptr[k], g_indptr[k + 1]):
                shared[g_indices[t]] += min(v, g_data[t])
        scale = lambda_value / col_max_sq[i]
        for j in range(num_gallery):
            s = shared[j]
            d = np.float64(original[i, j])
            out[i, j] = (1.0 - lambda_value) * (1.0 - s / (2.0 - s)) + scale * d * d


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _member_distances(query, gallery, sqnorm, indptr, indices, metric):  # pragma: no cover - compiled
    """Distance of item i to each of its members indices[indptr[i]:indptr[i + 1]], read from the features in
    place (items < Q are query rows, the others gallery rows); ``metric`` 0 euclidean, 1 sqeuclidean,
    2 cosine (prepared features). The formula of ``distance_block``, accumulated in float64."""
    nq = query.shape[0]
    out = np.empty(indices.shape[0], np.float64)
    for i in numba.prange(indptr.shape[0] - 1):
        a = query[i] if i < nq else gallery[i - nq]
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            b = query[j] if j < nq else gallery[j - nq]
            dot = 0.0
            for d in range(a.shape[0]):
                dot += np.float64(a[d]) * np.float64(b[d])
            if metric == 2:
                out[p] = max(1.0 - dot, 0.0)
            else:
                sq = max(np.float64(sqnorm[i]) + np.float64(sqnorm[j]) - 2.0 * dot, 0.0)
                out[p] = np.sqrt(sq) if metric == 0 else sq
    return out


def _bad_values(state: NeighbourState, matrices: dict[str, Any]) -> None:
    """Raise the error a NaN, infinite or negative distance seen by the k-NN pass deserves."""
    if state.bad.any() or not np.isfinite(state.maximum).all():
        for name, matrix in matrices.items():
            float_matrix(matrix, name)  # names the first non-finite value
        raise ValueError("distances: expected non-negative values, found a negative distance")


class _DenseRows:
    """Rows of the original method's combined matrix [[q_q, q_g], [q_g^T, g_g]], read from the three
    matrices: row i of its working matrix is column i of the combined one."""

    def __init__(self, q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_query, self.num_gallery = q_g.shape

    def neighbours_cpu(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k-NN and row maxima in one streaming pass over each matrix, no copies."""
        nq = self.num_query
        qg, qq, gg = (m.numpy() for m in (self.q_g, self.q_q, self.g_g))
        state = NeighbourState(nq + self.num_gallery, k)
        state.scan_columns(qq, 0, 0)
        state.scan_rows(qg, 0, nq)
        state.scan_columns(qg, nq, 0)
        state.scan_columns(gg, nq, nq)
        _bad_values(state, {"q_g": qg, "q_q": qq, "g_g": gg})
        return state.index, state.maximum, qg

    def rows(self, step: int):
        nq = self.num_query
        for s in range(0, nq, step):
            e = min(s + step, nq)
            yield s, torch.cat([self.q_q[:, s:e].T, self.q_g[s:e]], dim=1)
        for s in range(0, self.num_gallery, step):
            e = min(s + step, self.num_gallery)
            yield nq + s, torch.cat([self.q_g[:, s:e].T, self.g_g[:, s:e].T], dim=1)

    def neighbours_device(self, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        n = self.num_query + self.num_gallery
        step = rows_that_fit(device, 24 * n, ROW_CHUNK)  # a row block, its comparison and sort temporaries
        ranks = torch.empty(n, k, dtype=torch.int64, device=device)
        maxima = torch.empty(n, dtype=torch.float32, device=device)
        for start, block in self.rows(step):
            if bool((block < 0).any()):
                raise ValueError("distances: expected non-negative values, found a negative distance")
            ranks[start : start + block.shape[0]] = smallest_k(block, k)[1]
            maxima[start : start + block.shape[0]] = block.max(dim=1).values
        return ranks.cpu().numpy(), maxima.cpu().numpy(), self.q_g

    def member_distances(self, indptr: np.ndarray, indices: np.ndarray, on_cpu: bool) -> np.ndarray:
        """Entry (i, indices[p]) of the working matrix for each p in row i's range, i.e. M[indices[p], i]."""
        nq = self.num_query
        device = self.q_g.device
        rows = torch.from_numpy(np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))).to(device)
        cols = torch.from_numpy(indices.astype(np.int64)).to(device)
        out = self.q_g.new_empty(cols.shape)
        for row_query in (True, False):
            for col_query in (True, False):
                where = ((rows < nq) == row_query) & ((cols < nq) == col_query)
                r, c = rows[where], cols[where]
                if row_query and col_query:
                    out[where] = self.q_q[c, r]
                elif row_query:  # M[j, i] with j a gallery item: q_g^T[j - Q, i]
                    out[where] = self.q_g[r, c - nq]
                elif col_query:
                    out[where] = self.q_g[c, r - nq]
                else:
                    out[where] = self.g_g[c - nq, r - nq]
        return out.cpu().numpy().astype(np.float64)


class _FeatureRows:
    """The same rows computed from features, block by block, never all at once; the query and gallery
    features are read in place as one virtual [Q + G, D] matrix."""

    def __init__(self, query: torch.Tensor, gallery: torch.Tensor, metric: str) -> None:
        self.query, self.gallery, self.metric = query, gallery, metric
        self.num_query, self.num_gallery = query.shape[0], gallery.shape[0]
        self.sqnorm = torch.cat([query.pow(2).sum(1), gallery.pow(2).sum(1)])
        self.feature_dim = query.shape[1]

    def items(self, start: int, stop: int) -> torch.Tensor:
        """Features of items start..stop of the virtual concatenation."""
        nq = self.num_query
        if stop <= nq:
            return self.query[start:stop]
        if start >= nq:
            return self.gallery[start - nq : stop - nq]
        return torch.cat([self.query[start:], self.gallery[: stop - nq]])

    def neighbours_cpu(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One product per unordered pair of blocks: a block gives the k-NN candidates of its rows and, by
        columns, of its column items; the query-gallery blocks go to the output buffer on the way."""
        nq, n = self.num_query, self.num_query + self.num_gallery
        state = NeighbourState(n, k)
        original = np.empty((nq, self.num_gallery), np.float32)
        step = max(1, int(PAIR_BLOCK))
        for s in range(0, n, step):
            e = min(s + step, n)
            rows = self.items(s, e)
            for t in range(s, n, step):
                u = min(t + step, n)
                block = distance_block(rows, self.items(t, u), self.sqnorm[t:u], self.metric).float().numpy()
                state.scan_rows(block, s, t)
                if t != s:
                    state.scan_columns(block, t, s)
                if s < nq and u > nq:  # query rows x gallery columns: the original distances
                    r, c = min(e, nq), max(t, nq)
                    original[s:r, c - nq : u - nq] = block[: r - s, c - t :]
        return state.index, state.maximum, original

    def neighbours_device(self, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        nq, n = self.num_query, self.num_query + self.num_gallery
        step = rows_that_fit(device, 24 * n, ROW_CHUNK)
        ranks = torch.empty(n, k, dtype=torch.int64, device=device)
        maxima = torch.empty(n, dtype=torch.float32, device=device)
        original = torch.empty(nq, self.num_gallery, dtype=torch.float32, device=device)
        columns = self.items(0, n)  # one copy of the features beside them, as one contiguous matrix
        with full_precision_matmul(device):
            for s in range(0, n, step):
                e = min(s + step, n)
                block = distance_block(self.items(s, e), columns, self.sqnorm, self.metric).float()
                ranks[s:e] = smallest_k(block, k)[1]
                maxima[s:e] = block.max(dim=1).values
                if s < nq:
                    original[s : min(e, nq)] = block[: min(e, nq) - s, nq:]
        return ranks.cpu().numpy(), maxima.cpu().numpy(), original

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Features of the items ``index`` (any shape), [*index.shape, D]."""
        from_query = index < self.num_query
        out = self.query.new_empty((*index.shape, self.feature_dim))
        out[from_query] = self.query[index[from_query]]
        out[~from_query] = self.gallery[index[~from_query] - self.num_query]
        return out

    def member_distances(self, indptr: np.ndarray, indices: np.ndarray, on_cpu: bool) -> np.ndarray:
        """Distance of item i to each item indices[p] of its range: on the CPU read from the features in place
        by a compiled kernel, on a device gathered in chunks (the same formula)."""
        if on_cpu:
            code = {"euclidean": 0, "sqeuclidean": 1, "cosine": 2}[self.metric]
            return _member_distances(self.query.numpy(), self.gallery.numpy(), self.sqnorm.numpy(),
                                     indptr.astype(np.int64), indices, code)
        device = self.query.device
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        out = np.empty(len(indices), np.float64)
        step = max(1, GATHER_BUDGET // self.feature_dim)
        for s in range(0, len(indices), step):
            r = torch.from_numpy(rows[s : s + step]).to(device)
            c = torch.from_numpy(indices[s : s + step].astype(np.int64)).to(device)
            out[s : s + step] = gathered_distance(self.take(r), self.take(c), self.metric).cpu().numpy()
        return out


def _v_matrix(source: Any, ranks: np.ndarray, col_max_sq: np.ndarray, k1: int, k2: int,
              on_cpu: bool) -> sp.csr_matrix:
    """V: each item's expanded k-reciprocal set with Gaussian weights, then averaged over its k2 nearest
    neighbours (query expansion); CSR with sorted indices."""
    n = ranks.shape[0]
    k_half = int(np.around(k1 / 2.0))
    padded, counts = _expanded_sets(np.ascontiguousarray(ranks[:, : k1 + 1]), k1, k_half)
    indices = padded[np.arange(padded.shape[1])[None, :] < counts[:, None]]  # row by row, sorted
    del padded
    indptr = np.concatenate([[0], np.cumsum(counts)])
    dist = source.member_distances(indptr, indices, on_cpu)
    rows = np.repeat(np.arange(n), counts)
    weights = np.exp(-(dist**2) / col_max_sq[rows])
    weights /= np.bincount(rows, weights=weights, minlength=n)[rows]
    del dist, rows
    v = sp.csr_matrix((weights, indices, indptr), shape=(n, n))
    if k2 != 1:
        rows = np.repeat(np.arange(n), k2)
        average = sp.csr_matrix(
            (np.full(n * k2, 1.0 / k2), (rows, ranks[:, :k2].ravel())), shape=(n, n)
        )
        v = (average @ v).tocsr()
    v.sort_indices()
    return v


def _final_distance_device(original: torch.Tensor, v: sp.csr_matrix, gallery_columns: sp.csc_matrix,
                           col_max_sq: np.ndarray, lambda_value: float) -> torch.Tensor:
    """:func:`_final_distance` with torch on ``original``'s device: the (query, shared item, gallery item)
    triples of a block of queries are expanded from the inverted index and summed with ``index_add``."""
    device = original.device
    nq, ng = original.shape
    indptr = v.indptr[: nq + 1].astype(np.int64)
    lengths = np.diff(gallery_columns.indptr).astype(np.int64)
    triples_before = np.concatenate([[0], np.cumsum(lengths[v.indices[: indptr[-1]]])])[indptr]
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = max(1, int(free * 0.3) // JACCARD_BYTES_PER_TRIPLE)
    else:
        budget = JACCARD_TRIPLES
    on = {"device": device}
    v_indices = torch.from_numpy(v.indices[: indptr[-1]].astype(np.int64)).to(**on)
    v_data = torch.from_numpy(v.data[: indptr[-1]]).to(**on)
    g_indptr = torch.from_numpy(gallery_columns.indptr.astype(np.int64)).to(**on)
    g_lengths = torch.from_numpy(lengths).to(**on)
    g_indices = torch.from_numpy(gallery_columns.indices.astype(np.int64)).to(**on)
    g_data = torch.from_numpy(gallery_columns.data).to(**on)
    scale = torch.from_numpy(float(lambda_value) / col_max_sq[:nq]).to(**on)
    out = original  # rows are read before they are written
    start = 0
    while start < nq:
        # as many queries as the triple budget and [rows, G] float64 temporaries allow, at least one
        limit = min(np.searchsorted(triples_before, triples_before[start] + budget, side="right") - 1,
                    start + budget * JACCARD_BYTES_PER_TRIPLE // (32 * ng))
        stop = int(min(nq, max(start + 1, limit)))
        p0, p1 = int(indptr[start]), int(indptr[stop])
        per_query = torch.from_numpy(np.diff(indptr[start : stop + 1])).to(**on)
        row = torch.repeat_interleave(torch.arange(stop - start, **on), per_query)  # per non-zero of V
        shared_item = v_indices[p0:p1]
        count = g_lengths[shared_item]
        which = torch.repeat_interleave(torch.arange(p1 - p0, **on), count)  # per triple: its non-zero
        offset = torch.arange(which.numel(), **on) - (count.cumsum(0) - count)[which]
        position = g_indptr[shared_item][which] + offset
        shared = torch.zeros((stop - start) * ng, dtype=torch.float64, **on)
        shared.index_add_(0, row[which] * ng + g_indices[position],
                          torch.minimum(v_data[p0:p1][which], g_data[position]))
        del row, which, offset, position  # the triples: free before the [rows, G] arithmetic
        # in place, as few [rows, G] temporaries as possible: (1 - lambda) (1 - s / (2 - s)) + scale d^2
        jaccard = shared.view(stop - start, ng)
        jaccard.div_(jaccard.neg().add_(2.0)).neg_().add_(1.0).mul_(1.0 - float(lambda_value))
        d = out[start:stop].double()
        jaccard.add_(d.mul_(d).mul_(scale[start:stop, None]))
        del d
        out[start:stop] = jaccard
        start = stop
    return out


def _rerank(source: Any, k1: int, k2: int, lambda_value: float, device: torch.device | None) -> torch.Tensor:
    nq, ng = source.num_query, source.num_gallery
    n = nq + ng
    _check_params(k1, k2, lambda_value, n)
    k = max(k1 + 1, k2)

    # 1. k nearest neighbours of every item, the row maxima used for normalisation, the original [Q, G].
    if device is None:
        ranks, maxima, original = source.neighbours_cpu(k)
    else:
        ranks, maxima, original = source.neighbours_device(k, device)
    col_max_sq = maxima.astype(np.float64) ** 2
    if (col_max_sq <= 0).any():
        raise ValueError("distances: expected each item to have a non-zero distance to some other")

    # 2-3. Expanded k-reciprocal sets, Gaussian weights, query expansion.
    v = _v_matrix(source, ranks, col_max_sq, k1, k2, on_cpu=device is None)
    gallery_columns = v[nq:].tocsc()
    gallery_columns.sort_indices()

    # 4. Jaccard distance through the inverted index, then the weighted original distance.
    if device is not None:
        if not isinstance(source, _FeatureRows):
            original = torch.empty_like(original).copy_(original)  # never write into the caller's q_g
        return _final_distance_device(original, v, gallery_columns, col_max_sq, lambda_value)
    out = original if isinstance(source, _FeatureRows) else np.empty((nq, ng), np.float32)
    _final_distance(out, original, v.indptr, v.indices, v.data, gallery_columns.indptr,
                    gallery_columns.indices, gallery_columns.data, col_max_sq, float(lambda_value))
    return torch.from_numpy(out)


def rerank(
    q_g: Any, q_q: Any, g_g: Any, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, device: Any = None
) -> torch.Tensor:
    """k-reciprocal re-ranking from distance matrices; returns the final [Q, G] distance.

    Same result as the original formulation (Zhong et al., CVPR 2017) up to float32 rounding:
    the original distances squared and normalised per row, k-reciprocal sets with the 2/3
    expansion rule, Gaussian weights, query expansion over k2, Jaccard distance, and
    ``(1 - lambda) * jaccard + lambda * original``. Any non-negative distance is accepted (for
    example AlignedReID++'s global + local distance). Memory beyond the inputs and the output is
    O((Q+G) * k), not O((Q+G)^2). ``device`` (``"cuda"``, ``"cuda:N"``, ``"cpu"`` for the device code
    on the CPU) computes the neighbours and the Jaccard distances there and returns the result there;
    by default CPU inputs use the CPU kernels and CUDA tensors their GPU.

    Raises:
        ValueError: shapes that do not fit together, non-square q_q or g_g, NaN/inf or negative
            distances, or parameters out of range.
    """
    target = compute_device(device, q_g, q_q, g_g)
    if target is None:
        qg, qq, gg = (torch.from_numpy(float_matrix(m, name, require_finite=False).astype(np.float32, copy=False))
                      for m, name in ((q_g, "q_g"), (q_q, "q_q"), (g_g, "g_g")))
    else:
        qg, qq, gg = (float_tensor(m, name, target).float() for m, name in ((q_g, "q_g"), (q_q, "q_q"), (g_g, "g_g")))
    nq, ng = qg.shape
    if nq == 0 or ng == 0:
        raise ValueError(f"q_g: expected a non-empty [Q, G] matrix, got shape {tuple(qg.shape)}")
    if qq.shape != (nq, nq):
        raise ValueError(f"q_q: expected a square [{nq}, {nq}] matrix (Q = q_g rows), got {tuple(qq.shape)}")
    if gg.shape != (ng, ng):
        raise ValueError(
            f"g_g: expected a square [{ng}, {ng}] matrix (G = q_g columns), got {tuple(gg.shape)}"
        )
    return _rerank(_DenseRows(qg, qq, gg), k1, k2, lambda_value, target)


def rerank_features(
    query: Any,
    gallery: Any,
    metric: str = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    normalize: bool = False,
    device: Any = None,
) -> torch.Tensor:
    """k-reciprocal re-ranking computed from features, with bounded memory.

    Gives the result of ``rerank(compute_distance(q, g), compute_distance(q, q),
    compute_distance(g, g))`` (up to float32 rounding) without forming q_q, g_g or any
    (Q+G) x (Q+G) matrix: distances are computed in blocks and only the k-nearest structure,
    the sparse V and the [Q, G] output are kept. On the CPU each unordered pair of blocks is
    computed once; at MSMT17 size (11,659 + 82,161 items, 2048-d) the peak is the 3.8 GB output plus
    the features and the sparse structures. ``device`` as for :func:`rerank`; on CUDA the blocks are
    sized to the free memory.
    """
    check_metric(metric)
    target = compute_device(device, query, gallery)
    q = as_features(query, "query").detach()
    g = as_features(gallery, "gallery").detach()
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError("query: expected non-empty query and gallery feature sets")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"gallery: expected feature dimension {q.shape[1]}, got {g.shape[1]}")
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    on = target if target is not None else torch.device("cpu")
    q = prepare_features(q.to(on, dtype), metric, normalize).contiguous()
    g = prepare_features(g.to(on, dtype), metric, normalize).contiguous()
    return _rerank(_FeatureRows(q, g, metric), k1, k2, lambda_value, target)
