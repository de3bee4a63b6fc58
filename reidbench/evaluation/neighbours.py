"""Exact k-nearest-neighbour selection for re-ranking: the k smallest entries of each row, ordered by
(distance, index), with the row maxima, on the CPU (compiled streaming kernels) or on any torch device.

The CPU kernels never sort and never copy: they stream over a matrix once and keep, per item, a sorted
list of its k best (value, index) pairs, inserting only what beats the current k-th. A matrix can be
read by rows (item = row) or by columns (item = column), so the k-NN of the columns of a distance matrix
costs no transposed copy, and one block of a symmetric pairwise computation serves both of its sides.
Ties in value go to the smaller index, which is what a stable sort of the full row gives.

On a torch device, :func:`smallest_k` uses ``torch.topk`` and fixes the rare rows where equal values
straddle the k-th place with a stable sort of that row, so both paths select the same neighbours.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

# Columns one thread of the column kernel handles together (their k-lists stay in its cache).
COLUMN_GROUP = 1024


class NeighbourState:
    """The k best (value, index) pairs of each of n items, their row maxima and a flag for bad values."""

    def __init__(self, num_items: int, k: int) -> None:
        self.values = np.full((num_items, k), np.inf, np.float32)
        self.index = np.full((num_items, k), np.iinfo(np.int64).max, np.int64)
        self.maximum = np.full(num_items, -np.inf, np.float32)
        self.bad = np.zeros(num_items, np.bool_)  # a negative or NaN value was seen (an infinity: the maximum)

    def scan_rows(self, block: np.ndarray, item_offset: int, index_offset: int) -> None:
        """Row a of ``block`` holds item ``item_offset + a``'s distances to ``index_offset + b``."""
        _scan_rows(np.ascontiguousarray(block, np.float32), item_offset, index_offset,
                   self.values, self.index, self.maximum, self.bad)

    def scan_columns(self, block: np.ndarray, item_offset: int, index_offset: int) -> None:
        """Column b of ``block`` holds item ``item_offset + b``'s distances to ``index_offset + a``."""
        _scan_columns(np.ascontiguousarray(block, np.float32), item_offset, index_offset,
                      self.values, self.index, self.maximum, self.bad, COLUMN_GROUP)


@numba.njit(inline="always")
def _insert(values, index, item, value, position):  # pragma: no cover - compiled
    """Insert (value, position) into item's sorted k-list if it comes before the last entry."""
    last = values.shape[1] - 1
    if value < values[item, last] or (value == values[item, last] and position < index[item, last]):
        p = last
        while p > 0 and (values[item, p - 1] > value
                         or (values[item, p - 1] == value and index[item, p - 1] > position)):
            values[item, p] = values[item, p - 1]
            index[item, p] = index[item, p - 1]
            p -= 1
        values[item, p] = value
        index[item, p] = position


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_rows(block, item_offset, index_offset, values, index, maximum, bad):  # pragma: no cover - compiled
    last = values.shape[1] - 1
    for a in numba.prange(block.shape[0]):
        item = item_offset + a
        high = maximum[item]
        worst = values[item, last]
        flagged = False
        for b in range(block.shape[1]):
            v = block[a, b]
            if not v >= 0.0:  # negative or NaN (an infinity shows in the maximum)
                flagged = True
            if v > high:
                high = v
            if v <= worst:
                _insert(values, index, item, v, index_offset + b)
                worst = values[item, last]
        maximum[item] = high
        if flagged:
            bad[item] = True


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_columns(block, item_offset, index_offset, values, index, maximum, bad,
                  group):  # pragma: no cover - compiled
    rows, cols = block.shape
    last = values.shape[1] - 1
    for g in numba.prange((cols + group - 1) // group):
        start = g * group
        width = min(start + group, cols) - start
        items = slice(item_offset + start, item_offset + start + width)
        top_v = values[items].copy()  # the group's state stays in this thread's cache
        top_i = index[items].copy()
        worst = top_v[:, last].copy()
        high = maximum[items].copy()
        low = np.zeros(width, np.float32)
        probe = np.zeros(width, np.float32)
        for a in range(rows):
            row = block[a, start : start + width]
            for b in range(width):  # vectorised
                high[b] = max(high[b], row[b])
                low[b] = min(low[b], row[b])
                probe[b] += row[b] * np.float32(0.0)
            for b in range(width):
                v = row[b]
                if v <= worst[b]:
                    _insert(top_v, top_i, b, v, index_offset + a)
                    worst[b] = top_v[b, last]
        values[items] = top_v
        index[items] = top_i
        maximum[items] = high
        for b in range(width):
            if low[b] < 0.0 or probe[b] != 0.0:
                bad[item_offset + start + b] = True


def smallest_k(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row of ``block`` and their column indices, ordered by (value, index).

    Exact on any device: rows where a value equal to the k-th smallest lies outside the selection (so that
    ``torch.topk`` may have kept a larger index) are selected again with a stable sort.
    """
    values, index = torch.topk(block, k, dim=1, largest=False, sorted=True)
    straddling = (block <= values[:, -1:]).sum(1) > k
    if bool(straddling.any()):
        rows = straddling.nonzero().squeeze(1)
        sorted_values, order = torch.sort(block[rows], dim=1, stable=True)
        values[rows], index[rows] = sorted_values[:, :k], order[:, :k]
    by_index = index.argsort(dim=1)
    values, index = values.gather(1, by_index), index.gather(1, by_index)
    by_value = values.argsort(dim=1, stable=True)
    return values.gather(1, by_value), index.gather(1, by_value)
