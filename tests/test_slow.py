"""Slow end-to-end checks (minutes): run with `nox -s slow` or `pytest -m slow`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidbench.bench.memory import measure_peak
from reidbench.evaluation import rerank_features


@pytest.mark.slow
def test_rerank_features_at_msmt17_size_within_12_gb():
    """11,659 + 82,161 items, 2048-d float32: the dense original needs more than 35 GB."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3060, 2048), dtype=np.float32)
    q_pids = rng.integers(0, 3060, 11659)
    g_pids = rng.integers(0, 3060, 82161)
    query = torch.from_numpy(centres[q_pids] + rng.standard_normal((11659, 2048), dtype=np.float32))
    gallery = torch.from_numpy(centres[g_pids] + rng.standard_normal((82161, 2048), dtype=np.float32))
    result, seconds, extra = measure_peak(lambda: rerank_features(query, gallery))
    print(f"MSMT17-size rerank_features: {seconds:.0f} s, peak extra memory {extra / 2**30:.2f} GiB")
    assert result.shape == (11659, 82161)
    assert extra < 12 * 2**30
