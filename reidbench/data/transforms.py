"""torchvision.transforms.v2 pipelines built from a recipe's transform keys."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

from reidbench.errors import ReidbenchError
from reidbench.recipes.schema import TransformSection

BOT_ERASING_MEAN = (0.4914, 0.4822, 0.4465)  # the fill BoT's RandomErasing uses


class Random2DTranslation(nn.Module):
    """AlignedReID: with probability p, enlarge by 1/8 and crop back to size at a random place."""

    def __init__(self, height: int, width: int, p: float) -> None:
        super().__init__()
        self.size, self.p = (height, width), p
        self.large = (int(round(height * 1.125)), int(round(width * 1.125)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return v2.functional.resize(image, list(self.size), antialias=True)
        image = v2.functional.resize(image, list(self.large), antialias=True)
        top = int(torch.randint(0, self.large[0] - self.size[0] + 1, ()))
        left = int(torch.randint(0, self.large[1] - self.size[1] + 1, ()))
        return image[..., top : top + self.size[0], left : left + self.size[1]]


class Cutout(nn.Module):
    """MHSA-Net: with probability p, zero a size x size square centred anywhere in the image."""

    def __init__(self, size: int, p: float) -> None:
        super().__init__()
        self.size, self.p = size, p

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return image
        height, width = image.shape[-2:]
        cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
        half = self.size // 2
        out = image.clone()
        out[..., max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = 0
        return out


def train_transform(t: TransformSection, height: int, width: int) -> v2.Compose:
    steps: list[nn.Module] = []
    if t.translate > 0:
        steps.append(Random2DTranslation(height, width, t.translate))
    else:
        steps.append(v2.Resize((height, width), antialias=True))
    if t.flip > 0:
        steps.append(v2.RandomHorizontalFlip(t.flip))
    if t.pad > 0:
        steps += [v2.Pad(t.pad), v2.RandomCrop((height, width))]
    if t.color_jitter:
        steps.append(v2.ColorJitter(*t.color_jitter))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(t.mean, t.std)]
    if t.erasing > 0:
        area, ratio = t.erasing_area, t.erasing_ratio
        if len(area) != 2 or not 0 < area[0] <= area[1] <= 1:
            raise ReidbenchError(f"data.transforms.erasing_area: expected [min, max] fractions of the image with "
                                 f"0 < min <= max <= 1, got {area!r}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ReidbenchError(f"data.transforms.erasing_ratio: expected [min, max] height / width ratios with "
                                 f"0 < min <= max, got {ratio!r}")
        fill = t.erasing_fill
        value = list(BOT_ERASING_MEAN) if fill == "mean" else ("random" if fill == "random" else fill)
        # torchvision draws the ratio log-uniformly in [min, max] and tries 10 rectangles; the Random Erasing code
        # BoT and MSINet ship draws it uniformly and tries 100 (docs/papers/baselines.md, "Random erasing")
        steps.append(v2.RandomErasing(p=t.erasing, scale=tuple(area), ratio=tuple(ratio), value=value))
    if t.cutout > 0:
        steps.append(Cutout(t.cutout_size, t.cutout))
    return v2.Compose(steps)


def eval_transform(t: TransformSection, height: int, width: int) -> v2.Compose:
    return v2.Compose([v2.Resize((height, width), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(t.mean, t.std)])
