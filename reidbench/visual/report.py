"""`reidbench report`: one static HTML page per paper (tables by pandas, images by matplotlib, no script and no
network): the leaderboard (reported beside reproduced, delta and status coloured, 95% intervals, the provenance
of each row; rows that cannot be compared with the paper apart and greyed), the ablation tables and every
figure beside its caption, or why it is not drawn yet."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from reidbench import __version__, leaderboard
from reidbench.envinfo import git_commit
from reidbench.evaluation.atomic import atomic_write
from reidbench.papers.schema import Paper
from reidbench.visual.figures import FigureResult, make_figures

IMAGES = "images"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.apart td { color: #888; background: #fafafa; }
.note { color: #555; font-size: 0.9em; }
figure { display: flex; gap: 1.5em; align-items: flex-start; margin: 1.5em 0; }
figure img { max-width: 900px; border: 1px solid #ddd; }
figcaption { max-width: 420px; font-size: 0.9em; }
.missing { border: 1px dashed #c90; padding: 0.8em; background: #fffbe8; }
code { background: #f3f3f3; padding: 0 3px; }
"""
WITHIN, OUTSIDE, GREY = "color: #1a7f37; font-weight: bold", "color: #c0392b; font-weight: bold", "color: #999"


def _number(text: Any, signed: bool = False) -> str:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return str(text or "")
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _printed(text: Any) -> str:
    """A reported value as the paper prints it (the CSV drops a trailing ".0")."""
    text = str(text or "")
    return f"{text}.0" if text and "." not in text and text.lstrip("-").isdigit() else text


def _provenance(row: dict[str, str]) -> str:
    if not row.get("run_ids"):
        return ""
    parts = [f"runs {row['run_ids']} (seeds {row.get('seeds', '')})",
             f"{row.get('recipe', '')} @ {row.get('recipe_hash', '')}",
             f"commit {str(row.get('git_commit', ''))[:10]}",
             f"{row.get('device', '')}, torch {row.get('torch', '')}", str(row.get("distance", ""))]
    if row.get("rerank_k1"):
        parts.append(f"re-ranking k1={row['rerank_k1']}, k2={row['rerank_k2']}, λ={row['rerank_lambda_value']}")
    return " · ".join(p for p in parts if p.strip())


def _board(frame: pd.DataFrame, greyed: bool) -> str:
    """The measured rows: reported, reproduced, 95% CI, delta (coloured by status; left out, as in the terminal
    leaderboard, when the row cannot be compared with the paper), status, scale and provenance."""
    rows = []
    for row in frame.to_dict("records"):
        ci = f"[{_number(row['ci95_low'])}, {_number(row['ci95_high'])}]" if row.get("ci95_low") else ""
        rows.append({"table": row["table"], "row": row["row"], "dataset": row["dataset"], "metric": row["metric"],
                     "reported": _printed(row["reported"]), "reproduced": _number(row["reproduced"]), "95% CI": ci,
                     "delta": _number(row["delta"], signed=True)
                     if row.get("delta") and leaderboard.comparable(row["status"]) else "",
                     "status": row["status"], "scale": row["scale"], "provenance": _provenance(row)})
    shown = pd.DataFrame(rows)

    def colour(line: pd.Series) -> list[str]:
        status = str(line["status"])
        if greyed or not leaderboard.comparable(status):
            tone = GREY
        else:
            tone = WITHIN if status.startswith("within") else OUTSIDE
        return [tone if column in ("delta", "status") else "" for column in line.index]

    styler = shown.style.apply(colour, axis=1).hide(axis="index")
    return styler.set_table_attributes(f'class="{"apart" if greyed else "board"}"').to_html()


def _not_run(frame: pd.DataFrame) -> str:
    shown = frame[["table", "row", "dataset", "metric", "reported", "note"]].rename(columns={"note": "why not run"})
    shown = shown.assign(reported=shown["reported"].map(_printed))
    return shown.style.hide(axis="index").set_table_attributes('class="notrun"').to_html()


def _ablation(paper: Paper, frame: pd.DataFrame) -> str:
    """Each ablation table that has run: per dataset and metric, the printed value beside the reproduced one
    (with its delta to the table's first row)."""
    parts = []
    for table in (t for t in paper.tables if t.ablation):
        rows = frame[(frame["table"] == table.id) & (frame["status"] != leaderboard.NOT_RUN)]
        if rows.empty:
            continue
        columns = [f"{paper.datasets[g].label} {m}" for g in table.groups for m in table.metrics]
        found = {(r["row"], f"{r['dataset']} {r['metric']}"): r for r in rows.to_dict("records")}
        first: dict[str, float] = {}
        lines = {}
        for spec in table.rows:
            line: dict[tuple[str, str], str] = {}
            for column in columns:
                measured = found.get((spec.name, column))
                if measured is None:
                    continue
                value = float(measured["reproduced"])
                base = first.setdefault(column, value)
                line[(column, "paper")] = _printed(measured["reported"]) or "—"
                line[(column, "reproduced")] = f"{value:.2f}" + (f" ({value - base:+.2f})" if lines else "")
            if line:
                lines[spec.name] = line
        shown = pd.DataFrame.from_dict(lines, orient="index")
        order = [(c, side) for c in columns for side in ("paper", "reproduced") if (c, side) in shown.columns]
        shown = shown[order].fillna("")
        shown.columns = pd.MultiIndex.from_tuples(order)
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in table.notes)
        parts.append(f"<h3>{html.escape(table.id)}: {html.escape(table.caption)}</h3>{notes}"
                     + shown.style.set_table_attributes('class="ablation"').to_html())
    return "".join(parts) or '<p class="note">No ablation cell has run at this scale yet.</p>'


def _figure(result: FigureResult, out: Path) -> str:
    figure = result.figure
    caption = f"<b>{html.escape(figure.id)}.</b> {html.escape(figure.caption)}"
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in figure.notes)
    left_out = "".join(f'<p class="note">Not drawn: {html.escape(line)}.</p>' for line in result.left_out)
    if result.drawn is not None:
        source = result.drawn.path.relative_to(out).as_posix()
        runs = html.escape(", ".join(result.runs))
        return (f'<figure id="{figure.slug}"><img src="{html.escape(source)}" alt="{html.escape(figure.id)}">'
                f"<figcaption>{caption}<p class=\"note\">Reproduced ({figure.kind}) from runs {runs}.</p>{notes}"
                f"{left_out}</figcaption></figure>")
    missing = "".join(f"<li>{html.escape(line)}</li>" for line in result.missing)
    commands = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in result.commands)
    return (f'<div class="missing" id="{figure.slug}"><p>{caption}</p>{notes}<p>Not drawn yet: these cells must '
            f"run first</p><ul>{missing}</ul><p>with</p><ul>{commands}</ul></div>")


def render_page(paper: Paper, frame: pd.DataFrame, figures: list[FigureResult], out: Path, scale: str,
                chart: Path | None) -> str:
    measured = frame[frame["status"] != leaderboard.NOT_RUN] if not frame.empty else frame
    close = measured[[leaderboard.comparable(s) for s in measured["status"]]] if not measured.empty else measured
    apart = measured[[not leaderboard.comparable(s) for s in measured["status"]]] if not measured.empty else measured
    not_run = frame[frame["status"] == leaderboard.NOT_RUN] if not frame.empty else frame
    sections = [f"<h1>{html.escape(paper.title)}</h1>",
                f'<p>{html.escape(paper.citation)}. {html.escape(paper.source)}</p>',
                f'<p class="note">reidbench {__version__}, commit {html.escape(git_commit()[:10])}, '
                f"{time.strftime('%Y-%m-%d %H:%M')}; {scale} scale. Reproduced numbers count as matching the paper "
                "within the tolerance of their kind of number (the tolerance column: accuracy points, parameter "
                "counts, GMac); synthetic or reduced-scale runs are never compared.</p>",
                '<p><a href="#leaderboard">Leaderboard</a> · <a href="#ablations">Ablations</a> · '
                '<a href="#figures">Figures</a></p>', '<h2 id="leaderboard">Leaderboard</h2>']
    if chart is not None:
        sections.append(f'<figure><img src="{html.escape(chart.relative_to(out).as_posix())}" '
                        'alt="reported against reproduced"><figcaption>Reported (x) against reproduced (y) with 95% '
                        "intervals; comparable rows and rows that are not (synthetic or reduced scale) are drawn "
                        "apart.</figcaption></figure>")
    sections.append("<h3>Comparable with the paper (full scale, real data)</h3>")
    sections.append(_board(close, greyed=False) if not close.empty
                    else '<p class="note">No full-scale reproduction at this scale yet.</p>')
    if not apart.empty:
        sections += ["<h3>Not comparable with the paper (synthetic data or reduced scale): no delta is meaningful"
                     "</h3>", _board(apart, greyed=True)]
    if not not_run.empty:
        sections += ["<h3>Not run</h3>", _not_run(not_run)]
    sections += ['<h2 id="ablations">Ablations</h2>', _ablation(paper, frame)]
    sections += ['<h2 id="figures">Figures</h2>', *(_figure(result, out) for result in figures)]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(paper.key)}: '
            f"reidbench report</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(paper: Paper, out: Path, *, scale: str, data_root: Path, overrides: list[str] | None = None,
                 csv: Path | None = None) -> Path:
    """Draw the figures and the chart into ``out/images`` and write ``out/index.html``; returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    images = out / IMAGES
    figures = make_figures(paper, None, scale=scale, out_dir=images, data_root=data_root, overrides=overrides,
                           say=lambda _line: None)
    frame = leaderboard.read_leaderboard(csv or leaderboard.leaderboard_path(paper.key, scale=scale))
    measured = frame[(frame["reported"] != "") & (frame["reproduced"] != "")]
    chart = None
    if not measured.empty:
        chart = leaderboard.plot(frame, images / "reported-vs-reproduced.png", f"{paper.key}: reported vs reproduced")
    page = out / "index.html"
    text = render_page(paper, frame, figures, out, scale, chart)
    atomic_write(page, lambda handle: handle.write(text.encode()))
    return page
