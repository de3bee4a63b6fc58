"""Atomic checkpoints that carry everything an exact resume needs (weights, optimiser, schedule,
RNG states and the epoch), and the one safe way to read a torch file from disk.

Every file is read with ``torch.load(..., weights_only=True)``: its pickle may build tensors, plain
containers and numbers, never call a function, so a crafted ``last.pt`` cannot run code. Checkpoints
therefore store the RNG states as tensors and plain numbers. Older files (reidbench checkpoints with a
numpy RNG state, released checkpoints holding numpy scalars such as a best rank-1) stay readable:
numpy arrays and scalars of numeric dtypes are allowlisted, nothing else.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write

# The keys `reidbench train` writes; a file without them is somebody else's checkpoint.
CHECKPOINT_KEYS = ("epoch", "recipe_hash", "model", "losses", "optimizer", "scheduler", "scaler", "rng")


def _numpy_globals() -> list[Any]:
    """numpy's array / scalar reconstructors and numeric dtype classes (no object dtype), under their
    numpy 2 and numpy 1 module names."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"]
    return [np.ndarray, np.dtype, _reconstruct, scalar, *dtypes,
            (_reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar"),
            (_reconstruct, "numpy._core.multiarray._reconstruct"), (scalar, "numpy._core.multiarray.scalar")]


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # torch's weights-only refusal is a long paragraph; the line naming the refused global says it all
    named = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line or "Can only build" in line),
                 None)
    text = named or (lines[0] if lines else type(error).__name__)
    return text.removeprefix("WeightsUnpickler error: ")[:200]


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` of a file from disk with ``weights_only=True`` (plus numeric numpy arrays and scalars).

    A missing, damaged or code-carrying file is a one-line :class:`ReidbenchError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ReidbenchError(f"{path}: {what} not found" if not path.is_dir()
                             else f"{path}: is a folder, expected a {what} file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ReidbenchError(f"{path}: refused to load this {what}: it holds more than tensors and plain data "
                             f"({_first_line(error)})",
                             hint="reidbench never unpickles code; re-save the file's tensors with torch.save") \
            from error
    except Exception as error:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise ReidbenchError(f"{path}: not a readable {what} ({_first_line(error)})") from error


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
