"""Parameters and FLOPs, counted explicitly.

- ``params``: every parameter; ``deploy_params``: without the classifiers (what is deployed for
  retrieval); ``backbone_params``: the ``backbone`` module (or everything but the classifiers).
- ``gmacs``: fvcore's count at the given input in eval mode. fvcore counts one multiply-add as
  one flop, so the figure is in GMac (papers that quote "GFLOPs" usually mean the same number).
- fvcore skips some operators; those that matter for attention are counted by handlers here
  (see ``EXTRA_HANDLES``) and everything still skipped is reported with its count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis, parameter_count
from fvcore.nn.jit_handles import get_shape
from torch import nn

from reidbench import __version__, paths
from reidbench.errors import ReidbenchError
from reidbench.models import create_model
from reidbench.models.contract import ReIDModel, classifier_parameters


def _numel(shape: list[int] | None) -> int:
    return math.prod(shape) if shape else 0


def _softmax(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(get_shape(outputs[0]))  # one op per element (exp + normalise)


def _sdpa(inputs: list[Any], outputs: list[Any]) -> int:
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, length, dim = q
    source = k[-2]
    heads = math.prod(batch)
    return heads * length * source * (dim + v[-1]) + heads * length * source  # QK^T, AV, softmax


def _native_mha(inputs: list[Any], outputs: list[Any]) -> int:
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch, length, embed = q
    source = k[1]
    projections = batch * (length + 2 * source + length) * embed * embed
    return projections + 2 * batch * length * source * embed + batch * length * source


EXTRA_HANDLES = {
    "aten::softmax": _softmax,
    "aten::_softmax": _softmax,
    "aten::scaled_dot_product_attention": _sdpa,
    "aten::_native_multi_head_attention": _native_mha,
}
COUNTED_NOTE = ("fvcore default ops (conv, linear, matmul/bmm, einsum, norms, pooling, upsampling) "
                "plus: softmax (1 per element), scaled_dot_product_attention and fused "
                "multi-head attention (their matmuls + softmax)")


@dataclass
class Profile:
    model: str
    input: list[int]
    params: int
    deploy_params: int
    backbone_params: int
    gmacs: float
    skipped_ops: dict[str, int]
    counted: str = COUNTED_NOTE
    modules: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON contract of `reidbench profile --json`."""
        return {"model": self.model, "input": self.input, "params": self.params,
                "deploy_params": self.deploy_params, "backbone_params": self.backbone_params,
                "gmacs": self.gmacs, "skipped_ops": self.skipped_ops}


def parameter_counts(model: ReIDModel) -> tuple[int, int, int]:
    """All parameters; without the classifiers (deploy); the backbone's (through the model contract)."""
    total = sum(p.numel() for p in model.parameters())
    classifier = classifier_parameters(model)
    deploy = sum(p.numel() for p in model.parameters() if id(p) not in classifier)
    backbone = {id(p): p.numel() for m in model.backbone_modules() for p in m.parameters()}
    return total, deploy, sum(backbone.values())


class _Tensors(nn.Module):
    """Eval outputs as a tuple of tensors, which is what jit tracing accepts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        if isinstance(out, dict):
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))
        return out if isinstance(out, tuple) else (out,)


def count_flops(model: nn.Module, height: int, width: int
                ) -> tuple[float, dict[str, int], FlopCountAnalysis]:
    model.eval()
    analysis = FlopCountAnalysis(_Tensors(model), torch.zeros(1, 3, height, width))
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():  # fvcore traces through torch.jit, which warns of deprecation
        warnings.simplefilter("ignore", FutureWarning)
        total = analysis.total()
    skipped = dict(Counter(analysis.unsupported_ops()))
    return total / 1e9, dict(sorted(skipped.items())), analysis


def parse_input(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
        if height < 16 or width < 16:
            raise ValueError
        return height, width
    except ValueError as error:
        raise ReidbenchError(f"--input: expected HxW with both sides >= 16 (e.g. 256x128), "
                             f"got {text!r}") from error


def model_config(target: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """A model name, or a recipe file whose ``model:`` section names the model and its options (read with
    ``load_recipe``, ``base:`` inheritance included); with the recipe's input size."""
    if target.endswith((".yaml", ".yml")):
        from reidbench.recipes.loading import load_recipe

        recipe = load_recipe(target)
        return {"name": recipe.model.name, **recipe.model.options}, (recipe.data.height, recipe.data.width)
    return {"name": target}, None


def profile_model(target: str, input_size: tuple[int, int] | None = None,
                  use_cache: bool = True, depth: int = 2) -> Profile:
    config, recipe_input = model_config(target)
    name = config.pop("name")
    return profile_config(name, config, input_size or recipe_input, use_cache, depth)


def profile_config(name: str, config: dict[str, Any], input_size: tuple[int, int] | None = None,
                   use_cache: bool = True, depth: int = 2) -> Profile:
    """Profile a registry model built with constructor options (pretrained weights are never loaded)."""
    config = {k: v for k, v in config.items() if k != "pretrained"}
    if input_size is None:
        with torch.device("meta"):  # only the declared input size is needed before the cache is read
            input_size = create_model(name, **config).default_input
    height, width = input_size
    key = json.dumps({"model": name, "config": config, "input": [height, width],
                      "reidbench": __version__, "torch": torch.__version__}, sort_keys=True)
    cache = paths.cache_dir() / "profiles" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if use_cache and cache.is_file():
        return Profile(**json.loads(cache.read_text()))
    model = create_model(name, **config)
    params, deploy, backbone = parameter_counts(model)
    gmacs, skipped, analysis = count_flops(model, height, width)
    by_module = analysis.by_module()
    counts = parameter_count(model)
    modules = [{"module": module, "params": counts.get(module, 0),
                "gmacs": by_module.get(f"model.{module}" if module else "", 0) / 1e9}
               for module in counts if module and module.count(".") < depth]
    result = Profile(name, [height, width], params, deploy, backbone, gmacs, skipped,
                     modules=modules, config=config)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(result), handle)
    os.replace(tmp, cache)
    return result
