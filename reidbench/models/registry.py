"""Model registry: small constructors registered by name (as timm does), created from recipe data.

Every constructor returns a :class:`reidbench.models.contract.ReIDModel`. ``create_model`` checks the
options against the constructor's signature, turns a constructor's ``ValueError`` into a user error
naming the recipe key, and loads published weights through the one pretrained path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.models.contract import ReIDModel
from reidbench.models.pretrained import load_pretrained

MODELS: dict[str, Callable[..., ReIDModel]] = {}


def register_model(fn: Callable[..., ReIDModel]) -> Callable[..., ReIDModel]:
    MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(MODELS)


def model_options(name: str) -> list[str]:
    if name not in MODELS:
        raise UnknownNameError("model", name, MODELS)
    return list(inspect.signature(MODELS[name]).parameters)


def check_model(name: str, options: dict[str, Any]) -> None:
    """An unknown model name or option is a user error naming the recipe key and the choices (nothing is built)."""
    accepted = model_options(name)
    unknown = [k for k in options if k not in accepted and k != "pretrained"]
    if unknown:
        raise ReidbenchError(f"model.{unknown[0]}: model {name} has no such option; "
                             f"expected some of: {', '.join(a for a in accepted if a != 'pretrained')}")


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> ReIDModel:
    """Build a registered model; unknown names, keywords and bad option values are user errors.

    ``pretrained=True`` loads the model's ``pretrained_cfg`` file (``PretrainedWeightsMissing`` when it is
    not in the cache; the caller decides whether a run may go on without it).
    """
    check_model(name, kwargs)
    try:
        model = MODELS[name](**kwargs)
    except (ValueError, TypeError) as error:
        # layer code raises ValueError("option: expected ..., got ..."); name the recipe key
        key, sep, rest = str(error).partition(": ")
        text = f"model.{key}: {rest}" if sep and key.isidentifier() else f"model options: {error}"
        raise ReidbenchError(f"{text} (model {name})") from error
    if not isinstance(model, ReIDModel):
        raise TypeError(f"model {name}: constructors must return a ReIDModel (see docs/adding-a-model.md)")
    if pretrained:
        if model.pretrained_cfg is None:
            raise ReidbenchError(f"model.pretrained: model {name} has no published weights",
                                 hint="set model.options.pretrained=false")
        load_pretrained(model, model.pretrained_cfg)
    return model
