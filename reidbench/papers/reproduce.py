"""Run a plan through a launcher (reidbench.launch) and turn finished runs into leaderboard rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidbench import leaderboard
from reidbench.envinfo import git_commit
from reidbench.errors import ReidbenchError
from reidbench.launch import Launcher, Outcome, Say, default_devices, make_launcher
from reidbench.papers.compare import cell_status, counted_note, counted_value, model_numbers, paper_setting
from reidbench.papers.plan import FINISHED, NO_DATA, PlannedCell, run_state
from reidbench.papers.schema import Paper, metric_kind

__all__ = ["CellRowsWriter", "Outcome", "Reproduction", "cell_rows", "collect", "default_devices", "execute",
           "plan_reproduction", "reproduce_paper", "run_reproduction"]


def execute(runs: list[Any], data_root: Path, devices: list[str], jobs: int, say: Say) -> Outcome:
    """Train every run in this process, or with jobs > 1 in subprocesses over ``devices`` (the in-process launcher)."""
    return make_launcher(jobs=jobs, devices=devices).launch(runs, data_root, say)


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


def cell_rows(paper: Paper, item: PlannedCell, commit: str) -> list[dict[str, Any]]:
    """Leaderboard rows of one planned cell: measured when all its runs finished, else "not run"."""
    cell = item.cell
    base = {"paper": paper.key, "table": cell.table.id, "row": cell.row.name, "dataset": cell.group.label,
            "updated": leaderboard.now()}
    runs = item.runs
    finished = bool(runs) and all(run_state(r.run_dir) == FINISHED for r in runs)
    if not finished:
        reason = item.reason or item.status
        if item.status == NO_DATA:
            reason = f"dataset missing: run `{item.reason}`"
        scale = runs[0].recipe.scale if runs else ""
        return [{**base, "metric": m, "reported": rep, "status": leaderboard.NOT_RUN, "scale": scale,
                 "tolerance": cell_status(paper, cell, m, rep, None, scale, False)[1], "recipe": cell.recipe or "",
                 "note": " ".join(filter(None, [reason, cell.note_for(m)]))}
                for m, rep in zip(cell.metrics, cell.reported, strict=True)]
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
    # the paper's model and setting, whatever the run's scale; GMac (an fvcore trace of the full-size model, seconds)
    # for full-scale rows and GMac cells only: reduced-scale rows are never compared
    with_gmacs = first["scale"] == "full" or "GMac" in cell.metrics
    model = model_numbers(paper_setting(cell), with_gmacs=with_gmacs)
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
               "device": first["device"], "note": cell.note_for(metric)}
        row.update({k: model.get(k) for k in ("params_M", "deploy_params_M", "gmacs", "input")})
        if metric_kind(metric) != "accuracy":
            values = [counted_value(cell, metric, model)]
            row["model"] = model["model"]  # the paper's model, which a smoke scale may have swapped
            row["note"] = " ".join(filter(None, [counted_note(cell, metric, model), row["note"]]))
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
        status, tolerance = cell_status(paper, cell, metric, reported, mean, first["scale"], bool(first["synthetic"]))
        row.update(reproduced=mean, std=std, ci95_low=low, ci95_high=high, ci_method=method,
                   delta=None if reported is None else mean - reported, status=status, tolerance=tolerance)
        rows.append(row)
    return rows


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


@dataclass
class CellRowsWriter:
    """Merges the rows of the cells a run completes, once all their runs finished; run where the run finished
    (a cluster task, on its node), so rows reach the leaderboard whoever finishes first."""

    paper: Paper
    cells: list[PlannedCell]
    csv: Path

    @property
    def labels(self) -> list[str]:
        return [item.cell.label for item in self.cells]

    def __call__(self) -> None:
        for item in self.cells:
            for run in item.runs:
                run.state = run_state(run.run_dir)
        done = [item for item in self.cells if all(run.state == FINISHED for run in item.runs)]
        if done:
            commit = git_commit()
            leaderboard.merge_rows(self.csv, [row for item in done for row in cell_rows(self.paper, item, commit)],
                                   leaderboard_order(self.paper))


def run_reproduction(result: Reproduction, *, data_root: Path, jobs: int = 1, devices: list[str] | None = None,
                     device: str = "auto", say: Say = print, launcher: Launcher | None = None) -> Reproduction:
    """Train the plan's missing runs (each once) with the launcher (default: in this process, or ``jobs``
    subprocesses), then write the leaderboard rows of every planned cell not left with a scheduler."""
    from reidbench.papers.plan import unique_runs

    if jobs < 1:
        raise ReidbenchError(f"--jobs: expected a positive integer, got {jobs}")
    leaderboard.check_writable(result.csv)  # before hours of training, not after
    launcher = launcher or make_launcher(jobs=jobs, devices=devices, device=device)
    runs = unique_runs(result.planned)
    after = {str(run.run_dir): CellRowsWriter(result.paper, [p for p in result.planned
                                                             if any(r.hash == run.hash for r in p.runs)],
                                              result.csv.absolute()) for run in runs}
    result.outcome = launcher.launch(runs, data_root, say, label=result.paper.key, after=after)
    for item in result.planned:  # states changed: read them again
        for run in item.runs:
            run.state = run_state(run.run_dir)
    submitted = set(result.outcome.submitted)  # their tasks write their rows when they finish
    remaining = [p for p in result.planned if not any(str(r.run_dir) in submitted for r in p.runs)]
    result.outcome.rows = collect(result.paper, remaining, result.csv) if remaining else []
    return result


def reproduce_paper(key: str, *, dry_run: bool = False, data_root: Path, jobs: int = 1,
                    devices: list[str] | None = None, device: str = "auto", say: Say = print,
                    launcher: Launcher | None = None, **selection: Any) -> Reproduction:
    """Plan the selected cells and, unless dry_run, train what is missing and write the leaderboard."""
    result = plan_reproduction(key, data_root=data_root, **selection)
    if dry_run:
        return result
    return run_reproduction(result, data_root=data_root, jobs=jobs, devices=devices, device=device, say=say,
                            launcher=launcher)
