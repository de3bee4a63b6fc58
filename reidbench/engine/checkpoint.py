"""Atomic checkpoints that carry everything an exact resume needs (weights, optimiser, schedule,
RNG states and the epoch).

Checkpoints are read like every torch file (:func:`reidbench.serialization.read_torch_file`, weights only),
so they store the RNG states as tensors and plain numbers; checkpoints written before that (numpy RNG
state) still restore.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.serialization import read_torch_file

# The keys `reidbench train` writes; a file without them is somebody else's checkpoint.
CHECKPOINT_KEYS = ("epoch", "recipe_hash", "model", "losses", "optimizer", "scheduler", "scaler", "rng")


# ---- RNG states as tensors and plain numbers -------------------------------------------------------

def rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    kind, np_keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python, numpy_state = state["python"], state["numpy"]
    if isinstance(python, dict):
        random.setstate((python["version"], tuple(int(k) for k in python["keys"].tolist()), python["gauss"]))
        np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                             numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    else:  # checkpoints written before the tensor format: the tuples getstate() returns
        random.setstate(python)
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (an evaluation) without moving the global Python, numpy, torch or CUDA generators: the
    next training epoch starts from the same random state whether or not the block ran."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# ---- checkpoints ------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `reidbench train`: every key an exact resume needs, or a one-line error."""
    state = read_torch_file(path, "checkpoint")
    if not isinstance(state, dict):
        raise ReidbenchError(f"{path}: not a reidbench checkpoint (expected a dict, got {type(state).__name__})")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ReidbenchError(f"{path}: not a reidbench checkpoint (no {', '.join(repr(k) for k in missing)} "
                             f"key{'s' if len(missing) > 1 else ''})",
                             hint="--resume continues a run folder written by `reidbench train`; "
                                  "`reidbench test --checkpoint` reads other checkpoints")
    return state


def state_dict_of(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint: ours (``model``), a released one (``state_dict``) or a bare state_dict;
    a ``module.`` prefix (DataParallel) is dropped."""
    weights = state
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                weights = state[key]
                break
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        found = type(weights).__name__ if not isinstance(weights, dict) else (
            "an empty dict" if not weights else f"a dict with keys {', '.join(map(str, list(weights)[:4]))}")
        raise ReidbenchError(f"{path}: not a model checkpoint (expected a reidbench checkpoint, a dict with "
                             f"'state_dict', or a state_dict of parameter names to tensors; found {found})")
    return {k.removeprefix("module."): v for k, v in weights.items()}
