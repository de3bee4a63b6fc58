"""Losses, each configured per model output with a weight (recipe ``loss:`` terms)."""

from reidbench.losses.core import LOSSES, CenterLoss, LossSet, TripletLoss, build_losses

from reidbench.losses import mhsa  # noqa: E402,F401  isort: skip  (registers fdrt, ihtl, acm)

__all__ = ["LOSSES", "CenterLoss", "LossSet", "TripletLoss", "build_losses"]
