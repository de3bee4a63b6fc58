"""Test-time feature extraction and evaluation of a model, as a run does it (no trainer needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from reidbench.data.loader import eval_loader, image_paths
from reidbench.data.records import ImageRecord, Split
from reidbench.engine.throughput import Throughput, resolve_throughput
from reidbench.errors import ReidbenchError
from reidbench.evaluation import EvaluationResult
from reidbench.evaluation.features import FeatureSet, evaluate_feature_set, feature_set_distance, select_feature
from reidbench.models.contract import ReIDModel
from reidbench.recipes.schema import EvalSection, Recipe


def _ranked_feature(features: FeatureSet, settings: EvalSection) -> FeatureSet:
    try:
        return select_feature(features, settings.feature, settings.part)
    except ValueError as error:
        raise ReidbenchError(str(error)) from error


def evaluation_device(device: str | None) -> str | None:
    """Where a run's evaluation computes: its GPU when it trains on one, else the CPU kernels (None)."""
    return device if device is not None and device.startswith("cuda") else None


def evaluate_features(features: FeatureSet, settings: EvalSection, device: str | None = None) -> EvaluationResult:
    """Distance (or re-ranked distance) and metrics, exactly as a run evaluates its final features; ranked by
    ``settings.feature`` (the run's main feature or one of its ``eval.extra_features``) and ``settings.part``.
    On a CUDA ``device`` the distances, re-ranking and ranking run there (same numbers)."""
    rerank = settings.rerank
    return evaluate_feature_set(_ranked_feature(features, settings), settings.metric, settings.normalize,
                                rerank.enabled, k1=rerank.k1, k2=rerank.k2, lambda_value=rerank.lambda_value,
                                local=settings.local_feature is not None, device=evaluation_device(device))


def ranking_distance(features: FeatureSet, settings: EvalSection) -> torch.Tensor:
    """The query-gallery distance [Q, G] that ``evaluate_features`` ranks by, with the same settings."""
    rerank = settings.rerank
    return feature_set_distance(_ranked_feature(features, settings), settings.metric, settings.normalize,
                                rerank.enabled, k1=rerank.k1, k2=rerank.k2, lambda_value=rerank.lambda_value,
                                local=settings.local_feature is not None)


@torch.no_grad()
def extract_outputs(model: ReIDModel, records: list[ImageRecord], recipe: Recipe, device: str,
                    throughput: Throughput | None = None) -> dict[str, torch.Tensor]:
    """The eval outputs a recipe asks for, of each image: ``eval.feature``, ``eval.local_feature`` and
    ``eval.extra_features``; under the run's mixed precision and memory format when ``throughput`` is given
    (else fp32)."""
    was_training = model.training
    model.eval()
    names = list(dict.fromkeys(n for n in (recipe.eval.feature, recipe.eval.local_feature,
                                           *recipe.eval.extra_features) if n))
    for name in names:
        if name not in model.eval_outputs:
            raise ReidbenchError(f"eval.feature: model {recipe.model.name} has no eval output {name!r}; "
                                 f"expected one of: {', '.join(model.eval_outputs)}")
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    if throughput is None:
        throughput = replace(resolve_throughput(recipe, device), amp=None)
    for images, _pids, _camids, _index in eval_loader(records, recipe.data, device):
        images = throughput.to_device(images, device)
        with throughput.autocast():
            outputs = model(images)
            flipped = model(images.flip(3)) if recipe.eval.flip else None
        for name in names:
            out = outputs[name].float()
            if flipped is not None:
                out = out + flipped[name].float()
            parts[name].append(out.cpu())
    model.train(was_training)
    return {n: torch.cat(parts[n]) for n in names}


def extract_feature_set(model: ReIDModel, split: Split, recipe: Recipe, device: str, recipe_hash: str,
                        throughput: Throughput | None = None) -> FeatureSet:
    q, g = split.query, split.gallery
    query, gallery = (extract_outputs(model, records, recipe, device, throughput) for records in (q, g))
    main, local = recipe.eval.feature, recipe.eval.local_feature
    extra = {n: (query[n], gallery[n]) for n in recipe.eval.extra_features if n not in (main, local)}
    return FeatureSet(
        query_features=query[main], gallery_features=gallery[main],
        query_local=query[local] if local else None, gallery_local=gallery[local] if local else None, extra=extra,
        query_pids=np.array([r.pid for r in q]), query_camids=np.array([r.camid for r in q]),
        gallery_pids=np.array([r.pid for r in g]), gallery_camids=np.array([r.camid for r in g]),
        protocol=split.protocol, query_paths=image_paths(q), gallery_paths=image_paths(g),
        meta={"dataset": split.name, "synthetic": split.synthetic, "recipe_hash": recipe_hash,
              "model": recipe.model.name, "feature": main},
    )
