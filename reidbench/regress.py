"""Regression suites: train each paper's main models on small data with fixed seeds, compare with a golden file.

A suite (``recipes/regress/<suite>.yaml``) lists cases: a recipe, a scale and ``--set`` overrides. A case's
measurements are its final metrics (R1, mAP, mINP), the last epoch's mean of every loss term and of the
weighted total that is optimised, and the deploy parameter count. The golden file
(``recipes/regress/golden-<suite>.yaml``) holds, per measurement, the value, the run-to-run spread measured
by ``--update`` (max - min over ``repeats`` runs) and the tolerance ``max(3 x spread, floor)``; the floor
covers what one machine cannot measure (other CPUs and thread counts): one query for rank metrics, fixed
points for mAP/mINP, a relative share of each loss value, nothing for parameter counts.
"""

from __future__ import annotations

import difflib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reidbench import paths
from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.launch import Launcher, make_launcher
from reidbench.recipes.loading import RECIPES_DIR, load_recipe, recipe_hash

SUITES_DIR = RECIPES_DIR / "regress"
DEFAULT_FLOORS = {"rank_queries": 1.0, "mAP": 1.0, "mINP": 1.0, "loss_relative": 0.01}


@dataclass
class Case:
    name: str
    recipe: str
    scale: str
    overrides: list[str]


@dataclass
class Suite:
    name: str
    path: Path
    repeats: int
    floors: dict[str, float]
    cases: list[Case]
    device: str = "cpu"


@dataclass
class Check:
    case: str
    metric: str
    golden: float | None
    got: float | None
    tolerance: float | None
    status: str  # pass | FAIL | skipped: reason | no golden


@dataclass
class Report:
    suite: str
    checks: list[Check] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)


def suite_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else SUITES_DIR / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.stem.startswith("golden"))
        raise ReidbenchError(f"--suite {name}: no suite file {path}", hint=f"expected one of: {', '.join(options)}")
    return path


def load_suite(name: str) -> Suite:
    path = suite_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("cases"), list) or not data["cases"]:
        raise ReidbenchError(f"{path}: expected a non-empty 'cases' list")
    cases = []
    for index, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict) or "name" not in raw or "recipe" not in raw:
            raise ReidbenchError(f"{path}: cases[{index}]: expected a mapping with name and recipe")
        cases.append(Case(raw["name"], raw["recipe"], raw.get("scale", "smoke"), list(raw.get("set") or [])))
    return Suite(data.get("suite", path.stem), path, int(data.get("repeats", 3)),
                 {**DEFAULT_FLOORS, **(data.get("floors") or {})}, cases, data.get("device", "cpu"))


def golden_path(suite: Suite) -> Path:
    return suite.path.with_name(f"golden-{suite.path.stem}.yaml")


def _missing_data(recipe: Any, data_root: Path) -> str | None:
    if recipe.data.synthetic:
        return None
    from reidbench.data.install import install_command
    from reidbench.data.verify import dataset_status

    for name in dict.fromkeys([recipe.data.train, recipe.data.test]):
        if dataset_status(name, data_root)["status"] in ("missing", "broken"):
            return f"{name} is not installed under {data_root}; run `{install_command(name, data_root)}`"
    return None


def measurements(recipe: Any, run_dir: Path) -> dict[str, float]:
    """A finished case run's metrics (%), last-epoch loss terms and deploy parameter count."""
    from reidbench.models import create_model
    from reidbench.profile import parameter_counts

    record = json.loads((run_dir / "run.json").read_text())
    values = {key: 100 * value for key, value in record["metrics"].items() if key in ("R1", "mAP", "mINP")}
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in epochs if "eval" not in e][-1]
    values.update({f"loss:{k}": v for k, v in last.items() if k not in ("epoch", "lr", "images_per_s")})
    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    # the classifier is not deployed: any class count gives the same deploy count
    _, deploy, _ = parameter_counts(create_model(recipe.model.name, **options))
    values["deploy_params"] = float(deploy)
    values["queries"] = float(record["num_valid_queries"])
    return values


def _fresh_runs(case: Case, recipe: Any, runs: Path, n: int) -> list[Any]:
    """The case's ``n`` runs, each in an emptied folder (a regression run never resumes)."""
    from reidbench.papers.plan import READY, PlannedRun
    from reidbench.recipes.loading import resolve_path

    planned = []
    for index in range(n):
        run_dir = runs / f"{case.name}-{index}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        planned.append(PlannedRun(resolve_path(case.recipe), recipe, list(case.overrides), recipe_hash(recipe),
                                  run_dir, READY))
    return planned


def _tolerance(metric: str, value: float, spread: float, floors: dict[str, float], queries: float) -> float:
    if metric == "deploy_params" or metric == "queries":
        return 0.0
    if metric.startswith("R"):
        floor = floors["rank_queries"] * 100.0 / max(1.0, queries)
    elif metric.startswith("loss:"):
        floor = floors["loss_relative"] * abs(value)
    else:
        floor = floors.get(metric, 1.0)
    return round(max(3 * spread, floor), 4)


def read_golden(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("cases", {}), dict):
        raise ReidbenchError(f"{path}: expected a golden file with a 'cases' mapping")
    return data


def run_suite(name: str, update: bool = False, data_root: Path | None = None, cases: list[str] | None = None,
              repeats: int | None = None, say: Any = print, launcher: Launcher | None = None) -> tuple[Report, str]:
    """Run a suite; compare with the golden file, or (update) measure the spread and rewrite it. The runs train
    with ``launcher`` (default: in this process, on the suite's device), which must wait for them.

    Returns the report and, for --update, the unified diff of the golden file.
    """
    from reidbench.envinfo import collect_environment, git_commit

    suite = load_suite(name)
    data_root = data_root or paths.data_root()
    golden_file = golden_path(suite)
    golden = read_golden(golden_file)
    report = Report(suite.name)
    selected = [c for c in suite.cases if cases is None or c.name in cases]
    if cases and len(selected) != len(cases):
        unknown = sorted(set(cases) - {c.name for c in suite.cases})
        raise ReidbenchError(f"--case {', '.join(unknown)}: not in suite {suite.name} "
                             f"({', '.join(c.name for c in suite.cases)})")
    measured: dict[str, Any] = {}
    runs = paths.runs_dir() / "regress" / suite.name
    planned: list[tuple[Case, Any, list[Any]]] = []
    for case in selected:
        recipe = load_recipe(case.recipe, scale=case.scale, overrides=case.overrides)
        missing = _missing_data(recipe, data_root)
        if missing:
            report.skipped[case.name] = missing
            say(f"skipped {case.name}: {missing}")
            continue
        planned.append((case, recipe, _fresh_runs(case, recipe, runs, (repeats or suite.repeats) if update else 1)))
    launcher = launcher or make_launcher(device=suite.device)
    outcome = launcher.launch([run for *_, case_runs in planned for run in case_runs], data_root, say,
                              label=f"regress-{suite.name}")
    if outcome.submitted:
        run, job = next(iter(outcome.submitted.items()))
        raise ReidbenchError(f"regress --suite {suite.name}: {Path(run).name} is in training by job {job}",
                             hint=f"wait for it or stop it with `reidbench jobs regress-{suite.name} --cancel`")
    if outcome.failed:
        run, reason = next(iter(outcome.failed.items()))
        raise ReidbenchError(f"regress --suite {suite.name}: {len(outcome.failed)} run(s) failed; "
                             f"{Path(run).name}: {reason}")
    for case, recipe, case_runs in planned:
        samples = [measurements(recipe, run.run_dir) for run in case_runs]
        digest = recipe_hash(recipe)
        if update:
            queries = samples[0]["queries"]
            entry = {}
            for metric in samples[0]:
                values = [s[metric] for s in samples]
                mean, spread = sum(values) / len(values), max(values) - min(values)
                entry[metric] = {"value": round(float(mean), 4), "spread": round(float(spread), 4),
                                 "tolerance": float(_tolerance(metric, mean, spread, suite.floors, queries))}
            measured[case.name] = {"recipe": case.recipe, "recipe_hash": digest, "metrics": entry}
            continue
        expected = (golden.get("cases") or {}).get(case.name)
        if expected is None:
            report.checks.append(Check(case.name, "*", None, None, None, "no golden"))
            continue
        if expected.get("recipe_hash") != digest:
            report.notes.append(f"{case.name}: the resolved recipe changed since the golden run "
                                f"({expected.get('recipe_hash')} -> {digest})")
        got = samples[0]
        for metric, spec in expected["metrics"].items():
            value = got.get(metric)
            ok = value is not None and abs(value - spec["value"]) <= spec["tolerance"] + 1e-9
            report.checks.append(Check(case.name, metric, spec["value"], value, spec["tolerance"],
                                       "pass" if ok else "FAIL"))
    diff = ""
    if update:
        env = collect_environment(str(data_root))
        old_text = golden_file.read_text() if golden_file.is_file() else ""
        kept = {k: v for k, v in (golden.get("cases") or {}).items() if k not in measured}
        document = {"suite": suite.name,
                    "measured": {"date": time.strftime("%Y-%m-%d"), "git_commit": git_commit(),
                                 "torch": str(env["torch"]), "device": suite.device, "threads": env["torch_threads"],
                                 "repeats": repeats or suite.repeats},
                    "cases": {**kept, **measured}}
        text = (f"# Golden values of the '{suite.name}' regression suite: written by "
                f"`reidbench regress --suite {suite.name} --update`.\n"
                "# spread = max - min over the repeats; tolerance = max(3 x spread, floor) (reidbench/regress.py).\n"
                + yaml.safe_dump(document, sort_keys=False))
        atomic_write(golden_file, lambda handle: handle.write(text.encode()))
        diff = "".join(difflib.unified_diff(old_text.splitlines(keepends=True), text.splitlines(keepends=True),
                                            str(golden_file), str(golden_file)))
    return report, diff


def render(report: Report) -> Any:
    from rich.table import Table

    table = Table(title=f"regress --suite {report.suite}")
    for column in ("case", "metric", "golden", "got", "tolerance", "result"):
        table.add_column(column, justify="right" if column in ("golden", "got", "tolerance") else "left")

    def show(value: float | None) -> str:
        return "" if value is None else f"{value:.4g}"

    for check in report.checks:
        table.add_row(check.case, check.metric, show(check.golden), show(check.got), show(check.tolerance),
                      check.status, style="red" if check.status == "FAIL" else None)
    for case, reason in report.skipped.items():
        table.add_row(case, "*", "", "", "", f"skipped: {reason}", style="yellow")
    return table
