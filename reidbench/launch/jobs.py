"""Records of submitted jobs and their states: what `reidbench jobs` shows and what a re-run does not submit twice.

Each submission writes ``<log_dir>/<label>/submission-<time>-<pid>.json``: the launcher, the submitting process,
and per task its job id, run folder and cells. submitit keeps each task's files (``<job id>_0_log.out`` /
``.err``, the pickled task and its result) in ``<log_dir>/<label>/<job id>/`` on Slurm, in ``<log_dir>/<label>/``
locally. A task's state is read from, in order: its run folder (finished: done), submitit's result file (the
task ended without finishing the run: failed, with the last error line of its log), then the scheduler (sacct on
Slurm, the job's controller process locally).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.launch.settings import LOCAL, SLURM
from reidbench.launch.task import REQUEUE_MARK

PENDING, RUNNING, REQUEUED, DONE, FAILED, CANCELLED, UNKNOWN = (
    "pending", "running", "requeued", "done", "failed", "cancelled", "unknown")
ACTIVE = (PENDING, RUNNING, REQUEUED)

# sacct's job states -> ours (https://slurm.schedmd.com/job_state_codes.html)
_SLURM_STATES = {
    "PENDING": PENDING, "RUNNING": RUNNING, "COMPLETING": RUNNING, "CONFIGURING": RUNNING, "SUSPENDED": RUNNING,
    "RESIZING": RUNNING, "REQUEUED": REQUEUED, "REQUEUE_FED": REQUEUED, "REQUEUE_HOLD": REQUEUED,
    "PREEMPTED": REQUEUED, "COMPLETED": DONE, "CANCELLED": CANCELLED, "FAILED": FAILED, "TIMEOUT": FAILED,
    "OUT_OF_MEMORY": FAILED, "NODE_FAIL": FAILED, "BOOT_FAIL": FAILED, "DEADLINE": FAILED,
}


@dataclass
class TaskRecord:
    run_dir: str
    cells: list[str]
    job_id: str | None = None  # None until submitted (the local launcher submits as slots free up)


@dataclass
class Submission:
    label: str
    kind: str  # local | slurm
    folder: str  # <log_dir>/<label>
    task_folder: str  # submitit's folder of the task files: <folder>/%j (one per task) or <folder>
    tasks: list[TaskRecord]
    submitted: str = field(default_factory=lambda: datetime.now().isoformat(sep=" ", timespec="microseconds"))
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    path: Path | None = None  # where this record lives (not stored)

    def save(self) -> None:
        if self.path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.path = Path(self.folder) / f"submission-{stamp}-{self.pid}-{uuid.uuid4().hex[:8]}.json"
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        atomic_write(self.path, lambda handle: handle.write(json.dumps(data, indent=1).encode()))

    @property
    def cancel_marker(self) -> Path:
        assert self.path is not None
        return self.path.with_suffix(".cancelled")


@dataclass
class TaskStatus:
    label: str
    kind: str
    job_id: str | None
    run_dir: str
    cells: list[str]
    state: str
    requeues: int = 0
    log: Path | None = None  # the task's error log
    error: str = ""  # the last error line of a failure


def read_submissions(log_dir: Path, label: str | None = None) -> list[Submission]:
    """Every submission recorded under ``log_dir`` (one label's, or all), oldest first."""
    folders = [log_dir / label] if label else sorted(p for p in log_dir.glob("*") if p.is_dir())
    found = []
    for folder in folders:
        for path in folder.glob("submission-*.json"):
            try:
                data = json.loads(path.read_text())
                tasks = [TaskRecord(**t) for t in data.pop("tasks")]
                found.append(Submission(**data, tasks=tasks, path=path))
            except (ValueError, TypeError, KeyError) as error:
                raise ReidbenchError(f"{path}: not a submission record ({error})",
                                     hint="delete it if it is not reidbench's") from error
    return sorted(found, key=lambda s: (s.label, s.submitted))


def task_files(task_folder: str, job_id: str) -> tuple[Path, Path, Path]:
    """(stdout, stderr, result) files of a task's first process, as submitit names them."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(task_folder, job_id=job_id, task_id=0)
    return paths.stdout, paths.stderr, paths.result_pickle


def last_error_line(log: Path) -> str:
    """The exception line of the last traceback in a log, else its last line."""
    if not log.is_file():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    found, in_traceback = "", False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback and line and not line.startswith(" "):
            found, in_traceback = line.strip(), False
    if found:
        return found
    rest = [line.strip() for line in lines if line.strip()]
    return rest[-1] if rest else ""


def _alive(pid: int, needle: str) -> bool:
    """Whether process ``pid`` runs and (where /proc tells) its command line contains ``needle``."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc").is_dir():
        try:
            return needle in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """sacct's state of each job id (array tasks as ``A_i``); empty when sacct is not on PATH or fails."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    arrays = sorted({job.split("_")[0] for job in job_ids})
    try:
        text = subprocess.run(["sacct", "-o", "JobID,State", "--parsable2", "-j", ",".join(arrays)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = SlurmInfoWatcher().read_info(text)
    return {job: info[job]["State"].split()[0].rstrip("+") for job in job_ids if job in info}


def statuses(submissions: list[Submission]) -> list[TaskStatus]:
    """The state of every task of these submissions; a run submitted again later shows its latest task only."""
    from reidbench.papers.plan import FINISHED, run_state

    slurm = slurm_states([t.job_id for s in submissions if s.kind == SLURM for t in s.tasks if t.job_id])
    latest: dict[str, TaskStatus] = {}
    for sub in submissions:
        cancelled = sub.path is not None and sub.cancel_marker.is_file()
        for task in sub.tasks:
            status = TaskStatus(sub.label, sub.kind, task.job_id, task.run_dir, task.cells, UNKNOWN)
            ended = False
            if task.job_id is not None:
                out, status.log, result = task_files(sub.task_folder, task.job_id)
                ended = result.is_file()
                if out.is_file():
                    status.requeues = out.read_text(errors="replace").count(REQUEUE_MARK)
            error = last_error_line(status.log) if status.log else ""
            if run_state(Path(task.run_dir)) == FINISHED:
                status.state = DONE
            elif ended:
                status.state, status.error = FAILED, error or "the task ended without finishing its run"
            elif task.job_id is None:
                status.state = CANCELLED if cancelled else (
                    PENDING if _alive(sub.pid, "") and sub.host == socket.gethostname() else FAILED)
                if status.state == FAILED:
                    status.error = f"never started: the submitting process {sub.pid} ended first"
            elif sub.kind == LOCAL:
                if sub.host != socket.gethostname():
                    status.state = UNKNOWN
                    status.error = f"a local job of host {sub.host}"
                elif _alive(int(task.job_id), "submitit.local"):
                    status.state = RUNNING
                else:
                    status.state = CANCELLED if cancelled else FAILED
                    status.error = error or "the job ended without finishing its run"
            else:
                scheduler = slurm.get(task.job_id)
                status.state = _SLURM_STATES.get(scheduler, UNKNOWN) if scheduler else UNKNOWN
                if status.state == DONE:  # the job ended, the run did not finish
                    status.state, status.error = FAILED, error or "the job ended without finishing its run"
                elif status.state == FAILED:
                    status.error = error or f"Slurm state {scheduler}"
                elif status.state == UNKNOWN:
                    status.error = "sacct is not available here" if shutil.which("sacct") is None else \
                        "sacct does not know this job (yet)"
                if status.state == PENDING and status.requeues:
                    status.state = REQUEUED
            latest[task.run_dir] = status
    return list(latest.values())


def active_runs(log_dir: Path, label: str) -> dict[str, TaskStatus]:
    """Run folders with a task still pending, running or requeued: a re-run must not submit them again."""
    return {s.run_dir: s for s in statuses(read_submissions(log_dir, label)) if s.state in ACTIVE}


def cancel(submissions: list[Submission]) -> list[str]:
    """Stop every active task: scancel on Slurm; locally, stop the job controllers and the submitting loop.
    Returns the job ids (or run names, for tasks never started) that were stopped."""
    stopped: list[str] = []
    current = statuses(submissions)
    active = {s.run_dir for s in current if s.state in ACTIVE}
    slurm_ids = [s.job_id for s in current if s.run_dir in active and s.kind == SLURM and s.job_id]
    if slurm_ids:
        if shutil.which("scancel") is None:
            raise ReidbenchError("--cancel: scancel is not on PATH; cancel from the cluster's login node")
        subprocess.run(["scancel", *slurm_ids], check=True, timeout=60)
        stopped += slurm_ids
    for sub in submissions:
        if sub.kind != LOCAL or sub.host != socket.gethostname():
            continue
        mine = [t for t in sub.tasks if t.run_dir in active]
        if any(t.job_id is None for t in mine) and sub.path is not None:
            sub.cancel_marker.touch()  # the submitting loop starts nothing more
            stopped += [Path(t.run_dir).name for t in mine if t.job_id is None]
        for task in mine:
            if task.job_id is not None and _alive(int(task.job_id), "submitit.local"):
                os.kill(int(task.job_id), signal.SIGINT)  # the controller stops its tasks
                stopped.append(task.job_id)
    return stopped


def summary_line(items: list[TaskStatus]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.state] = counts.get(item.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "no jobs"

