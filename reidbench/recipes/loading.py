"""Load a recipe: YAML, `base:` inheritance, scale overrides, `--set key=value`, typed validation."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reidbench import paths
from reidbench.errors import ReidbenchError, UnknownNameError, closest
from reidbench.recipes.schema import (
    AMP_DTYPES,
    HASHED_WHEN_CHANGED,
    THROUGHPUT_KEYS,
    LossTerm,
    ModelSection,
    Recipe,
)

SCALES = ("full", "small", "smoke")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def shipped_recipes_dir() -> Path:
    """The recipes that come with reidbench: the copy inside an installed wheel (setup.py maps the
    top-level ``recipes/`` folder to ``reidbench/recipes/shipped``), else the checkout's ``recipes/``."""
    packaged = Path(__file__).resolve().parent / "shipped"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "recipes"


RECIPES_DIR = shipped_recipes_dir()
# What `--scale smoke` means when a recipe does not say: the synthetic miniature, a tiny schedule.
SMOKE_DEFAULTS: dict[str, Any] = {
    "data": {"synthetic": True, "batch_size": 16, "test_batch_size": 64, "workers": 0,
             "height": 128, "width": 64, "sampler": {"num_instances": 4}},
    "train": {"epochs": 2, "eval_every": 2, "amp": False, "log_every": 5},
    "schedule": {"warmup_epochs": 0, "milestones": [1]},
}
SMALL_DEFAULTS: dict[str, Any] = {
    "data": {"subset": {"train_ids": 100, "test_id_fraction": 0.2}},
    "train": {"epochs": 20, "eval_every": 10},
    "schedule": {"warmup_epochs": 2, "milestones": [10, 15]},
}
OPEN_SECTIONS = (ModelSection, LossTerm)  # unknown keys become constructor options


class RecipeError(ReidbenchError):
    """A recipe problem: the message names the file, the key path and what was expected."""


def _renames_model(key: str, value: Any, current: Any) -> bool:
    # A model's options belong to its constructor: naming another model starts a fresh section.
    return (key == "model" and isinstance(value, dict) and isinstance(current, dict)
            and "name" in value and value["name"] != current.get("name"))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if _renames_model(key, value, out.get(key)):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up, in order: users' folders (``--recipes-dir``,
    ``$REIDBENCH_RECIPES``), then the recipes shipped with reidbench."""
    return [*paths.user_recipe_dirs(), RECIPES_DIR]


def resolve_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe file: relative to the including file (``base:``), a path, or a name in ``recipe_dirs()``."""
    candidates = [relative_to / name] if relative_to is not None else []
    candidates.append(Path(name))
    for folder in recipe_dirs():
        candidates += [folder / name, folder / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise RecipeError(f"{name}: recipe file not found (looked in {', '.join(str(c) for c in candidates)})")


# libyaml's parser with PyYAML's safe constructor: the same values, ~10x faster (a paper's plan reads hundreds of
# recipe files); the pure-Python loader where PyYAML was built without libyaml
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_mapping(path: Path, error_type: type[ReidbenchError] = ReidbenchError) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a syntax error names the file and line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER) or {}
    except UnicodeDecodeError as error:
        raise error_type(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start})",
                         hint="save the file as UTF-8") from error
    except OSError as error:
        raise error_type(f"{path}: cannot be read ({error.strerror})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error_type(f"{path}: not valid YAML{where} ({getattr(error, 'problem', error)})") from error
    if not isinstance(data, dict):
        raise error_type(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in chain:
        raise RecipeError(f"{path}: base: inheritance loops back ({' -> '.join(str(p) for p in chain)})")
    data = read_mapping(path, RecipeError)
    base = data.pop("base", None)
    if base is None:
        return data
    parent = read_yaml(resolve_path(base, path.parent), (*chain, path))
    return deep_merge(parent, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string; a user means the number
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text!r}: value is not valid YAML") from error
    return key.strip().split("."), value


def _set(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[int(key)]
            continue
        node = node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where, source)
            except RecipeError:
                continue
        raise RecipeError(f"{source}: {where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, source)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{source}: {where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise RecipeError(f"{source}: {where}: expected {_type_name(tp)}, got {value!r}")


def build(cls: type, data: Any, where: str, source: str) -> Any:
    if isinstance(data, str) and cls is ModelSection:
        data = {"name": data}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: {where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            if cls in OPEN_SECTIONS:
                extra[key] = value
                continue
            near = closest(str(key), names)
            hint = f"did you mean {', '.join(repr(n) for n in near)}?" if near else None
            raise RecipeError(f"{source}: unknown key {path!r}; expected one of: {', '.join(names)}",
                              hint=hint)
        values[key] = _convert(value, hints[key], path, source)
    if extra:
        values["options"] = {**values.get("options", {}), **extra}
    return cls(**values)


def load_recipe(path: str | Path, scale: str = "full", overrides: list[str] | None = None,
                base_overrides: list[str] | None = None) -> Recipe:
    """Read, inherit, scale, override and validate a recipe.

    ``base_overrides`` change the recipe itself before the scale applies (a paper row's ``set:``, e.g.
    ``train.epochs=350`` stays 2 epochs at smoke scale); ``overrides`` (``--set``) apply last.
    """
    if scale not in SCALES:
        raise RecipeError(f"--scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    file = resolve_path(path)
    tree = _apply_overrides(read_yaml(file), base_overrides or [])
    # the file as written is checked too: a scale's overrides must not hide a bad value or name in it
    _check_values(build(Recipe, {**tree, "scale": "full"}, "", str(file)), str(file))
    scales = tree.get("scales", {}) or {}
    if scale == "smoke":
        tree = deep_merge(tree, deep_merge(SMOKE_DEFAULTS, scales.get("smoke", {})))
    elif scale == "small":
        tree = deep_merge(tree, deep_merge(SMALL_DEFAULTS, scales.get("small", {})))
    tree = _apply_overrides(tree, overrides or [])
    tree["scale"] = scale
    recipe = build(Recipe, tree, "", str(file))
    _check_values(recipe, str(file))
    return recipe


def _apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["model", "name"] and value != (tree.get("model") or {}).get("name"):
            tree["model"] = {}  # another model: the old one's constructor options do not apply
        try:
            _set(tree, keys, value)
        except (IndexError, ValueError, TypeError) as error:
            raise RecipeError(f"--set {text!r}: no such position in the recipe") from error
    return tree


def _positive(value: Any) -> bool:
    return value >= 1


def _probability(value: Any) -> bool:
    return 0.0 <= value <= 1.0


def _check_values(recipe: Recipe, source: str) -> None:
    """Every value checked against what the run needs, before any work starts; the error names the key."""
    d, t, tr, o, s, e = recipe.data, recipe.train, recipe.data.transforms, recipe.optim, recipe.schedule, recipe.eval
    positive, at_least_0 = "a positive integer", "0 or more"
    checks: list[tuple[str, Any, bool, str]] = [
        ("train.epochs", t.epochs, _positive(t.epochs), positive),
        ("train.seed", t.seed, 0 <= t.seed < 2**32, "an integer in [0, 2**32)"),
        ("train.eval_every", t.eval_every, _positive(t.eval_every), positive),
        ("train.log_every", t.log_every, _positive(t.log_every), positive),
        ("train.fixbase_epochs", t.fixbase_epochs, t.fixbase_epochs >= 0, at_least_0),
        ("train.grad_clip", t.grad_clip, t.grad_clip is None or t.grad_clip > 0, "a positive number or null"),
        ("data.batch_size", d.batch_size, _positive(d.batch_size), positive),
        ("data.test_batch_size", d.test_batch_size, _positive(d.test_batch_size), positive),
        ("data.workers", d.workers, d.workers >= 0, at_least_0),
        ("data.height", d.height, d.height >= 16, "at least 16 pixels"),
        ("data.width", d.width, d.width >= 16, "at least 16 pixels"),
        ("data.sampler.num_instances", d.sampler.num_instances, _positive(d.sampler.num_instances), positive),
        ("data.sampler.num_instances", d.sampler.num_instances,
         d.sampler.name == "random" or d.batch_size % max(1, d.sampler.num_instances) == 0,
         f"a divisor of data.batch_size ({d.batch_size})"),
        ("data.subset.train_ids", d.subset.train_ids, d.subset.train_ids is None or d.subset.train_ids >= 1,
         "a positive integer or null"),
        ("data.subset.test_id_fraction", d.subset.test_id_fraction,
         d.subset.test_id_fraction is None or 0 < d.subset.test_id_fraction <= 1, "a fraction in (0, 1] or null"),
        *[(f"data.transforms.{key}", getattr(tr, key), _probability(getattr(tr, key)), "a probability in [0, 1]")
          for key in ("flip", "translate", "erasing", "cutout")],
        ("data.transforms.pad", tr.pad, tr.pad >= 0, at_least_0),
        ("data.transforms.cutout_size", tr.cutout_size, _positive(tr.cutout_size), positive),
        ("data.transforms.mean", tr.mean, len(tr.mean) == 3, "3 numbers (R, G, B)"),
        ("data.transforms.std", tr.std, len(tr.std) == 3 and all(v > 0 for v in tr.std), "3 positive numbers"),
        ("data.transforms.erasing_fill", tr.erasing_fill,
         tr.erasing_fill in ("mean", "random") if isinstance(tr.erasing_fill, str) else len(tr.erasing_fill) == 3,
         "mean, random or 3 numbers"),
        ("data.transforms.color_jitter", tr.color_jitter,
         tr.color_jitter is None or (len(tr.color_jitter) == 4 and min(tr.color_jitter) >= 0),
         "4 numbers >= 0 (brightness, contrast, saturation, hue) or null"),
        ("optim.lr", o.lr, o.lr > 0, "a positive number"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, at_least_0),
        ("optim.bias_weight_decay", o.bias_weight_decay, o.bias_weight_decay is None or o.bias_weight_decay >= 0,
         "0 or more, or null"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "a number in [0, 1)"),
        ("optim.bias_lr_factor", o.bias_lr_factor, o.bias_lr_factor > 0, "a positive number"),
        ("optim.center_lr", o.center_lr, o.center_lr > 0, "a positive number"),
        ("schedule.milestones", s.milestones,
         min(s.milestones, default=0) >= 0 and s.milestones == sorted(s.milestones), "ascending epochs >= 0"),
        ("schedule.step_size", s.step_size, _positive(s.step_size), positive),
        ("schedule.gamma", s.gamma, s.gamma > 0, "a positive number"),
        ("schedule.warmup_epochs", s.warmup_epochs, s.warmup_epochs >= 0, at_least_0),
        ("schedule.warmup_factor", s.warmup_factor, 0 < s.warmup_factor <= 1, "a number in (0, 1]"),
        ("schedule.min_lr", s.min_lr, s.min_lr >= 0, at_least_0),
        *[(f"loss[{i}].weight", term.weight, term.weight >= 0, at_least_0) for i, term in enumerate(recipe.loss)],
    ]
    # re-ranking settings are checked even while eval.rerank.enabled is false
    checks += [("eval.rerank.k1", e.rerank.k1, _positive(e.rerank.k1), positive),
               ("eval.rerank.k2", e.rerank.k2, _positive(e.rerank.k2), positive),
               ("eval.rerank.lambda_value", e.rerank.lambda_value, _probability(e.rerank.lambda_value),
                "a number in [0, 1]")]
    for key, value, ok, expected in checks:
        if not ok:
            raise RecipeError(f"{source}: {key}: expected {expected}, got {value!r}")
    _check_names(recipe, source)


def _check_names(recipe: Recipe, source: str) -> None:
    """Names (model, datasets, variant, losses, optimiser, schedule, sampler, metric) and the options handed to
    constructors, checked by the code that will use them; the error is prefixed with the file and the key."""
    from reidbench.data.registry import get_dataset
    from reidbench.data.samplers import SAMPLERS
    from reidbench.data.synth import check_size
    from reidbench.engine.optim import OPTIMIZERS, SCHEDULES
    from reidbench.evaluation import METRICS
    from reidbench.losses import build_losses
    from reidbench.losses.core import LOSSES
    from reidbench.models.registry import check_model

    d = recipe.data

    def name_in(kind: str, value: str, choices: tuple[str, ...]) -> Callable[[], None]:
        def check() -> None:
            if value not in choices:
                raise UnknownNameError(kind, value, choices)
        return check

    def variant() -> None:
        specs = [get_dataset(name) for name in dict.fromkeys((d.train, d.test))]
        with_variants = [spec for spec in specs if spec.variants[0].name != "default"]
        if d.variant is not None and not with_variants:
            raise ReidbenchError(f"data.variant: {' and '.join(s.name for s in specs)} "
                                 f"{'has' if len(specs) == 1 else 'have'} no variants, got {d.variant!r}",
                                 hint="remove data.variant (it selects e.g. cuhk03's detected / labeled)")
        for spec in with_variants:
            spec.variant(d.variant)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("model.name", lambda: check_model(recipe.model.name, recipe.model.options)),
        ("data.train", lambda: get_dataset(d.train)), ("data.test", lambda: get_dataset(d.test)),
        ("data.variant", variant),
        ("data.sampler.name", name_in("sampler", d.sampler.name, SAMPLERS)),
        ("optim.name", name_in("optimiser", recipe.optim.name, OPTIMIZERS)),
        ("schedule.name", name_in("schedule", recipe.schedule.name, SCHEDULES)),
        ("eval.metric", name_in("metric", recipe.eval.metric, METRICS)),
        ("train.amp_dtype", name_in("amp dtype", recipe.train.amp_dtype, AMP_DTYPES)),
        *[(f"loss[{i}].name", name_in("loss", term.name, tuple(LOSSES))) for i, term in enumerate(recipe.loss)],
        ("loss", lambda: build_losses(recipe.loss, num_classes=2)),  # each term's options
    ]
    if d.synthetic:
        keys = ("data.synthetic_ids", "data.synthetic_images_per_id")
        steps += [(keys[0], lambda: check_size(d.train, d.synthetic_ids, d.synthetic_images_per_id, keys)),
                  (keys[0], lambda: check_size(d.test, d.synthetic_ids, d.synthetic_images_per_id, keys))]
    for key, step in steps:
        try:
            step()
        except ReidbenchError as error:
            named = error.message.startswith(key.split(".")[0])  # already names the key (or its section)
            message = error.message if named else f"{key}: {error.message}"
            raise RecipeError(f"{source}: {message}", hint=error.hint) from error


def to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def recipe_hash(recipe: Recipe) -> str:
    """sha256 of the resolved recipe (canonical JSON) over what changes a run's numbers.

    Labels (name, description, the paper cell it reproduces) stay out, so two paper cells that train
    the same thing share one run.
    """
    data = to_dict(recipe)
    for label in ("name", "description", "reported"):
        data.pop(label, None)
    data.pop("scales", None)  # already applied; the scale itself stays in the hash
    for key in THROUGHPUT_KEYS:
        section, name = key.split(".")
        data[section].pop(name, None)
    for key, before in HASHED_WHEN_CHANGED.items():
        section, name = key.split(".")
        if data[section].get(name) == before:
            data[section].pop(name)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
