"""`reidbench bench rerank` and `reidbench bench gpu`: they run (at tiny sizes, on the CPU) and say what they
measured; the figures themselves are measured by the commands, never asserted here."""

from __future__ import annotations

import json

import pytest
import torch

from reidbench.bench.gpu import measure_evaluation, measure_training


def test_bench_rerank_compares_with_the_rowwise_baseline(run_cli):
    code, out, err = run_cli("bench", "rerank", "--fraction", "0.01", "--json")
    assert code == 0, err
    figures = json.loads(out)
    for size in ("market", "msmt17"):
        entry = figures[size]
        assert entry["max_abs_difference"] < 1e-5  # the baseline computes the same thing
        assert entry["mAP"] == pytest.approx(entry["baseline_mAP"], abs=1e-9)
        assert entry["seconds"] > 0 and entry["baseline_seconds"] > 0 and "goal" not in entry  # not at full size


def test_bench_rerank_refuses_unknown_sizes(run_cli):
    code, _, err = run_cli("bench", "rerank", "--sizes", "market,dukemtmc")
    assert code == 2 and "dukemtmc" in err and "msmt17" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_bench_gpu_without_cuda_says_so_in_one_line(run_cli):
    code, _, err = run_cli("bench", "gpu", "--json")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "no CUDA device" in lines[0]


def test_gpu_evaluation_measurement_runs_on_any_device():
    figures = measure_evaluation("market", "cpu", fraction=0.005, repeats=1)
    assert figures["same_ranks"] and figures["mAP_difference"] < 1e-12
    assert figures["rerank_max_abs_difference"] < 1e-5
    assert figures["evaluate_speedup"] > 0 and figures["rerank_speedup"] > 0


def test_gpu_training_measurement_runs_the_trainer_step(tmp_path):
    figures = measure_training("bot/resnet50_market1501", "cpu", "bf16", True, batch=8, steps=1, warmup=1,
                               overrides=("model.name=small_cnn", "model.width=8", "data.height=64",
                                          "data.width=32"), data_root=tmp_path)
    assert figures["precision"] == "amp bf16 (cpu)" and figures["channels_last"] is True
    assert figures["images_per_s"] > 0 and figures["batch"] == 8


def test_gpu_figures_render_as_tables(capsys):
    from reidbench.cli.bench import print_gpu_figures

    evaluation = measure_evaluation("market", "cpu", fraction=0.005, repeats=1)
    training = [{"model": "bot_resnet50", "input": [256, 128], "batch": 64, "precision": precision,
                 "channels_last": channels_last, "images_per_s": 100.0 + i}
                for i, (precision, channels_last) in enumerate(
                    [("fp32 (cuda)", False), ("amp bf16 (cuda)", True), ("amp fp16 (cuda)", False)])]
    print_gpu_figures({"gpu": "a GPU", "torch": "2", "cuda": "13", "date": "2026-12-01",
                       "evaluation": {"market": evaluation}, "training": training,
                       "loader": {"loader_images_per_s": 900.0, "workers": 7, "input": [256, 128]}})
    out = capsys.readouterr().out
    assert "a GPU" in out and "bot_resnet50" in out and "101" in out and "900 images/s" in out
