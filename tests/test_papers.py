"""Papers as data, planning, `reidbench reproduce`, `ablate` and `leaderboard`."""

from __future__ import annotations

import json
import multiprocessing

import pandas as pd
import pytest

from reidbench import leaderboard
from reidbench.errors import ReidbenchError, UnknownNameError
from reidbench.models.msinet import GENOTYPES
from reidbench.papers.loading import PaperSpecError, list_papers, load_paper, select_cells
from reidbench.papers.plan import CITED, FINISHED, NO_DATA, NO_MODEL, READY, RESUME
from reidbench.papers.reproduce import plan_reproduction, run_reproduction
from reidbench.papers.schema import Tolerance

from .leaderboard_writer import merge_five_times

# one epoch on a smaller miniature at 64 x 32: these tests check planning, launching and the rows, not learning
QUICK = ["train.epochs=1", "train.eval_every=1", "data.synthetic_ids=12", "data.synthetic_images_per_id=4",
         "data.height=64", "data.width=32"]


@pytest.fixture
def env(tmp_path, monkeypatch, profile_cache):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    return tmp_path


def test_all_four_papers_load_with_their_tables():
    assert list_papers() == ["aap-reid", "fsafcmn", "masenet", "mhsa-net"]
    tables = {key: [t.id for t in load_paper(key).tables] for key in list_papers()}
    assert tables["masenet"] == ["Table I", "Table II", "Table III", "Fig. 3"]
    assert tables["aap-reid"][:3] == ["Table 1", "Table 2", "Table 3"]
    # Figs. 9-10 print no numbers: their +FDRT / +IHTL cells are tables without values
    assert tables["mhsa-net"] == [f"Table {n}" for n in "I II III IV V VI VII VIII IX X XI".split()] + \
        ["Fig. 9", "Fig. 10"]
    assert tables["fsafcmn"] == ["Table 1", "Table 2"]


def test_values_are_transcribed_as_printed():
    masenet = load_paper("masenet")
    row = next(r for r in masenet.table("Table I").rows if r.name == "MASENet (Ours)")
    assert row.values["MS->M"] == [77.3, 50.1] and row.extra["Params"] == "~2.5M"
    assert next(r for r in masenet.table("Table I").rows if r.name == "CDNet [17]").values["VR"] == [None, None]
    assert masenet.datasets["MS->M"].label == "msmt17->market1501"
    aap = load_paper("aap-reid")
    star = next(r for r in aap.table("Table 1").rows if r.name == "AaP-ReID*")
    assert star.values["C"] == [84.7, 82.4, 89.5]  # with re-ranking
    mhsa = load_paper("mhsa-net")
    assert len(mhsa.table("Table I").rows) == 26
    assert next(r for r in mhsa.table("Table II").rows if r.name == "MHSA-Net* (K=8)").values["OD"] == [
        59.7, 74.3, 79.5, 44.8]
    assert load_paper("fsafcmn").table("Table 2").rows[-1].values["M"] == [81.5, 92.7]


def test_table_ii_is_the_msinet_genotype_the_models_use():
    names = {"G": "ag", "E": "exc", "C": "cross_att", "N": "none"}
    content = load_paper("masenet").table("Table II").content
    assert [names[op] for op in content["operations"]] == GENOTYPES[content["genotype"]]


def test_cited_rows_and_inconsistencies_are_recorded():
    masenet = load_paper("masenet")
    sota = masenet.table("Table III")
    assert sum(r.cited for r in sota.rows) == 15 and not sota.rows[-1].cited
    ours = next(r for r in masenet.table("Table I").rows if r.name == "MASENet (Ours)")
    assert "+1.3% mAP" in ours.note_for("MS", "mAP")
    assert "the two gains swapped" in sota.rows[-1].note_for("M")  # CARL: text +0.1 mAP / +0.7 R1, table reversed
    aap = load_paper("aap-reid")
    assert not any(r.cited for t in ("Table 1", "Table 2") for r in aap.table(t).rows if r.name.startswith("Baseline"))
    # one recipe, two printed values: both cells stay, each says so
    pair = [c for c in select_cells(aap, row="AaP-ReID", dataset="C") if c.table.id in ("Table 1", "Table 4")]
    assert [c.reported[:2] for c in pair] == [[72.4, 74.9], [67.2, 81.4]]
    assert all("Paper inconsistency" in c.note_for("mAP") and "67.2" in c.note_for("mAP") for c in pair)
    fsafcmn = [c for c in select_cells(load_paper("fsafcmn"), dataset="M") if c.inconsistency]
    assert [(c.table.id, c.reported) for c in fsafcmn] == [("Table 1", [82.4, 94.8]), ("Table 2", [81.5, 92.7])]
    mhsa = load_paper("mhsa-net")
    assert "19.6 mAP" in next(r for r in mhsa.table("Table II").rows if r.name == "MHSA-Net* (K=8)").notes["OD"]
    assert "7.2 mAP" in next(r for r in mhsa.table("Table V").rows if r.name == "MHSA-Net (K=8)").notes["M"]


def test_titles_and_values_from_the_text():
    masenet, fsafcmn = load_paper("masenet"), load_paper("fsafcmn")
    assert masenet.title == "Multiscale Attentional Squeeze-And-Excitation Network for Person Re-Identification"
    assert "9(4)" in masenet.source
    assert fsafcmn.title == "Fusion Self-Attention Feature Clustering Mechanism Network for Person ReID"
    baseline = masenet.table("Fig. 3").rows[0]
    assert baseline.values == {"M": [95.3, 89.6], "MS": [81.0, 59.6]} and "from the text" in baseline.note_for("M")


def test_tolerance_per_kind_of_number(tmp_path):
    aap, masenet = load_paper("aap-reid"), load_paper("masenet")
    assert aap.tolerance(aap.table("Table 3"), "mAP").text() == "±1 pt"
    assert aap.tolerance(aap.table("Table 3"), "params_M").text() == "±0.01M"  # printed to 0.01M, not ±1M
    assert load_paper("fsafcmn").tolerance(load_paper("fsafcmn").table("Table 1"), "params_M").text() == "±0.5%"
    table_i = masenet.table("Table I")
    cells = {c.row.name: c for c in select_cells(masenet, table="Table I", dataset="M")}
    assert cells["MSINet [9]"].metrics == ["R1", "mAP", "params_M"] and cells["MSINet [9]"].reported[2] == 2.3
    assert cells["CDNet [17]"].params_convention == "backbone" and cells["MSINet [9]"].params_convention == "deploy"
    assert "Params deploy: without classifiers" in cells["MSINet [9]"].note_for("params_M")
    rounding = masenet.tolerance(table_i, "params_M")
    assert rounding.bound(24.0, "~24M") == 0.5 and rounding.bound(2.3, "2.3M") == pytest.approx(0.05)
    path = tmp_path / "paper.yaml"
    path.write_text("paper: x\ndatasets: {M: {train: market1501}}\ntolerance: {params: lots}\ntables: []\n")
    with pytest.raises(PaperSpecError, match=r"tolerance\.params: expected a number"):
        load_paper(str(path))
    path.write_text("paper: x\ndatasets: {M: {train: market1501}}\ntables:\n"
                    "  - {id: T, groups: [M], metrics: [R1], rows: [\n"
                    "      {name: A, values: {M: [1.0]}, recipe: 'bot/resnet50_{slug}'},\n"
                    "      {name: B, values: {M: [2.0]}, recipe: 'masenet/msinet_{slug}'}]}\n"
                    "inconsistencies: [{cells: [T / A / M, T / B / M], note: n}]\n")
    with pytest.raises(PaperSpecError, match="do not share one recipe"):
        load_paper(str(path))


def test_selection_is_case_insensitive_prefix_and_exact_names_win():
    paper = load_paper("masenet")
    labels = [c.label for c in select_cells(paper, table="table i", row="MASENet")]
    assert labels == [f"Table I / MASENet (Ours) / {g}" for g in ("M", "MS", "VR", "MS->M")]
    assert {c.row.name for c in select_cells(paper, table="Table I", row="msinet")} == {"MSINet [9]"}
    assert [c.group.key for c in select_cells(paper, table="Table I", row="MASENet", dataset="ms->m")] == ["MS->M"]
    assert {c.table.id for c in select_cells(paper, table="fig")} == {"Fig. 3"}
    with pytest.raises(UnknownNameError):
        select_cells(paper, table="Table 9")


def test_bad_paper_file_is_one_line_naming_file_and_key(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text("paper: x\ndatasets: {M: {train: market1501}}\ntables:\n"
                    "  - {id: T, groups: [M], metrics: [R1, mAP], rows: [{name: A, values: {M: [1.0]}}]}\n")
    with pytest.raises(PaperSpecError, match=r"paper.yaml: tables\[0\] \(T\)\.rows\[0\] \(A\)\.values\.M: expected a "
                                             r"list of 2 values"):
        load_paper(str(path))
    path.write_text(path.read_text().replace("metrics: [R1, mAP]", "metrics: [R1, top5]"))
    with pytest.raises(PaperSpecError, match="unknown metric 'top5'"):
        load_paper(str(path))


def test_dry_run_plan_lists_every_table_i_and_fig3_cell(env, run_cli):
    code, out, err = run_cli("reproduce", "masenet", "--dry-run")
    assert code == 0, err
    result = plan_reproduction("masenet", data_root=env / "data")
    labels = {p.cell.label: p for p in result.planned}
    for row in ("ResNet50* [16]", "MSINet [9]", "MSINet-SAM [9]", "MASENet (Ours)"):
        for group in ("M", "MS", "VR", "MS->M"):
            assert labels[f"Table I / {row} / {group}"].status == NO_DATA
    assert labels["Table I / OSNet [44] / MS->M"].status == NO_DATA  # osnet_x1_0 exists
    assert labels["Table I / CDNet [17] / M"].status == NO_DATA  # cdnet and mgn exist: every model is in
    assert labels["Table III / MGN* [63] / MS"].status == NO_DATA
    assert not [label for label, p in labels.items() if p.status == NO_MODEL]
    assert labels["Table III / RGA-SC [54] / M"].status == CITED
    assert sum(label.startswith("Fig. 3") for label in labels) == 8
    assert "MS->M" in out and "reidbench data download market1501" in out
    assert "reidbench data prepare msmt17 --from" in out
    assert not (env / "runs").exists()


def test_missing_dataset_stops_the_cell_with_the_command(env, run_cli):
    code, out, err = run_cli("reproduce", "masenet", "--table", "Table I", "--row", "ResNet50", "--dataset", "M",
                             "--set", "model.name=small_cnn")
    assert code == 1
    assert f"reidbench data download market1501 --root {env / 'data'}" in out.replace("\n", "")
    frame = pd.read_csv(env / "lb" / "masenet.csv", dtype=str, keep_default_na=False)
    assert set(frame["status"]) == {"not run"} and "dataset missing" in frame["note"].iloc[0]
    assert not list((env / "runs").rglob("run.json"))  # nothing trained, nothing substituted


def test_smoke_reproduction_writes_rows_then_skips_finished_cells(env, run_cli):
    args = ("reproduce", "masenet", "--table", "Table I", "--row", "ResNet50", "--scale", "smoke",
            *[a for o in QUICK for a in ("--set", o)])
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert not (env / "lb" / "masenet.csv").exists()  # the full-scale (committed) leaderboard is untouched
    frame = pd.read_csv(env / "lb" / "masenet.smoke.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 9  # 4 datasets x (R1, mAP), and the printed Params on M
    params = frame[frame["metric"] == "params_M"].iloc[0]
    # counted for the paper's model and setting (BoT ResNet-50, 751 classes, 256 x 128), not the smoke run's
    # small CNN on the synthetic miniature, so compared at any scale
    assert float(params["reproduced"]) == pytest.approx(23.512, abs=1e-3) and params["model"] == "bot_resnet50"
    assert params["status"] == "within ±0.5M, rounding of ~24M" and params["input"] == "256x128"
    assert set(frame["dataset"]) == {"market1501", "msmt17", "veri776", "msmt17->market1501"}
    row = frame[(frame["dataset"] == "msmt17->market1501") & (frame["metric"] == "mAP")].iloc[0]
    assert row["reported"] == "31.8" and row["status"] == "not comparable (synthetic data)"
    assert float(row["ci95_low"]) <= float(row["reproduced"]) <= float(row["ci95_high"])
    assert row["ci_method"].startswith("bootstrap over") and row["synthetic"] == "True"
    assert row["model"] == "small_cnn" and row["distance"] == "euclidean" and row["git_commit"]
    assert float(row["delta"]) == pytest.approx(float(row["reproduced"]) - 31.8, abs=1e-3)
    run = json.loads(next((env / "runs").rglob("run.json")).read_text())
    assert row["recipe_hash"] in {run["recipe_hash"]} | {
        json.loads(p.read_text())["recipe_hash"] for p in (env / "runs").rglob("run.json")}
    stamps = {p: p.stat().st_mtime_ns for p in (env / "runs").rglob("run.json")}
    code, out, err = run_cli(*args)
    assert code == 0 and "training" not in out
    assert stamps == {p: p.stat().st_mtime_ns for p in (env / "runs").rglob("run.json")}


def test_interrupted_cell_resumes(env, monkeypatch):
    import reidbench.engine.trainer as trainer

    overrides = ["train.epochs=2", "train.eval_every=2"]
    result = plan_reproduction("masenet", table="Table I", row="ResNet50", dataset="M", scale="smoke",
                               data_root=env / "data", overrides=overrides)
    save = trainer.save_checkpoint

    def save_then_crash(path, state):
        save(path, state)
        raise KeyboardInterrupt  # the process dies right after its first checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_reproduction(result, data_root=env / "data", device="cpu", say=lambda line: None)
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    result = plan_reproduction("masenet", table="Table I", row="ResNet50", dataset="M", scale="smoke",
                               data_root=env / "data", overrides=overrides)
    assert result.planned[0].status == RESUME
    lines = []
    run_reproduction(result, data_root=env / "data", device="cpu", say=lines.append)
    assert any("resuming" in line for line in lines)
    assert result.planned[0].runs[0].state == FINISHED
    epochs = [json.loads(x).get("epoch") for x in (result.planned[0].runs[0].run_dir / "metrics.jsonl").open()]
    assert epochs.count(1) == 1  # epoch 1 was not trained twice


def test_seeds_give_a_t_interval_and_parallel_jobs_use_subprocesses(env, run_cli):
    code, out, err = run_cli("reproduce", "masenet", "--table", "Table I", "--row", "ResNet50", "--dataset", "M",
                             "--scale", "smoke", "--seeds", "2", "--jobs", "2", "--devices", "cpu,cpu",
                             *[a for o in QUICK for a in ("--set", o)])
    assert code == 0, err
    frame = pd.read_csv(env / "lb" / "masenet.smoke.csv", dtype=str, keep_default_na=False)
    row = frame[frame["metric"] == "mAP"].iloc[0]
    assert row["seeds"] == "0 1" and row["ci_method"] == "t over 2 seeds" and len(row["run_ids"].split()) == 2
    assert len(list((env / "runs" / "reproduce").glob("*.log"))) == 2  # one subprocess log per run


def test_seed_interval_matches_the_t_formula():
    std, low, high = leaderboard.seed_interval([80.0, 82.0, 84.0])
    assert std == pytest.approx(2.0) and (low, high) == pytest.approx((77.03, 86.97), abs=0.01)
    std, low, high = leaderboard.bootstrap_interval([0.0, 100.0] * 50)
    assert low < 50.0 < high and std == pytest.approx(5.0, rel=0.2)


def test_concurrent_writers_do_not_lose_rows(tmp_path):
    path = tmp_path / "p.csv"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(merge_five_times, [(str(path), i) for i in range(8)])
    frame = leaderboard.read_leaderboard(path)
    assert len(frame) == 16 and set(frame["row"]) == {f"r{i}" for i in range(8)}
    assert not list(tmp_path.glob(".p.csv.*.tmp"))


def test_not_run_rows_never_replace_measurements(tmp_path):
    path = tmp_path / "p.csv"
    base = {"paper": "p", "table": "T", "row": "r", "dataset": "d", "metric": "R1", "scale": "full"}
    leaderboard.merge_rows(path, [{**base, "reproduced": 90.0, "status": "within ±1"}])
    leaderboard.merge_rows(path, [{**base, "status": leaderboard.NOT_RUN}])
    assert leaderboard.read_leaderboard(path)["reproduced"].tolist() == ["90"]


def test_status_states_the_tolerance():
    points, params = Tolerance("accuracy", 1.0), Tolerance("params", 0.01)
    assert leaderboard.status_of(80.0, 80.5, points, "full", False) == "within ±1 pt"
    assert leaderboard.status_of(80.0, 78.0, points, "full", False) == "below (tolerance ±1 pt)"
    assert leaderboard.status_of(80.0, 78.0, points, "small", False) == "not comparable (small scale)"
    assert leaderboard.status_of(None, 78.0, points, "full", False) == "no reported value"
    # AaP-ReID Table 3's ResNet-18 BAM: 11.80M printed; 11.42M (a miniature's classes) is 0.38M off, not within 1
    assert leaderboard.status_of(11.80, 11.42, params, "full", False) == "below (tolerance ±0.01M)"
    assert leaderboard.status_of(11.80, 11.8012, params, "full", False) == "within ±0.01M"
    assert leaderboard.status_of(2.3, 2.31, Tolerance("params", 0.5, relative=True), "full", False) == "within ±0.5%"
    assert leaderboard.status_of(2.5, 2.447, Tolerance("params", rounding=True), "full", False, "~2.5M") == (
        "below (tolerance ±0.05M, rounding of ~2.5M)")


def test_leaderboard_formats_and_plot(env, run_cli):
    path = env / "lb" / "masenet.csv"
    base = {"paper": "masenet", "table": "Table I", "row": "MASENet (Ours)", "dataset": "market1501",
            "scale": "full", "tolerance": 1.0}
    leaderboard.merge_rows(path, [
        {**base, "metric": "R1", "reported": 95.9, "reproduced": 95.1, "ci95_low": 94.4, "ci95_high": 95.8,
         "delta": -0.8, "status": "within ±1"},
        {**base, "metric": "mAP", "reported": 89.9, "reproduced": 87.0, "delta": -2.9,
         "status": "below (tolerance ±1)"}])
    code, out, _ = run_cli("leaderboard", "masenet", "--format", "markdown", "--plot", str(env / "lb.png"))
    assert code == 0
    assert "| Table I / MASENet (Ours) / market1501 | R1 | 95.9 | 95.10 | [94.40, 95.80] | -0.80 |" in out
    assert (env / "lb.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run_cli("leaderboard", "masenet", "--format", "csv")
    assert out.splitlines()[0].split(",")[:6] == ["paper", "table", "row", "dataset", "metric", "reported"]
    code, out, err = run_cli("leaderboard", "mhsa-net")
    assert code == 2 and "no leaderboard yet" in err


def test_ablate_paper_renders_fig3_with_deltas(env, run_cli):
    code, out, err = run_cli("ablate", "masenet", "--dataset", "M", "--scale", "smoke",
                             *[a for o in QUICK for a in ("--set", o)])
    assert code == 0, err
    assert "masenet Fig. 3 (smoke)" in out
    for row in ("Baseline", "+SE", "+SGE", "+SE+SGE"):
        assert row in out
    assert out.count("(+") + out.count("(-") >= 6  # three rows x two metrics carry a delta to Baseline


def test_ablate_recipe_grid(env, run_cli):
    code, out, err = run_cli("ablate", "bot/resnet50_market1501", "--scale", "smoke",
                             "--grid", "loss.1.weight=0,1", *[a for o in QUICK for a in ("--set", o)])
    assert code == 0, err
    assert "loss.1.weight=0" in out and "loss.1.weight=1" in out and "not run" not in out
    code, out, err = run_cli("ablate", "bot/resnet50_market1501")
    assert code == 2 and "--grid" in err


def test_plan_reports_ready_cells_at_smoke(env):
    result = plan_reproduction("masenet", table="Fig. 3", scale="smoke", data_root=env / "data")
    assert {p.status for p in result.planned} == {READY}
    assert all(p.data == "synthetic miniature" and p.cost_tmac > 0 for p in result.planned)
    with pytest.raises(ReidbenchError, match="--seeds"):
        plan_reproduction("masenet", seeds=0, data_root=env / "data")
