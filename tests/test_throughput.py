"""Training throughput switches: mixed precision (fp16 / bf16), channels_last, pinned memory, torch.compile.

On the CPU each switch either works or, asked for explicitly where it cannot mean anything, is refused in one
line; whatever a run did is in its run record; speed-only switches leave the recipe hash alone.
"""

from __future__ import annotations

import json

import pytest
import torch

from reidbench.engine.throughput import resolve_throughput
from reidbench.engine.trainer import Trainer
from reidbench.recipes import load_recipe, recipe_hash
from tests.test_engine import BOT, SMOKE

ONE_EPOCH = SMOKE + ["train.epochs=1", "train.eval_every=1"]


@pytest.fixture
def smoke_env(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_what_each_switch_does_on_each_device():
    gpu_recipe = load_recipe(BOT)  # amp: true, fp16: the shipped recipes' GPU precision
    on_cpu = resolve_throughput(gpu_recipe, "cpu")
    assert (on_cpu.amp, on_cpu.grad_scaling, on_cpu.pin_memory, on_cpu.precision) == (None, False, False, "fp32 (cpu)")
    on_gpu = resolve_throughput(gpu_recipe, "cuda:0")
    assert (on_gpu.amp, on_gpu.grad_scaling, on_gpu.pin_memory, on_gpu.precision) == ("fp16", True, True,
                                                                                       "amp fp16 (cuda)")
    bf16 = load_recipe(BOT, overrides=["train.amp_dtype=bf16", "data.pin_memory=false"])
    for device in ("cpu", "cuda"):
        resolved = resolve_throughput(bf16, device)
        assert resolved.amp == "bf16" and not resolved.grad_scaling and not resolved.pin_memory
    assert resolve_throughput(load_recipe(BOT, overrides=["train.amp=false"]), "cuda").precision == "fp32 (cuda)"


def test_speed_switches_keep_the_recipe_hash_precision_changes_it():
    plain = recipe_hash(load_recipe(BOT))
    fast = load_recipe(BOT, overrides=["train.channels_last=true", "train.compile=true", "data.pin_memory=false"])
    assert recipe_hash(fast) == plain
    assert recipe_hash(load_recipe(BOT, overrides=["train.amp_dtype=bf16"])) != plain


def test_channels_last_and_compile_apply_to_the_network_not_the_checkpointed_model(smoke_env, monkeypatch):
    compiled = []

    def fake_compile(module):  # the wiring, without minutes of inductor on two cores (the slow test compiles)
        compiled.append(module)
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    recipe = load_recipe(BOT, scale="smoke", overrides=ONE_EPOCH + ["train.compile=true", "train.channels_last=true"])
    trainer = Trainer(recipe, run_dir=smoke_env / "run", device="cpu", quiet=True)
    assert compiled == [trainer.model]  # checkpoints keep the plain module's state_dict keys
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.throughput.record()["compile"] is True


@pytest.mark.slow
def test_compiled_training_runs_on_cpu(smoke_env):
    recipe = load_recipe(BOT, scale="smoke", overrides=ONE_EPOCH + ["train.compile=true"])
    record = Trainer(recipe, run_dir=smoke_env / "run", device="cpu", quiet=True).run()
    assert record.status == "finished" and record.throughput["compile"] is True


@pytest.mark.parametrize("switch, message", [
    (["--amp", "fp16"], "--amp fp16: float16 mixed precision needs a CUDA device"),
    (["--pin-memory"], "--pin-memory: pinned memory speeds host-to-GPU copies"),
    (["--amp", "fp8"], "--amp: expected off, fp16, bf16"),
])
def test_meaningless_switches_on_cpu_are_one_line_errors(run_cli, smoke_env, switch, message):
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", *switch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and message in lines[0]
    assert not (smoke_env / "runs").exists()


def test_bf16_channels_last_step_on_cpu(smoke_env):
    recipe = load_recipe(BOT, scale="smoke", overrides=ONE_EPOCH + ["train.amp=true", "train.amp_dtype=bf16",
                                                                    "train.channels_last=true"])
    trainer = Trainer(recipe, run_dir=smoke_env / "run", device="cpu", quiet=True)
    images, pids, _camids, _index = next(iter(trainer.loader))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    total, values = trainer.train_step(trainer.throughput.to_device(images, "cpu"), pids)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in values.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert trainer.throughput.precision == "amp bf16 (cpu)" and not trainer.scaler.is_enabled()


def test_cli_switches_become_recipe_keys_and_are_recorded(run_cli, smoke_env):
    sets = [a for o in ONE_EPOCH for a in ("--set", o)]
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", "--amp", "off",
                           "--channels-last", "--no-pin-memory", "--run-dir", str(smoke_env / "run"), *sets)
    assert code == 0, err
    saved = json.loads((smoke_env / "run" / "run.json").read_text())
    assert saved["precision"] == "fp32 (cpu)"
    assert saved["throughput"] == {"amp": None, "grad_scaling": False, "channels_last": True,
                                   "pin_memory": False, "compile": False}
    resolved = (smoke_env / "run" / "recipe.yaml").read_text()
    assert "amp: false" in resolved and "channels_last: true" in resolved and "pin_memory: false" in resolved


@pytest.mark.slow
def test_bf16_training_run_on_cpu_is_recorded(run_cli, smoke_env):
    sets = [a for o in ONE_EPOCH for a in ("--set", o)]
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", "--amp", "bf16",
                           "--run-dir", str(smoke_env / "run"), *sets)
    assert code == 0, err
    saved = json.loads((smoke_env / "run" / "run.json").read_text())
    assert saved["precision"] == "amp bf16 (cpu)" and saved["throughput"]["amp"] == "bf16"
    assert 0 <= saved["metrics"]["mAP"] <= 1
