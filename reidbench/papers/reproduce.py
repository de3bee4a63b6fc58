"""Run a plan (in this process, or one subprocess per device) and turn finished runs into leaderboard rows."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidbench import leaderboard
from reidbench.envinfo import git_commit
from reidbench.errors import ReidbenchError
from reidbench.papers.plan import FINISHED, NO_DATA, RESUME, PlannedCell, PlannedRun, run_state
from reidbench.papers.schema import Paper

Say = Callable[[str], None]


@dataclass
class Outcome:
    trained: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run folder -> reason
    rows: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[PlannedCell] = field(default_factory=list)


def _train_in_process(run: PlannedRun, device: str, data_root: Path) -> None:
    from reidbench.engine.trainer import Trainer

    Trainer(run.recipe, run_dir=run.run_dir, device=device, data_root=data_root,
            resume=run.state == RESUME, quiet=True).run()


def _train_subprocess(run: PlannedRun, device: str, data_root: Path) -> None:
    cmd = [sys.executable, "-m", "reidbench", "--data-root", str(data_root), "train", str(run.recipe_file),
           "--scale", run.recipe.scale, "--device", device,
           *[a for o in run.base_overrides for a in ("--base-set", o)],
           *[a for o in run.overrides for a in ("--set", o)]]
    cmd += ["--resume", str(run.run_dir)] if run.state == RESUME else ["--run-dir", str(run.run_dir)]
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run.run_dir.parent / f"{run.run_dir.name}.log"
    with open(log, "w") as handle:
        code = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise ReidbenchError(f"{run.run_dir.name}: training exited with code {code}: {tail[0]}",
                             hint=f"full log: {log}")


def execute(runs: list[PlannedRun], data_root: Path, devices: list[str], jobs: int, say: Say) -> Outcome:
    """Train every run; with jobs > 1, one subprocess per device at a time (devices are reused in turn)."""
    outcome = Outcome()
    total = len(runs)

    def one(index: int, run: PlannedRun, device: str, in_process: bool) -> None:
        start = time.perf_counter()
        verb = "resuming" if run.state == RESUME else "training"
        say(f"[{index}/{total}] {verb} {run.run_dir.name} on {device}")
        try:
            (_train_in_process if in_process else _train_subprocess)(run, device, data_root)
        except ReidbenchError as error:
            outcome.failed[str(run.run_dir)] = error.message
            say(f"[{index}/{total}] failed {run.run_dir.name}: {error.message}")
            return
        outcome.trained.append(str(run.run_dir))
        say(f"[{index}/{total}] finished {run.run_dir.name} in {time.perf_counter() - start:.0f} s")

    if jobs <= 1:
        for index, run in enumerate(runs, 1):
            one(index, run, devices[0], in_process=True)
        return outcome
    # parallel runs would race to generate the same synthetic miniature: generate each once, here
    from reidbench.engine.build import load_split

    for run in runs:
        if run.recipe.data.synthetic:
            load_split(run.recipe, "train", data_root)
            load_split(run.recipe, "test", data_root)
    free: queue.Queue[str] = queue.Queue()
    for slot in range(jobs):
        free.put(devices[slot % len(devices)])

    def task(index: int, run: PlannedRun) -> None:
        device = free.get()
        try:
            one(index, run, device, in_process=False)
        finally:
            free.put(device)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(task, i, run) for i, run in enumerate(runs, 1)]:
            future.result()
    return outcome


# ---- rows ------------------------------------------------------------------------------------

def _scores(result: Any) -> dict[str, np.ndarray]:
    """Per-query scores (in %) of an evaluation, for the bootstrap interval."""
    valid = result.first_hit >= 0
    scores = {"mAP": result.ap[valid] * 100, "mINP": result.inp[valid] * 100}
    for k in (1, 3, 5, 10):
        scores[f"R{k}"] = (result.first_hit[valid] < k).astype(float) * 100
    return scores


def _reevaluate(run_dir: Path, settings: Any) -> Any:
    from reidbench.engine.features import evaluate_features
    from reidbench.evaluation.features import load_features

    try:
        return evaluate_features(load_features(run_dir / "features.pt"), settings)
    except ValueError as error:  # a damaged or foreign features file in the run folder
        raise ReidbenchError(str(error), hint=f"remove {run_dir} to train the cell again") from error


def _per_query(run_dir: Path, recipe: Any, record: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-query scores (in %) of a finished run, re-evaluated from its features exactly as the run did."""
    result = _reevaluate(run_dir, recipe.eval)
    if abs(result.summary()["mAP"] - record["metrics"]["mAP"]) > 1e-6:
        raise ReidbenchError(f"{run_dir}: re-evaluating features.pt gives mAP {result.summary()['mAP']:.6f}, "
                             f"run.json says {record['metrics']['mAP']:.6f}; the run folder was changed")
    return _scores(result)


def _model_numbers(recipe: Any, num_classes: int) -> dict[str, Any]:
    from reidbench.models import create_model
    from reidbench.profile import parameter_counts, profile_config

    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    total, deploy, _ = parameter_counts(create_model(recipe.model.name, num_classes=num_classes, **options))
    profile = profile_config(recipe.model.name, options, (recipe.data.height, recipe.data.width))
    return {"params_M": total / 1e6, "deploy_params_M": deploy / 1e6, "gmacs": profile.gmacs,
            "input": f"{recipe.data.height}x{recipe.data.width}"}


def cell_rows(paper: Paper, item: PlannedCell, commit: str) -> list[dict[str, Any]]:
    """Leaderboard rows of one planned cell: measured when all its runs finished, else "not run"."""
    cell = item.cell
    base = {"paper": paper.key, "table": cell.table.id, "row": cell.row.name, "dataset": cell.group.label,
            "tolerance": paper.tolerance, "updated": leaderboard.now()}
    runs = item.runs
    finished = bool(runs) and all(run_state(r.run_dir) == FINISHED for r in runs)
    if not finished:
        reason = item.reason or item.status
        if item.status == NO_DATA:
            reason = f"dataset missing: run `{item.reason}`"
        scale = runs[0].recipe.scale if runs else ""
        return [{**base, "metric": m, "reported": rep, "status": leaderboard.NOT_RUN, "scale": scale,
                 "recipe": cell.recipe or "", "note": " ".join(filter(None, [reason, cell.row.note_for(
                     cell.group.key, m)]))} for m, rep in zip(cell.metrics, cell.reported, strict=True)]
    records = [json.loads((r.run_dir / "run.json").read_text()) for r in runs]
    first, recipe = records[0], runs[0].recipe
    eval_settings = dict(first["eval_settings"])
    if item.evaluation is not None:  # the row's own eval settings on the shared runs' features
        results = [_reevaluate(r.run_dir, item.evaluation) for r in runs]
        measured = [res.summary() for res in results]
        per_query = _scores(results[0]) if len(runs) == 1 else None
        eval_settings.update(metric=item.evaluation.metric, normalize=item.evaluation.normalize,
                             rerank=asdict(item.evaluation.rerank) if item.evaluation.rerank.enabled else None)
    else:
        measured = [r["metrics"] for r in records]
        per_query = _per_query(runs[0].run_dir, recipe, first) if len(runs) == 1 else None
    model = _model_numbers(recipe, _num_classes(runs[0].run_dir, recipe))
    rerank = eval_settings.get("rerank") or {}
    env = first.get("environment", {})
    rows = []
    for metric, reported in zip(cell.metrics, cell.reported, strict=True):
        row = {**base, "metric": metric, "reported": reported, "scale": first["scale"],
               "synthetic": first["synthetic"], "seeds": " ".join(str(r["seed"]) for r in records),
               "run_ids": " ".join(r["run_id"] for r in records), "git_commit": commit, "recipe": cell.recipe,
               "model": first["model"],
               "recipe_hash": " ".join(r["recipe_hash"] for r in records),
               "distance": eval_settings["metric"] + (" + DMLI local" if eval_settings.get("local_feature") else ""),
               "normalize": eval_settings["normalize"],
               "rerank_k1": rerank.get("k1"), "rerank_k2": rerank.get("k2"),
               "rerank_lambda_value": rerank.get("lambda_value"), "precision": first["precision"],
               "pretrained": first["pretrained"], "torch": env.get("torch"), "cuda": env.get("cuda_version") or "",
               "device": first["device"], "note": cell.row.note_for(cell.group.key, metric)}
        row.update(model)
        if metric == "params_M":
            values = [model["params_M"]]
        else:
            values = [100 * m[metric] for m in measured]
        mean = float(np.mean(values))
        if len(values) > 1:
            std, low, high = leaderboard.seed_interval(values)
            method = f"t over {len(values)} seeds"
        elif per_query is not None and metric in per_query:
            std, low, high = leaderboard.bootstrap_interval(per_query[metric])
            method = f"bootstrap over {len(per_query[metric])} queries"
        else:
            std = low = high = float("nan")
            method = ""
        row.update(reproduced=mean, std=std, ci95_low=low, ci95_high=high, ci_method=method,
                   delta=None if reported is None else mean - reported,
                   status=leaderboard.status_of(reported, mean, paper.tolerance, first["scale"],
                                                bool(first["synthetic"])))
        rows.append(row)
    return rows


def _num_classes(run_dir: Path, recipe: Any) -> int:
    """The class count the run trained with, read at the model's classifiers (the model contract)."""
    from reidbench.engine.checkpoint import load_checkpoint
    from reidbench.models import create_model
    from reidbench.models.contract import num_classes_of

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    found = num_classes_of(state["model"], create_model(recipe.model.name, **options))
    if found is None:
        raise ReidbenchError(f"{run_dir}: the checkpoint holds no classifier of model {recipe.model.name}")
    return found


def leaderboard_order(paper: Paper) -> Callable[[dict[str, str]], tuple]:
    """Sort key following the paper: table, row, dataset group, metric order; then scale."""
    index: dict[tuple[str, str, str, str], tuple[int, int, int, int]] = {}
    for t, table in enumerate(paper.tables):
        for r, row in enumerate(table.rows):
            for g, key in enumerate(table.groups):
                for m, metric in enumerate(table.metrics):
                    index[(table.id, row.name, paper.datasets[key].label, metric)] = (t, r, g, m)
    scales = {"full": 0, "small": 1, "smoke": 2}

    def key(row: dict[str, str]) -> tuple:
        where = index.get((row["table"], row["row"], row["dataset"], row["metric"]), (999, 0, 0, 0))
        return (*where, scales.get(row["scale"], 3))

    return key


def collect(paper: Paper, planned: list[PlannedCell], out: Path) -> list[dict[str, Any]]:
    """Rows for every planned cell except pure citations, merged into the paper's leaderboard CSV."""
    commit = git_commit()
    rows = [row for item in planned if item.status != "cited" for row in cell_rows(paper, item, commit)]
    leaderboard.merge_rows(out, rows, leaderboard_order(paper))
    return rows


@dataclass
class Reproduction:
    paper: Paper
    planned: list[PlannedCell]
    csv: Path
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def blocked(self) -> list[PlannedCell]:
        return [p for p in self.planned if p.status == NO_DATA]


def default_devices(device: str, jobs: int) -> list[str]:
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if jobs > 1 else ["cuda"]
    return ["cpu" if device == "auto" else device]


def plan_reproduction(key: str, *, table: str | None = None, row: str | None = None, dataset: str | None = None,
                      scale: str = "full", seeds: int = 1, data_root: Path, runs_root: Path | None = None,
                      overrides: list[str] | None = None, ablation_only: bool = False,
                      csv: Path | None = None) -> Reproduction:
    """Select and plan the cells of a paper (nothing is trained)."""
    from reidbench import paths
    from reidbench.papers.loading import load_paper, select_cells
    from reidbench.papers.plan import plan_cells

    paper = load_paper(key)
    cells = select_cells(paper, table, row, dataset, ablation_only=ablation_only)
    planned = plan_cells(cells, scale, seeds, data_root, runs_root or paths.runs_dir() / "reproduce", overrides)
    return Reproduction(paper, planned, csv or leaderboard.leaderboard_path(paper.key, scale=scale))


def run_reproduction(result: Reproduction, *, data_root: Path, jobs: int = 1, devices: list[str] | None = None,
                     device: str = "auto", say: Say = print) -> Reproduction:
    """Train the plan's missing runs (each once), then write every planned cell's leaderboard rows."""
    from reidbench.engine.build import resolve_device
    from reidbench.papers.plan import unique_runs

    if jobs < 1:
        raise ReidbenchError(f"--jobs: expected a positive integer, got {jobs}")
    leaderboard.check_writable(result.csv)  # before hours of training, not after
    devices = devices or default_devices(device, jobs)
    for name in devices:
        resolve_device(name)
    result.outcome = execute(unique_runs(result.planned), data_root, devices, jobs, say)
    for item in result.planned:  # states changed: read them again
        for run in item.runs:
            run.state = run_state(run.run_dir)
    result.outcome.rows = collect(result.paper, result.planned, result.csv)
    return result


def reproduce_paper(key: str, *, dry_run: bool = False, data_root: Path, jobs: int = 1,
                    devices: list[str] | None = None, device: str = "auto", say: Say = print,
                    **selection: Any) -> Reproduction:
    """Plan the selected cells and, unless dry_run, train what is missing and write the leaderboard."""
    result = plan_reproduction(key, data_root=data_root, **selection)
    if dry_run:
        return result
    return run_reproduction(result, data_root=data_root, jobs=jobs, devices=devices, device=device, say=say)
