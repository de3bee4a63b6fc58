"""`reidbench bench gpu`: the GPU path beside the CPU path, in one process on the lent device.

- evaluate (distances + ranking) and rerank_features at Market and MSMT17 sizes on the GPU and with the CPU
  kernels, with the largest difference between the two results;
- training images/s of each paper model at batch 64: fp32 / bf16 / fp16 (loss-scaled), channels_last off / on,
  through the trainer's own step (``Trainer.train_step``) on batches already on the device;
- decode + augmentation images/s of the loader with the recommended worker count.

Every measuring function takes the device, so the tests run them on the CPU at tiny sizes; the command
itself refuses to run without CUDA.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.bench.evaluation import synthetic_problem
from reidbench.bench.rerank import SIZES, scaled
from reidbench.errors import ReidbenchError
from reidbench.evaluation import compute_distance, evaluate, rerank_features

# One Market recipe per paper model: its input size, losses and optimiser.
PAPER_MODELS = {
    "bot_resnet50": "bot/resnet50_market1501",
    "alignedreid_pp": "aap-reid/alignedreid_market1501",
    "aap_reid": "aap-reid/aap_market1501",
    "fsafcmn": "fsafcmn/fsafcmn_market1501",
    "mgn": "mgn/mgn_market1501",
    "mhsa_net": "mhsa-net/mhsa_net_market1501",
    "osnet_x1_0": "osnet/osnet_x1_0_market1501",
    "cdnet": "cdnet/cdnet_market1501",
    "msinet": "masenet/msinet_market1501",
    "masenet": "masenet/masenet_market1501",
}
PRECISIONS = (None, "bf16", "fp16")  # None: fp32
FEATURE_DIM = 2048


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise ReidbenchError("bench gpu: no CUDA device on this machine (torch.cuda.is_available() is False); "
                             "it measures the GPU path", hint="run it on a GPU machine: scripts/gpu_check.sh")


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> tuple[float, Any]:
    """Median seconds of ``fn`` with the device synchronised around each call."""
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def measure_evaluation(size: str, device: str, fraction: float = 1.0, cpu_baseline: bool = True,
                       repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Distances + ranking and re-ranking of a synthetic problem of ``size`` on ``device``, beside the CPU."""
    target = torch.device(device)
    shape = scaled(SIZES[size], fraction)
    problem = synthetic_problem(**shape, dim=FEATURE_DIM, seed=seed)
    labels = (problem.q_pids, problem.g_pids, problem.q_camids, problem.g_camids)
    q, g = problem.query.to(target), problem.gallery.to(target)
    out: dict[str, Any] = {"items": f"{shape['num_query']} x {shape['num_gallery']}", "dim": FEATURE_DIM}
    warm = (problem.q_pids[:8], problem.g_pids, problem.q_camids[:8], problem.g_camids)
    evaluate(compute_distance(q[:8], g), *warm, device=target)  # warm-up: CUDA context, kernels
    rerank_features(q[:8], g[:64], device=target)
    out["distance_s"], dist = _timed(lambda: compute_distance(q, g, device=target), target, repeats)
    out["evaluate_s"], result = _timed(lambda: evaluate(dist, *labels, device=target), target, repeats)
    dist = None  # free the [Q, G] matrix before re-ranking
    out["rerank_features_s"], reranked = _timed(lambda: rerank_features(q, g, device=target), target)
    reranked = reranked.cpu().numpy()
    out["mAP"], out["rerank_mAP"] = result.mAP, evaluate(reranked, *labels).mAP
    if target.type == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated(target) / 2**30
    if cpu_baseline:
        out["cpu_distance_s"], cpu_dist = _timed(lambda: compute_distance(problem.query, problem.gallery),
                                                 torch.device("cpu"))
        out["cpu_evaluate_s"], cpu_result = _timed(lambda: evaluate(cpu_dist, *labels), torch.device("cpu"),
                                                   repeats)
        out["same_ranks"] = bool(np.array_equal(cpu_result.first_hit, result.first_hit))
        out["mAP_difference"] = abs(cpu_result.mAP - result.mAP)
        cpu_dist = None
        out["cpu_rerank_features_s"], cpu_reranked = _timed(
            lambda: rerank_features(problem.query, problem.gallery), torch.device("cpu"))
        out["rerank_max_abs_difference"] = float(np.abs(cpu_reranked.numpy() - reranked).max())
        out["evaluate_speedup"] = (out["cpu_distance_s"] + out["cpu_evaluate_s"]) / (
            out["distance_s"] + out["evaluate_s"])
        out["rerank_speedup"] = out["cpu_rerank_features_s"] / out["rerank_features_s"]
    return out


def measure_training(recipe_name: str, device: str, amp: str | None, channels_last: bool, batch: int = 64,
                     steps: int = 8, warmup: int = 3, overrides: tuple[str, ...] = (),
                     data_root: Path | None = None) -> dict[str, Any]:
    """Training images/s of a recipe's model through the trainer's step, on random batches on the device."""
    from reidbench.engine.trainer import Trainer
    from reidbench.recipes import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        root = data_root or Path(tmp) / "data"
        switches = ["train.amp=false"] if amp is None else ["train.amp=true", f"train.amp_dtype={amp}"]
        recipe = load_recipe(recipe_name, overrides=[
            "data.synthetic=true", "data.synthetic_ids=32", "data.synthetic_images_per_id=4", "data.workers=0",
            f"data.batch_size={batch}", "data.sampler.num_instances=4", "model.pretrained=false",
            f"train.channels_last={str(channels_last).lower()}", *switches, *overrides])
        trainer = Trainer(recipe, run_dir=Path(tmp) / "run", device=device, data_root=root, quiet=True)
        target = torch.device(trainer.device)
        generator = torch.Generator().manual_seed(0)
        images = trainer.throughput.to_device(
            torch.randn(batch, 3, recipe.data.height, recipe.data.width, generator=generator), trainer.device)
        # a P x K batch: 4 images of each identity (triplet terms need positives)
        pids = (torch.arange(batch) // 4 % trainer.train_split.num_train_pids).to(trainer.device)
        trainer.net.train()
        for i in range(warmup):
            trainer.train_step(images, pids, 0, i)
        seconds, _ = _timed(lambda: [trainer.train_step(images, pids, 0, i) for i in range(steps)], target)
        return {"model": recipe.model.name, "input": [recipe.data.height, recipe.data.width], "batch": batch,
                "precision": trainer.throughput.precision, "channels_last": channels_last,
                "images_per_s": steps * batch / seconds}


def recommended_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def run_gpu_benchmark(sizes: tuple[str, ...] = ("market", "msmt17"), models: tuple[str, ...] = tuple(PAPER_MODELS),
                      steps: int = 8, cpu_baseline: bool = True, loader_batches: int = 30) -> dict[str, Any]:
    from reidbench.bench.training import run_data_benchmark
    from reidbench.envinfo import device_summary

    require_cuda()
    figures: dict[str, Any] = {
        "device": device_summary(), "gpu": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
    }
    figures["evaluation"] = {size: measure_evaluation(size, "cuda", cpu_baseline=cpu_baseline) for size in sizes}
    training = []
    with tempfile.TemporaryDirectory() as tmp:  # one synthetic miniature for every configuration
        for model in models:
            for amp in PRECISIONS:
                for channels_last in (False, True):
                    training.append(measure_training(PAPER_MODELS[model], "cuda", amp, channels_last, steps=steps,
                                                     data_root=Path(tmp)))
    figures["training"] = training
    figures["loader"] = run_data_benchmark(workers=recommended_workers(), batches=loader_batches, batch=64)
    return figures
