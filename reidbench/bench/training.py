"""`reidbench bench train` and `reidbench bench data`: figures, measured in one process."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidbench.data.loader import train_loader
from reidbench.engine.trainer import Trainer
from reidbench.losses import TripletLoss
from reidbench.recipes import load_recipe

BOT = "bot/resnet50_market1501"


def _trainer(model: str, height: int, width: int, batch: int, data_root: Path) -> Trainer:
    recipe = load_recipe(BOT, scale="smoke", overrides=[
        f"model.name={model}", f"data.height={height}", f"data.width={width}", f"data.batch_size={batch}",
        "data.synthetic_ids=40", "data.synthetic_images_per_id=8", "train.epochs=100"])
    return Trainer(recipe, device="cpu" if not torch.cuda.is_available() else "cuda", data_root=data_root,
                   quiet=True)


def run_train_benchmark(model: str = "bot_resnet50", height: int = 128, width: int = 64, batch: int = 16,
                        rounds: int = 2) -> dict[str, Any]:
    """Seconds per epoch: the trainer's epoch vs a bare loop doing the same steps (same loader)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(model, height, width, batch, Path(tmp))
        ce, triplet = nn.CrossEntropyLoss(label_smoothing=0.1), TripletLoss(0.3)
        net, optimizer, device = trainer.net, trainer.optimizer, trainer.device

        def bare(epoch: int) -> None:
            net.train()
            trainer.sampler.set_epoch(epoch)
            for images, pids, _c, _i in trainer.loader:
                images, pids = images.to(device), pids.to(device)
                out = net(images)
                loss = ce(out["logits"], pids) + triplet(out["global"], pids)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        times: dict[str, list[float]] = {"trainer": [], "bare": []}
        bare(0)  # warm up allocators and threads
        for r in range(rounds):
            for name, fn in (("trainer", lambda e: trainer.train_epoch(e)), ("bare", bare)):
                start = time.perf_counter()
                fn(r + 1)
                times[name].append(time.perf_counter() - start)
        t, b = min(times["trainer"]), min(times["bare"])
        return {"model": model, "input": [height, width], "batch": batch, "iterations": trainer.steps_per_epoch,
                "trainer_epoch_s": t, "bare_epoch_s": b, "overhead_percent": 100 * (t - b) / b,
                "device": device}


def run_data_benchmark(height: int = 256, width: int = 128, batch: int = 32, workers: int = 2,
                       batches: int = 20, model: str = "bot_resnet50") -> dict[str, Any]:
    """Decode + augmentation images/s through the DataLoader vs the model's training images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(model, height, width, min(batch, 32), Path(tmp))
        data = trainer.recipe.data
        data.workers, data.batch_size = workers, batch
        loader, sampler = train_loader(trainer.train_split, data, seed=0)
        count, start = 0, time.perf_counter()
        epoch = 0
        while count < batches * batch:
            sampler.set_epoch(epoch)
            for images, *_ in loader:
                count += images.shape[0]
                if count >= batches * batch:
                    break
            epoch += 1
        loader_rate = count / (time.perf_counter() - start)
        net, optimizer = trainer.net, trainer.optimizer
        images = torch.randn(16, 3, height, width, device=trainer.device)
        pids = torch.arange(4, device=trainer.device).repeat_interleave(4)
        steps, start = 0, time.perf_counter()
        net.train()
        while steps < 3 or time.perf_counter() - start < 5:
            out = net(images)
            loss = nn.functional.cross_entropy(out["logits"], pids) + TripletLoss(0.3)(out["global"], pids)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        model_rate = steps * 16 / (time.perf_counter() - start)
        return {"input": [height, width], "workers": workers, "loader_images_per_s": loader_rate,
                "model": model, "model_train_images_per_s": model_rate, "ratio": loader_rate / model_rate,
                "device": trainer.device}
