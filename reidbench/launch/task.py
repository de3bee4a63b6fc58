"""One cluster task: train one run, resume it after a requeue, then run its after-work (leaderboard rows).

The task is pickled by submitit and run on a compute node (the same reidbench must be importable there: see
docs/cluster.md). It is a ``submitit.helpers.Checkpointable``: when the scheduler warns that the task is about
to be stopped (time limit or preemption, USR2 ``signal_delay_s`` before), submitit calls ``checkpoint()``, which
resubmits the same task, and requeues the job. The requeued task finds the run's last checkpoint (the trainer
writes one atomically after every epoch) and resumes from it exactly as ``reidbench train --resume`` does:
at most the interrupted epoch is trained again, and the final metrics equal those of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from reidbench.recipes.schema import Recipe

# printed in the task's log each time it checkpoints for a requeue; `reidbench jobs` counts these lines
REQUEUE_MARK = "reidbench: checkpointed for requeue"


def export_distributed_environment(env: Any) -> None:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from the job's tasks, for ``env://`` init: the
    trainer then takes the same DDP path as under torchrun. Every task sees all the job's GPUs and picks its own
    by local rank, as torchrun's workers do."""
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class TrainTask(submitit.helpers.Checkpointable):
    def __init__(self, recipe: Recipe, run_dir: Path, data_root: Path, device: str,
                 after: Callable[[], Any] | None = None) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.data_root = Path(data_root)
        self.device = device
        self.after = after

    def __call__(self) -> dict[str, Any]:
        from reidbench.engine.trainer import Trainer
        from reidbench.papers.plan import FINISHED, RESUME, run_state

        env = submitit.JobEnvironment()
        export_distributed_environment(env)
        state = run_state(self.run_dir)
        metrics: dict[str, float] = {}
        if state != FINISHED:  # a duplicate of a finished run only re-merges its rows
            record = Trainer(self.recipe, run_dir=self.run_dir, device=self.device, data_root=self.data_root,
                             resume=state == RESUME, quiet=True).run()
            metrics = record.metrics
        if env.global_rank == 0 and self.after is not None:
            self.after()
        return {"run_dir": str(self.run_dir), "metrics": metrics}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called on the signal before the task is stopped: the trainer's last checkpoint is already on disk
        (written atomically after every epoch), so the requeued task only has to find it."""
        last = self.run_dir / "checkpoints" / "last.pt"
        where = "its last checkpoint" if last.is_file() else "the start (no epoch finished yet)"
        print(f"{REQUEUE_MARK}: {self.run_dir.name} resumes from {where}", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
