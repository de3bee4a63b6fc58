"""Plan a reproduction: which cells can run, on which data, in which run folder, at what cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reidbench.data.install import install_command
from reidbench.data.registry import get_dataset
from reidbench.data.verify import dataset_status
from reidbench.errors import ReidbenchError
from reidbench.models import list_models
from reidbench.papers.schema import Cell
from reidbench.recipes.loading import load_recipe, recipe_hash, resolve_path
from reidbench.recipes.schema import EvalSection, Recipe

# Cell states. Only READY and RESUME cells train; FINISHED cells are read back.
READY, RESUME, FINISHED = "to run", "resume", "finished"
CITED, NO_MODEL, NO_RECIPE, NO_DATA = "cited", "model not available", "no recipe", "dataset missing"


@dataclass
class PlannedRun:
    """One training run (one seed of one recipe); several cells may share it (same hash)."""

    recipe_file: Path
    recipe: Recipe
    overrides: list[str]
    hash: str
    run_dir: Path
    state: str
    base_overrides: list[str] = field(default_factory=list)  # a paper row's set:, applied before the scale

    @property
    def seed(self) -> int:
        return self.recipe.train.seed


@dataclass
class PlannedCell:
    cell: Cell
    status: str
    reason: str = ""
    runs: list[PlannedRun] = field(default_factory=list)
    data: str = ""
    cost_tmac: float | None = None  # training compute estimate: 3 x forward MACs x images x epochs
    evaluation: EvalSection | None = None  # the row's own eval settings, applied to the runs' features

    @property
    def runnable(self) -> bool:
        return self.status in (READY, RESUME, FINISHED)


def find_run_dir(runs_root: Path, recipe: Recipe, digest: str) -> Path:
    """The folder of the run with this hash: an existing one (any name), else a new readable name."""
    existing = sorted(runs_root.glob(f"*-{digest}"))
    if existing:
        return existing[0]
    return runs_root / f"{recipe.name}-{recipe.scale}-s{recipe.train.seed}-{digest}"


def _record_status(record: Path) -> str | None:
    import json

    try:
        data = json.loads(record.read_text())
    except ValueError:
        return None  # a damaged run record: the run does not count as finished
    return data.get("status") if isinstance(data, dict) else None


def run_state(run_dir: Path) -> str:
    record = run_dir / "run.json"
    if record.is_file() and (run_dir / "features.pt").is_file() and _record_status(record) == "finished":
        return FINISHED
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return RESUME
    return READY


def train_images(recipe: Recipe) -> int:
    """Training images per epoch: the synthetic miniature's, or the dataset's (subset applied)."""
    data = recipe.data
    if data.synthetic:
        return data.synthetic_ids * data.synthetic_images_per_id
    spec = get_dataset(data.train)
    train = spec.variant(data.variant).train
    if train is None:
        return 0
    if data.subset.train_ids:
        return round(train.images * min(1.0, data.subset.train_ids / train.ids))
    return train.images


def estimate_cost(recipe: Recipe) -> float:
    """Training compute in TMac: forward + backward ~ 3 forwards, every training image, every epoch."""
    from reidbench.profile import profile_config

    profile = profile_config(recipe.model.name, dict(recipe.model.options), (recipe.data.height, recipe.data.width))
    return 3 * profile.gmacs * train_images(recipe) * recipe.train.epochs / 1e3


def _data_check(recipe: Recipe, data_root: Path) -> tuple[str, str]:
    """(availability text, the command that installs what is missing or '')."""
    if recipe.data.synthetic:
        return "synthetic miniature", ""
    names = dict.fromkeys([recipe.data.train, recipe.data.test])
    texts, missing = [], []
    for name in names:
        status = dataset_status(name, data_root)
        texts.append(f"{name}: {status['status']}")
        if status["status"] in ("missing", "broken"):
            missing.append(install_command(name, data_root))
    return ", ".join(texts), " ; ".join(missing)


def without_recipe(cell: Cell, models: set[str]) -> tuple[str, str]:
    """(status, reason) of a cell no recipe reproduces: cited, model not available, or no recipe yet."""
    if cell.row.model is None:
        return CITED, "cited from another paper; no model in reidbench"
    if cell.row.model not in models:
        return NO_MODEL, f"model {cell.row.model!r} is not in reidbench yet"
    return NO_RECIPE, f"model {cell.row.model!r} exists but no recipe reproduces this cell yet"


def plan_cells(cells: list[Cell], scale: str, seeds: int, data_root: Path, runs_root: Path,
               overrides: list[str] | None = None, with_cost: bool = True) -> list[PlannedCell]:
    """Decide, per cell, whether it can run and which runs (one per seed) it needs."""
    if seeds < 1:
        raise ReidbenchError(f"--seeds: expected a positive integer, got {seeds}")
    models = set(list_models())
    planned: list[PlannedCell] = []
    for cell in cells:
        row = cell.row
        if cell.recipe is None:
            planned.append(PlannedCell(cell, *without_recipe(cell, models)))
            continue
        # the row's set: defines the variant before the scale applies; the user's --set comes last
        variant, common = row.overrides, list(overrides or [])
        base = load_recipe(cell.recipe, scale=scale, overrides=common, base_overrides=variant)
        evaluation = None
        if row.eval_overrides:
            evaluation = load_recipe(cell.recipe, scale=scale, overrides=[*common, *row.eval_overrides],
                                     base_overrides=variant).eval
        runs = []
        for index in range(seeds):
            extra = [*common, f"train.seed={base.train.seed + index}"]
            recipe = load_recipe(cell.recipe, scale=scale, overrides=extra, base_overrides=variant)
            digest = recipe_hash(recipe)
            run_dir = find_run_dir(runs_root, recipe, digest)
            runs.append(PlannedRun(resolve_path(cell.recipe), recipe, extra, digest, run_dir, run_state(run_dir),
                                   list(variant)))
        data, command = _data_check(base, data_root)
        states = {run.state for run in runs}
        if states == {FINISHED}:
            status = FINISHED
        elif command and states != {FINISHED}:
            status = NO_DATA
        else:
            status = RESUME if RESUME in states else READY
        cost = estimate_cost(base) * seeds if with_cost else None
        planned.append(PlannedCell(cell, status, command, runs, data, cost, evaluation))
    return planned


def unique_runs(planned: list[PlannedCell]) -> list[PlannedRun]:
    """The runs to train, once each, in plan order (cells sharing a hash share the run)."""
    seen: dict[str, PlannedRun] = {}
    for item in planned:
        if item.status in (READY, RESUME):
            for run in item.runs:
                if run.state != FINISHED:
                    seen.setdefault(run.hash, run)
    return list(seen.values())
