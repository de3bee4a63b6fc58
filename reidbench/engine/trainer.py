"""The trainer: one engine for every recipe, with exact resume and an auditable run folder.

A run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one line per epoch
and per evaluation), ``checkpoints/last.pt`` (written atomically after every epoch),
``features.pt`` (the final query/gallery features) and ``run.json`` (the run record: hash, seed,
scale, synthetic flag, metrics, evaluation settings, versions, device, world size, timings).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from reidbench import paths
from reidbench.engine.build import (
    build_losses,
    build_model,
    build_optimizer,
    build_scheduler,
    build_train_loader,
    load_split,
    output_width,
    resolve_device,
    seed_everything,
)
from reidbench.engine.checkpoint import (
    load_checkpoint,
    preserved_rng,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_dict_of,
)
from reidbench.engine.distributed import DistInfo, barrier, cleanup, init_distributed
from reidbench.engine.features import evaluate_features, extract_feature_set
from reidbench.engine.throughput import resolve_throughput
from reidbench.envinfo import collect_environment
from reidbench.errors import ReidbenchError
from reidbench.evaluation import EvaluationResult
from reidbench.evaluation.atomic import atomic_write
from reidbench.evaluation.features import FeatureSet, save_features
from reidbench.models import create_model
from reidbench.models.contract import num_classes_of
from reidbench.recipes.loading import recipe_hash, to_dict
from reidbench.recipes.schema import Recipe
from reidbench.serialization import read_torch_file

# re-exported for callers of the old locations
__all__ = ["RunRecord", "Trainer", "evaluate_checkpoint", "evaluate_features", "load_split", "resolve_device",
           "seed_everything"]


@dataclass
class RunRecord:
    run_id: str
    recipe_name: str
    recipe_hash: str
    scale: str
    seed: int
    synthetic: bool
    train_dataset: str
    test_dataset: str
    model: str
    pretrained: str
    precision: str
    device: str
    world_size: int
    effective_batch: int
    epochs: int
    eval_settings: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    num_valid_queries: int = 0
    num_skipped_queries: int = 0
    status: str = "running"
    seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    pretrained_report: dict[str, Any] | None = None
    # the recipe's own choices for this scale (its scales.<scale> section, e.g. BoT's small_cnn at smoke)
    scale_overrides: dict[str, Any] = field(default_factory=dict)
    # what the throughput switches did on this device (engine.throughput): amp, channels_last, pin_memory, compile
    throughput: dict[str, Any] = field(default_factory=dict)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class Trainer:
    """One run of a recipe. Everything is built in ``__init__`` (through ``engine.build``), before any
    folder exists, so a recipe or data error leaves nothing behind."""

    def __init__(self, recipe: Recipe, run_dir: Path | None = None, device: str | None = None,
                 data_root: Path | None = None, resume: bool = False, quiet: bool = False) -> None:
        self.recipe = r = recipe
        self.device = resolve_device(device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device == "cuda":
            self.device = f"cuda:{self.dist.local_rank}"
        self.data_root = data_root or paths.data_root()
        self.hash = recipe_hash(recipe)
        runs = paths.resolve_runs_dir()
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = paths.runs_dir() / f"{stamp}-{recipe.name}-{recipe.scale}-s{recipe.train.seed}-{self.hash[:8]}"
        self.run_dir = Path(run_dir)
        # what chose the folder, for errors: the runs root (reproduce, regress and default names live under it)
        under_runs = runs.path in self.run_dir.absolute().parents
        self.run_dir_chosen_by = runs.chosen_by("--run-dir") if under_runs else ("--resume" if resume else "--run-dir")
        self.quiet = quiet or not self.dist.is_main
        self.resume = resume
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        if self.dist.is_main:
            paths.check_folder(self.run_dir, self.run_dir_chosen_by, "run folder")
        resume_state = self._resume_state() if resume else None  # a bad checkpoint stops before any work

        seed_everything(r.train.seed)
        # rank 0 first: it may have to generate a synthetic miniature the others then read
        if not self.dist.is_main:
            barrier(self.dist)
        self.train_split = load_split(r, "train", self.data_root)
        self.test_split = load_split(r, "test", self.data_root)
        if self.dist.is_main:
            barrier(self.dist)
        built = build_model(r, self.train_split.num_train_pids)
        self.model, self.pretrained_note, self.pretrained_report = built.model, built.pretrained_note, \
            built.pretrained_report
        self.throughput = resolve_throughput(r, self.device)
        self.model.to(self.device)
        if self.throughput.channels_last:
            self.model.to(memory_format=torch.channels_last)
        for key in ("feature", "local_feature"):  # checked against the contract before the first epoch
            name = getattr(r.eval, key)
            if name is not None and name not in self.model.eval_outputs:
                raise ReidbenchError(f"eval.{key}: model {r.model.name} has no eval output {name!r}; "
                                     f"expected one of: {', '.join(self.model.eval_outputs)}")
        self.losses = build_losses(r.loss, self.train_split.num_train_pids,
                                   feature_dims=lambda output: output_width(self.model, output)).to(self.device)
        self.loader, self.sampler = build_train_loader(r, self.train_split, self.dist.rank, self.dist.world_size,
                                                       self.device)
        self.steps_per_epoch = max(1, len(self.sampler.global_batches()) // self.dist.world_size)
        self.optimizer = build_optimizer(self.model, r.optim)
        centers = self.losses.center_parameters()
        self.center_optimizer = torch.optim.SGD(centers, lr=r.optim.center_lr) if centers else None
        # the centres' own optimiser undoes the loss weight on their gradients
        self.center_grad_scale = 1.0 / next((t.weight for t in r.loss if t.name == "center"), 1.0)
        self.scheduler = build_scheduler(self.optimizer, r.schedule, r.train.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.throughput.device_type, enabled=self.throughput.grad_scaling)
        self.net: nn.Module = self.model
        self._trainable = {id(p): p.requires_grad for p in self.model.parameters()}
        self._open_modules = self._fixbase_modules()
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.startswith("cuda") else None
            # frozen (fixbase) epochs leave parameters without gradients
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                           find_unused_parameters=r.train.fixbase_epochs > 0)
        if self.throughput.compile:
            self.net = torch.compile(self.net)
        self.start_epoch = 0
        if resume_state is not None:
            self._restore(resume_state)

    def _fixbase_modules(self) -> list[nn.Module]:
        """The modules trained during the fixbase epochs: ``train.open_layers`` by name, else the classifiers."""
        r = self.recipe
        if not r.train.open_layers:
            return self.model.get_classifier()
        children = dict(self.model.named_children())
        unknown = [n for n in r.train.open_layers if n not in children]
        if r.train.fixbase_epochs and unknown:
            raise ReidbenchError(f"train.open_layers: model {r.model.name} has no module {unknown[0]!r}; "
                                 f"expected some of: {', '.join(children)}")
        return [children[n] for n in r.train.open_layers if n in children]

    def _state(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "recipe_hash": self.hash, "model": self.model.state_dict(),
                "losses": self.losses.state_dict(), "optimizer": self.optimizer.state_dict(),
                "center_optimizer": self.center_optimizer.state_dict() if self.center_optimizer else None,
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state()}

    def _resume_state(self) -> dict[str, Any]:
        state = load_checkpoint(self.checkpoint_path)
        if state["recipe_hash"] != self.hash:
            raise ReidbenchError(f"{self.checkpoint_path}: written by recipe hash {state['recipe_hash']}, "
                                 f"this recipe hashes to {self.hash}",
                                 hint="resume with the same recipe, scale and --set overrides")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.losses.load_state_dict(state["losses"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.center_optimizer and state.get("center_optimizer"):
                self.center_optimizer.load_state_dict(state["center_optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            self.start_epoch = int(state["epoch"]) + 1
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise ReidbenchError(f"{self.checkpoint_path}: damaged checkpoint, cannot restore it ({first})") from error
        self._forget_unsaved_epochs()

    def _forget_unsaved_epochs(self) -> None:
        """Drop metrics lines of epochs after the checkpoint (a run killed mid-epoch logs them again)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                epoch = json.loads(line).get("epoch", 0)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut by the kill
            if isinstance(epoch, int) and epoch <= self.start_epoch:
                kept.append(line + "\n")
        atomic_write(path, lambda handle: handle.write("".join(kept).encode()))

    # ---- loop ----
    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def _open_layers(self, epoch: int) -> None:
        """Train mode everywhere, or only the open layers during the fixbase epochs."""
        self.net.train()
        if not self.recipe.train.fixbase_epochs:
            return
        fixbase = epoch < self.recipe.train.fixbase_epochs
        open_ids = {id(p) for m in self._open_modules for p in m.parameters()}
        if fixbase:  # frozen leaves (BN statistics, dropout) in eval mode; containers keep their train-mode outputs
            inside_open = {id(m) for o in self._open_modules for m in o.modules()}
            for module in self.model.modules():
                if next(module.children(), None) is None and id(module) not in inside_open:
                    module.eval()
        for parameter in self.model.parameters():  # parameters the model freezes itself stay frozen
            parameter.requires_grad_((not fixbase or id(parameter) in open_ids) and self._trainable[id(parameter)])

    def train_step(self, images: torch.Tensor, pids: torch.Tensor, epoch: int = 0, iteration: int = 0
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step on a batch already on the device: forward under the run's precision, the
        losses (a non-finite one stops the run), scaled backward, clipping, the optimisers and a per-iteration
        schedule step. Returns the weighted total and each term."""
        with self.throughput.autocast():
            outputs = self.net(images)
        total, values = self.losses(outputs, pids)
        for name, value in values.items():
            if not torch.isfinite(value):
                raise ReidbenchError(f"loss {name} became {value.item()} at epoch {epoch + 1}, "
                                     f"iteration {iteration + 1}; the run stopped",
                                     hint="lower optim.lr or enable train.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        if self.center_optimizer:
            self.center_optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.recipe.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.train.grad_clip)
        self.scaler.step(self.optimizer)
        if self.center_optimizer:
            for p in self.losses.center_parameters():
                if p.grad is not None:
                    p.grad.mul_(self.center_grad_scale)
            self.center_optimizer.step()
        self.scaler.update()
        if self.recipe.schedule.per_iteration:
            self.scheduler.step()
        return total, values

    def train_epoch(self, epoch: int, progress: Any = None, task: Any = None) -> dict[str, float]:
        self._open_layers(epoch)
        self.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen, iterations, start = 0, 0, time.perf_counter()
        for iteration, (images, pids, _camids, _index) in enumerate(self.loader):
            images = self.throughput.to_device(images, self.device)
            pids = pids.to(self.device, non_blocking=self.throughput.pin_memory)
            total, values = self.train_step(images, pids, epoch, iteration)
            seen += len(pids)
            iterations += 1
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            sums["total"] = sums.get("total", 0.0) + float(total.detach())  # the weighted sum that is optimised
            if progress is not None:
                rate = seen / max(1e-9, time.perf_counter() - start)
                terms = " ".join(f"{k.split(':')[0]} {v / (iteration + 1):.3f}" for k, v in sums.items())
                progress.update(task, advance=1, description=(
                    f"epoch {epoch + 1}/{self.recipe.train.epochs} it {iteration + 1} {terms} "
                    f"lr {self.optimizer.param_groups[0]['lr']:.2e} {rate:.0f} img/s"))
        if not self.recipe.schedule.per_iteration:
            self.scheduler.step()
        return {k: v / max(1, iterations) for k, v in sums.items()} | {
            "images_per_s": seen * self.dist.world_size / max(1e-9, time.perf_counter() - start)}

    def feature_set(self) -> FeatureSet:
        return extract_feature_set(self.model, self.test_split, self.recipe, self.device, self.hash,
                                   self.throughput)

    def evaluate(self, features: FeatureSet) -> EvaluationResult:
        return evaluate_features(features, self.recipe.eval, self.device)

    def _evaluate_epoch(self, epoch: int, save: bool) -> EvaluationResult:
        """Evaluate after ``epoch`` without touching the training's random state: the test loaders draw
        their seeds from torch's generator, and the checkpoint just written holds the state before them,
        so a resumed run and an uninterrupted one (evaluating at any interval) train the same batches."""
        with preserved_rng():
            features = self.feature_set()
            result = self.evaluate(features)
        self._log({"epoch": epoch, "eval": result.summary(), "num_valid_queries": result.num_valid_queries})
        if save:
            save_features(self.run_dir / "features.pt", features)
        return result

    def run(self) -> RunRecord:
        from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        start = time.perf_counter()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        r = self.recipe
        record = RunRecord(
            run_id=self.run_dir.name, recipe_name=r.name, recipe_hash=self.hash, scale=r.scale,
            seed=r.train.seed, synthetic=self.train_split.synthetic or self.test_split.synthetic,
            train_dataset=self.train_split.name, test_dataset=self.test_split.name, model=r.model.name,
            pretrained=self.pretrained_note,
            precision=self.throughput.precision, throughput=self.throughput.record(),
            device=self.device, world_size=self.dist.world_size,
            effective_batch=r.data.batch_size * self.dist.world_size, epochs=r.train.epochs,
            eval_settings={"feature": r.eval.feature, "local_feature": r.eval.local_feature,
                           "metric": r.eval.metric, "normalize": r.eval.normalize,
                           "rerank": asdict(r.eval.rerank) if r.eval.rerank.enabled else None,
                           "flip": r.eval.flip, "protocol": self.test_split.protocol},
            environment=collect_environment(str(self.data_root)), reported=asdict(r.reported),
            pretrained_report=self.pretrained_report, scale_overrides=dict(r.scales.get(r.scale) or {}),
        )
        if self.dist.is_main:
            (self.run_dir / "recipe.yaml").write_text(yaml.safe_dump(to_dict(r), sort_keys=False))
            _atomic_json(self.run_dir / "run.json", asdict(record))
        total_steps = (r.train.epochs - self.start_epoch) * self.steps_per_epoch
        progress = Progress("{task.description}", BarColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            disable=self.quiet, transient=False)
        result: EvaluationResult | None = None
        with progress:
            task = progress.add_task("training", total=total_steps)
            for epoch in range(self.start_epoch, r.train.epochs):
                stats = self.train_epoch(epoch, progress, task)
                self._log({"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **stats})
                if self.dist.is_main:
                    save_checkpoint(self.checkpoint_path, self._state(epoch))
                last = epoch + 1 == r.train.epochs
                if self.dist.is_main and (last or (epoch + 1) % max(1, r.train.eval_every) == 0):
                    result = self._evaluate_epoch(epoch + 1, save=last)
                barrier(self.dist)
        if self.dist.is_main and result is None:
            # killed after the last epoch's checkpoint but before its evaluation: evaluate now
            result = self._evaluate_epoch(r.train.epochs, save=True)
        if self.dist.is_main and result is not None:
            np.save(self.run_dir / "per_query_ap.npy", result.ap)
            record.metrics = result.summary()
            record.num_valid_queries = result.num_valid_queries
            record.num_skipped_queries = result.num_skipped_queries
        record.status = "finished"
        record.seconds = time.perf_counter() - start
        if self.dist.is_main:
            _atomic_json(self.run_dir / "run.json", asdict(record))
        cleanup(self.dist)
        return record


def evaluate_checkpoint(recipe: Recipe, checkpoint: Path, out: Path, device: str | None = None,
                        data_root: Path | None = None) -> tuple[EvaluationResult, Path]:
    """Evaluate a checkpoint (ours, or a bare / official state dict) and write the features file."""
    weights = state_dict_of(read_torch_file(checkpoint, "checkpoint"), checkpoint)  # before any data work
    device = resolve_device(device)
    data_root = data_root or paths.data_root()
    seed_everything(recipe.train.seed)
    train_split = load_split(recipe, "train", data_root)
    test_split = load_split(recipe, "test", data_root)
    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    model = create_model(recipe.model.name, num_classes=train_split.num_train_pids, **options)
    num_classes = num_classes_of(weights, model)
    if num_classes is not None and num_classes != train_split.num_train_pids:  # trained on another dataset
        model = create_model(recipe.model.name, num_classes=num_classes, **options)
    try:
        missing, _unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a shape that does not fit
        detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line),
                      str(error).splitlines()[0])
        raise ReidbenchError(f"{checkpoint}: its weights do not fit model {recipe.model.name} ({detail[:200]})",
                             hint="test with the recipe the checkpoint was trained with") from error
    if missing:
        raise ReidbenchError(f"{checkpoint}: {len(missing)} weights of {recipe.model.name} are missing, "
                             f"first: {', '.join(missing[:3])}")
    model.to(device)
    features = extract_feature_set(model, test_split, recipe, device, recipe_hash(recipe))
    result = evaluate_features(features, recipe.eval, device)
    save_features(out, features)
    return result, out
