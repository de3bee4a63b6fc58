"""Reading torch files from disk safely: the one ``torch.load`` of reidbench.

Every file is read with ``weights_only=True``: its pickle may build tensors, plain containers and
numbers, never call a function, so a crafted checkpoint, weights or features file cannot run code.
Older files stay readable: numpy arrays and scalars of numeric dtypes (a best rank-1 in a released
checkpoint, the numpy RNG state of an old reidbench checkpoint) are allowlisted, nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.errors import ReidbenchError


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
