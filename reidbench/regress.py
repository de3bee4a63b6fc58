"""Regression suites: train each paper's main models on small data with fixed seeds, compare with a golden file.

A suite (``recipes/regress/<suite>.yaml``) lists cases: a recipe and ``--set`` overrides on top of the suite's
``defaults``. A run of a case measures its final metrics (R1, mAP, mINP in %), the last epoch's mean of every
loss term and of the weighted total that is optimised, the deploy parameter count and the query and gallery
sizes.

Tolerances come from the noise a change of machine brings (docs/regression.md). ``--update`` trains every case
over the suite's seeds x thread counts, in this interpreter and in every other one named with ``--python``
(other torch versions installed side by side); the golden file (``recipes/regress/golden-<suite>.yaml``)
keeps, per measurement, the samples, their mean and standard deviation, the reference run's value and two
tolerances: ``cross_env`` (``sigmas`` x std around the mean, rank metrics in whole queries), used when the
environment differs from the golden file's ``environment``, and ``same_env`` (the suite's floors around the
reference value), used in the identical environment, where a CPU run repeats the reference run bit for bit.
Parameter, query and gallery counts must match exactly everywhere.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reidbench import paths
from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.launch import Launcher
from reidbench.recipes.loading import RECIPES_DIR, load_recipe, read_mapping, recipe_hash
from reidbench.recipes.schema import Recipe

SUITES_DIR = RECIPES_DIR / "regress"
METRICS = ("R1", "mAP", "mINP")
EXACT = ("deploy_params", "queries", "gallery")  # counts: equal in every environment
DEFAULT_FLOORS = {"rank_queries": 1.0, "mAP": 0.5, "mINP": 0.5, "loss_relative": 0.005}
TOLERANCE_MODES = ("auto", "same-env", "cross-env")
# Instruction-set flags that select different CPU kernels (x86 /proc/cpuinfo "flags", ARM "Features").
ISA_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                       "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp",
                       "sve", "sve2", "bf16", "i8mm"})
CHANCE_DRAWS = 20  # random rankings averaged for the chance level of R1 and mAP


@dataclass
class Case:
    name: str
    recipe: str
    scale: str
    overrides: list[str]

    def load(self, seed: int | None = None) -> Recipe:
        """The case's resolved recipe; ``seed`` replaces its training seed (--update's samples)."""
        extra = [] if seed is None else [f"train.seed={seed}"]
        return load_recipe(self.recipe, scale=self.scale, overrides=[*self.overrides, *extra])


@dataclass
class Suite:
    name: str
    path: Path
    cases: list[Case]
    device: str = "cpu"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    sigmas: float = 4.0
    floors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    # samples taken in each --python interpreter (another torch): by default the same seeds x threads
    other_seeds: list[int] | None = None
    other_threads: list[int] | None = None


@dataclass
class Check:
    case: str
    metric: str
    golden: float | None
    got: float | None
    tolerance: float | None
    status: str  # pass | FAIL | no golden


@dataclass
class Report:
    suite: str
    checks: list[Check] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    environment: str = ""  # one line: which tolerances apply and why

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)


def suite_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else SUITES_DIR / f"{name}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.stem.startswith("golden"))
        raise ReidbenchError(f"--suite {name}: no suite file {path}", hint=f"expected one of: {', '.join(options)}")
    return path


def _int_list(path: Path, key: str, value: Any, minimum: int) -> list[int]:
    if not (isinstance(value, list) and value and all(isinstance(v, int) and v >= minimum for v in value)):
        raise ReidbenchError(f"{path}: {key}: expected a non-empty list of integers >= {minimum}, got {value!r}")
    return value


def load_suite(name: str) -> Suite:
    path = suite_path(name)
    data = read_mapping(path)
    if not isinstance(data.get("cases"), list) or not data["cases"]:
        raise ReidbenchError(f"{path}: expected a non-empty 'cases' list")
    defaults = data.get("defaults") or {}
    cases = []
    for index, raw in enumerate(data["cases"]):
        if not isinstance(raw, dict) or "name" not in raw or "recipe" not in raw:
            raise ReidbenchError(f"{path}: cases[{index}]: expected a mapping with name and recipe")
        cases.append(Case(raw["name"], raw["recipe"], raw.get("scale", defaults.get("scale", "smoke")),
                          [*(defaults.get("set") or []), *(raw.get("set") or [])]))
    update = data.get("update") or {}
    sigmas = data.get("sigmas", 4.0)
    if not isinstance(sigmas, (int, float)) or sigmas <= 0:
        raise ReidbenchError(f"{path}: sigmas: expected a positive number, got {sigmas!r}")
    other = update.get("other_interpreters") or {}
    return Suite(data.get("suite", path.stem), path, cases, data.get("device", "cpu"),
                 _int_list(path, "update.seeds", update.get("seeds", [0, 1, 2]), 0),
                 _int_list(path, "update.threads", update.get("threads", [1, 2]), 1), float(sigmas),
                 {**DEFAULT_FLOORS, **(data.get("floors") or {})},
                 _int_list(path, "update.other_interpreters.seeds", other["seeds"], 0) if "seeds" in other else None,
                 _int_list(path, "update.other_interpreters.threads", other["threads"], 1)
                 if "threads" in other else None)


def golden_path(suite: Suite) -> Path:
    return suite.path.with_name(f"golden-{suite.path.stem}.yaml")


def read_golden(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("cases", {}), dict):
        raise ReidbenchError(f"{path}: expected a golden file with a 'cases' mapping")
    return data


# ---- environment ----

def _cpu() -> tuple[str, list[str]]:
    """The CPU model and its kernel-relevant instruction-set flags (empty where /proc/cpuinfo is absent)."""
    import platform

    model, flags = "", []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = sorted(set(value.split()) & ISA_FLAGS)
    return model or platform.processor() or platform.machine(), flags


def numerics_environment() -> dict[str, Any]:
    """What decides a CPU run's floats: library versions, CPU kernels, thread count."""
    import torch

    from reidbench.envinfo import collect_environment

    env = collect_environment()
    model, flags = _cpu()
    return {"torch": str(env["torch"]), "torchvision": str(env["torchvision"]), "numpy": str(env["numpy"]),
            "python": str(env["python"]), "cpu": model, "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "cpu_flags": " ".join(flags), "threads": int(env["torch_threads"])}


def environment_differences(golden: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [f"{key} {golden.get(key)} -> {value}" for key, value in current.items() if golden.get(key) != value]


# ---- one run ----

def _missing_data(recipe: Recipe, data_root: Path) -> str | None:
    if recipe.data.synthetic:
        return None
    from reidbench.data.install import install_command
    from reidbench.data.verify import dataset_status

    for name in dict.fromkeys([recipe.data.train, recipe.data.test]):
        if dataset_status(name, data_root)["status"] in ("missing", "broken"):
            return f"{name} is not installed under {data_root}; run `{install_command(name, data_root)}`"
    return None


def chance_levels(split: Any, draws: int = CHANCE_DRAWS) -> dict[str, float]:
    """R1 and mAP (%) of a random ranking of this query/gallery split under its protocol (mean of draws)."""
    import numpy as np

    from reidbench.evaluation import evaluate

    ids = {name: (np.array([r.pid for r in records]), np.array([r.camid for r in records]))
           for name, records in (("query", split.query), ("gallery", split.gallery))}
    (q_pids, q_cams), (g_pids, g_cams) = ids["query"], ids["gallery"]
    rng = np.random.default_rng(0)
    results = [evaluate(rng.random((len(q_pids), len(g_pids)), dtype=np.float32), q_pids, g_pids, q_cams, g_cams,
                        protocol=split.protocol) for _ in range(draws)]
    return {"R1": round(100 * statistics.fmean(r.rank(1) for r in results), 2),
            "mAP": round(100 * statistics.fmean(r.mAP for r in results), 2)}


def read_measurements(recipe: Recipe, run_dir: Path, data_root: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """A finished run's measurements, read from its folder (wherever it trained), and the chance levels of its
    query/gallery split."""
    from reidbench.engine.build import load_split
    from reidbench.evaluation.features import load_features
    from reidbench.models import create_model
    from reidbench.profile import parameter_counts

    record = json.loads((run_dir / "run.json").read_text())
    values = {key: 100 * value for key, value in record["metrics"].items() if key in METRICS}
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in epochs if "eval" not in e][-1]
    values.update({f"loss:{k}": v for k, v in last.items() if k not in ("epoch", "lr", "images_per_s")})
    options = {k: v for k, v in recipe.model.options.items() if k != "pretrained"}
    # the classifier is not deployed: any class count gives the same deploy count
    _, deploy, _ = parameter_counts(create_model(recipe.model.name, **options))
    split = load_split(recipe, "test", data_root)
    # the mean L2 norm of the query features as the model outputs them (before any normalisation by the
    # evaluation): a wrong test feature (e.g. a neck bypassed) can rank almost alike yet changes its scale
    features = load_features(run_dir / "features.pt")
    values["feature_norm"] = float(features.query_features.float().norm(dim=1).mean())
    values["deploy_params"] = float(deploy)
    values["queries"] = float(record["num_valid_queries"])
    values["gallery"] = float(len(split.gallery))
    return values, {"chance": chance_levels(split)}


def measure(recipe: Recipe, run_dir: Path, data_root: Path, device: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Train once in this process, in a fresh folder: the measurements, and facts about the run (wall and CPU
    seconds of all threads, chance levels)."""
    import torch

    from reidbench.engine.trainer import Trainer

    if run_dir.exists():
        shutil.rmtree(run_dir)
    threads = torch.get_num_threads()
    start, cpu_start = time.perf_counter(), time.process_time()
    Trainer(recipe, run_dir=run_dir, device=device, data_root=data_root, quiet=True).run()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # numba's OpenMP layer (the evaluation) resets the OpenMP thread count torch shares: the next run keeps ours
    torch.set_num_threads(threads)
    values, info = read_measurements(recipe, run_dir, data_root)
    return values, {**info, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)}


def _launch_cases(planned: list[tuple[Case, Recipe]], runs: Path, data_root: Path, launcher: Launcher, suite: Suite,
                  say: Any) -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
    """Train every case with a launcher (a cluster, subprocesses) that waits for them; their measurements."""
    from reidbench.papers.plan import READY, PlannedRun
    from reidbench.recipes.loading import resolve_path

    planned_runs = []
    for case, recipe in planned:
        run_dir = runs / case.name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a regression run never resumes
        planned_runs.append(PlannedRun(resolve_path(case.recipe), recipe, list(case.overrides), recipe_hash(recipe),
                                       run_dir, READY))
    outcome = launcher.launch(planned_runs, data_root, say, label=f"regress-{suite.name}")
    if outcome.submitted:
        run, job = next(iter(outcome.submitted.items()))
        raise ReidbenchError(f"regress --suite {suite.name}: {Path(run).name} is in training by job {job}",
                             hint=f"wait for it or stop it with `reidbench jobs regress-{suite.name} --cancel`")
    if outcome.failed:
        run, reason = next(iter(outcome.failed.items()))
        raise ReidbenchError(f"regress --suite {suite.name}: {len(outcome.failed)} run(s) failed; "
                             f"{Path(run).name}: {reason}")
    return {case.name: read_measurements(recipe, runs / case.name, data_root) for case, recipe in planned}


# ---- tolerances and comparison ----

def tolerances(metric: str, reference: float, std: float, queries: float, suite: Suite) -> tuple[float, float]:
    """(same-environment, cross-environment) tolerance of one measurement."""
    if metric in EXACT:
        return 0.0, 0.0
    if metric.startswith("R"):
        query = 100.0 / max(1.0, queries)
        floor = suite.floors["rank_queries"] * query
        cross = math.ceil(suite.sigmas * std / query - 1e-9) * query
    else:
        floor = suite.floors["loss_relative"] * abs(reference) if metric.startswith("loss:") \
            else suite.floors.get(metric, DEFAULT_FLOORS["mAP"])
        cross = suite.sigmas * std
    return significant(floor), significant(max(floor, cross))


def summarize(metric: str, samples: list[float], reference: float, queries: float, suite: Suite) -> dict[str, Any]:
    std = statistics.stdev(samples) if len(samples) > 1 else 0.0
    same, cross = tolerances(metric, reference, std, queries, suite)
    if metric in EXACT:  # counts: kept whole
        return {"reference": reference, "mean": statistics.fmean(samples), "std": std, "same_env": same,
                "cross_env": cross, "samples": samples}
    return {"reference": significant(reference), "mean": significant(statistics.fmean(samples)),
            "std": significant(std), "same_env": same, "cross_env": cross, "samples": [significant(s) for s in samples]}


def significant(value: float, digits: int = 6) -> float:
    """``value`` to ``digits`` significant digits: small losses (MHSA-Net's ACM term is ~6e-5) keep their
    precision in the golden file, where a fixed number of decimals would round them to 0.0001."""
    return float(f"{value:.{digits}g}")


def compare(case: str, expected: dict[str, Any], got: dict[str, float], same_env: bool,
            sample: int | None = None) -> list[Check]:
    """Each measurement against the golden entry: around the reference run (or the golden sample at index
    ``sample``, a run of the same environment at another thread count) with the same-environment tolerance,
    or around the mean with the cross-environment one."""
    checks = []
    for metric, spec in expected["metrics"].items():
        if same_env:
            center = spec["reference"] if sample is None else spec["samples"][sample]
            tolerance = spec["same_env"]
        else:
            center, tolerance = spec["mean"], spec["cross_env"]
        value = got.get(metric)
        ok = value is not None and abs(value - center) <= tolerance + 1e-9
        checks.append(Check(case, metric, center, value, tolerance, "pass" if ok else "FAIL"))
    return checks


# ---- --update's samples ----

def training_code_hash() -> str:
    """A digest of the package's source, except the suite runner and the CLI: what a sample's numbers depend on."""
    import hashlib

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative == "regress.py" or relative.startswith("cli/"):
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _sample_here(case: Case, seed: int, threads: int, run_dir: Path, data_root: Path,
                 device: str) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        environment = numerics_environment()
        values, info = measure(case.load(seed), run_dir, data_root, device)
        return values, info, environment
    finally:
        torch.set_num_threads(before)


def _sample_in(python: str, suite: Suite, case: Case, seed: int, threads: int, run_dir: Path,
               data_root: Path) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
    """One sample in another interpreter (another torch) running this checkout's code."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    command = [python, "-m", "reidbench.regress", "--suite", str(suite.path), "--case", case.name,
               "--seed", str(seed), "--threads", str(threads), "--run-dir", str(run_dir),
               "--data-root", str(data_root)]
    try:
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    except OSError as error:
        raise ReidbenchError(f"--python {python}: cannot run it ({error.strerror})") from error
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReidbenchError(f"--python {python}: the sample of {case.name} (seed {seed}, {threads} threads) "
                             f"failed: {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["values"], result["info"], result["environment"]


def _render_data(recipes: list[Recipe], data_root: Path) -> None:
    """Each case's synthetic miniature rendered here, once, before runs start in parallel processes (which would
    race to write it)."""
    from reidbench.engine.build import load_split

    for recipe in recipes:
        for which in ("train", "test"):
            load_split(recipe, which, data_root)


def _update(suite: Suite, cases: list[Case], pythons: list[str], runs: Path, data_root: Path, jobs: int,
            say: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Every sample of every case (``jobs`` at a time, each in its own process when jobs > 1).

    Returns the golden entry per case, the reference runs' environment and the sample labels.
    """
    import torch

    reference_threads = torch.get_num_threads()
    recipes = {case.name: case.load() for case in cases}  # each case's own recipe (its seed), resolved once
    tasks = []
    # this interpreter's samples of every case first, then each other interpreter's
    for python in [None, *pythons]:
        for case in cases:
            reference = (case.name, None, reference_threads, recipes[case.name].train.seed)
            seeds = suite.seeds if python is None else suite.other_seeds or suite.seeds
            thread_counts = suite.threads if python is None else suite.other_threads or suite.threads
            plan = [(case.name, python, threads, seed) for threads in thread_counts for seed in seeds]
            tasks += ([] if python is not None or reference in plan else [reference]) + plan
    by_name = {case.name: case for case in cases}
    position = {task: index for index, task in enumerate(tasks)}  # each sample's own run folder
    # finished samples survive an interrupted --update: keyed by the training code, recipe, interpreter, threads
    cache_file = runs / "update-samples.jsonl"
    code = training_code_hash()
    cached = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            try:
                entry = json.loads(line)
                cached[entry["key"]] = tuple(entry["result"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by the interruption
    lock = threading.Lock()

    def sample(task: tuple[str, str | None, int, int]) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
        name, python, threads, seed = task
        interpreter = f"--python {python}" if python else f"this interpreter {sys.executable}"
        key = "|".join([code, name, recipe_hash(by_name[name].load(seed)), interpreter, str(threads), str(seed)])
        if key in cached:
            say(f"{name}: {threads} threads, seed {seed}, {python or 'this interpreter'}: sampled before (kept)")
            return cached[key]
        run_dir = runs / f"{name}-update-{position[task]}"
        start = time.perf_counter()
        if python is None and jobs == 1:
            result = _sample_here(by_name[name], seed, threads, run_dir, data_root, suite.device)
        else:
            result = _sample_in(python or sys.executable, suite, by_name[name], seed, threads, run_dir, data_root)
        shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of big models add up over the samples
        with lock:
            with cache_file.open("a") as handle:
                handle.write(json.dumps({"key": key, "result": list(result)}) + "\n")
        say(f"{name}: torch {result[2]['torch']}, {threads} threads, seed {seed}: mAP {result[0]['mAP']:.2f} "
            f"in {time.perf_counter() - start:.0f} s")
        return result

    _render_data(list(recipes.values()), data_root)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(zip(tasks, pool.map(sample, tasks), strict=True))
    measured, environment, labels = {}, {}, []
    for case in cases:
        mine = [(task, result) for task, result in results.items() if task[0] == case.name]
        reference = next(result for task, result in mine
                         if task[1:] == (None, reference_threads, recipes[case.name].train.seed))
        values, info, environment = reference
        labels = [f"torch {result[2]['torch']}, {task[2]} threads, seed {task[3]}" for task, result in mine]
        metrics = {metric: summarize(metric, [result[0][metric] for _, result in mine], values[metric],
                                     values["queries"], suite) for metric in values}
        measured[case.name] = {"recipe": case.recipe, "recipe_hash": recipe_hash(recipes[case.name]),
                               "cpu_seconds": info["cpu_seconds"], "queries": int(values["queries"]),
                               "gallery": int(values["gallery"]), "chance": info["chance"], "metrics": metrics}
    return measured, environment, labels


GOLDEN_HEADER = """\
# Golden values of the '{suite}' regression suite: written by `reidbench regress --suite {suite} --update`.
# Per case: CPU seconds of the reference run (all threads), query and gallery sizes, the chance level of R1
# and mAP (%, random rankings of this split), and per measurement: the reference run's value (first seed, the
# interpreter and thread count of `environment`), the samples over measured.samples (seeds x threads x torch
# versions), their mean and standard deviation, same_env (the suite's floors, around the reference, used when
# the environment is identical) and cross_env (measured.sigmas x std, at least the floor, rank metrics in
# whole queries, around the mean, used otherwise). See docs/regression.md.
"""


def _write_golden(suite: Suite, golden: dict[str, Any], measured: dict[str, Any], environment: dict[str, Any],
                  labels: list[str], pythons: list[str]) -> str:
    from reidbench.envinfo import git_commit

    path = golden_path(suite)
    old_text = path.read_text() if path.is_file() else ""
    # cases of the suite not sampled this time keep their entries; cases no longer in the suite are dropped
    in_suite = {case.name for case in suite.cases}
    kept = {k: v for k, v in (golden.get("cases") or {}).items() if k not in measured and k in in_suite}
    document = {"suite": suite.name, "environment": environment,
                "measured": {"date": time.strftime("%Y-%m-%d"), "git_commit": git_commit(), "device": suite.device,
                             "seeds": suite.seeds, "threads": suite.threads,
                             "torch": sorted({label.split(",")[0].removeprefix("torch ") for label in labels}),
                             "other_interpreters": pythons, "sigmas": suite.sigmas, "samples": labels},
                "cases": {**kept, **measured}}
    text = GOLDEN_HEADER.format(suite=suite.name) + yaml.safe_dump(document, sort_keys=False, width=120)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return "".join(difflib.unified_diff(old_text.splitlines(keepends=True), text.splitlines(keepends=True),
                                        str(path), str(path)))


def run_suite(name: str, update: bool = False, data_root: Path | None = None, cases: list[str] | None = None,
              tolerance_mode: str = "auto", pythons: list[str] | None = None, jobs: int = 1,
              say: Any = print, launcher: Launcher | None = None) -> tuple[Report, str]:
    """Run a suite and compare with the golden file, or (update) sample the noise and rewrite it.

    The comparison trains each case in this process, or with ``launcher`` (a cluster, subprocesses), which must
    wait for the runs. Returns the report and, for --update, the unified diff of the golden file.
    """
    if update and launcher is not None:
        raise ReidbenchError(f"--launcher {launcher.name}: not with --update, whose samples set thread counts and "
                             "interpreters on this machine", hint="run --update without --launcher")
    if tolerance_mode not in TOLERANCE_MODES:
        raise ReidbenchError(f"--tolerances: expected one of {', '.join(TOLERANCE_MODES)}, got {tolerance_mode!r}")
    suite = load_suite(name)
    data_root = data_root or paths.data_root()
    golden = read_golden(golden_path(suite))
    report = Report(suite.name)
    selected = [c for c in suite.cases if cases is None or c.name in cases]
    if cases and len(selected) != len(set(cases)):
        unknown = sorted(set(cases) - {c.name for c in suite.cases})
        raise ReidbenchError(f"--case {', '.join(unknown)}: not in suite {suite.name} "
                             f"({', '.join(c.name for c in suite.cases)})")
    runs = paths.runs_dir() / "regress" / suite.name
    current = numerics_environment()
    differences = environment_differences(golden.get("environment") or {}, current)
    same_env = tolerance_mode == "same-env" or (tolerance_mode == "auto" and not differences)
    parallel = jobs > 1 and launcher is None and not update  # its processes' environment decides, per case
    if not update and not parallel:
        if not differences:
            report.environment = "environment identical to the golden run's: same-environment tolerances"
        else:
            report.environment = (f"environment differs from the golden run's ({'; '.join(differences)}): "
                                  f"cross-environment tolerances ({suite.sigmas:g} x std over seeds, threads "
                                  "and torch versions)")
        if tolerance_mode != "auto":
            report.environment += f"; --tolerances {tolerance_mode} applies"
        say(report.environment)
    runnable: list[tuple[Case, Recipe]] = []
    for case in selected:
        recipe = case.load()
        missing = _missing_data(recipe, data_root)
        if missing:
            report.skipped[case.name] = missing
            say(f"skipped {case.name}: {missing}")
            continue
        runnable.append((case, recipe))
    diff = ""
    if update:
        if runnable:
            measured, environment, labels = _update(suite, [case for case, _ in runnable], pythons or [], runs,
                                                    data_root, jobs, say)
            diff = _write_golden(suite, golden, measured, environment, labels, pythons or [])
        return report, diff
    if parallel:
        return _compare_in_parallel(suite, golden, runnable, runs, data_root, jobs, tolerance_mode, report, say), diff
    launched = _launch_cases(runnable, runs, data_root, launcher, suite, say) if launcher is not None else {}
    for case, recipe in runnable:
        if launcher is None:
            got, info = measure(recipe, runs / case.name, data_root, suite.device)
            say(f"{case.name}: trained and evaluated in {info['seconds']:.0f} s")
        else:
            got, info = launched[case.name]
        _check_case(report, golden, case, recipe, got, same_env)
    return report, diff


def _check_case(report: Report, golden: dict[str, Any], case: Case, recipe: Recipe, got: dict[str, float],
                same_env: bool, sample: int | None = None) -> None:
    expected = (golden.get("cases") or {}).get(case.name)
    if expected is None:
        report.checks.append(Check(case.name, "*", None, None, None, "no golden"))
        return
    digest = recipe_hash(recipe)
    if expected.get("recipe_hash") != digest:
        report.notes.append(f"{case.name}: the resolved recipe changed since the golden run "
                            f"({expected.get('recipe_hash')} -> {digest})")
    report.checks += compare(case.name, expected, got, same_env, sample)


def golden_sample_index(golden: dict[str, Any], case: str, torch_version: str, threads: int,
                        seed: int) -> int | None:
    """Where the golden file keeps the sample of ``case`` taken with this torch, thread count and seed (the
    labels of ``measured.samples``, in the order of every case's ``samples``); None when it has none."""
    label = f"torch {torch_version}, {threads} threads, seed {seed}"
    labels = (golden.get("measured") or {}).get("samples") or []
    if label not in labels:
        return None
    index = labels.index(label)
    metrics = ((golden.get("cases") or {}).get(case) or {}).get("metrics") or {}
    return index if all(len(spec.get("samples", [])) == len(labels) for spec in metrics.values()) else None


def _compare_in_parallel(suite: Suite, golden: dict[str, Any], runnable: list[tuple[Case, Recipe]], runs: Path,
                         data_root: Path, jobs: int, tolerance_mode: str, report: Report, say: Any) -> Report:
    """``jobs`` cases at a time, each in its own process with cores / jobs threads (docs/regression.md). A case
    whose environment differs from the golden one only in the thread count is compared, with the same-environment
    tolerances, with the golden sample of that thread count and its seed, which it repeats bit for bit."""
    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    _render_data([recipe for _case, recipe in runnable], data_root)

    def one(item: tuple[Case, Recipe]) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
        case, recipe = item
        result = _sample_in(sys.executable, suite, case, recipe.train.seed, threads, runs / case.name, data_root)
        say(f"{case.name}: trained and evaluated in {result[1]['seconds']:.0f} s ({threads} threads)")
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, runnable))
    lines = set()
    for (case, recipe), (got, _info, environment) in zip(runnable, results, strict=True):
        others = [d for d in environment_differences(golden.get("environment") or {}, environment)
                  if not d.startswith("threads ")]
        sample = golden_sample_index(golden, case.name, environment["torch"], threads, recipe.train.seed)
        same_env = tolerance_mode == "same-env" or (tolerance_mode == "auto" and not others and sample is not None)
        around = f"the golden {threads}-thread samples" if sample is not None else "the golden reference runs"
        lines.add(f"{jobs} cases at a time, {threads} thread(s) each: "
                  + (f"same-environment tolerances around {around}" if same_env else
                     f"cross-environment tolerances ({'; '.join(others) or f'no golden {threads}-thread sample'})"))
        _check_case(report, golden, case, recipe, got, same_env, sample)
    report.environment = "; ".join(sorted(lines))
    say(report.environment)
    return report


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


def _sample_main(argv: list[str] | None = None) -> None:
    """``python -m reidbench.regress``: one --update sample in this interpreter, as one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m reidbench.regress", description=_sample_main.__doc__)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    case = next((c for c in suite.cases if c.name == args.case), None)
    if case is None:
        raise SystemExit(f"--case {args.case}: not in suite {suite.name}")
    values, info, environment = _sample_here(case, args.seed, args.threads, args.run_dir, args.data_root,
                                             suite.device)
    sys.stdout.write(json.dumps({"values": values, "info": info, "environment": environment}) + "\n")


if __name__ == "__main__":
    _sample_main()
