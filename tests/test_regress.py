"""`reidbench regress`: golden comparison, --update with measured spread, and catching a real regression."""

from __future__ import annotations

import yaml

from reidbench.recipes.loading import RECIPES_DIR
from reidbench.regress import golden_path, load_suite, read_golden

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
    suite.write_text(yaml.safe_dump({"suite": "fixture", "repeats": 2, "cases": [
        {"name": "bot_small", "recipe": str(tmp_path / "case.yaml"), "scale": "smoke",
         "set": ["train.epochs=2", "train.seed=0"]}]}))
    return suite


def test_suite_catches_a_changed_loss_weight_and_passes_after_revert(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    suite = _fixture(tmp_path, ce_weight=1.0)
    code, out, err = run_cli("regress", "--suite", str(suite), "--update")
    assert code == 0, err
    assert "+++" in out and "bot_small" in out  # the diff of the new golden file
    golden = read_golden(golden_path(load_suite(str(suite))))["cases"]["bot_small"]["metrics"]
    assert golden["mAP"]["spread"] == 0.0 and golden["mAP"]["tolerance"] == 1.0  # CPU runs repeat exactly
    assert golden["deploy_params"]["tolerance"] == 0.0

    code, out, err = run_cli("regress", "--suite", str(suite))
    assert code == 0, out
    assert "FAIL" not in out and "pass" in out

    _fixture(tmp_path, ce_weight=0.2)  # the regression: someone changed a loss weight
    code, out, err = run_cli("regress", "--suite", str(suite))
    assert code == 1
    assert "FAIL" in out and "regression: bot_small outside tolerance" in out.replace("\n", " ")
    assert "the resolved recipe changed" in out

    _fixture(tmp_path, ce_weight=1.0)  # reverted
    code, out, err = run_cli("regress", "--suite", str(suite))
    assert code == 0 and "FAIL" not in out


def test_small_suite_skips_cases_without_data_and_says_why(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    code, out, err = run_cli("regress", "--suite", "small")
    assert code == 0, err
    text = " ".join(out.split())
    assert "skipped bot_resnet50_market1501: market1501 is not installed" in text
    assert "reidbench data download market1501" in text
    assert "skipped masenet_msmt17: msmt17 is not installed" in text


def test_committed_ci_golden_covers_every_case_with_tolerances():
    suite = load_suite("ci")
    assert {c.name for c in suite.cases} >= {"bot_resnet50", "msinet", "masenet"}
    golden = read_golden(golden_path(suite))
    for case in suite.cases:
        metrics = golden["cases"][case.name]["metrics"]
        assert {"R1", "mAP", "mINP", "deploy_params"} <= set(metrics)
        assert all(m["tolerance"] >= 3 * m["spread"] for m in metrics.values())
    assert golden["cases"]["masenet"]["metrics"]["deploy_params"]["value"] == 2446915


def test_unknown_suite_is_one_line(run_cli):
    code, out, err = run_cli("regress", "--suite", "nightly")
    assert code == 2 and "no suite file" in err
