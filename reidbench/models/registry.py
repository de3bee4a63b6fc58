"""Model registry: small constructors registered by name (as timm does), created from recipe data."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from reidbench.errors import ReidbenchError, UnknownNameError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(MODELS)


def check_model(name: str, options: dict[str, Any]) -> None:
    """An unknown model name or constructor keyword is a user error naming the choices (nothing is built)."""
    if name not in MODELS:
        raise UnknownNameError("model", name, MODELS)
    accepted = inspect.signature(MODELS[name]).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ReidbenchError(f"model {name}: unknown option(s) {', '.join(unknown)}; "
                             f"expected some of: {', '.join(accepted)}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name or keyword is a user error naming the choices."""
    check_model(name, kwargs)
    return MODELS[name](**kwargs)
