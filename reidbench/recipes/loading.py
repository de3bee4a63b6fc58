"""Load a recipe: YAML, `base:` inheritance, scale overrides, `--set key=value`, typed validation."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from reidbench import paths
from reidbench.errors import ReidbenchError, closest
from reidbench.recipes.schema import LossTerm, ModelSection, Recipe

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


def read_mapping(path: Path, error_type: type[ReidbenchError] = ReidbenchError) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a syntax error names the file and line."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
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


def _check_values(recipe: Recipe, source: str) -> None:
    checks = [
        ("train.epochs", recipe.train.epochs >= 1, "a positive integer"),
        ("data.batch_size", recipe.data.batch_size >= 1, "a positive integer"),
        ("optim.lr", recipe.optim.lr > 0, "a positive number"),
        ("data.sampler.num_instances",
         recipe.data.batch_size % max(1, recipe.data.sampler.num_instances) == 0,
         "a divisor of data.batch_size"),
        ("data.height", recipe.data.height >= 16 and recipe.data.width >= 16, "at least 16 pixels"),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise RecipeError(f"{source}: {key}: expected {expected}")


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
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
