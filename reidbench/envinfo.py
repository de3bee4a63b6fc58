"""What the software and hardware environment is: printed by `reidbench env`, recorded in runs."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from reidbench import __version__, paths


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_environment(data_root: str | None = None) -> dict[str, Any]:
    """Versions, devices, threads and resolved directories, as a JSON-serialisable dict."""
    import torch

    cuda_available = torch.cuda.is_available()
    devices = []
    if cuda_available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    from reidbench.recipes.loading import RECIPES_DIR, recipe_dirs

    resolved = {
        "data": paths.resolve_data_root(data_root),
        "runs": paths.resolve_runs_dir(),
        "weights": paths.resolve_weights_dir(),
    }
    return {
        "reidbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "fvcore": _version("fvcore"),
        "numpy": _version("numpy"),
        "cuda_available": cuda_available,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda_available else None,
        "devices": devices,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "directories": {
            key: {"path": str(value.path), "source": value.source} for key, value in resolved.items()
        },
        # searched in this order; users' folders come from --recipes-dir and $REIDBENCH_RECIPES
        "recipe_dirs": [
            {"path": str(folder), "source": "shipped" if folder == RECIPES_DIR else f"env:{paths.RECIPES_ENV}"}
            for folder in recipe_dirs()
        ],
    }


def device_summary() -> str:
    """One line naming the compute device, for run records and benchmark headers."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()}"


def git_commit() -> str:
    """The reidbench checkout's commit (``-dirty`` with uncommitted changes), or ``unknown`` with the
    installed version when reidbench does not run from a checkout (an installed wheel: asking git there
    would name whatever repository happens to hold the environment)."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return f"unknown (installed reidbench {__version__})"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit[:12]}-dirty" if dirty else commit[:12]
