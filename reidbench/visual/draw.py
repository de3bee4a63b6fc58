"""Drawing with matplotlib (Agg, no display): image grids with overlays and coloured frames, bars, curves and
sweeps; PNG files are written atomically and without a timestamp, so the same data gives the same bytes."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.evaluation.atomic import atomic_write

RIGHT, WRONG, QUERY = "#1a9641", "#d7191c", "#2c7bb6"  # frame colours: right match, wrong match, the query
DPI = 100
LABEL_CHARS = 22  # a row label's line, wrapped to the label column


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map in the jet colour map blended over a uint8 RGB image."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    return np.clip((1 - alpha) * image / 255.0 + alpha * colours, 0, 1)


@dataclass
class Tile:
    image: np.ndarray | None  # uint8 RGB or float RGB in [0, 1]; None: a text-only tile
    title: str = ""
    frame: str | None = None  # a colour: the tile is framed in it
    text: str = ""


@dataclass
class GridRow:
    label: str
    tiles: list[Tile]


@dataclass
class Drawn:
    """A written figure and, per framed tile, its frame colour and pixel box (left, top, right, bottom) in the
    PNG (what a test checks the frames against)."""

    path: Path
    size: tuple[int, int]  # width, height in pixels
    frames: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)


def save(figure: Any, out: Path) -> tuple[int, int]:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda handle: figure.savefig(handle, format="png", dpi=DPI, metadata={"Software": None}))
    width, height = figure.canvas.get_width_height()
    pyplot().close(figure)
    return width, height


def draw_grid(rows: list[GridRow], title: str, footer: str, out: Path, tile: tuple[float, float] = (1.1, 2.2),
              column_titles: Sequence[str] = ()) -> Drawn:
    """Rows of image tiles (a label on the left of each row), framed tiles coloured, a title and a footer."""
    plt = pyplot()
    columns = max(len(r.tiles) for r in rows)
    label_width = 1.6
    width = label_width + columns * tile[0]
    height = 1.0 + len(rows) * (tile[1] + 0.35) + (0.25 if column_titles else 0)
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    top = 1 - (0.55 + (0.25 if column_titles else 0)) / height
    bottom = 0.45 / height
    grid = figure.add_gridspec(len(rows), columns, left=label_width / width, right=0.995, top=top, bottom=bottom,
                               wspace=0.08, hspace=0.3)
    framed: list[tuple[str, Any]] = []
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = figure.add_subplot(grid[r, c])
            axis.set_xticks([])
            axis.set_yticks([])
            cell = row.tiles[c] if c < len(row.tiles) else None
            if cell is None or cell.image is None:
                axis.set_axis_off()
                if cell is not None and cell.text:
                    axis.text(0.0, 0.5, cell.text, fontsize=7, va="center", ha="left", wrap=True,
                              transform=axis.transAxes, color="#555555")
            else:
                axis.imshow(cell.image, aspect="auto", interpolation="nearest")
                for spine in axis.spines.values():
                    spine.set_visible(cell.frame is not None)
                    if cell.frame is not None:
                        spine.set_color(cell.frame)
                        spine.set_linewidth(4)
                if cell.frame is not None:
                    framed.append((cell.frame, axis))
            if cell is not None and cell.title:
                axis.set_title(cell.title, fontsize=7, pad=2)
            if r == 0 and c < len(column_titles) and column_titles[c]:
                axis.annotate(column_titles[c], (0.5, 1.0), xycoords="axes fraction", xytext=(0, 14),
                              textcoords="offset points", ha="center", fontsize=8, fontweight="bold")
            if c == 0:
                label = "\n".join(textwrap.fill(line, LABEL_CHARS) for line in row.label.splitlines())
                figure.text(0.01, axis.get_position().y0 + axis.get_position().height / 2, label, fontsize=8,
                            va="center", ha="left")
    figure.suptitle(title, fontsize=10, x=0.01, ha="left", y=1 - 0.12 / height, va="top")
    figure.text(0.01, 0.06 / height, _wrap(footer, width), fontsize=6, color="#555555", va="bottom", ha="left")
    figure.canvas.draw()
    pixel_height = figure.canvas.get_width_height()[1]
    frames = []
    for colour, axis in framed:
        box = axis.get_window_extent()
        frames.append((colour, (round(box.x0), round(pixel_height - box.y1), round(box.x1),
                                round(pixel_height - box.y0))))
    size = save(figure, out)
    return Drawn(out, size, frames)


def _wrap(text: str, width_inches: float) -> str:
    """A footer broken into lines that fit the figure (6-point text: about 20 characters per inch)."""
    return textwrap.fill(text, max(40, int(width_inches * 20)))


def _finish(figure: Any, axes: Any, title: str, footer: str, out: Path) -> Drawn:
    figure.suptitle(title, fontsize=10)
    figure.text(0.01, 0.005, _wrap(footer, figure.get_figwidth()), fontsize=6, color="#555555", va="bottom",
                ha="left")
    figure.tight_layout(rect=(0, 0.03, 1, 0.95))
    return Drawn(out, save(figure, out))


def draw_bars(panels: list[tuple[str, dict[str, dict[str, float]], dict[str, dict[str, float | None]]]],
              metrics: list[str], title: str, footer: str, out: Path) -> Drawn:
    """One subplot per (subplot title, {row: {metric: value}}, reported alike): grouped bars per metric, one bar
    per row with its value; a reported value, when the paper prints one, as a black tick on its bar."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, dpi=DPI)
    for axis, (name, values, reported) in zip(axes[0], panels, strict=True):
        rows = list(values)
        width = 0.8 / max(1, len(rows))
        x = np.arange(len(metrics))
        for i, row in enumerate(rows):
            heights = [values[row].get(m, np.nan) for m in metrics]
            bars = axis.bar(x + (i - (len(rows) - 1) / 2) * width, heights, width, label=row)
            axis.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
            marks = [reported.get(row, {}).get(m) for m in metrics]
            for bar, mark in zip(bars, marks, strict=True):
                if mark is not None:
                    axis.plot([bar.get_x(), bar.get_x() + bar.get_width()], [mark, mark], color="black", lw=1.5)
        axis.set_xticks(x, metrics)
        axis.set_ylabel("%")
        axis.set_title(name, fontsize=9)
        axis.legend(fontsize=7)
    return _finish(figure, axes, title, footer, out)


def draw_curves(panels: list[tuple[str, dict[str, tuple[list[int], list[float]]]]], value: str, title: str,
                footer: str, out: Path) -> Drawn:
    """One subplot per (title, {series: (epochs, values)}): ``value`` against the epoch."""
    plt = pyplot()
    columns = min(4, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.0 * rows), squeeze=False, dpi=DPI)
    for axis, (name, series) in zip(axes.flat, panels, strict=False):
        for label, (epochs, values) in series.items():
            axis.plot(epochs, values, marker="o", markersize=3, label=label)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel(value)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_axis_off()
    return _finish(figure, axes, title, footer, out)


def draw_sweep(panels: list[tuple[str, dict[str, list[float]], dict[str, list[float | None]]]], x_name: str,
               x_values: list[Any], title: str, footer: str, out: Path) -> Drawn:
    """One subplot per (title, {series: values over x}, reported alike): bars per x value side by side, a
    polyline through each series' bars; reported values (when printed) as hollow markers."""
    plt = pyplot()
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.2 * rows), squeeze=False, dpi=DPI)
    x = np.arange(len(x_values))
    for letter, (axis, (name, series, reported)) in enumerate(zip(axes.flat, panels, strict=False)):
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series.items()):
            offset = (i - (len(series) - 1) / 2) * width
            bars = axis.bar(x + offset, values, width, alpha=0.55, label=label)
            axis.plot(x + offset, values, marker="o", markersize=3, color=bars.patches[0].get_facecolor()[:3])
            printed = reported.get(label) or []
            if any(v is not None for v in printed):
                axis.plot(x + offset, [np.nan if v is None else v for v in printed], linestyle="none", marker="o",
                          markerfacecolor="none", markeredgecolor="black", markersize=4)
        axis.set_xticks(x, [str(v) for v in x_values])
        axis.set_xlabel(x_name)
        axis.set_title(f"({chr(ord('a') + letter)}) {name}", fontsize=9)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_axis_off()
    return _finish(figure, axes, title, footer, out)
