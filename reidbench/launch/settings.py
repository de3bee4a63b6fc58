"""Launcher settings: the lab's launcher file (written once per cluster), then the command line on top.

The file is YAML. Top-level keys apply to every launcher; a ``local:`` or ``slurm:`` mapping overrides them for
that launcher only::

    partition: gpu
    account: my-lab
    time: "24:00:00"
    gpus: 1
    cpus: 8
    mem_gb: 48
    array_parallelism: 16
    sbatch: {qos: normal, constraint: a100}
    setup: ["source /cluster/envs/reidbench/bin/activate"]
    log_dir: /cluster/reid/jobs
    local: {gpus: 0, array_parallelism: 1}

See docs/cluster.md for what each key does on a cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from reidbench import paths
from reidbench.errors import ReidbenchError

IN_PROCESS, LOCAL, SLURM = "in-process", "local", "slurm"
KINDS = (IN_PROCESS, LOCAL, SLURM)


@dataclass(frozen=True)
class LauncherSettings:
    partition: str | None = None
    account: str | None = None
    time_min: int = 24 * 60  # the job's time limit; a task stopped by it requeues and resumes
    gpus: int | None = None  # per cell: one task per GPU (DDP); default 1 on slurm, 0 (CPU) locally
    cpus: int | None = None  # per task
    mem_gb: float | None = None  # per node
    array_parallelism: int | None = None  # tasks running at once; default: the scheduler's (slurm), 1 (local)
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra #SBATCH flags: {qos: high, exclusive: true}
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (module load, activate)
    log_dir: Path | None = None  # submitted jobs' logs and records; default <runs>/jobs
    python: str | None = None  # the interpreter on the nodes; default this one (sys.executable)
    signal_delay_s: int = 90  # the scheduler's warning before the time limit: checkpoint and requeue then
    max_requeues: int = 3  # time-limit requeues per task (preemptions do not count)
    wait: bool | None = None  # block until the jobs end; default yes locally, no on slurm

    def gpus_per_cell(self, kind: str) -> int:
        return self.gpus if self.gpus is not None else (1 if kind == SLURM else 0)

    def jobs_folder(self) -> Path:
        return self.log_dir or paths.jobs_dir()


# file key -> (settings field, expected type, description for errors)
_KEYS: dict[str, tuple[str, type | tuple[type, ...], str]] = {
    "partition": ("partition", str, "a partition name"),
    "account": ("account", str, "an account name"),
    "time": ("time_min", (str, int), "minutes or [D-]HH:MM:SS"),
    "gpus": ("gpus", int, "GPUs per cell (0 or more)"),
    "cpus": ("cpus", int, "CPUs per task"),
    "mem_gb": ("mem_gb", (int, float), "memory per node in GB"),
    "array_parallelism": ("array_parallelism", int, "tasks running at once (1 or more)"),
    "sbatch": ("sbatch", dict, "a mapping of extra #SBATCH flags"),
    "setup": ("setup", list, "a list of shell lines"),
    "log_dir": ("log_dir", str, "a folder"),
    "python": ("python", str, "the interpreter command on the nodes"),
    "signal_delay_s": ("signal_delay_s", int, "seconds"),
    "max_requeues": ("max_requeues", int, "a count"),
    "wait": ("wait", bool, "true or false"),
}


def parse_time(text: str | int, where: str) -> int:
    """A Slurm time limit in whole minutes: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``."""
    if isinstance(text, int) and not isinstance(text, bool):
        minutes = text
    else:
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
        if not match:
            raise ReidbenchError(f"{where}: {text!r} is not a time limit; expected minutes or [D-]HH:MM:SS")
        days, a, b, c = match.groups()
        parts = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:  # D-HH[:MM[:SS]]
            parts += [0] * (3 - len(parts))
            seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
        elif len(parts) == 3:
            seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
        else:  # MM or MM:SS, as Slurm reads them
            seconds = parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)
        minutes = -(-seconds // 60)
    if minutes < 1:
        raise ReidbenchError(f"{where}: {text!r}: expected a time limit of at least one minute")
    return minutes


def _from_mapping(data: dict[str, Any], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _KEYS:
            raise ReidbenchError(f"{where}: unknown key {key!r}; expected one of: {', '.join(_KEYS)}, "
                                 f"or a {LOCAL}: / {SLURM}: section")
        name, expected, what = _KEYS[key]
        if value is None:
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ReidbenchError(f"{where}: {key}: expected {what}, got {value!r}")
        if key == "time":
            value = parse_time(value, f"{where}: time")
        elif key == "log_dir":
            value = Path(value).expanduser()
        elif key == "setup" and not all(isinstance(line, str) for line in value):
            raise ReidbenchError(f"{where}: setup: expected {what}, got {value!r}")
        elif key in ("gpus", "cpus", "array_parallelism", "signal_delay_s", "max_requeues") and value < (
                0 if key in ("gpus", "max_requeues", "signal_delay_s") else 1):
            raise ReidbenchError(f"{where}: {key}: expected {what}, got {value!r}")
        values[name] = value
    return values


def read_launcher_file(path: Path, kind: str) -> dict[str, Any]:
    """The settings a launcher file gives ``kind``: its top-level keys, then its ``kind:`` section."""
    from reidbench.recipes.loading import read_mapping

    data = read_mapping(path)
    sections = {name: data.pop(name) for name in (LOCAL, SLURM) if name in data}
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ReidbenchError(f"{path}: {name}: expected a mapping of launcher keys, got {section!r}")
    values = _from_mapping(data, str(path))
    values.update(_from_mapping(sections.get(kind) or {}, f"{path}: {kind}"))
    return values


def parse_sbatch_flags(items: list[str]) -> dict[str, Any]:
    """``--sbatch qos=high --sbatch exclusive`` -> {qos: high, exclusive: True}."""
    flags: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise ReidbenchError(f"--sbatch {item!r}: expected FLAG=VALUE or FLAG (an sbatch option without --)")
        flags[key] = value if sep else True
    return flags


def load_settings(kind: str, config_file: Path | None = None, **cli: Any) -> LauncherSettings:
    """Defaults, then the launcher file (``--launcher-config`` or the per-user file), then command-line values."""
    if kind not in KINDS:
        raise ReidbenchError(f"--launcher: expected one of {', '.join(KINDS)}, got {kind!r}")
    settings = LauncherSettings()
    path = config_file or paths.launcher_config_file()
    if config_file is not None and not config_file.is_file():
        raise ReidbenchError(f"--launcher-config {config_file}: no such file")
    if path.is_file():
        settings = replace(settings, **read_launcher_file(path, kind))
    given = {k: v for k, v in cli.items() if v is not None and v != [] and v != {}}
    known = {f.name for f in fields(LauncherSettings)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown launcher settings: {unknown}")
    if "time_min" in given:
        given["time_min"] = parse_time(given["time_min"], "--time")
    if "sbatch" in given:
        given["sbatch"] = {**settings.sbatch, **given["sbatch"]}
    for key in ("gpus", "cpus", "array_parallelism"):
        if key in given and given[key] < (0 if key == "gpus" else 1):
            raise ReidbenchError(f"--{key.replace('_', '-')}: expected {'0 or more' if key == 'gpus' else '1 or more'}"
                                 f", got {given[key]}")
    if "mem_gb" in given and given["mem_gb"] <= 0:
        raise ReidbenchError(f"--mem: expected memory in GB above 0, got {given['mem_gb']}")
    return replace(settings, **given)
