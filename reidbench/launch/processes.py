"""Launchers on this machine: runs one after another in this process, or ``--jobs`` subprocesses over devices."""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reidbench.errors import ReidbenchError
from reidbench.launch.base import AfterRun, Launcher, Outcome, Say, prepare_synthetic_data


def _resuming(run: Any) -> bool:
    from reidbench.papers.plan import RESUME

    return run.state == RESUME


def _train_in_process(run: Any, device: str, data_root: Path) -> None:
    from reidbench.engine.trainer import Trainer

    Trainer(run.recipe, run_dir=run.run_dir, device=device, data_root=data_root, resume=_resuming(run),
            quiet=True).run()


def _train_subprocess(run: Any, device: str, data_root: Path) -> None:
    cmd = [sys.executable, "-m", "reidbench", "--data-root", str(data_root), "train", str(run.recipe_file),
           "--scale", run.recipe.scale, "--device", device,
           *[a for o in run.base_overrides for a in ("--base-set", o)],
           *[a for o in run.overrides for a in ("--set", o)]]
    cmd += ["--resume", str(run.run_dir)] if _resuming(run) else ["--run-dir", str(run.run_dir)]
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run.run_dir.parent / f"{run.run_dir.name}.log"
    with open(log, "w") as handle:
        code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise ReidbenchError(f"{run.run_dir.name}: training exited with code {code}: {tail[0]}",
                             hint=f"full log: {log}")


def _train_one(train: Callable[[Any, str, Path], None], outcome: Outcome, index: int, total: int, run: Any,
               device: str, data_root: Path, say: Say) -> None:
    start = time.perf_counter()
    say(f"[{index}/{total}] {'resuming' if _resuming(run) else 'training'} {run.run_dir.name} on {device}")
    try:
        train(run, device, data_root)
    except ReidbenchError as error:
        outcome.failed[str(run.run_dir)] = error.message
        say(f"[{index}/{total}] failed {run.run_dir.name}: {error.message}")
        return
    outcome.trained.append(str(run.run_dir))
    say(f"[{index}/{total}] finished {run.run_dir.name} in {time.perf_counter() - start:.0f} s")


class InProcessLauncher(Launcher):
    """Today's default: every run in this process, one after another, on one device."""

    name = "in-process"

    def __init__(self, device: str) -> None:
        self.device = device

    def launch(self, runs: list[Any], data_root: Path, say: Say, label: str = "runs",
               after: AfterRun | None = None) -> Outcome:
        # the caller writes the rows of every cell once all runs are done: nothing to do after each
        outcome = Outcome()
        for index, run in enumerate(runs, 1):
            _train_one(_train_in_process, outcome, index, len(runs), run, self.device, data_root, say)
        return outcome


class SubprocessLauncher(Launcher):
    """``--jobs N``: N runs at a time, each a ``reidbench train`` subprocess on the next free device."""

    name = "subprocesses"

    def __init__(self, devices: list[str], jobs: int) -> None:
        if jobs < 1:
            raise ReidbenchError(f"--jobs: expected a positive integer, got {jobs}")
        self.devices, self.jobs = devices, jobs

    def launch(self, runs: list[Any], data_root: Path, say: Say, label: str = "runs",
               after: AfterRun | None = None) -> Outcome:
        outcome = Outcome()
        prepare_synthetic_data(runs, data_root)
        free: queue.Queue[str] = queue.Queue()
        for slot in range(self.jobs):
            free.put(self.devices[slot % len(self.devices)])

        def task(index: int, run: Any) -> None:
            device = free.get()
            try:
                _train_one(_train_subprocess, outcome, index, len(runs), run, device, data_root, say)
            finally:
                free.put(device)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for future in [pool.submit(task, i, run) for i, run in enumerate(runs, 1)]:
                future.result()
        return outcome
