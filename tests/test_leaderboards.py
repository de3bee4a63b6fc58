"""The committed leaderboards: one CSV and one Markdown file per paper, up to date with the paper files."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from reidbench import leaderboard
from reidbench.papers.loading import list_papers, load_paper
from reidbench.papers.publish import markdown_path, published_frame, render_markdown, write_published

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboards"
PAPERS = ["aap-reid", "fsafcmn", "masenet", "mhsa-net"]


def test_the_folder_holds_one_csv_and_one_markdown_per_paper():
    assert list_papers() == PAPERS
    names = {p.name for p in COMMITTED.iterdir() if not p.name.startswith(".")}
    assert {n for n in names if n.endswith((".csv", ".md"))} == {f"{k}.{ext}" for k in PAPERS for ext in ("csv", "md")}


@pytest.mark.parametrize("key", PAPERS)
def test_committed_leaderboard_is_up_to_date_with_the_paper_file(key):
    paper = load_paper(key)
    csv_path = leaderboard.leaderboard_path(key, COMMITTED)
    frame = published_frame(paper, leaderboard.read_leaderboard(csv_path))
    hint = f"leaderboards/{key}.* are out of date; run `python -m reidbench leaderboard {key} --write` and commit"
    assert leaderboard.to_csv_text(frame) == csv_path.read_text(), hint
    assert render_markdown(paper, frame) == markdown_path(key, COMMITTED).read_text(), hint
    assert set(frame["scale"]) == {"full"}  # smoke and small runs never appear
    cells = {(t.id, r.name) for t in paper.tables for r in t.rows if t.kind != "architecture"}
    assert {(t, r) for t, r in zip(frame["table"], frame["row"], strict=True)} <= cells


def _measured_row(**changes: object) -> dict[str, object]:
    row = {"paper": "masenet", "table": "Table I", "row": "MASENet (Ours)", "dataset": "market1501",
           "metric": "R1", "reported": 90.0, "reproduced": 95.5, "ci95_low": 95.0, "ci95_high": 96.0,
           "status": "within ±1", "scale": "full", "synthetic": False, "seeds": "0", "run_ids": "abc123",
           "recipe": "masenet/masenet_market1501", "recipe_hash": "0123456789abcdef", "git_commit": "feedbeef",
           "device": "cuda", "torch": "2.14.1", "distance": "euclidean"}
    row.update(changes)
    return row


def test_write_keeps_full_scale_measurements_and_explains_every_other_cell(tmp_path):
    paper = load_paper("masenet")
    path = leaderboard.leaderboard_path("masenet", tmp_path)
    leaderboard.merge_rows(path, [
        _measured_row(),  # its reported value (90.0) is stale: the paper prints 95.9
        _measured_row(row="MSINet [9]", scale="smoke", synthetic=True),  # a smoke row that slipped in
        _measured_row(row="MSINet [9]", status=leaderboard.NOT_RUN, reproduced=None, run_ids="",
                      note="dataset missing: run `reidbench data download market1501 --root /home/x`")])
    write_published(paper, tmp_path, say=lambda line: None)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    kept = frame[(frame["row"] == "MASENet (Ours)") & (frame["table"] == "Table I")
                 & (frame["dataset"] == "market1501") & (frame["metric"] == "R1")].iloc[0]
    assert kept["run_ids"] == "abc123" and kept["reported"] == "95.9"
    assert float(kept["delta"]) == pytest.approx(-0.4) and kept["status"] == "within ±1 pt"
    assert kept["tolerance"] == "±1 pt"
    assert set(frame["scale"]) == {"full"}
    not_run = frame[frame["status"] == leaderboard.NOT_RUN]
    counted = frame[frame["note"].str.startswith("counted without training")]
    assert len(not_run) == len(frame) - 1 - len(counted) and set(counted["metric"]) == {"params_M"}
    assert len(counted) == 6  # Table I's printed Params, one per row, on its Market-1501 cell
    reasons = {note.split(":", 1)[0] for note in not_run["note"]}
    assert reasons == {"cited", "dataset not installed", "needs GPU time"}  # every model of MASENet's tables exists
    msinet = not_run[(not_run["row"] == "MSINet [9]") & (not_run["dataset"] == "market1501")]["note"].iloc[0]
    assert msinet.startswith("needs GPU time: 350 epochs x 12,936 market1501 images (masenet/msinet_market1501)")
    assert "/home/x" not in path.read_text()  # nothing of the machine that ran reproduce
    msmt = not_run[(not_run["row"] == "MASENet (Ours)") & (not_run["dataset"] == "msmt17")]["note"].iloc[0]
    assert msmt.startswith("dataset not installed: MSMT17 is by request") and "data prepare msmt17" in msmt
    text = markdown_path("masenet", tmp_path).read_text()
    assert ("| MASENet (Ours) | market1501 | R1 95.9 · mAP 89.9 · params_M ~2.5M | R1 95.50 [95.00, 96.00] · "
            "params_M 2.447 | R1 within ±1 pt · params_M below (tolerance ±0.05M, rounding of ~2.5M) · others not run |"
            in text)
    assert "runs abc123 (seeds 0); recipe masenet/masenet_market1501 (0123456789abcdef)" in text
    assert "Quoted from other papers, with no model in reidbench (in the CSV as not run): Auto-ReID+ [55]" in text


def test_adding_a_model_changes_its_cells(monkeypatch):
    import reidbench.papers.publish as publish

    paper = load_paper("masenet")
    empty = pd.DataFrame(columns=leaderboard.COLUMNS)

    def cdnet_note(frame: pd.DataFrame) -> str:
        return frame[frame["row"] == "CDNet [17]"]["note"].iloc[0]

    assert cdnet_note(published_frame(paper, empty)).startswith("needs GPU time: 350 epochs")
    registered = publish.list_models()
    monkeypatch.setattr(publish, "list_models", lambda: [m for m in registered if m != "cdnet"])
    assert cdnet_note(published_frame(paper, empty)).startswith("model not available: model 'cdnet'")


def test_cli_write_and_reduced_scale_files(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_LEADERBOARDS", str(tmp_path))
    code, out, err = run_cli("leaderboard", "fsafcmn", "--write")
    assert code == 0, err
    assert (tmp_path / "fsafcmn.csv").is_file() and (tmp_path / "fsafcmn.md").is_file()
    assert "13 cells" in (tmp_path / "fsafcmn.md").read_text()
    code, _, err = run_cli("leaderboard", "masenet")
    assert code == 2 and "no leaderboard yet" in err
    leaderboard.merge_rows(leaderboard.leaderboard_path("masenet", tmp_path, scale="smoke"),
                           [_measured_row(scale="smoke", synthetic=True)])
    assert (tmp_path / "masenet.smoke.csv").is_file()
    code, _, err = run_cli("leaderboard", "masenet")
    assert code == 2 and "--scale smoke" in err
    code, out, err = run_cli("leaderboard", "masenet", "--scale", "smoke", "--format", "csv")
    assert code == 0 and "MASENet (Ours)" in out


def test_params_are_compared_with_a_params_tolerance_at_the_papers_setting(run_cli, monkeypatch):
    """`reidbench leaderboard aap-reid` compares every printed parameter count within 0.01M, counted without
    training for the paper's classes and input; MASENet's Table I compares its Params column with the count
    without classifiers (CDNet's row: its backbone), each row saying which convention it used."""
    monkeypatch.setenv("REIDBENCH_LEADERBOARDS", str(COMMITTED))
    code, out, err = run_cli("leaderboard", "aap-reid", "--format", "csv")
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out), dtype=str, keep_default_na=False)
    params = frame[frame["metric"] == "params_M"]
    assert len(params) == 9 + 20 and set(params["tolerance"]) == {"±0.01M"}
    assert set(params["status"]) == {"within ±0.01M"}  # every count of Tables 2 and 3
    bam = params[(params["table"] == "Table 3") & (params["row"] == "ResNet18 BAM")].iloc[0]
    assert float(bam["reproduced"]) == pytest.approx(11.80, abs=0.005)  # 751 Market-1501 classes
    code, out, _ = run_cli("leaderboard", "aap-reid", "--format", "markdown")
    assert "ResNet18 BAM / market1501 | params_M | 11.8 | 11.801 |  | +0.001 | within ±0.01M | ±0.01M | full |" in out
    masenet = leaderboard.read_leaderboard(leaderboard.leaderboard_path("masenet", COMMITTED))
    table_i = masenet[(masenet["table"] == "Table I") & (masenet["metric"] == "params_M")].set_index("row")
    assert float(table_i.loc["MSINet [9]", "reproduced"]) == pytest.approx(2.328, abs=1e-3)
    assert table_i.loc["MSINet [9]", "status"] == "within ±0.05M, rounding of 2.3M"
    assert "Params deploy: without classifiers" in table_i.loc["MSINet [9]", "note"]
    assert "Params backbone: backbone only" in table_i.loc["CDNet [17]", "note"]
