"""Losses, each configured per model output with a weight (recipe ``loss:`` terms)."""

from reidbench.losses.core import LOSSES, CenterLoss, LossSet, TripletLoss, build_losses

__all__ = ["LOSSES", "CenterLoss", "LossSet", "TripletLoss", "build_losses"]
