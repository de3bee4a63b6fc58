"""Where reidbench reads and writes: the only module that reads path settings from the environment.

- data root: ``--data-root`` on the command line, else ``$REIDBENCH_DATA``, else a per-user cache
  folder (``$XDG_CACHE_HOME/reidbench/data``, by default ``~/.cache/reidbench/data``).
- runs: ``$REIDBENCH_RUNS``, else ``./runs`` (relative to the working directory).
- weights: torch hub's checkpoint cache (``torch.hub.get_dir()/checkpoints``, which honours
  ``$TORCH_HOME``), so weights downloaded by torchvision are shared with reidbench.
- users' recipe folders: ``--recipes-dir`` on the command line (repeatable), then the folders listed in
  ``$REIDBENCH_RECIPES`` (separated by ``os.pathsep``); both are searched before the recipes shipped
  with reidbench (see ``reidbench.recipes.loading.recipe_dirs``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "REIDBENCH_DATA"
RUNS_ENV = "REIDBENCH_RUNS"
LEADERBOARDS_ENV = "REIDBENCH_LEADERBOARDS"
RECIPES_ENV = "REIDBENCH_RECIPES"


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


def user_recipe_dirs() -> list[Path]:
    """Users' recipe folders from ``$REIDBENCH_RECIPES`` (``os.pathsep``-separated), in search order."""
    return [_expand(part) for part in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if part]


def add_user_recipe_dirs(folders: list[Path]) -> None:
    """Put ``--recipes-dir`` folders first in ``$REIDBENCH_RECIPES``: this process and the training
    subprocesses it starts (``reproduce --jobs``) search them before everything else."""
    parts = [str(_expand(folder)) for folder in folders] + [str(p) for p in user_recipe_dirs()]
    os.environ[RECIPES_ENV] = os.pathsep.join(dict.fromkeys(parts))
