"""The model contract: what every registered model declares and what the rest of reidbench relies on.

Code outside ``models/`` (profile, trainer, test, reproduce, checkpoint loading) uses only this
contract, never module names. See ``docs/adding-a-model.md``.

A model is a :class:`ReIDModel` subclass that

- implements ``forward_features(images)`` (the trunk's output, any structure the head needs) and
  ``forward_head(features)`` returning :data:`ModelOutputs` (``forward`` chains the two);
- declares ``train_outputs`` and ``eval_outputs``: the :data:`ModelOutputs` keys it returns in train
  and in eval mode (the loss terms of a recipe and ``eval.feature`` name these keys);
- returns its classifier modules from ``get_classifier()`` (left out of the deploy parameter count and
  re-sized when a checkpoint of another dataset is loaded) and its trunk from ``backbone_modules()``;
- states ``default_input`` (height, width) and, when it can start from published weights, a
  ``pretrained_cfg`` (see :mod:`reidbench.models.pretrained`), set by its constructor.

Two optional methods serve the visualisations (``reidbench visualize``, ``reidbench figures``):
``feature_map(features)`` picks the last spatial map out of what ``forward_features`` returns (activation
maps and Grad-CAM explain it), and ``attention_maps(images)`` returns the model's own attention weights
(MHSA-Net's per-head alpha, MASENet's SGE gates), empty for a model that has none.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict

import torch
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.models.pretrained import LoadReport, PretrainedCfg

#: Every output a model may return, by name. ``embedding`` is the test feature of most models.
OUTPUT_FIELDS: dict[str, str] = {
    "embedding": "the test feature [N, D] (what retrieval ranks by, unless a recipe names another output)",
    "global": "the global feature [N, D] the triplet loss reads (often before a BN neck); [N, B, D] for one "
              "per branch (MGN)",
    "logits": "identity logits [N, classes] of the global branch; [N, H, classes] for one classifier per "
              "feature (MGN)",
    "local": "local (part / stripe) features: [N, D] concatenated parts or [N, H, D] stripes",
    "local_logits": "identity logits of the local branch (one tensor)",
    "parts": "per-part features [N, P, D] of multi-branch models",
    "part_logits": "per-part identity logits [N, P, classes]",
    "sam": "MSINet's spatial-alignment scores [B + 1, B, M] (training only)",
    "attention": "a model's own attention weights, for losses and visualisation",
    "aux": "any further named tensors (dict) a family's own loss terms read",
}

ModelOutputs = TypedDict("ModelOutputs", {
    "embedding": torch.Tensor,
    "global": torch.Tensor,
    "logits": torch.Tensor,
    "local": torch.Tensor,
    "local_logits": torch.Tensor,
    "parts": torch.Tensor,
    "part_logits": torch.Tensor,
    "sam": torch.Tensor,
    "attention": torch.Tensor,
    "aux": dict,
}, total=False)


class ReIDModel(nn.Module):
    """Base class of every registered model (timm's ``forward_features`` / ``forward_head`` /
    ``get_classifier`` / ``pretrained_cfg`` split)."""

    default_input: ClassVar[tuple[int, int]] = (256, 128)
    train_outputs: ClassVar[tuple[str, ...]] = ()
    eval_outputs: ClassVar[tuple[str, ...]] = ("embedding",)
    #: published weights this model can start from (None: from scratch only); set per instance
    pretrained_cfg: PretrainedCfg | None = None
    #: what :func:`reidbench.models.pretrained.load_pretrained` loaded (None until it ran)
    pretrained_report: LoadReport | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in (*cls.train_outputs, *cls.eval_outputs):
            if name not in OUTPUT_FIELDS:
                raise TypeError(f"{cls.__name__}: output {name!r} is not a contract field "
                                f"({', '.join(OUTPUT_FIELDS)})")

    def forward_features(self, images: torch.Tensor) -> Any:
        raise NotImplementedError

    def forward_head(self, features: Any) -> ModelOutputs:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> ModelOutputs:
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> list[nn.Module]:
        """The identity classifiers (training only; not deployed)."""
        raise NotImplementedError

    def backbone_modules(self) -> list[nn.Module]:
        """The trunk (what papers count as "backbone" parameters)."""
        raise NotImplementedError

    def feature_map(self, features: Any) -> torch.Tensor:
        """The last spatial feature map [N, C, h, w] inside what ``forward_features`` returned: the map that
        activation maps and Grad-CAM explain. The default takes ``features`` itself when it is such a map;
        a family whose trunk returns a structure (a tuple of maps) says which one."""
        if isinstance(features, torch.Tensor) and features.ndim == 4:
            return features
        # a trunk that pools inside (torchvision's classifier) has no map: a user error for the visualisations
        raise ReidbenchError(f"model {type(self).__name__}: no spatial feature map to draw (forward_features "
                             "returns no single [N, C, h, w] map)")

    def attention_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's own attention weights over the image, by name, each [N, h, w] on the grid where the
        model computes them (larger = more attention). Empty for a model without attention of its own."""
        return {}


def classifier_parameters(model: ReIDModel) -> set[int]:
    return {id(p) for m in model.get_classifier() for p in m.parameters()}


def classifier_weight_names(model: ReIDModel) -> list[str]:
    """State-dict names of the classifiers' weight matrices (their first dimension is the class count)."""
    modules = {id(m) for m in model.get_classifier()}
    return [f"{name}.weight" if name else "weight" for name, m in model.named_modules()
            if id(m) in modules and getattr(m, "weight", None) is not None]


def num_classes_of(model_cls_state: dict[str, torch.Tensor], model: ReIDModel) -> int | None:
    """The class count of a state dict, read at the model's classifier weights."""
    for name in classifier_weight_names(model):
        tensor = model_cls_state.get(name)
        if tensor is not None and tensor.ndim >= 2:
            return int(tensor.shape[0])
    return None
