"""Evaluation: distances, CMC/mAP/mINP per protocol, k-reciprocal re-ranking, features files.

This package imports nothing else from reidbench, so outside tools can reuse it on its own.
"""

from reidbench.evaluation.distance import METRICS, compute_distance
from reidbench.evaluation.features import FeatureSet, load_features, save_features
from reidbench.evaluation.metrics import AP_MODES, PROTOCOLS, EvaluationResult, evaluate
from reidbench.evaluation.rerank import rerank, rerank_features

__all__ = [
    "AP_MODES",
    "METRICS",
    "PROTOCOLS",
    "EvaluationResult",
    "FeatureSet",
    "compute_distance",
    "evaluate",
    "load_features",
    "rerank",
    "rerank_features",
    "save_features",
]
