"""The trainer: one engine for every recipe, with exact resume and an auditable run folder.

A run folder holds ``recipe.yaml`` (the resolved recipe), ``metrics.jsonl`` (one line per epoch
and per evaluation), ``checkpoints/last.pt`` (written atomically after every epoch),
``features.pt`` (the final query/gallery features) and ``run.json`` (the run record: hash, seed,
scale, synthetic flag, metrics, evaluation settings, versions, device, world size, timings).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from reidbench import paths
from reidbench.data.loader import image_paths, test_loader, train_loader
from reidbench.data.parsers import Subset, parse_dataset
from reidbench.data.records import Split
from reidbench.data.registry import get_dataset
from reidbench.engine.checkpoint import (
    load_checkpoint,
    preserved_rng,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_dict_of,
)
from reidbench.engine.distributed import DistInfo, barrier, cleanup, init_distributed
from reidbench.engine.optim import build_optimizer, build_scheduler
from reidbench.envinfo import collect_environment
from reidbench.errors import ReidbenchError
from reidbench.evaluation import EvaluationResult
from reidbench.evaluation.atomic import atomic_write
from reidbench.evaluation.features import FeatureSet, evaluate_feature_set, save_features
from reidbench.losses import build_losses
from reidbench.models import create_model
from reidbench.recipes.loading import recipe_hash, to_dict
from reidbench.recipes.schema import EvalSection, Recipe
from reidbench.serialization import read_torch_file


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str | None) -> str:
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ReidbenchError(f"--device {requested}: CUDA is not available on this machine",
                             hint="use --device cpu")
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise ReidbenchError(f"--device: expected cpu, cuda or cuda:N, got {requested!r}")
    return requested


def load_split(recipe: Recipe, which: str, data_root: Path) -> Split:
    """The train or test dataset of a recipe: real data, or its synthetic miniature at smoke scale.

    A missing real dataset stops with the command that installs it; nothing is substituted.
    """
    name = recipe.data.train if which == "train" else recipe.data.test
    spec = get_dataset(name)
    root = data_root
    if recipe.data.synthetic:
        from reidbench.data.parsers import locate
        from reidbench.data.synth import ensure_synthetic

        root = data_root / "synthetic" / f"{spec.name}-i{recipe.data.synthetic_ids}" \
                                         f"-k{recipe.data.synthetic_images_per_id}"
        if locate(spec, root) is None:  # to be generated: the data root must take it
            paths.check_folder(root, paths.data_root_chosen_by(data_root), "data root")
        ensure_synthetic(spec.name, root, ids=recipe.data.synthetic_ids,
                         images_per_id=recipe.data.synthetic_images_per_id, seed=0)
    subset = recipe.data.subset
    use_subset = subset.train_ids is not None or subset.test_id_fraction is not None
    split = parse_dataset(spec.name, root, recipe.data.variant,
                          Subset(subset.train_ids, subset.test_id_fraction) if use_subset else None)
    if recipe.data.synthetic and not split.synthetic:
        raise ReidbenchError(f"{split.root}: expected a synthetic miniature (manifest missing)")
    return split


def evaluate_features(features: FeatureSet, settings: EvalSection) -> EvaluationResult:
    """Distance (or re-ranked distance) and metrics, exactly as a run evaluates its final features."""
    rerank = settings.rerank
    return evaluate_feature_set(features, settings.metric, settings.normalize, rerank is not None,
                                **(asdict(rerank) if rerank else {}), local=settings.local_feature is not None)


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
    # the recipe's own choices for this scale (its scales.<scale> section, e.g. BoT's small_cnn at smoke)
    scale_overrides: dict[str, Any] = field(default_factory=dict)


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


class Trainer:
    def __init__(self, recipe: Recipe, run_dir: Path | None = None, device: str | None = None,
                 data_root: Path | None = None, resume: bool = False, quiet: bool = False) -> None:
        self.recipe = recipe
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

    # ---- setup ----
    def _build(self) -> None:
        r = self.recipe
        resume_state = self._resume_state() if self.resume else None  # a bad checkpoint stops before any work
        seed_everything(r.train.seed)
        # rank 0 first: it may have to generate a synthetic miniature the others then read
        if not self.dist.is_main:
            barrier(self.dist)
        self.train_split = load_split(r, "train", self.data_root)
        self.test_split = load_split(r, "test", self.data_root)
        if self.dist.is_main:
            barrier(self.dist)
        options = dict(r.model.options)
        self.pretrained_note = "not requested"
        if options.get("pretrained"):
            try:
                self.model = create_model(r.model.name, num_classes=self.train_split.num_train_pids, **options)
                self.pretrained_note = "ImageNet weights loaded"
            except Exception as error:  # noqa: BLE001 - no network, no cached weights, no checkpoint
                options["pretrained"] = False
                self.model = create_model(r.model.name, num_classes=self.train_split.num_train_pids, **options)
                reason = error.message if isinstance(error, ReidbenchError) else type(error).__name__
                self.pretrained_note = f"requested but unavailable, trained from scratch ({reason})"
            report = getattr(self.model, "load_report", None)
            if report is not None:
                self.pretrained_note += (f"; {len(report['loaded'])} tensors loaded, {len(report['missing'])} "
                                         f"missing (new modules), {len(report['unexpected'])} unexpected")
        else:
            self.model = create_model(r.model.name, num_classes=self.train_split.num_train_pids, **options)
        self.model.to(self.device)
        self._check_eval_outputs()
        self.losses = build_losses(r.loss, self.train_split.num_train_pids).to(self.device)
        self.loader, self.sampler = train_loader(self.train_split, r.data, r.train.seed, self.dist.rank,
                                                 self.dist.world_size, self.device)
        self.steps_per_epoch = max(1, len(self.sampler.global_batches()) // self.dist.world_size)
        self.optimizer = build_optimizer(self.model, r.optim)
        centers = self.losses.center_parameters()
        self.center_optimizer = torch.optim.SGD(centers, lr=r.optim.center_lr) if centers else None
        # the centres' own optimiser undoes the loss weight on their gradients
        self.center_grad_scale = 1.0 / next((t.weight for t in r.loss if t.name == "center"), 1.0)
        self.scheduler = build_scheduler(self.optimizer, r.schedule, r.train.epochs, self.steps_per_epoch)
        self.use_amp = bool(r.train.amp and self.device.startswith("cuda"))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.net: nn.Module = self.model
        self._trainable = {id(p): p.requires_grad for p in self.model.parameters()}
        unknown = [n for n in r.train.open_layers if not hasattr(self.model, n)]
        if r.train.fixbase_epochs and unknown:
            raise ReidbenchError(f"train.open_layers: model {r.model.name} has no module {unknown[0]!r}; "
                                 f"expected some of: {', '.join(n for n, _ in self.model.named_children())}")
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.device.startswith("cuda") else None
            # frozen (fixbase) epochs leave parameters without gradients
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                           find_unused_parameters=r.train.fixbase_epochs > 0)
        self.start_epoch = 0
        if resume_state is not None:
            self._restore(resume_state)

    @torch.no_grad()
    def _check_eval_outputs(self) -> None:
        """eval.feature / eval.local_feature must name outputs of the model: checked on a 2-image batch before
        the first epoch (not after it), without moving the random state."""
        r = self.recipe
        with preserved_rng():
            self.model.eval()
            outputs = self.model(torch.zeros(2, 3, r.data.height, r.data.width, device=self.device))
        for key in ("feature", "local_feature"):
            name = getattr(r.eval, key)
            if name is not None and name not in outputs:
                raise ReidbenchError(f"eval.{key}: model {r.model.name} has no eval output {name!r}; "
                                     f"expected one of: {', '.join(outputs)}")

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
        for name, module in self.model.named_children():
            trainable = not fixbase or name in self.recipe.train.open_layers
            module.train(trainable)
            for parameter in module.parameters():  # parameters the model freezes itself stay frozen
                parameter.requires_grad_(trainable and self._trainable[id(parameter)])

    def train_epoch(self, epoch: int, progress: Any = None, task: Any = None) -> dict[str, float]:
        self._open_layers(epoch)
        self.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        seen, iterations, start = 0, 0, time.perf_counter()
        for iteration, (images, pids, _camids, _index) in enumerate(self.loader):
            images = images.to(self.device, non_blocking=True)
            pids = pids.to(self.device, non_blocking=True)
            with torch.autocast("cuda", enabled=self.use_amp):
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

    @torch.no_grad()
    def extract(self, records: list) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The eval feature of each image (and its local stripes when the recipe asks for them)."""
        self.model.eval()
        names = [n for n in (self.recipe.eval.feature, self.recipe.eval.local_feature) if n]
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for images, _pids, _camids, _index in test_loader(records, self.recipe.data, self.device):
            images = images.to(self.device)
            with torch.autocast("cuda", enabled=self.use_amp):
                outputs = self.model(images)
                flipped = self.model(images.flip(3)) if self.recipe.eval.flip else None
            for name in names:
                if name not in outputs:
                    raise ReidbenchError(f"eval: the model has no eval output {name!r} "
                                         f"(it returns {', '.join(outputs)})")
                out = outputs[name].float()
                if flipped is not None:
                    out = out + flipped[name].float()
                parts[name].append(out.cpu())
        feats = [torch.cat(parts[n]) for n in names]
        return feats[0], (feats[1] if len(feats) > 1 else None)

    def feature_set(self) -> FeatureSet:
        q, g = self.test_split.query, self.test_split.gallery
        query, query_local = self.extract(q)
        gallery, gallery_local = self.extract(g)
        return FeatureSet(
            query_features=query, gallery_features=gallery, query_local=query_local, gallery_local=gallery_local,
            query_pids=np.array([r.pid for r in q]), query_camids=np.array([r.camid for r in q]),
            gallery_pids=np.array([r.pid for r in g]), gallery_camids=np.array([r.camid for r in g]),
            protocol=self.test_split.protocol, query_paths=image_paths(q), gallery_paths=image_paths(g),
            meta={"dataset": self.test_split.name, "synthetic": self.test_split.synthetic,
                  "recipe_hash": self.hash, "model": self.recipe.model.name},
        )

    def evaluate(self, features: FeatureSet) -> EvaluationResult:
        return evaluate_features(features, self.recipe.eval)

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
            paths.check_folder(self.run_dir, self.run_dir_chosen_by, "run folder")
        self._build()  # before any folder exists: a recipe or data error leaves nothing behind
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        r = self.recipe
        record = RunRecord(
            run_id=self.run_dir.name, recipe_name=r.name, recipe_hash=self.hash, scale=r.scale,
            seed=r.train.seed, synthetic=self.train_split.synthetic or self.test_split.synthetic,
            train_dataset=self.train_split.name, test_dataset=self.test_split.name, model=r.model.name,
            pretrained=self.pretrained_note,
            precision="amp fp16 (cuda)" if self.use_amp else f"fp32 ({self.device})",
            device=self.device, world_size=self.dist.world_size,
            effective_batch=r.data.batch_size * self.dist.world_size, epochs=r.train.epochs,
            eval_settings={"feature": r.eval.feature, "local_feature": r.eval.local_feature,
                           "metric": r.eval.metric, "normalize": r.eval.normalize,
                           "rerank": asdict(r.eval.rerank) if r.eval.rerank else None,
                           "flip": r.eval.flip, "protocol": self.test_split.protocol},
            environment=collect_environment(str(self.data_root)), reported=asdict(r.reported),
            scale_overrides=dict(r.scales.get(r.scale) or {}),
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


def test_checkpoint(recipe: Recipe, checkpoint: Path, out: Path, device: str | None = None,
                    data_root: Path | None = None) -> tuple[EvaluationResult, Path]:
    """Evaluate a checkpoint (ours, a released one, or a bare state_dict) and write the features file."""
    weights = state_dict_of(read_torch_file(checkpoint, "checkpoint"), checkpoint)  # before any data work
    trainer = Trainer(recipe, run_dir=out.parent, device=device, data_root=data_root, quiet=True)
    seed_everything(recipe.train.seed)
    trainer.train_split = load_split(recipe, "train", trainer.data_root)
    trainer.test_split = load_split(recipe, "test", trainer.data_root)
    trainer.use_amp = False
    num_classes = next((v.shape[0] for k, v in weights.items() if k.endswith("classifier.weight") and v.ndim == 2),
                       trainer.train_split.num_train_pids)
    trainer.model = create_model(recipe.model.name, num_classes=num_classes,
                                 **{k: v for k, v in recipe.model.options.items() if k != "pretrained"})
    try:
        missing, unexpected = trainer.model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # a shape that does not fit
        detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line),
                      str(error).splitlines()[0])
        raise ReidbenchError(f"{checkpoint}: its weights do not fit model {recipe.model.name} ({detail[:200]})",
                             hint="test with the recipe the checkpoint was trained with") from error
    if missing:
        raise ReidbenchError(f"{checkpoint}: {len(missing)} weights of {recipe.model.name} are missing, "
                             f"first: {', '.join(missing[:3])}")
    trainer.model.to(trainer.device)
    features = trainer.feature_set()
    result = trainer.evaluate(features)
    save_features(out, features)
    return result, out
