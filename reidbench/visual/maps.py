"""Maps over an image from a model, through the model contract only (``forward_features``, ``feature_map``,
``forward_head``, ``attention_maps``; never module names):

- activation maps: the sum over channels of the squared last feature map (torchreid's ``visualize_actmap``);
- Grad-CAM: captum's ``LayerGradCam`` on the last feature map, for the similarity of the test feature with
  itself (a ReID model has no class to explain at test time: the map shows what its feature is made of);
- a model's own attention weights (MHSA-Net's per-head alpha, MASENet's SGE gates).

Every map comes back as float [N, h, w] on the model's grid; :func:`to_display` resizes and scales it to [0, 1]
(:func:`to_display_together` several maps of the same images on one scale).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from reidbench.errors import ReidbenchError
from reidbench.models.contract import ReIDModel
from reidbench.recipes.schema import EvalSection

VIZ_EXTRA = "pip install 'reidbench[viz]'"


@torch.no_grad()
def activation_maps(model: ReIDModel, inputs: torch.Tensor) -> torch.Tensor:
    """Sum over channels of the squared last feature map: [N, h, w]."""
    return model.feature_map(model.forward_features(inputs)).pow(2).sum(dim=1)


def attention_maps(model: ReIDModel, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's own attention weights by name, [N, h, w] each (empty: it has none)."""
    with torch.no_grad():
        return {name: value.float() for name, value in model.attention_maps(inputs).items()}


def strongest(found: dict[str, torch.Tensor]) -> torch.Tensor:
    """The maximum over several maps of the same images (e.g. the heads' weights), on the finest grid among them:
    [N, h, w]. The values are compared as the model computes them (a weak head stays weak)."""
    size = max((tuple(m.shape[-2:]) for m in found.values()), key=lambda s: s[0] * s[1])
    return torch.stack([_resize(m, size) for m in found.values()]).amax(dim=0)


def attended_activation_maps(model: ReIDModel, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per attention map (per head): the attention times the activation at each position, on the feature map's
    grid: what each head pools (MHSA-Net's head k is the alpha_k-weighted sum of the map's positions)."""
    activation = activation_maps(model, inputs)
    out = {}
    for name, weights in attention_maps(model, inputs).items():
        if weights.shape[-2:] != activation.shape[-2:]:
            weights = nn.functional.interpolate(weights[:, None], size=activation.shape[-2:], mode="bilinear",
                                                align_corners=False)[:, 0]
        out[name] = weights * activation.sqrt()
    return out


class _Trunk(nn.Module):
    """``forward_features`` as a module of its own, so that captum can take its output as the layer."""

    def __init__(self, model: ReIDModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Any:
        features = self.model.forward_features(images)
        return tuple(features) if isinstance(features, list) else features


def _ranked_output(outputs: dict[str, Any], settings: EvalSection) -> torch.Tensor:
    value = outputs.get(settings.feature)
    if not isinstance(value, torch.Tensor):
        raise ReidbenchError(f"eval.feature: the model has no test output {settings.feature!r} to explain")
    if settings.part is not None:
        value = value[:, settings.part - 1]
    return value.flatten(1)


def gradcam_maps(model: ReIDModel, inputs: torch.Tensor, settings: EvalSection) -> torch.Tensor:
    """Grad-CAM (captum ``LayerGradCam``) of the last feature map for <f(x), f(x)> with f the test feature the
    run ranks by (``settings.feature`` / ``part``), ReLU applied: [N, h, w]."""
    try:
        from captum.attr import LayerGradCam
    except ImportError as error:
        raise ReidbenchError("class-activation maps need captum, which is not installed",
                             hint=f"{VIZ_EXTRA} (or pip install captum)") from error
    trunk = _Trunk(model)
    with torch.no_grad():
        features = trunk(inputs)
        target = model.feature_map(features)
        reference = _ranked_output(model.forward_head(features), settings)
    position = None
    if isinstance(features, tuple):
        position = next((i for i, item in enumerate(features) if item is target), None)
        if position is None:
            raise ReidbenchError(f"model {type(model).__name__}: feature_map() is not one of the maps "
                                 "forward_features returns")

    def similarity(images: torch.Tensor) -> torch.Tensor:
        return (_ranked_output(model.forward_head(trunk(images)), settings) * reference).sum(dim=1)

    with torch.enable_grad():
        attributions = LayerGradCam(similarity, trunk).attribute(inputs, relu_attributions=True)
    chosen = attributions[position] if position is not None else attributions
    return chosen.detach()[:, 0]


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return nn.functional.interpolate(maps.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _scale(values: torch.Tensor) -> np.ndarray:
    """[N, ...] scaled to [0, 1] per image (over all its other dimensions)."""
    flat = values.flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp(min=1e-12)).reshape(values.shape).numpy().astype(np.float32)


def to_display(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[N, h, w] maps resized (bilinear) to ``size`` and scaled to [0, 1] per image: [N, H, W] float32."""
    return _scale(_resize(maps, size))


def to_display_together(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Several maps of the same images (one per head), resized and scaled to [0, 1] together per image, so that
    a weak head stays weak beside a strong one."""
    stacked = torch.stack([_resize(m, size) for m in maps.values()], dim=1)  # [N, M, H, W]
    scaled = _scale(stacked)
    return {name: scaled[:, i] for i, name in enumerate(maps)}
