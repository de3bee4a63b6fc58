"""Test-time feature extraction and evaluation of a model, as a run does it (no trainer needed)."""

from __future__ import annotations

import numpy as np
import torch

from reidbench.data.loader import eval_loader, image_paths
from reidbench.data.records import ImageRecord, Split
from reidbench.errors import ReidbenchError
from reidbench.evaluation import EvaluationResult
from reidbench.evaluation.features import FeatureSet, evaluate_feature_set
from reidbench.models.contract import ReIDModel
from reidbench.recipes.schema import EvalSection, Recipe


def evaluate_features(features: FeatureSet, settings: EvalSection) -> EvaluationResult:
    """Distance (or re-ranked distance) and metrics, exactly as a run evaluates its final features."""
    rerank = settings.rerank
    return evaluate_feature_set(features, settings.metric, settings.normalize, rerank.enabled, k1=rerank.k1,
                                k2=rerank.k2, lambda_value=rerank.lambda_value,
                                local=settings.local_feature is not None)


@torch.no_grad()
def extract_features(model: ReIDModel, records: list[ImageRecord], recipe: Recipe, device: str,
                     amp: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The eval feature of each image (and its local stripes when the recipe asks for them)."""
    was_training = model.training
    model.eval()
    names = [n for n in (recipe.eval.feature, recipe.eval.local_feature) if n]
    for name in names:
        if name not in model.eval_outputs:
            raise ReidbenchError(f"eval.feature: model {recipe.model.name} has no eval output {name!r}; "
                                 f"expected one of: {', '.join(model.eval_outputs)}")
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for images, _pids, _camids, _index in eval_loader(records, recipe.data, device):
        images = images.to(device)
        with torch.autocast("cuda", enabled=amp):
            outputs = model(images)
            flipped = model(images.flip(3)) if recipe.eval.flip else None
        for name in names:
            out = outputs[name].float()
            if flipped is not None:
                out = out + flipped[name].float()
            parts[name].append(out.cpu())
    model.train(was_training)
    feats = [torch.cat(parts[n]) for n in names]
    return feats[0], (feats[1] if len(feats) > 1 else None)


def extract_feature_set(model: ReIDModel, split: Split, recipe: Recipe, device: str, recipe_hash: str,
                        amp: bool = False) -> FeatureSet:
    q, g = split.query, split.gallery
    query, query_local = extract_features(model, q, recipe, device, amp)
    gallery, gallery_local = extract_features(model, g, recipe, device, amp)
    return FeatureSet(
        query_features=query, gallery_features=gallery, query_local=query_local, gallery_local=gallery_local,
        query_pids=np.array([r.pid for r in q]), query_camids=np.array([r.camid for r in q]),
        gallery_pids=np.array([r.pid for r in g]), gallery_camids=np.array([r.camid for r in g]),
        protocol=split.protocol, query_paths=image_paths(q), gallery_paths=image_paths(g),
        meta={"dataset": split.name, "synthetic": split.synthetic, "recipe_hash": recipe_hash,
              "model": recipe.model.name},
    )
