"""Models: a registry of constructors by name; one file per model family."""

from reidbench.models.registry import MODELS, create_model, list_models, register_model

# Importing the families registers their constructors.
from reidbench.models import (  # noqa: E402,F401  isort: skip
    aligned, cdnet, fsafcmn, mgn, mhsanet, msinet, osnet, resnet_reid, small,
)

__all__ = ["MODELS", "create_model", "list_models", "register_model"]
