"""Rank lists and map figures of finished runs (what ``reidbench visualize`` and the image kinds of
``reidbench figures`` draw)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reidbench.errors import ReidbenchError
from reidbench.visual import maps
from reidbench.visual.draw import QUERY, RIGHT, WRONG, Drawn, GridRow, Tile, draw_grid, overlay
from reidbench.visual.runs import FinishedRun

DISPLAY = (256, 128)  # every image is drawn at this size (height, width), whatever the model's input
RANK_DISPLAY = (128, 64)


@dataclass
class RankList:
    """One query's top gallery images: indices, distances and whether each has the query's identity."""

    query: int
    pid: int
    gallery: list[int]
    pids: list[int]
    distances: list[float]

    @property
    def correct(self) -> list[bool]:
        return [pid == self.pid for pid in self.pids]


def rank_lists(run: FinishedRun, queries: list[int], top: int) -> list[RankList]:
    """The ``top`` nearest gallery images of each query, as the run ranks them (ties by gallery index); under the
    Market protocol the query's own camera's images of its identity are left out, as the evaluation does."""
    features, dist = run.features, run.distance
    lists = []
    for q in queries:
        order = np.argsort(dist[q], kind="stable")
        if features.protocol == "market":
            junk = (features.gallery_pids[order] == features.query_pids[q]) & \
                   (features.gallery_camids[order] == features.query_camids[q])
            order = order[~junk]
        order = order[:top]
        lists.append(RankList(q, int(features.query_pids[q]), [int(g) for g in order],
                              [int(p) for p in features.gallery_pids[order]], [float(dist[q, g]) for g in order]))
    return lists


def draw_rank_lists(panels: list[tuple[str, FinishedRun]], queries: list[int], top: int, title: str, footer: str,
                    out: Path) -> tuple[Drawn, list[RankList]]:
    """One row per query and panel: the query (blue frame), then its top gallery images with their distance,
    framed green when the identity is the query's and red when it is not."""
    rows, every = [], []
    for label, run in panels:
        lists = rank_lists(run, queries, top)
        every += lists
        for ranked in lists:
            _, query_image = run.images([ranked.query], "query", RANK_DISPLAY)
            _, gallery_images = run.images(ranked.gallery, "gallery", RANK_DISPLAY) if ranked.gallery else (None, [])
            tiles = [Tile(query_image[0], f"query {ranked.query}\npid {ranked.pid}", QUERY)]
            tiles += [Tile(image, f"{k + 1}: {d:.3g}\npid {pid}", RIGHT if pid == ranked.pid else WRONG)
                      for k, (image, d, pid) in enumerate(zip(gallery_images, ranked.distances, ranked.pids,
                                                              strict=True))]
            rows.append(GridRow(f"{label}\nquery {ranked.query}" if len(panels) > 1 else f"query {ranked.query}",
                                tiles))
    return draw_grid(rows, title, footer, out, tile=(0.85, 1.75)), every


def erase_rectangle(seed: int, area: tuple[float, float], fill: list[float]) -> Callable[[torch.Tensor, int],
                                                                                       torch.Tensor]:
    """A random rectangle per image (area fraction in ``area``, aspect ratio 0.3-3.3, as random erasing draws
    them), filled with ``fill`` (the dataset mean); drawn from (seed, image index), so it is the same every time."""
    from torchvision.transforms.v2 import functional

    def erase(image: torch.Tensor, index: int) -> torch.Tensor:
        rng = np.random.default_rng([seed, index])
        _, height, width = image.shape
        for _ in range(50):
            target = rng.uniform(*area) * height * width
            ratio = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
            h, w = round((target * ratio) ** 0.5), round((target / ratio) ** 0.5)
            if 0 < h < height and 0 < w < width:
                break
        else:
            h, w = height // 2, width // 2
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        value = torch.tensor([round(255 * v) for v in fill], dtype=image.dtype)[:, None, None]
        return functional.erase(image, top, left, h, w, value)

    return erase


def _maps_of(kind: str, run: FinishedRun, inputs: torch.Tensor) -> tuple[torch.Tensor, str]:
    """(one map per image, what it is) for a map figure's row."""
    if kind == "cam":
        return maps.gradcam_maps(run.model, inputs, run.settings), "Grad-CAM"
    if kind == "attention":
        own = maps.attention_maps(run.model, inputs)
        if own:
            return maps.strongest(own), f"attention, max over {len(own)} maps"
    return maps.activation_maps(run.model, inputs), "activation map"


def _per_map(kind: str, run: FinishedRun, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    found = (maps.attention_maps(run.model, inputs) if kind == "attention"
             else maps.attended_activation_maps(run.model, inputs))
    if not found:
        raise ReidbenchError(f"{run.run_dir}: model {run.recipe.model.name} has no attention maps of its own "
                             "(model contract: attention_maps)",
                             hint="`reidbench visualize cam RUN_DIR` draws Grad-CAM for any model")
    return found


def draw_maps(kind: str, panels: list[tuple[str, FinishedRun | str]], queries: list[int], title: str, footer: str,
              out: Path, erase: tuple[float, float] | None = None, per_map: bool = False, seed: int = 0) -> Drawn:
    """A map figure. Rows: the query images (and, with ``erase``, the same images with a rectangle erased),
    then one row of overlays per panel; a panel given as text (a cited method) is a row saying why it is empty.
    With ``per_map``: one row per panel and image, the image then one overlay per map of the model (per head)."""
    first = next(run for _, run in panels if isinstance(run, FinishedRun))
    paths = first.features.query_paths
    eraser = erase_rectangle(seed, erase, first.recipe.data.transforms.mean) if erase else None

    def indices_of(run: FinishedRun) -> list[int]:
        """The same images in another run's query list (by path)."""
        if run.features.query_paths == paths:
            return queries
        where = {p: i for i, p in enumerate(run.features.query_paths)}
        missing = [paths[q] for q in queries if paths[q] not in where]
        if missing:
            raise ReidbenchError(f"{run.run_dir}: query image {missing[0]} is not in this run's test set",
                                 hint="a figure's panels must share one dataset")
        return [where[paths[q]] for q in queries]

    _, originals = first.images(queries, "query", DISPLAY)
    rows: list[GridRow] = []
    column_titles: list[str] = []
    if not per_map:
        rows.append(GridRow("image", [Tile(image, f"query {q}") for image, q in zip(originals, queries, strict=True)]))
    shown = originals
    if eraser is not None:
        _, shown = first.images(queries, "query", DISPLAY, erase=eraser)
        rows.append(GridRow("erased", [Tile(image) for image in shown]))
    for label, run in panels:
        if not isinstance(run, FinishedRun):
            rows.append(GridRow(label, [Tile(None, text=f"not drawn: {run}")]))
            continue
        inputs, _ = run.images(indices_of(run), "query", DISPLAY, erase=eraser)
        if per_map:
            found = _per_map(kind, run, inputs)
            column_titles = ["image", *found]
            displayed = maps.to_display_together(found, DISPLAY)
            for i, q in enumerate(queries):
                rows.append(GridRow(f"{label}\nquery {q}",
                                    [Tile(shown[i]), *(Tile(overlay(shown[i], d[i])) for d in displayed.values())]))
            continue
        values, what = _maps_of(kind, run, inputs)
        heat = maps.to_display(values, DISPLAY)
        rows.append(GridRow(f"{label}\n({what})", [Tile(overlay(image, h)) for image, h in zip(shown, heat,
                                                                                              strict=True)]))
    return draw_grid(rows, title, footer, out, column_titles=column_titles)
