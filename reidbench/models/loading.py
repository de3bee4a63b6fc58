"""Loading released checkpoints into reidbench models by parameter name."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from reidbench.errors import ReidbenchError


def load_by_name(model: nn.Module, path: str | Path, weights_name: str) -> dict[str, list[str]]:
    """Load a checkpoint (a state_dict, or a dict holding one under ``state_dict``) by name, skipping
    keys whose shapes differ (classifiers of another dataset) and keys the model lacks. Returns the
    loaded / missing / unexpected / shape-skipped keys so that the run record can state them."""
    path = Path(path)
    if not path.is_file():
        raise ReidbenchError(f"{path}: checkpoint not found", hint=f"run `reidbench weights download {weights_name}`")
    from reidbench.serialization import read_torch_file

    raw = read_torch_file(path, "checkpoint")  # weights_only=True: a crafted file cannot run code
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    loaded, skipped = [], []
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            own[key] = value
            loaded.append(key)
        elif key in own:
            skipped.append(key)
    model.load_state_dict(own)
    return {"loaded": loaded, "missing": sorted(set(own) - set(loaded) - set(skipped)),
            "unexpected": sorted(set(state) - set(own)), "skipped_shape": skipped}
