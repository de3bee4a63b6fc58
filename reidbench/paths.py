"""Where reidbench reads and writes: the only module that reads path settings from the environment.

- data root: ``--data-root`` on the command line, else ``$REIDBENCH_DATA``, else a per-user cache
  folder (``$XDG_CACHE_HOME/reidbench/data``, by default ``~/.cache/reidbench/data``).
- runs: ``$REIDBENCH_RUNS``, else ``./runs`` (relative to the working directory).
- launcher file (cluster defaults for ``--launcher local|slurm``): ``$REIDBENCH_LAUNCHER_CONFIG``, else
  ``$XDG_CONFIG_HOME/reidbench/launcher.yaml`` (by default ``~/.config/reidbench/launcher.yaml``).
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

from reidbench.errors import ReidbenchError

DATA_ENV = "REIDBENCH_DATA"
RUNS_ENV = "REIDBENCH_RUNS"
LEADERBOARDS_ENV = "REIDBENCH_LEADERBOARDS"
RECIPES_ENV = "REIDBENCH_RECIPES"
LAUNCHER_CONFIG_ENV = "REIDBENCH_LAUNCHER_CONFIG"


@dataclass(frozen=True)
class ResolvedPath:
    """A path and where its value came from (``cli``, ``env:NAME`` or ``default``)."""

    path: Path
    source: str

    def chosen_by(self, option: str) -> str:
        """The setting that chose the path, as a user would write it: the option, ``$VARIABLE`` or the default."""
        if self.source == "cli":
            return option
        if self.source.startswith("env:"):
            return f"${self.source.removeprefix('env:')}"
        return f"the default ({option} or ${_VARIABLES.get(option, '...')} change it)"


_VARIABLES = {"--data-root": DATA_ENV, "--run-dir": RUNS_ENV, "--csv": LEADERBOARDS_ENV}


def check_folder(path: str | os.PathLike[str], chosen_by: str, purpose: str) -> Path:
    """Refuse, before any work, a folder reidbench will write into that is a file or cannot be written.

    Creates nothing: the nearest existing ancestor of ``path`` decides. The error names the path, the
    option or variable that chose it (``chosen_by``) and what is needed.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be created ({probe} is a file)"
        raise ReidbenchError(f"{path}: the {purpose} {where}, chosen by {chosen_by}",
                             hint=f"point {chosen_by} at a folder you can write to")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "is read-only" if probe == path else f"cannot be created ({probe} is read-only)"
        raise ReidbenchError(f"{path}: the {purpose} {where}, chosen by {chosen_by}",
                             hint=f"point {chosen_by} at a folder you can write to")
    return path


def _not_a_file(resolved: ResolvedPath, option: str, purpose: str) -> Path:
    if resolved.path.exists() and not resolved.path.is_dir():
        raise ReidbenchError(f"{resolved.path}: the {purpose} is a file, not a folder, chosen by "
                             f"{resolved.chosen_by(option)}", hint=f"point {resolved.chosen_by(option)} at a folder")
    return resolved.path


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
    """The data root; a file there is a user error naming ``--data-root`` or ``$REIDBENCH_DATA``."""
    return _not_a_file(resolve_data_root(cli_value), "--data-root", "data root")


def data_root_chosen_by(path: str | os.PathLike[str]) -> str:
    """What chose a data root handed down as a plain path: ``$REIDBENCH_DATA``, the default, else ``--data-root``."""
    resolved = resolve_data_root()
    return resolved.chosen_by("--data-root") if _expand(path) == resolved.path else "--data-root"


def runs_dir() -> Path:
    """The runs folder; a file there is a user error naming ``$REIDBENCH_RUNS``."""
    return _not_a_file(resolve_runs_dir(), "--run-dir", "runs folder")


def weights_dir() -> Path:
    return resolve_weights_dir().path


def resolve_leaderboards_dir() -> ResolvedPath:
    env = os.environ.get(LEADERBOARDS_ENV)
    if env:
        return ResolvedPath(_expand(env), f"env:{LEADERBOARDS_ENV}")
    return ResolvedPath(_expand("leaderboards"), "default")


def leaderboards_dir() -> Path:
    """Leaderboard CSVs: ``$REIDBENCH_LEADERBOARDS``, else ``./leaderboards``."""
    return resolve_leaderboards_dir().path


def user_recipe_dirs() -> list[Path]:
    """Users' recipe folders from ``$REIDBENCH_RECIPES`` (``os.pathsep``-separated), in search order."""
    return [_expand(part) for part in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if part]


def add_user_recipe_dirs(folders: list[Path]) -> None:
    """Put ``--recipes-dir`` folders first in ``$REIDBENCH_RECIPES``: this process and the training
    subprocesses it starts (``reproduce --jobs``) search them before everything else."""
    parts = [str(_expand(folder)) for folder in folders] + [str(p) for p in user_recipe_dirs()]
    os.environ[RECIPES_ENV] = os.pathsep.join(dict.fromkeys(parts))



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
