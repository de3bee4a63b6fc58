"""The papers' figures as data, `reidbench figures`, `visualize`, `report`, and the leaderboard's comparable rows.

One tiny smoke run (MHSA-Net, one epoch, on the synthetic Market miniature) serves every drawing test: a small
paper file in a temporary recipes folder names it three ways (its own ranking, the local feature, the cosine
distance: evaluation-only rows share the run) and lists a figure of every kind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reidbench import leaderboard
from reidbench.cli.app import main
from reidbench.models import create_model
from reidbench.papers.figure_spec import FigureSpecError
from reidbench.papers.loading import list_papers, load_paper
from reidbench.visual.draw import RIGHT, WRONG
from reidbench.visual.render import draw_rank_lists
from reidbench.visual.runs import FinishedRun, choose_queries

TINY = ["--set", "train.epochs=1"]
PAPER = """
paper: figtest
title: A tiny paper for the figure tests
citation: test
tolerance: 1.0
datasets:
  M: {train: market1501, test: market1501}
tables:
  - id: Table 1
    caption: One MHSA-Net cell ranked three ways.
    groups: [M]
    metrics: [R1, mAP]
    ablation: true
    rows:
      - {name: Net, model: mhsa_net, recipe: "mhsa-net/mhsa_net_{slug}", values: {M: [90.0, 80.0]}}
      - {name: Net local, model: mhsa_net, recipe: "mhsa-net/mhsa_net_{slug}", evaluate: [eval.feature=local],
         values: {M: [89.0, 79.0]}}
      - {name: Net cosine, model: mhsa_net, recipe: "mhsa-net/mhsa_net_{slug}", evaluate: [eval.metric=cosine]}
figures:
  - {id: Fig. 1, kind: ranklist, caption: Rank lists., queries: 3, top: 30,
     panels: [{label: Net, table: Table 1, row: Net, dataset: M}]}
  - {id: Fig. 2, kind: cam, caption: Grad-CAM., queries: 3,
     panels: [{label: Net, table: Table 1, row: Net, dataset: M},
              {label: Local, table: Table 1, row: Net local, dataset: M}]}
  - {id: Fig. 3, kind: attention, caption: Attention., queries: 3,
     panels: [{label: Net, table: Table 1, row: Net, dataset: M}, {label: Other, cited: "quoted, not built"}]}
  - {id: Fig. 4, kind: featuremap, caption: Erased., queries: 3, erase: [0.2, 0.3],
     panels: [{label: Net, table: Table 1, row: Net, dataset: M}]}
  - {id: Fig. 5, kind: featuremap, caption: Heads., queries: 1, per_map: true,
     panels: [{label: Net, table: Table 1, row: Net, dataset: M}]}
  - {id: Fig. 6, kind: bars, table: Table 1}
  - {id: Fig. 7, kind: curve, caption: Loss., table: Table 1, dataset: M, subplots: [loss], series: [Net, Net local],
     row: "{series}"}
  - {id: Fig. 8, kind: sweep, caption: Sweep., x: {name: ranking, values: [local, cosine]}, datasets: [M],
     metrics: [R1, mAP], series: [{label: Net, table: Table 1, row: "Net {x}"}]}
"""


def _cli(*args: str) -> int:
    """Run the CLI in this process; its exit code (what it printed is capsys')."""
    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One finished smoke run of the tiny paper's cell, in its own data, runs and leaderboard folders."""
    root = tmp_path_factory.mktemp("figures")
    (root / "recipes" / "figtest").mkdir(parents=True)
    (root / "recipes" / "figtest" / "paper.yaml").write_text(PAPER)
    with pytest.MonkeyPatch.context() as patch:
        for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                          ("REIDBENCH_RECIPES", "recipes"), ("XDG_CACHE_HOME", "cache")):
            patch.setenv(name, str(root / sub))
        code = _cli("reproduce", "figtest", "--scale", "smoke", *TINY)
        assert code == 0
        yield root


def _run_dir(root: Path) -> Path:
    return next((root / "runs").rglob("run.json")).parent


def _png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return imread(path)[..., :3]


def _assert_not_blank(path: Path, min_size: tuple[int, int] = (300, 200)) -> None:
    pixels = _png(path)
    height, width = pixels.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], (path, pixels.shape)
    drawn = (pixels < 0.95).any(axis=2).mean()  # not white
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert drawn > 0.05 and pixels.std() > 0.05 and colours > 50, (path, drawn, pixels.std(), colours)


# ---- papers as data ----------------------------------------------------------------------------

def test_the_four_papers_list_the_figures_of_the_issue():
    kinds = {key: {f.id: f.kind for f in load_paper(key).figures} for key in list_papers()}
    assert kinds == {
        "masenet": {"Fig. 3": "bars", "Fig. 4": "cam", "Fig. 5": "featuremap"},
        "aap-reid": {"Figure 4": "curve", "Figure 5": "cam"},
        "mhsa-net": {"Fig. 1": "attention", "Fig. 6": "featuremap", "Fig. 7": "attention", "Fig. 8": "featuremap",
                     "Fig. 9": "sweep", "Fig. 10": "sweep"},
        "fsafcmn": {"Fig. 2": "ranklist"},
    }
    masenet = load_paper("masenet")
    fig3 = next(f for f in masenet.figures if f.id == "Fig. 3")
    assert fig3.caption == masenet.table("Fig. 3").caption  # one place for the caption
    assert [p.label for p in fig3.panels if p.dataset == "MS"] == ["Baseline", "+SE", "+SGE", "+SE+SGE"]
    mhsa = load_paper("mhsa-net")
    fig9 = next(f for f in mhsa.figures if f.id == "Fig. 9")
    assert len(fig9.panels) == 2 * 2 * 9 and {p.table for p in fig9.panels} == {"Table VII", "Fig. 9"}
    assert [p.label for p in next(f for f in mhsa.figures if f.id == "Fig. 1").panels if p.cited] == \
        ["RGA-SC", "SCSN (3-stage)"]


def test_a_bad_figure_entry_is_one_line_naming_file_figure_and_key(tmp_path, monkeypatch):
    (tmp_path / "figtest").mkdir()
    bad = PAPER.replace("row: Net local, dataset: M}", "row: Net lokal, dataset: M}")
    (tmp_path / "figtest" / "paper.yaml").write_text(bad)
    monkeypatch.setenv("REIDBENCH_RECIPES", str(tmp_path))
    with pytest.raises(FigureSpecError) as error:
        load_paper("figtest")
    assert "figures[1] (Fig. 2).panels[1].row" in error.value.message and "'Net lokal'" in error.value.message


def test_figures_without_runs_name_the_cells_and_the_command(tmp_path, monkeypatch, capsys):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    code = _cli("figures", "fsafcmn", "--scale", "smoke", "--out", str(tmp_path / "out"))
    out = capsys.readouterr().out
    assert code == 1
    assert "not made yet" in out and "Table 1 / Our Method / M: not run yet" in out
    assert "reidbench reproduce fsafcmn --table 'Table 1' --row 'Our Method' --dataset M --scale smoke" in out
    assert not list(tmp_path.rglob("*.png"))


# ---- drawing from a smoke run ------------------------------------------------------------------

def test_figures_are_deterministic_and_name_what_they_leave_out(tiny, capsys):
    first, second = tiny / "again-1", tiny / "again-2"
    for folder in (first, second):
        code = _cli("figures", "figtest", "--figure", "Fig. 3", "--scale", "smoke", *TINY, "--out", str(folder))
        printed = capsys.readouterr().out
        assert code == 0, printed
        assert "left out: Other" in printed  # the cited panel
    assert [p.name for p in first.iterdir()] == ["fig-3.png"]
    assert (first / "fig-3.png").read_bytes() == (second / "fig-3.png").read_bytes()


def test_rank_list_frames_agree_with_the_pids(tiny):
    run = FinishedRun(_run_dir(tiny))
    queries = choose_queries(run.features, 3, seed=0)
    assert queries == choose_queries(run.features, 3, seed=0)
    drawn, lists = draw_rank_lists([("net", run)], queries, 30, "ranks", "footer", tiny / "ranks.png")
    features = run.features
    frames = iter(drawn.frames)
    pixels = _png(drawn.path)
    seen = set()
    for ranked in lists:
        # the gallery order and pids as the evaluation sees them: by distance, own-camera matches left out
        order = np.argsort(run.distance[ranked.query], kind="stable")
        junk = (features.gallery_pids[order] == features.query_pids[ranked.query]) & \
               (features.gallery_camids[order] == features.query_camids[ranked.query])
        expected = order[~junk][:30]
        assert ranked.gallery == expected.tolist()
        assert ranked.correct == (features.gallery_pids[expected] == features.query_pids[ranked.query]).tolist()
        query_colour, _ = next(frames)
        for is_right, (colour, (left, top, _right, bottom)) in zip(ranked.correct, frames, strict=False):
            assert colour == (RIGHT if is_right else WRONG)
            # the frame as drawn: the pixels on the tile's left edge have the frame's colour
            edge = pixels[(top + bottom) // 2 - 3:(top + bottom) // 2 + 3, max(0, left - 1):left + 2]
            target = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
            assert np.abs(edge - target).sum(axis=-1).min() < 0.15, (colour, edge)
            seen.add(colour)
    assert seen == {RIGHT, WRONG}  # 30 places out of 78 hold both right and wrong matches


def test_visualize_ranks_cam_and_attention_write_their_pngs(tiny, capsys):
    run_dir = _run_dir(tiny)
    for what in ("ranks", "cam", "attention"):
        code = _cli("visualize", what, str(run_dir), "--query", "0", "--query", "5")
        printed = capsys.readouterr().out
        assert code == 0, printed
        _assert_not_blank(run_dir / "visualize" / f"{what}.png")
    code = _cli("visualize", "ranks", str(run_dir), "--query", "999")
    assert code == 2 and "--query 999: expected a query index in 0..23" in capsys.readouterr().err
    code = _cli("visualize", "cam", str(tiny))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a run folder" in err


def test_cam_without_captum_says_how_to_install_it(tiny, monkeypatch):
    import sys

    from reidbench.errors import ReidbenchError
    from reidbench.visual.maps import gradcam_maps

    run = FinishedRun(_run_dir(tiny))
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ReidbenchError) as error:
        gradcam_maps(run.model, torch.zeros(1, 3, 64, 32), run.settings)
    assert "captum" in error.value.message and "reidbench[viz]" in error.value.hint


# ---- the model contract ------------------------------------------------------------------------

def test_own_attention_maps_through_the_contract():
    images = torch.randn(2, 3, 64, 32)
    mhsa = create_model("mhsa_net", num_classes=5, trunk="small", small_width=8, dim=16, heads=3).eval()
    alpha = mhsa.attention_maps(images)
    assert list(alpha) == ["head 1", "head 2", "head 3"] and alpha["head 1"].shape == (2, 4, 2)
    assert torch.allclose(sum(alpha.values()), torch.ones(2, 4, 2))  # paper reading: softmax over the heads
    masenet = create_model("masenet", num_classes=5).eval()
    gates = masenet.attention_maps(torch.randn(2, 3, 128, 64))
    assert list(gates) == [f"SGE cell {i}" for i in range(1, 7)]
    assert all(0 < float(g.min()) and float(g.max()) < 1 for g in gates.values())
    assert create_model("msinet", num_classes=5).attention_maps(images) == {}  # no attention of its own
    assert all(module.recorded is None for _, module in masenet.sge_modules())  # nothing kept after the call


# ---- report and leaderboard --------------------------------------------------------------------

def test_report_page_draws_every_figure_beside_its_caption(tiny):
    out = tiny / "report"
    code = _cli("report", "figtest", "--out", str(out), "--scale", "smoke", *TINY)
    assert code == 0
    figures = sorted(p.name for p in (out / "images").glob("fig-*.png"))
    assert figures == [f"fig-{i}.png" for i in range(1, 9)]  # one of every kind, from the one smoke run
    for name in figures:
        _assert_not_blank(out / "images" / name)
    page = (out / "index.html").read_text()
    assert page.count("<table") >= 2 and "Not comparable with the paper" in page and "Ablations" in page
    sources = [s.split('"')[0] for s in page.split('src="')[1:]]
    assert len(sources) == 9  # the chart and eight figures
    for source in sources:
        assert not source.startswith(("http:", "https:", "/")) and (out / source).is_file()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("<figcaption>") == 9 and "Rank lists." in page
    assert "run_ids" not in page and "runs mhsa_net_market1501-smoke" in page  # provenance, in words
    smoke = leaderboard.read_leaderboard(tiny / "lb" / "figtest.smoke.csv")
    deltas = [f"{float(d):+.2f}" for d in smoke["delta"] if d]
    assert deltas and not any(f">{d}<" in page for d in deltas)  # smoke rows: no delta, as in the terminal


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no chromium or chromium-browser binary on this machine")
def test_report_page_renders_in_headless_chromium(tiny):
    out = tiny / "report-browser"
    code = _cli("report", "figtest", "--out", str(out), "--scale", "smoke", *TINY)
    assert code == 0
    shot = out / "screenshot.png"
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--window-size=1400,4000", f"--screenshot={shot}", (out / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(out)})
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    _assert_not_blank(shot)  # tables and images drew (an empty page is white)


def _rows() -> list[dict[str, object]]:
    base = {"paper": "masenet", "table": "Table I", "row": "MASENet (Ours)", "dataset": "market1501",
            "tolerance": 1.0, "metric": "R1", "reported": 95.9}
    return [{**base, "scale": "full", "reproduced": 95.1, "delta": -0.8, "status": "within ±1", "run_ids": "a"},
            {**base, "scale": "smoke", "reproduced": 3.0, "delta": -92.9, "synthetic": True,
             "status": "not comparable (synthetic data)", "run_ids": "b"},
            {**base, "table": "Table III", "scale": "full", "status": leaderboard.NOT_RUN, "note": "needs GPU"}]


def test_terminal_leaderboard_sets_rows_that_cannot_be_compared_apart_without_a_delta(tmp_path):
    from rich.console import Console

    frame = pd.DataFrame([leaderboard.text_row(r) for r in _rows()])
    shown = leaderboard.display_frame(frame)
    assert shown["delta"].tolist() == ["-0.80", "", ""]
    console = Console(record=True, width=220)
    console.print(leaderboard.to_rich(frame.iloc[::-1].reset_index(drop=True), "lb"))
    text = console.export_text()
    assert "-92.90" not in text and "-0.80" in text
    lines = [line for line in text.splitlines() if "Table" in line]
    assert "within" in lines[0] and "synthetic" in lines[1] and "not run" in lines[2]  # comparable rows first
    path = leaderboard.plot(frame, tmp_path / "chart.png", "masenet")
    pixels = _png(path)
    assert pixels.shape[1] > pixels.shape[0] * 1.5  # two panels: comparable, and apart the rest


def test_smoke_rows_of_the_tiny_run_are_not_comparable(tiny):
    frame = leaderboard.read_leaderboard(tiny / "lb" / "figtest.smoke.csv")
    assert set(frame["status"]) <= {"not comparable (synthetic data)", "no reported value"}
    assert json.loads((_run_dir(tiny) / "run.json").read_text())["synthetic"] is True


@pytest.mark.slow
@pytest.mark.parametrize("key", ["fsafcmn", "masenet", "aap-reid", "mhsa-net"])
def test_smoke_runs_of_a_paper_draw_every_figure_it_lists(key, tmp_path, monkeypatch, capsys):
    """What `figures` says must run first, run; then every figure of the paper is drawn (minutes: MHSA-Net's
    K sweeps alone are 54 smoke runs)."""
    import shlex

    from reidbench.visual.figures import make_figures

    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb"),
                      ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    paper = load_paper(key)
    pending = make_figures(paper, scale="smoke", out_dir=tmp_path / "none", data_root=tmp_path / "data",
                           overrides=TINY[1::2], say=lambda _line: None)
    commands = list(dict.fromkeys(c for result in pending for c in result.commands))
    assert commands and not list(tmp_path.rglob("*.png"))
    for command in commands:
        assert _cli(*shlex.split(command)[1:]) == 0, command
    out = tmp_path / "figures"
    code = _cli("figures", key, "--scale", "smoke", *TINY, "--out", str(out))
    assert code == 0, capsys.readouterr().out
    for figure in paper.figures:
        _assert_not_blank(out / f"{figure.slug}.png")
