"""Where an evaluation function computes, and how many rows of work fit in a device's free memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Share of the free device memory one block of work may take (the rest stays for the caller and PyTorch).
FREE_MEMORY_SHARE = 0.4


def compute_device(device: Any, *inputs: Any) -> torch.device | None:
    """The torch device an evaluation function runs its device code on; None for the CPU code.

    ``device=None`` keeps the work where the inputs are: CPU inputs use the CPU implementation, a CUDA
    tensor among the inputs puts the work on its GPU. An explicit device (``"cuda"``, ``"cuda:1"``, or
    ``"cpu"``, which runs the device code on the CPU) is used as given.
    """
    if device is None:
        for value in inputs:
            if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                return value.device
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected cpu, cuda or cuda:N, got {device!r}") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available on this machine")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def rows_that_fit(device: torch.device, bytes_per_row: int, cpu_rows: int) -> int:
    """Rows of a block whose temporaries take ``bytes_per_row`` each: a share of the free memory on CUDA,
    ``cpu_rows`` elsewhere."""
    if device.type != "cuda":
        return max(1, cpu_rows)
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, int(free * FREE_MEMORY_SHARE) // max(1, bytes_per_row))


@contextmanager
def full_precision_matmul(device: torch.device | None) -> Iterator[None]:
    """float32 products in full IEEE precision on CUDA (no TF32), whatever the caller enabled globally,
    so that GPU distances agree with the CPU ones to float32 rounding."""
    if device is None or device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = saved
