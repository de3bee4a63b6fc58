"""`reidbench search msinet`: the twin-contrastive search of MSINet (docs/papers/masenet.md, "Architecture search").

The training identities are split in three (TCM): the first fifth train only, the next two
fifths half their images to train and half to validation, the last two fifths validation only.
Each side has a cluster memory (one unit vector per identity, temperature 0.05, momentum 0.2).
Every iteration (from the second) takes one architecture step on a validation batch with the
validation memory (Adam on alpha) and one weight step on a training batch with the training
memory (SGD on the weights): first-order DARTS. The genotype (argmax per slot) is written to a
YAML file that a recipe names as ``model.genotype``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from reidbench.data.loader import ImageDataset
from reidbench.data.parsers import relabel
from reidbench.data.records import ImageRecord
from reidbench.data.samplers import IdentityBatchSampler
from reidbench.data.transforms import train_transform
from reidbench.evaluation.atomic import atomic_write
from reidbench.models.msinet import resolve_genotype
from reidbench.models.msinet_search import MSINetSearch
from reidbench.recipes.schema import TransformSection


class ClusterMemory:
    """Identity prototypes: CE over cosine similarities / temperature; momentum update."""

    def __init__(self, dim: int, classes: int, temperature: float = 0.05, momentum: float = 0.2,
                 device: str = "cpu") -> None:
        self.features = torch.zeros(classes, dim, device=device)
        self.temperature, self.momentum = temperature, momentum

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        unit = nn.functional.normalize(features, dim=1)
        return nn.functional.cross_entropy(unit @ self.features.T / self.temperature, targets)

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        unit = nn.functional.normalize(features.detach(), dim=1)
        for feature, target in zip(unit, targets, strict=True):
            merged = self.momentum * self.features[target] + (1 - self.momentum) * feature
            self.features[target] = merged / merged.norm().clamp(min=1e-12)


def tcm_split(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train / validation records with their own relabelled ids (the TCM identity split)."""
    by_pid: dict[int, list[ImageRecord]] = {}
    for record in records:
        by_pid.setdefault(record.pid, []).append(record)
    ids = sorted(by_pid)
    n = len(ids)
    train, val = [], []
    for rank, pid in enumerate(ids):
        images = by_pid[pid]
        if rank < n / 5:
            train += images
        elif rank < 3 * n / 5:
            half = math.ceil(len(images) / 2)
            train += images[:half]
            val += images[half:]
        else:
            val += images
    return relabel(train), relabel(val)


@dataclass
class SearchResult:
    genotype: list[str]
    alpha: list[list[float]]
    path: Path


def _batches(records: list[ImageRecord], batch: int, k: int, seed: int, height: int, width: int, workers: int):
    sampler = IdentityBatchSampler([r.pid for r in records], batch, k, "pk", seed)
    dataset = ImageDataset(records, train_transform(TransformSection(), height, width))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def search_msinet(records: list[ImageRecord], out: Path, epochs: int = 350, batch_size: int = 64,
                  num_instances: int = 4, height: int = 256, width: int = 128, seed: int = 0,
                  device: str = "cpu", workers: int = 0, mid_from: str = "in",
                  meta: dict[str, Any] | None = None) -> SearchResult:
    torch.manual_seed(seed)
    train, val = tcm_split(records)
    model = MSINetSearch(mid_from).to(device)
    memories = {"train": ClusterMemory(512, len({r.pid for r in train}), device=device),
                "val": ClusterMemory(512, len({r.pid for r in val}), device=device)}
    weight_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=5e-4)
    arch_opt = torch.optim.Adam([model.alpha], lr=0.002, betas=(0.5, 0.999), weight_decay=1e-3)
    iterations = max(1, len(IdentityBatchSampler([r.pid for r in train], batch_size, num_instances, "pk", seed)))
    train_batches = _batches(train, batch_size, num_instances, seed, height, width, workers)
    val_batches = _batches(val, batch_size, num_instances, seed + 1, height, width, workers)

    def step(batches, memory: ClusterMemory, optimizer: torch.optim.Optimizer, weights_only: bool) -> None:
        images, pids, *_ = next(batches)
        images, pids = images.to(device), pids.to(device)
        features = model(images)
        loss = memory.loss(features, pids)
        arch_opt.zero_grad()
        weight_opt.zero_grad()
        loss.backward()
        if weights_only:
            model.alpha.grad = None
        optimizer.step()
        memory.update(features, pids)

    model.train()
    for index in range(epochs * iterations):
        if index > 0:  # architecture step on validation data, then a weight step on training data
            step(val_batches, memories["val"], arch_opt, weights_only=False)
        step(train_batches, memories["train"], weight_opt, weights_only=True)
    genotype = resolve_genotype(model.genotype())
    alpha = torch.softmax(model.alpha.detach(), -1).cpu().tolist()
    document = {"genotype": genotype, "alpha_softmax": [[round(v, 6) for v in row] for row in alpha],
                "epochs": epochs, "seed": seed, "mid_from": mid_from, **(meta or {})}
    atomic_write(out, lambda handle: handle.write(yaml.safe_dump(document, sort_keys=False).encode()))
    return SearchResult(genotype, alpha, out)
