"""Seeded weights, seeded images and output summaries for the golden-output tests (tests/test_parity.py).

One recipe for the weights, used both when the golden files were recorded (our weights copied tensor by
tensor into the released model, whose outputs were saved) and by the test, so both sides see the same model:

- a pool of ``POOL_SIZE`` standard normal values is drawn with ``numpy.random.RandomState(seed)``, whose
  stream NumPy keeps frozen across versions (NEP 19), so the weights do not depend on torch's generator;
- every tensor of ``model.state_dict()`` in registration order takes the next offset from the same generator
  and reads the pool from there (wrapping around; a prime pool size, so no two tensors of a model see the same
  window in practice), scaled by its kind: normalisation weight ``1 + 0.1 v``, bias and running mean
  ``0.1 v``, running variance ``exp(0.2 v)`` (positive), other tensors of two or more dimensions
  ``v / sqrt(fan_in)`` (fan_in = elements / first dimension), other biases and scalars ``0.1 v``;
  ``num_batches_tracked`` is 0. A module registered under two names (a shared classifier) is filled once.

Images are ``RandomState(seed).standard_normal(shape)`` as float32. Summaries hold, in float64, the shape,
sum, sum of absolute values, L2 norm, maximum absolute value, the L2 norm of each sample (first dimension)
and a few values at evenly spaced flat positions: a few KB per model, enough to catch any change of the
function while tolerating float rounding (see tests/test_parity.py for the tolerances).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

POOL_SIZE = 1_000_003
SAMPLES = 24
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _pool(rng: np.random.RandomState) -> np.ndarray:
    values = rng.standard_normal(POOL_SIZE).astype(np.float32)
    return np.concatenate([values, values])  # a window starting anywhere in the first half reads on


def _window(pool: np.ndarray, start: int, count: int) -> np.ndarray:
    if count <= POOL_SIZE:
        return pool[start : start + count]
    return np.resize(pool[start : start + POOL_SIZE], count)  # repeats the window (prime period)


def seeded_weights(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter and persistent buffer of ``model`` (see the module docstring).

    A model built on the ``meta`` device and moved with ``to_empty`` is fully defined afterwards; a
    non-persistent buffer would stay undefined, so it is refused."""
    rng = np.random.RandomState(seed)
    pool = _pool(rng)
    filled = 0
    with torch.no_grad():
        for prefix, module in model.named_modules():
            is_norm = isinstance(module, _NORMS)
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for name, tensor in tensors:
                if name in module._non_persistent_buffers_set:
                    raise ValueError(f"{prefix}.{name}: a non-persistent buffer cannot be seeded")
                filled += 1
                if not tensor.is_floating_point():
                    tensor.zero_()  # num_batches_tracked
                    continue
                v = torch.from_numpy(_window(pool, int(rng.randint(POOL_SIZE)), tensor.numel()).copy())
                v = v.reshape(tensor.shape).to(tensor.dtype)
                if is_norm and name == "weight":
                    v = 1 + 0.1 * v
                elif is_norm and name == "running_var":
                    v = torch.exp(0.2 * v)
                elif tensor.ndim >= 2:
                    v = v * math.sqrt(tensor.shape[0] / tensor.numel())  # 1 / sqrt(fan_in)
                else:
                    v = 0.1 * v
                tensor.copy_(v)
    distinct = len({id(t) for t in model.state_dict(keep_vars=True).values()})  # a shared module's once
    if filled != distinct:
        raise ValueError(f"seeded {filled} tensors, the state dict has {distinct}")


def seeded_images(shape: list[int] | tuple[int, ...], seed: int) -> torch.Tensor:
    """Noise with a contrast per image and a brightness per image and channel: images of plain i.i.d. noise
    pool to almost the same features, and batch statistics over such a batch (training-mode BatchNorm of
    pooled features) would amplify float rounding."""
    rng = np.random.RandomState(seed)
    noise = rng.standard_normal(tuple(shape))
    contrast = np.exp(0.5 * rng.standard_normal((shape[0], 1, 1, 1)))
    brightness = rng.standard_normal((shape[0], shape[1], 1, 1))
    return torch.from_numpy((noise * contrast + brightness).astype(np.float32))


def summarize(tensor: torch.Tensor) -> dict:
    """What a golden file keeps of one output (float64; plain lists for JSON)."""
    t = tensor.detach().to(torch.float64).cpu()
    flat = t.reshape(-1)
    index = np.unique(np.linspace(0, flat.numel() - 1, SAMPLES).round().astype(int)).tolist()
    return {"shape": list(t.shape), "sum": flat.sum().item(), "abs_sum": flat.abs().sum().item(),
            "norm": flat.norm().item(), "max_abs": flat.abs().max().item(),
            "row_norms": t.reshape(t.shape[0], -1).norm(dim=1).tolist(),
            "index": index, "sample": flat[index].tolist()}
