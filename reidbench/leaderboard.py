"""Leaderboards: reproduced numbers beside the reported ones, one CSV per paper and scale.

A row is one metric of one paper cell at one scale. Every measured row carries how it was obtained:
seeds and run ids, recipe and hash, git commit, evaluation settings, versions and device. Full-scale
rows go to ``leaderboards/<paper>.csv`` (the file the repository commits, with its Markdown twin, see
``reidbench.papers.publish``); smoke and small runs go to ``leaderboards/<paper>.<scale>.csv`` so they
never mix with reproductions. Rows are merged under a file lock and written atomically, so concurrent
``reidbench reproduce`` processes do not lose each other's rows; a "not run" row never replaces a
measured one.
"""

from __future__ import annotations

import fcntl
import io
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reidbench import paths
from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.papers.schema import Tolerance, metric_kind

COLUMNS = [
    "paper", "table", "row", "dataset", "metric", "reported", "reproduced", "std", "ci95_low", "ci95_high",
    "ci_method", "delta", "status", "tolerance", "params_M", "deploy_params_M", "gmacs", "input", "scale",
    "synthetic", "seeds", "run_ids", "git_commit", "recipe", "model", "recipe_hash", "distance", "normalize",
    "rerank_k1", "rerank_k2", "rerank_lambda_value", "precision", "pretrained", "torch", "cuda", "device", "updated",
    "note",
]
KEY = ["paper", "table", "row", "dataset", "metric", "scale"]
NOT_RUN = "not run"


def leaderboard_path(paper: str, directory: Path | None = None, scale: str = "full") -> Path:
    """``<paper>.csv`` for full-scale rows, ``<paper>.<scale>.csv`` for smoke and small runs."""
    name = paper if scale == "full" else f"{paper}.{scale}"
    return (directory or paths.leaderboards_dir()) / f"{name}.csv"


# ---- statistics --------------------------------------------------------------------------------

def seed_interval(values: list[float]) -> tuple[float, float, float]:
    """(std, low, high): Student-t 95% interval of the mean over seeds."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1))
    if std == 0.0:
        return 0.0, float(array.mean()), float(array.mean())
    low, high = stats.t.interval(0.95, len(array) - 1, loc=array.mean(), scale=std / math.sqrt(len(array)))
    return std, float(low), float(high)


def bootstrap_interval(per_query: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """(std, low, high) of a per-query mean by bootstrap over queries (percentile, 95%)."""
    from scipy import stats

    data = np.asarray(per_query, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) < 2 or np.all(data == data[0]):
        value = float(data.mean()) if len(data) else float("nan")
        return 0.0, value, value
    result = stats.bootstrap((data,), np.mean, n_resamples=resamples, confidence_level=0.95,
                             method="percentile", rng=np.random.default_rng(seed))
    return (float(result.standard_error), float(result.confidence_interval.low),
            float(result.confidence_interval.high))


def status_of(reported: float | None, reproduced: float | None, tolerance: Tolerance, scale: str,
              synthetic: bool, printed: str | None = None) -> str:
    """within / below / above the tolerance (its text with its unit: ``within ±1 pt``), or why not compared.
    ``printed`` is the reported value's text where it says more than the number ("~2.5M")."""
    if reproduced is None or (isinstance(reproduced, float) and math.isnan(reproduced)):
        return NOT_RUN
    if reported is None:
        return "no reported value"
    if synthetic:
        return "not comparable (synthetic data)"
    if scale != "full":
        return f"not comparable ({scale} scale)"
    delta = reproduced - reported
    text = tolerance.text(reported, printed)
    if abs(delta) <= tolerance.bound(reported, printed) + 1e-9:
        return f"within {text}"
    return f"{'below' if delta < 0 else 'above'} (tolerance {text})"


# ---- the CSV -----------------------------------------------------------------------------------

def check_writable(path: Path) -> Path:
    """Refuse a leaderboard CSV whose folder cannot be written (before any training, and before locking),
    naming the folder and the setting that chose it."""
    resolved = paths.resolve_leaderboards_dir()
    chosen_by = resolved.chosen_by("--csv") if Path(path).parent == resolved.path else "--csv"
    paths.check_folder(Path(path).parent, chosen_by, "leaderboard folder")
    if Path(path).exists() and not os.access(path, os.W_OK):
        raise ReidbenchError(f"{path}: the leaderboard file is read-only, chosen by {chosen_by}",
                             hint="make it writable or write another with --csv")
    return Path(path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_leaderboard(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ReidbenchError(f"{path}: not a readable leaderboard CSV ({error})") from error
    missing = [c for c in KEY if c not in frame.columns]
    if missing:
        raise ReidbenchError(f"{path}: not a reidbench leaderboard (missing columns {', '.join(missing)})")
    return frame


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def text_row(row: dict[str, Any]) -> dict[str, str]:
    """A row as the CSV stores it: every column, numbers as short decimal text."""
    return {c: _cell_text(row.get(c)) for c in COLUMNS}


def rewrite(path: Path, build: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """Replace the CSV by ``build(current rows)`` under the file lock, atomically."""
    with _locked(path):
        out = build(read_leaderboard(path))
        atomic_write(path, lambda handle: handle.write(out.to_csv(index=False).encode()))
    return out


def merge_rows(path: Path, rows: Iterable[dict[str, Any]],
               order: Callable[[dict[str, str]], tuple] | None = None) -> pd.DataFrame:
    """Insert or replace rows by key (paper, table, row, dataset, metric, scale), atomically."""
    new = [text_row(r) for r in rows]

    def merged(frame: pd.DataFrame) -> pd.DataFrame:
        existing = {tuple(r[k] for k in KEY): r for r in frame.to_dict("records")}
        for row in new:
            key = tuple(row[k] for k in KEY)
            old = existing.get(key)
            if row["status"] == NOT_RUN and old is not None and old.get("status") != NOT_RUN:
                continue  # a blocked attempt never erases a measurement
            existing[key] = row
        records = list(existing.values())
        if order is not None:
            records.sort(key=order)
        return pd.DataFrame(records, columns=list(dict.fromkeys([*COLUMNS, *frame.columns])))

    return rewrite(path, merged)


# ---- rendering ---------------------------------------------------------------------------------

DISPLAY = ["cell", "metric", "reported", "reproduced", "95% CI", "delta", "status", "tolerance", "scale"]


def comparable(status: str) -> bool:
    """A measured row compared with the paper (full scale, real data): within, below or above the tolerance.
    Synthetic and reduced-scale rows are "not comparable": their delta means nothing and is never shown."""
    return str(status).removeprefix("paper inconsistency; ").startswith(("within", "below", "above"))


def _fmt(text: str, signed: bool = False, places: int = 2) -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return str(text)
    return f"{value:+.{places}f}" if signed else f"{value:.{places}f}"


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares: accuracy to two decimals, counts (millions, GMac) to three; a delta only
    where the row is comparable."""
    rows = []
    for _, row in frame.iterrows():
        places = 2 if metric_kind(row["metric"]) == "accuracy" else 3
        ci = f"[{_fmt(row['ci95_low'], places=places)}, {_fmt(row['ci95_high'], places=places)}]" \
            if row.get("ci95_low") else ""
        delta = _fmt(row["delta"], signed=True, places=places) if row["delta"] and comparable(row["status"]) else ""
        rows.append({"cell": f"{row['table']} / {row['row']} / {row['dataset']}", "metric": row["metric"],
                     "reported": row["reported"],
                     "reproduced": _fmt(row["reproduced"], places=places) if row["reproduced"] else "",
                     "95% CI": ci, "delta": delta, "status": row["status"], "tolerance": row.get("tolerance", ""),
                     "scale": row["scale"]})
    return pd.DataFrame(rows, columns=DISPLAY)


def to_markdown(frame: pd.DataFrame) -> str:
    shown = display_frame(frame)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row.values) + " |")
    return "\n".join(lines)


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(heading, rows): comparable reproductions, rows not comparable with the paper, rows not run."""
    status = frame["status"].astype(str)
    measured = status != NOT_RUN
    close = measured & status.map(comparable)
    return [(name, part) for name, part in (
        ("compared with the paper", frame[close]),
        ("not comparable (synthetic data or reduced scale): no delta", frame[measured & ~close]),
        ("not run", frame[~measured])) if not part.empty]


def to_rich(frame: pd.DataFrame, title: str) -> Any:
    """Comparable rows first (green within the tolerance, red outside), then, apart and greyed, the rows that
    cannot be compared with the paper, then those not run."""
    from rich.table import Table

    table = Table(title=title)
    for column in DISPLAY:
        table.add_column(column, justify="right" if column in ("reported", "reproduced", "delta") else "left",
                         overflow="fold")
    for index, (_name, part) in enumerate(_groups(frame)):
        if index:
            table.add_section()
        for _, row in display_frame(part).iterrows():
            status = str(row["status"])
            if status.startswith("paper inconsistency"):
                style = "yellow"  # one recipe, two printed values: not a failed reproduction
            else:
                style = "green" if status.startswith("within") else "red" if comparable(status) else "dim"
            table.add_row(*(str(v) for v in row.values), style=style)
    return table


def to_csv_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def plot(frame: pd.DataFrame, out: Path, title: str) -> Path:
    """Reported (x) against reproduced (y) with 95% intervals and the y = x line: full-scale reproductions in one
    panel, rows that cannot be compared (synthetic data, reduced scale) apart and greyed in another; colour = metric,
    marker = table, and the legend names the table and scale of every point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = frame[(frame["reported"] != "") & (frame["reproduced"] != "")]
    if measured.empty:
        raise ReidbenchError(f"--plot {out}: no row has both a reported and a reproduced value yet",
                             hint="run `reidbench reproduce` first")
    close = measured["status"].map(comparable)
    parts = [(name, part) for name, part in (("compared with the paper (full scale)", measured[close]),
                                             ("not comparable: synthetic data or reduced scale", measured[~close]))
             if not part.empty]
    figure, axes = plt.subplots(1, len(parts), figsize=(6.5 * len(parts), 6.5), squeeze=False)
    markers = dict(zip(dict.fromkeys(measured["table"]), "osD^v<>pP*Xh", strict=False))
    colours = {metric: f"C{i}" for i, metric in enumerate(dict.fromkeys(measured["metric"]))}
    for axis, (name, part) in zip(axes[0], parts, strict=True):
        apart = name.startswith("not")
        for (table, metric, scale), group in part.groupby(["table", "metric", "scale"], sort=False):
            x = group["reported"].astype(float).to_numpy()
            y = group["reproduced"].astype(float).to_numpy()
            low = pd.to_numeric(group["ci95_low"], errors="coerce").fillna(pd.Series(y, index=group.index)).to_numpy()
            high = pd.to_numeric(group["ci95_high"], errors="coerce").fillna(pd.Series(y, index=group.index)).to_numpy()
            axis.errorbar(x, y, yerr=[np.maximum(0, y - low), np.maximum(0, high - y)], fmt=markers.get(table, "o"),
                          capsize=3, color="0.6" if apart else colours[metric], mfc="none" if apart else None,
                          label=f"{table} · {metric} · {scale}")
        limits = [0, 100]
        axis.plot(limits, limits, "k--", linewidth=0.8, label="reproduced = reported")
        axis.set_xlim(limits)
        axis.set_ylim(limits)
        axis.set_xlabel("reported (%)")
        axis.set_ylabel("reproduced (%)")
        axis.set_title(name, fontsize=10, color="0.45" if apart else "black")
        axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()

    def write(handle: Any) -> None:
        figure.savefig(handle, format=out.suffix.lstrip(".") or "png", dpi=120)

    atomic_write(out, write)
    plt.close(figure)
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
