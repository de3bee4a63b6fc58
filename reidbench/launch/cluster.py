"""submitit launchers: ``local`` (jobs on this machine, for testing the cluster path) and ``slurm`` (one job array
per plan: one task per run, that is per cell and seed).

The task (``reidbench.launch.task.TrainTask``) trains its run, requeues itself before a time limit or on
preemption and resumes exactly, and merges the rows of the cells it completes into the leaderboard, so the
results arrive whoever finishes first and whether or not this process still waits.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from reidbench.errors import ReidbenchError
from reidbench.launch.base import AfterRun, Launcher, Outcome, Say, prepare_synthetic_data
from reidbench.launch.jobs import DONE, Submission, TaskRecord, active_runs, statuses
from reidbench.launch.settings import LOCAL, SLURM, LauncherSettings

POLL_S = {LOCAL: 1.0, SLURM: 30.0}


def _memory(gb: float) -> str:
    return f"{int(gb)}GB" if float(gb).is_integer() else f"{int(gb * 1024)}MB"


class SubmititLauncher(Launcher):
    def __init__(self, kind: str, settings: LauncherSettings) -> None:
        if kind not in (LOCAL, SLURM):
            raise ReidbenchError(f"--launcher: expected {LOCAL} or {SLURM} for submitit, got {kind!r}")
        self.name, self.settings = kind, settings
        self.wait = settings.wait if settings.wait is not None else kind == LOCAL
        if kind == LOCAL and not self.wait:
            raise ReidbenchError("--no-wait: the local launcher runs its jobs on this machine and waits for them",
                                 hint="use --launcher slurm to submit and return")
        if kind == SLURM:
            missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
            if missing:
                raise ReidbenchError(f"--launcher slurm: {' and '.join(missing)} not on PATH",
                                     hint="submit from a machine of the Slurm cluster (its login node)")
        self.gpus = settings.gpus_per_cell(kind)
        self.device = "cuda" if self.gpus else "cpu"

    def task_folder(self, folder: Path) -> Path:
        """Where submitit keeps each task's files: a folder per array task on Slurm, one folder locally."""
        return folder / "%j" if self.name == SLURM else folder

    def executor(self, folder: Path, label: str) -> Any:
        import submitit

        s = self.settings
        tasks = max(1, self.gpus)  # one task per GPU: DDP inside the job
        if self.name == LOCAL:
            executor = submitit.LocalExecutor(folder, max_num_timeout=s.max_requeues, python=s.python)
            executor.update_parameters(timeout_min=s.time_min, gpus_per_node=self.gpus, tasks_per_node=tasks,
                                       signal_delay_s=s.signal_delay_s, **({"setup": s.setup} if s.setup else {}))
            return executor
        executor = submitit.SlurmExecutor(self.task_folder(folder), max_num_timeout=s.max_requeues, python=s.python)
        parameters = {"job_name": f"reidbench-{label}", "time": s.time_min, "nodes": 1, "ntasks_per_node": tasks,
                      "gpus_per_node": self.gpus or None, "cpus_per_task": s.cpus, "partition": s.partition,
                      "account": s.account, "signal_delay_s": s.signal_delay_s, "setup": s.setup or None,
                      "mem": _memory(s.mem_gb) if s.mem_gb else None,
                      "additional_parameters": dict(s.sbatch) or None}
        if s.array_parallelism:
            parameters["array_parallelism"] = s.array_parallelism
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
        return executor

    def launch(self, runs: list[Any], data_root: Path, say: Say, label: str = "runs",
               after: AfterRun | None = None) -> Outcome:
        from reidbench.launch.task import TrainTask

        outcome = Outcome()
        folder = self.settings.jobs_folder() / label
        already = active_runs(self.settings.jobs_folder(), label)
        todo = []
        for run in runs:
            active = already.get(str(run.run_dir))
            if active is not None:
                say(f"{run.run_dir.name}: already submitted as job {active.job_id} ({active.state}); not again")
                outcome.submitted[str(run.run_dir)] = active.job_id or ""
            else:
                todo.append(run)
        if not todo:
            return outcome
        prepare_synthetic_data(todo, data_root)
        after = after or {}
        tasks = [TrainTask(run.recipe, run.run_dir, data_root, self.device, after.get(str(run.run_dir)))
                 for run in todo]
        record = Submission(label, self.name, str(folder), str(self.task_folder(folder)), [
            TaskRecord(str(run.run_dir), list(getattr(after.get(str(run.run_dir)), "labels", []))) for run in todo])
        executor = self.executor(folder, label)
        record.save()
        if self.name == SLURM:
            jobs = self._submit_array(executor, tasks, record)
            if not self.wait:
                outcome.submitted.update({t.run_dir: t.job_id or "" for t in record.tasks})
                say(f"submitted {len(jobs)} task(s) as Slurm job {jobs[0].job_id.split('_')[0]}; "
                    f"follow them with `reidbench jobs {label}`; logs in {folder}")
                return outcome
            parallel = len(tasks)
        else:
            jobs, parallel = [None] * len(tasks), self.settings.array_parallelism or 1
        self._run(executor, tasks, jobs, parallel, record, say)
        for status in statuses([record]):
            if status.state == DONE:
                outcome.trained.append(status.run_dir)
            else:
                outcome.failed[status.run_dir] = f"{status.error or status.state} (log: {status.log})"
        return outcome

    def _submit_array(self, executor: Any, tasks: list[Any], record: Submission) -> list[Any]:
        from submitit.core.utils import FailedJobError

        try:
            jobs = executor.submit_array(tasks)
        except (FailedJobError, OSError) as error:
            if record.path is not None:
                record.path.unlink(missing_ok=True)  # nothing was submitted
            raise ReidbenchError(f"sbatch refused the job array: {str(error).strip().splitlines()[-1]}",
                                 hint=f"submission script in {record.folder}") from error
        for task, job in zip(record.tasks, jobs, strict=True):
            task.job_id = job.job_id
        record.save()
        return jobs

    def _run(self, executor: Any, tasks: list[Any], jobs: list[Any], parallel: int, record: Submission,
             say: Say) -> None:
        """Wait for every task; locally, start them ``parallel`` at a time (a job array has its own limit)."""
        total = len(tasks)
        waiting = [i for i, job in enumerate(jobs) if job is None]
        running = {i: job for i, job in enumerate(jobs) if job is not None}
        while waiting or running:
            if waiting and record.cancel_marker.is_file():
                say(f"cancelled: {len(waiting)} task(s) not started")
                waiting = []
            while waiting and len(running) < parallel:
                index = waiting.pop(0)
                running[index] = executor.submit(tasks[index])
                record.tasks[index].job_id = running[index].job_id
                record.save()
                say(f"[{index + 1}/{total}] {Path(record.tasks[index].run_dir).name}: "
                    f"{self.name} job {running[index].job_id}")
            for index, job in list(running.items()):
                if job.done():
                    del running[index]
                    state = "finished" if job.exception() is None else "failed"
                    say(f"[{index + 1}/{total}] {state} {Path(record.tasks[index].run_dir).name} "
                        f"(job {job.job_id})")
            if waiting or running:
                time.sleep(POLL_S[self.name])
