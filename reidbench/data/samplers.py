"""Identity batch samplers: deterministic per (seed, epoch), resumable mid-epoch, sharded by rank.

- ``pk`` (BoT's RandomIdentitySampler): each identity's images are shuffled and cut into groups
  of K (topped up by re-drawing when fewer than K); batches take P identities with a group left,
  so every image is used about once per epoch.
- ``random_identity`` (open-reid): each epoch draws K images of every identity once.

Under DDP, rank r takes global batches r, r + W, ...: each rank sees whole P x K batches and the
effective batch is W x batch_size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from reidbench.errors import ReidbenchError

SAMPLERS = ("pk", "random_identity", "random")  # random: plain shuffled batches (torchreid softmax)


class IdentityBatchSampler:
    def __init__(self, pids: Sequence[int], batch_size: int, num_instances: int, mode: str = "pk",
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if mode not in SAMPLERS:
            raise ReidbenchError(f"data.sampler.name: expected one of {', '.join(SAMPLERS)}, got {mode!r}")
        if mode != "random" and batch_size % num_instances:
            raise ReidbenchError(f"data.batch_size {batch_size} is not a multiple of "
                                 f"data.sampler.num_instances {num_instances}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.by_pid[int(pid)].append(index)
        self.pids = sorted(self.by_pid)
        self.per_batch = batch_size // num_instances
        self.batch_size, self.num_images = batch_size, len(pids)
        if mode == "random" and self.num_images < batch_size:
            raise ReidbenchError(f"data.batch_size: {batch_size} is more than the {self.num_images} training images")
        if mode != "random" and len(self.pids) < self.per_batch:
            raise ReidbenchError(f"data.batch_size: {batch_size} needs {self.per_batch} identities per "
                                 f"batch, the training set has {len(self.pids)}")
        self.k, self.mode, self.seed = num_instances, mode, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0
        self._plan: tuple[int, list[list[int]]] | None = None  # (epoch, global batches)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; skip the first ``start_batch`` batches (resuming)."""
        self.epoch, self.start = epoch, start_batch

    def _groups(self, rng: np.random.Generator) -> dict[int, list[list[int]]]:
        groups = {}
        for pid in self.pids:
            images = list(self.by_pid[pid])
            if self.mode == "random_identity":
                picks = rng.choice(images, size=self.k, replace=len(images) < self.k)
                groups[pid] = [[int(i) for i in picks]]
                continue
            if len(images) < self.k:
                images = [int(i) for i in rng.choice(images, size=self.k, replace=True)]
            rng.shuffle(images)
            groups[pid] = [images[i : i + self.k] for i in range(0, len(images) - self.k + 1, self.k)]
        return groups

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches for all ranks, computed once per epoch (len and iter share it)."""
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._make_batches())
        return self._plan[1]

    def _make_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches: list[list[int]] = []
        if self.mode == "random":  # every image once per epoch, last partial batch dropped
            order = [int(i) for i in rng.permutation(self.num_images)]
            batches = [order[i:i + self.batch_size]
                       for i in range(0, self.num_images - self.batch_size + 1, self.batch_size)]
            return batches[:len(batches) - len(batches) % self.world_size]
        groups = self._groups(rng)
        available = [pid for pid in self.pids if groups[pid]]
        while len(available) >= self.per_batch:
            chosen = rng.choice(len(available), size=self.per_batch, replace=False)
            batch: list[int] = []
            for slot in sorted(chosen):
                batch += groups[available[slot]].pop()
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.global_batches()[self.rank :: self.world_size]
        yield from mine[self.start :]

    def __len__(self) -> int:
        return len(self.global_batches()) // self.world_size - self.start
