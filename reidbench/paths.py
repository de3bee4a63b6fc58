"""Where reidbench reads and writes: the only module that reads path settings from the environment.

- data root: ``--data-root`` on the command line, else ``$REIDBENCH_DATA``, else a per-user cache
  folder (``$XDG_CACHE_HOME/reidbench/data``, by default ``~/.cache/reidbench/data``).
- runs: ``$REIDBENCH_RUNS``, else ``./runs`` (relative to the working directory).
- launcher file (cluster defaults for ``--launcher local|slurm``): ``$REIDBENCH_LAUNCHER_CONFIG``, else
  ``$XDG_CONFIG_HOME/reidbench/launcher.yaml`` (by default ``~/.config/reidbench/launcher.yaml``).
- weights: torch hub's checkpoint cache (``torch.hub.get_dir()/checkpoints``, which honours
  ``$TORCH_HOME``), so weights downloaded by torchvision are shared with reidbench.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "REIDBENCH_DATA"
RUNS_ENV = "REIDBENCH_RUNS"
LEADERBOARDS_ENV = "REIDBENCH_LEADERBOARDS"
LAUNCHER_CONFIG_ENV = "REIDBENCH_LAUNCHER_CONFIG"


@dataclass(frozen=True)
class ResolvedPath:
    """A path and where its value came from (``cli``, ``env:NAME`` or ``default``)."""

    path: Path
    source: str


def _expand(value: str | os.PathLike[str]) -> Path:
    return Path(os.path.expandvars(os.fspath(value))).expanduser().absolute()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    return _expand(base) if base else Path.home() / ".cache"


def resolve_data_root(cli_value: str | os.PathLike[str] | None = None) -> ResolvedPath:
    if cli_value is not None and os.fspath(cli_value) != "":
        return ResolvedPath(_expand(cli_value), "cli")
    env = os.environ.get(DATA_ENV)
    if env:
        return ResolvedPath(_expand(env), f"env:{DATA_ENV}")
    return ResolvedPath(user_cache_dir() / "reidbench" / "data", "default")


def resolve_runs_dir() -> ResolvedPath:
    env = os.environ.get(RUNS_ENV)
    if env:
        return ResolvedPath(_expand(env), f"env:{RUNS_ENV}")
    return ResolvedPath(_expand("runs"), "default")


def resolve_weights_dir() -> ResolvedPath:
    import torch.hub

    source = "env:TORCH_HOME" if os.environ.get("TORCH_HOME") else "default"
    return ResolvedPath(_expand(torch.hub.get_dir()) / "checkpoints", f"torch.hub ({source})")


def cache_dir() -> Path:
    """reidbench's own cache (profiles and other derived data): ``$XDG_CACHE_HOME/reidbench``."""
    return user_cache_dir() / "reidbench"


def data_root(cli_value: str | os.PathLike[str] | None = None) -> Path:
    return resolve_data_root(cli_value).path


def runs_dir() -> Path:
    return resolve_runs_dir().path


def weights_dir() -> Path:
    return resolve_weights_dir().path


def leaderboards_dir() -> Path:
    """Leaderboard CSVs: ``$REIDBENCH_LEADERBOARDS``, else ``./leaderboards``."""
    return _expand(os.environ.get(LEADERBOARDS_ENV) or "leaderboards")


def launcher_config_file() -> Path:
    """The launcher file a lab writes once for its cluster (it may not exist)."""
    env = os.environ.get(LAUNCHER_CONFIG_ENV)
    if env:
        return _expand(env)
    base = os.environ.get("XDG_CONFIG_HOME")
    return (_expand(base) if base else Path.home() / ".config") / "reidbench" / "launcher.yaml"


def jobs_dir() -> Path:
    """Default folder of submitted jobs' logs and submission records: ``<runs>/jobs``."""
    return runs_dir() / "jobs"
