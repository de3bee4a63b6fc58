"""Datasets and DataLoaders: JPEG/PNG decoding with torchvision.io, recipe-built transforms."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from reidbench.data.records import ImageRecord, Split
from reidbench.data.samplers import IdentityBatchSampler
from reidbench.data.transforms import eval_transform, train_transform
from reidbench.recipes.schema import DataSection


class ImageDataset(Dataset):
    def __init__(self, records: list[ImageRecord], transform: Callable[[torch.Tensor], torch.Tensor]):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        record = self.records[index]
        image = decode_image(read_file(str(record.path)), mode=ImageReadMode.RGB)
        return self.transform(image), record.pid, record.camid, index


def _worker_seed(worker_id: int) -> None:
    # each worker's torch RNG is seeded by the DataLoader from the main generator; numpy follows it
    import numpy as np

    np.random.seed(torch.initial_seed() % 2**32)


def train_loader(split: Split, data: DataSection, seed: int, rank: int = 0, world_size: int = 1,
                 device: str = "cpu") -> tuple[DataLoader, IdentityBatchSampler]:
    sampler = IdentityBatchSampler([r.pid for r in split.train], data.batch_size,
                                   data.sampler.num_instances, data.sampler.name, seed, rank, world_size)
    dataset = ImageDataset(split.train, train_transform(data.transforms, data.height, data.width))
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=data.workers,
                        pin_memory=data.pin_memory and device.startswith("cuda"), worker_init_fn=_worker_seed,
                        persistent_workers=False)
    return loader, sampler


def eval_loader(records: list[ImageRecord], data: DataSection, device: str = "cpu") -> DataLoader:
    dataset = ImageDataset(records, eval_transform(data.transforms, data.height, data.width))
    return DataLoader(dataset, batch_size=data.test_batch_size, shuffle=False,
                      num_workers=data.workers, pin_memory=data.pin_memory and device.startswith("cuda"))


def image_paths(records: list[ImageRecord]) -> list[str]:
    return [str(Path(r.path)) for r in records]
