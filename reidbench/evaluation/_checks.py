"""Input checks shared by the evaluation functions: every failure is a ValueError naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # noqa: BLE001 - re-raised with the argument's name
        raise ValueError(f"{name}: expected an array or tensor, got {type(value).__name__}") from error


def float_matrix(value: Any, name: str, require_finite: bool = True) -> np.ndarray:
    """A C-contiguous float32/float64 2-D array (float16 and integers are widened)."""
    array = to_numpy(value, name)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(array.shape)}")
    if array.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name}: expected a numeric matrix, got dtype {array.dtype}")
        array = array.astype(np.float32 if array.dtype == np.float16 else np.float64)
    if require_finite and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"{name}: expected finite values, found {array[tuple(bad)]} at index {tuple(bad.tolist())}"
        )
    return np.ascontiguousarray(array)


def id_vector(value: Any, name: str, length: int, length_name: str) -> np.ndarray:
    array = to_numpy(value, name)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector, got shape {tuple(array.shape)}")
    if array.shape[0] != length:
        raise ValueError(f"{name}: expected length {length} ({length_name}), got {array.shape[0]}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name}: expected integer ids, got dtype {array.dtype}")
    return np.ascontiguousarray(array.astype(np.int64))


def float_tensor(value: Any, name: str, device: torch.device) -> torch.Tensor:
    """A float32/float64 2-D tensor of finite values on ``device`` (other dtypes widened as by float_matrix)."""
    if not isinstance(value, torch.Tensor):
        value = torch.from_numpy(float_matrix(value, name, require_finite=False))
    if value.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(value.shape)}")
    if value.dtype not in (torch.float32, torch.float64):
        if value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
        elif value.is_floating_point() or not value.is_complex():
            value = value.double()
        else:
            raise ValueError(f"{name}: expected a numeric matrix, got dtype {value.dtype}")
    value = value.detach().to(device)
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(f"{name}: expected finite values, found {value[bad].item()} at index {bad}")
    return value
