"""Launchers: where planned runs train. One interface (``Launcher.launch``), four places:

- ``in-process`` (default): one run after another in this process; with ``--jobs N``, ``reidbench train``
  subprocesses over ``--devices``;
- ``local``: submitit jobs on this machine (the cluster path, testable without a cluster);
- ``slurm``: one Slurm job array per plan through submitit, with requeue on preemption or time limit and exact
  resume (docs/cluster.md).
"""

from __future__ import annotations

from reidbench.errors import ReidbenchError
from reidbench.launch.base import AfterRun, Launcher, Outcome, Say
from reidbench.launch.settings import IN_PROCESS, KINDS, LOCAL, SLURM, LauncherSettings, load_settings

__all__ = ["IN_PROCESS", "KINDS", "LOCAL", "SLURM", "AfterRun", "Launcher", "LauncherSettings", "Outcome", "Say",
           "default_devices", "load_settings", "make_launcher"]


def default_devices(device: str, jobs: int) -> list[str]:
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if jobs > 1 else ["cuda"]
    return ["cpu" if device == "auto" else device]


def make_launcher(kind: str = IN_PROCESS, settings: LauncherSettings | None = None, *, jobs: int = 1,
                  devices: list[str] | None = None, device: str = "auto") -> Launcher:
    """The launcher for ``--launcher KIND``; ``jobs``/``devices``/``device`` belong to the in-process one."""
    if kind == IN_PROCESS:
        from reidbench.engine.build import resolve_device
        from reidbench.launch.processes import InProcessLauncher, SubprocessLauncher

        if jobs < 1:
            raise ReidbenchError(f"--jobs: expected a positive integer, got {jobs}")
        devices = devices or default_devices(device, jobs)
        for name in devices:
            resolve_device(name)
        return InProcessLauncher(devices[0]) if jobs == 1 else SubprocessLauncher(devices, jobs)
    if kind not in KINDS:
        raise ReidbenchError(f"--launcher: expected one of {', '.join(KINDS)}, got {kind!r}")
    if jobs != 1 or devices:
        raise ReidbenchError(f"--jobs/--devices: options of the in-process launcher; with --launcher {kind} "
                             "a cell's GPUs are --gpus and the cells running at once --array-parallelism")
    from reidbench.launch.cluster import SubmititLauncher

    return SubmititLauncher(kind, settings or load_settings(kind))
