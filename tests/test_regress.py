"""`reidbench regress`: golden comparison, --update from sampled noise, environments, and planted bugs."""

from __future__ import annotations

import dataclasses
import functools
import sys

import numpy as np
import pytest
import torch
import yaml

from reidbench.recipes.loading import RECIPES_DIR
from reidbench.regress import (
    compare,
    environment_differences,
    golden_path,
    golden_sample_index,
    load_suite,
    numerics_environment,
    read_golden,
    run_suite,
)

RECIPE = """base: {base}
name: regress_fixture
loss:
  - {{name: cross_entropy, output: logits, weight: {ce_weight}, label_smoothing: 0.1}}
  - {{name: triplet, output: global, weight: 1.0, margin: 0.3}}
"""


def _fixture(tmp_path, ce_weight: float):
    (tmp_path / "case.yaml").write_text(RECIPE.format(base=RECIPES_DIR / "bot/resnet50_market1501.yaml",
                                                      ce_weight=ce_weight))
    suite = tmp_path / "fixture.yaml"
    suite.write_text(yaml.safe_dump({
        "suite": "fixture", "sigmas": 4, "update": {"seeds": [0, 1], "threads": [1]},
        "defaults": {"scale": "smoke", "set": ["train.epochs=2", "train.seed=0"]},
        "cases": [{"name": "bot_small", "recipe": str(tmp_path / "case.yaml")}]}))
    return suite


@pytest.mark.slow  # ~35 s: three short trainings; .ci/run runs it with the other slow regression tests
def test_update_samples_the_noise_and_the_golden_catches_a_changed_loss_weight(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    suite = _fixture(tmp_path, ce_weight=1.0)
    # this interpreter stands in for a second torch installation: its samples run in a subprocess
    code, out, err = run_cli("regress", "--suite", str(suite), "--update", "--threads", "1",
                             "--python", sys.executable)
    assert code == 0, err
    assert "+++" in out and "bot_small" in out  # the diff of the new golden file
    golden = read_golden(golden_path(load_suite(str(suite))))
    assert golden["environment"]["threads"] == 1 and golden["environment"]["torch"] == torch.__version__
    assert {"cpu", "cpu_capability", "cpu_flags", "numpy"} <= set(golden["environment"])
    assert len(golden["measured"]["samples"]) == 4  # 2 seeds x 1 thread count x 2 interpreters
    case = golden["cases"]["bot_small"]
    mAP = case["metrics"]["mAP"]
    assert mAP["std"] == pytest.approx(float(np.std(mAP["samples"], ddof=1)), abs=1e-3)
    assert mAP["cross_env"] == pytest.approx(max(mAP["same_env"], 4 * mAP["std"]), abs=1e-3)
    assert case["metrics"]["deploy_params"]["cross_env"] == 0.0
    rank_step = 100 / case["queries"]  # rank tolerances are whole queries
    assert case["metrics"]["R1"]["cross_env"] / rank_step == pytest.approx(
        round(case["metrics"]["R1"]["cross_env"] / rank_step), abs=1e-3)
    assert 0 < case["chance"]["mAP"] < 100 and 0 < case["chance"]["R1"] < 100

    # an interrupted or repeated --update keeps the samples it finished (same code, recipe, interpreter, threads)
    code, again, err = run_cli("regress", "--suite", str(suite), "--update", "--threads", "1",
                               "--python", sys.executable)
    assert code == 0, err
    again = " ".join(again.split())  # the console wraps long lines
    assert again.count("sampled before (kept)") == 4 and "golden file unchanged" in again

    code, out, err = run_cli("regress", "--suite", str(suite), "--threads", "1")
    assert code == 0, out
    assert "environment identical to the golden run's" in out and "FAIL" not in out

    _fixture(tmp_path, ce_weight=0.2)  # the regression: someone changed a loss weight
    code, out, err = run_cli("regress", "--suite", str(suite), "--threads", "1")
    assert code == 1
    assert "FAIL" in out and "regression: bot_small outside tolerance" in out.replace("\n", " ")
    assert "the resolved recipe changed" in out

    _fixture(tmp_path, ce_weight=1.0)  # reverted, on a machine with another torch
    path = golden_path(load_suite(str(suite)))
    document = read_golden(path)
    document["environment"]["torch"] = "0.0.0"
    path.write_text(yaml.safe_dump(document))
    code, out, err = run_cli("regress", "--suite", str(suite), "--threads", "1")
    assert code == 0 and "FAIL" not in out
    text = " ".join(out.split())
    assert f"environment differs from the golden run's (torch 0.0.0 -> {torch.__version__})" in text
    assert "cross-environment tolerances (4 x std" in text


def test_small_suite_skips_cases_without_data_and_says_why(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    code, out, err = run_cli("regress", "--suite", "small")
    assert code == 0, err
    text = " ".join(out.split())
    assert "skipped bot_resnet50_market1501: market1501 is not installed" in text
    assert "reidbench data download market1501" in text
    assert "skipped masenet_msmt17: msmt17 is not installed" in text


def test_committed_ci_golden_is_sampled_across_environments_and_well_above_chance():
    suite = load_suite("ci")
    # every paper's main model (and the baselines their tables compare with)
    assert {c.name for c in suite.cases} >= {"bot", "msinet", "masenet", "aap_reid", "mhsa_net", "fsafcmn", "cdnet",
                                            "mgn"}
    golden = read_golden(golden_path(suite))
    measured = golden["measured"]
    assert set(measured["threads"]) >= {1, 2} and len(measured["seeds"]) >= 3
    assert len(measured["torch"]) >= 2, "the spread covers at least two torch versions"
    assert {"torch", "numpy", "cpu_flags", "threads"} <= set(golden["environment"])
    for case in suite.cases:
        entry = golden["cases"][case.name]
        metrics = entry["metrics"]
        assert {"R1", "mAP", "mINP", "deploy_params", "queries"} <= set(metrics)
        assert entry["queries"] >= 150
        for spec in metrics.values():
            assert len(spec["samples"]) == len(measured["samples"])
            assert spec["cross_env"] >= suite.sigmas * spec["std"] * (1 - 1e-4)  # sigmas x std, at least
        # the cases learn: mAP far above a random ranking's, and even the lower edge of its cross-environment
        # tolerance above it (a model that stopped learning fails)
        assert metrics["mAP"]["mean"] >= 10 * entry["chance"]["mAP"] and metrics["mAP"]["mean"] >= 15
        assert metrics["mAP"]["mean"] - metrics["mAP"]["cross_env"] > 2 * entry["chance"]["mAP"]
        assert metrics["R1"]["mean"] >= 10 * entry["chance"]["R1"]
    assert golden["cases"]["masenet"]["metrics"]["deploy_params"]["mean"] == 2446915


def test_unknown_suite_is_one_line(run_cli):
    code, out, err = run_cli("regress", "--suite", "nightly")
    assert code == 2 and "no suite file" in err


# ---- proof that the ci suite bites: realistic bugs planted one at a time (slow: trains real cases) ----

def _triplet_margin_sign(monkeypatch):
    """relu(d_ap - d_an - margin): the margin pushes the wrong way."""
    from reidbench.losses.core import TripletLoss

    original = TripletLoss.__init__

    @functools.wraps(original)  # build_losses reads the options from the signature
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.margin is not None:
            self.margin = -self.margin

    monkeypatch.setattr(TripletLoss, "__init__", init)


def _one_image_per_id(monkeypatch):
    """The identity sampler draws one image per identity (K = 1): no positives in a batch."""
    from reidbench.data.samplers import IdentityBatchSampler

    original = IdentityBatchSampler.__init__

    def init(self, pids, batch_size, num_instances, *args, **kwargs):
        original(self, pids, batch_size, 1, *args, **kwargs)

    monkeypatch.setattr(IdentityBatchSampler, "__init__", init)


def _bnneck_bypassed_at_test(monkeypatch):
    """Evaluation reads the feature before the BNNeck instead of after it."""
    from reidbench.models.layers.necks import BNNeck

    original = BNNeck.forward

    def forward(self, feature_map):
        out = original(self, feature_map)
        if not self.training:
            out["embedding"] = out["global"]
        return out

    monkeypatch.setattr(BNNeck, "forward", forward)


def _labels_shuffled(monkeypatch):
    """Training labels permuted across images (e.g. a relabel that zips sorted paths with unsorted ids)."""
    from reidbench.engine import trainer

    original = trainer.load_split

    def load_split(recipe, which, data_root):
        split = original(recipe, which, data_root)
        if which == "train":
            pids = np.random.default_rng(0).permutation([r.pid for r in split.train])
            split.train = [dataclasses.replace(r, pid=int(p)) for r, p in zip(split.train, pids, strict=True)]
        return split

    monkeypatch.setattr(trainer, "load_split", load_split)


# bug -> the ci case it is planted in (BNNeck: the BoT case, whose test feature is the BNNeck's)
PLANTED_BUGS = {
    "triplet margin sign": (_triplet_margin_sign, "msinet"),
    "one image per id": (_one_image_per_id, "bot"),
    "BNNeck bypassed at test": (_bnneck_bypassed_at_test, "bot"),
    "labels shuffled": (_labels_shuffled, "aap_reid"),
}


@pytest.fixture(scope="module")
def ci_data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("regress-data")  # the synthetic miniature, rendered once for the module


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(PLANTED_BUGS))
def test_ci_suite_fails_on_a_planted_bug_even_with_cross_environment_tolerances(bug, ci_data_root, tmp_path,
                                                                              monkeypatch):
    plant, case = PLANTED_BUGS[bug]
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    plant(monkeypatch)
    report, _ = run_suite("ci", data_root=ci_data_root, cases=[case], tolerance_mode="cross-env", say=print)
    failed = [f"{c.metric} {c.got:.3g} vs {c.golden:.3g} +- {c.tolerance:.3g}" for c in report.checks
              if c.status == "FAIL"]
    print(f"{bug}: {case} fails on {failed}")
    assert failed, f"{bug} went unnoticed by the {case} case"


@pytest.mark.slow
@pytest.mark.parametrize(("threads", "jobs"), [(1, 1), (2, 1), (2, 2)], ids=["1-thread", "2-threads", "2-jobs"])
def test_ci_suite_passes_on_the_unmodified_code(threads, jobs, ci_data_root, tmp_path, monkeypatch):
    """1 thread: another thread count than the golden run's, cross-environment tolerances; 2 threads: the golden
    run's environment; 2 jobs: two cases at a time in their own processes, 1 thread each, each compared with the
    golden 1-thread sample with same-environment tolerances."""
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report, _ = run_suite("ci", data_root=ci_data_root, cases=sorted({c for _, c in PLANTED_BUGS.values()}),
                              jobs=jobs, say=print)
    finally:
        torch.set_num_threads(before)
    failed = [f"{c.case} {c.metric} {c.got} vs {c.golden} +- {c.tolerance}" for c in report.checks
              if c.status != "pass"]
    assert report.checks and not failed, failed
    if jobs > 1:
        assert report.environment.startswith("2 cases at a time, 1 thread(s) each")
        golden_environment = read_golden(golden_path(load_suite("ci")))["environment"]
        if not [d for d in environment_differences(golden_environment, numerics_environment())
                if not d.startswith("threads ")]:  # the machine that wrote the golden file
            assert "same-environment tolerances around the golden 1-thread samples" in report.environment


def test_a_run_at_another_thread_count_is_compared_with_the_golden_sample_of_that_count():
    golden = {"measured": {"samples": ["torch 2.9, 1 threads, seed 0", "torch 2.9, 2 threads, seed 0",
                                       "torch 3.0, 2 threads, seed 0"]},
              "cases": {"a": {"metrics": {"mAP": {"reference": 20.0, "mean": 21.0, "std": 1.0, "same_env": 0.5,
                                                  "cross_env": 4.0, "samples": [18.0, 20.0, 25.0]}}}}}
    assert golden_sample_index(golden, "a", "2.9", 1, 0) == 0
    assert golden_sample_index(golden, "a", "3.0", 2, 0) == 2
    assert golden_sample_index(golden, "a", "2.9", 4, 0) is None  # no sample at 4 threads: cross-environment
    assert golden_sample_index(golden, "a", "2.9", 1, 1) is None  # nor of another seed
    expected = golden["cases"]["a"]
    assert [c.status for c in compare("a", expected, {"mAP": 18.2}, same_env=True, sample=0)] == ["pass"]
    assert [c.status for c in compare("a", expected, {"mAP": 18.2}, same_env=True)] == ["FAIL"]  # not the reference
    short = {**golden, "cases": {"a": {"metrics": {"mAP": {**expected["metrics"]["mAP"], "samples": [18.0]}}}}}
    assert golden_sample_index(short, "a", "2.9", 1, 0) is None  # samples from another plan: not trusted
