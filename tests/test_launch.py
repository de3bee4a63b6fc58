"""Launchers: submitit's local executor, Slurm job arrays (a stand-in sbatch), requeue with exact resume, jobs."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from reidbench.errors import ReidbenchError
from reidbench.launch import LOCAL, SLURM, LauncherSettings, load_settings, make_launcher
from reidbench.launch.jobs import read_submissions, statuses
from reidbench.launch.settings import parse_time
from reidbench.launch.task import REQUEUE_MARK, TrainTask, export_distributed_environment

QUICK = ["--set", "train.epochs=1", "--set", "train.eval_every=1"]
RESNET_M = ["reproduce", "masenet", "--table", "Table I", "--row", "ResNet50", "--dataset", "M", "--scale", "smoke"]


@pytest.fixture
def env(tmp_path, monkeypatch, profile_cache):
    for name, sub in (("REIDBENCH_DATA", "data"), ("REIDBENCH_RUNS", "runs"), ("REIDBENCH_LEADERBOARDS", "lb")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("REIDBENCH_LAUNCHER_CONFIG", str(tmp_path / "no-launcher.yaml"))
    return tmp_path


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def slurm(env, monkeypatch):
    """Stand-ins for sbatch (records its script, answers a job id), srun, sacct (reads states.txt), scancel."""
    bin_dir = env / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "sbatch", f'cp "$1" "{env}/sbatch-script.sh"\necho "Submitted batch job 4242"\n')
    _script(bin_dir / "srun", "exit 0\n")
    _script(bin_dir / "sacct", f'echo "JobID|State"\ncat "{env}/states.txt" 2>/dev/null\n')
    _script(bin_dir / "scancel", f'echo "$@" >> "{env}/scancel-args.txt"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return env


def test_launcher_file_sections_and_command_line(env):
    config = env / "launcher.yaml"
    config.write_text("partition: cpu\naccount: lab\ntime: '1-00:00'\ncpus: 8\nsbatch: {qos: normal}\n"
                      "setup: ['source /shared/env/bin/activate']\n"
                      "slurm: {partition: gpu, gpus: 2, array_parallelism: 16}\nlocal: {gpus: 0}\n")
    slurm = load_settings(SLURM, config, time_min="2:00:00", sbatch={"constraint": "a100"})
    assert (slurm.partition, slurm.account, slurm.gpus, slurm.cpus, slurm.array_parallelism) == ("gpu", "lab", 2, 8, 16)
    assert slurm.time_min == 120 and slurm.sbatch == {"qos": "normal", "constraint": "a100"}
    assert slurm.setup == ["source /shared/env/bin/activate"]
    local = load_settings(LOCAL, config)
    assert local.partition == "cpu" and local.gpus_per_cell(LOCAL) == 0 and local.time_min == 24 * 60
    assert LauncherSettings().gpus_per_cell(SLURM) == 1
    assert [parse_time(t, "t") for t in ("90", "30:30", "01:30:00", "2-00", "1-01:30", 45)] == [90, 31, 90, 2880,
                                                                                            1530, 45]
    config.write_text("partiton: gpu\n")
    with pytest.raises(ReidbenchError, match=r"launcher.yaml: unknown key 'partiton'; expected one of: partition"):
        load_settings(SLURM, config)
    config.write_text("slurm: {gpus: two}\n")
    with pytest.raises(ReidbenchError, match=r"launcher.yaml: slurm: gpus: expected GPUs per cell"):
        load_settings(SLURM, config)
    with pytest.raises(ReidbenchError, match=r"--time: '1h' is not a time limit"):
        load_settings(SLURM, None, time_min="1h")


def test_wrong_launcher_choices_are_one_line_errors(env, run_cli, monkeypatch):
    code, _, err = run_cli(*RESNET_M, "--launcher", "cloud")
    assert code == 2 and "--launcher: expected one of in-process, local, slurm, got 'cloud'" in err
    code, _, err = run_cli(*RESNET_M, "--launcher", "local", "--jobs", "2")
    assert code == 2 and "--jobs/--devices: options of the in-process launcher" in err
    monkeypatch.setenv("PATH", str(env))  # no sbatch here
    code, _, err = run_cli(*RESNET_M, "--launcher", "slurm")
    assert code == 2 and "--launcher slurm: sbatch and srun not on PATH" in err
    code, _, err = run_cli("jobs", "masenet")
    assert code == 2 and "no submitted jobs for masenet" in err


def test_slurm_submits_one_array_with_the_options_then_jobs_shows_and_cancels(slurm, run_cli):
    log_dir = slurm / "shared" / "jobs"
    args = [*RESNET_M, "--seeds", "3", *QUICK, "--launcher", "slurm", "--partition", "gpu", "--account", "lab",
            "--gpus", "2", "--cpus", "6", "--mem", "32", "--time", "2:00:00", "--array-parallelism", "2",
            "--sbatch", "qos=high", "--log-dir", str(log_dir)]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "submitted 3 task(s) as Slurm job 4242" in out
    script = (slurm / "sbatch-script.sh").read_text().splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=32GB",
                 "#SBATCH --time=120", "#SBATCH --array=0-2%2", "#SBATCH --qos=high", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=reidbench-masenet"):
        assert line in script
    assert any(line.startswith("#SBATCH --output=") and line.endswith("%A_%a/%A_%a_0_log.out") for line in script)
    assert not list((slurm / "runs").rglob("run.json"))  # nothing trained here
    assert not (slurm / "lb" / "masenet.csv").exists()  # the tasks write the rows when they finish

    (slurm / "states.txt").write_text("4242_0|RUNNING\n4242_1|PENDING\n4242_2|FAILED\n")
    failed_log = log_dir / "masenet" / "4242_2" / "4242_2_0_log.err"
    assert (failed_log.parent / "4242_2_submitted.pkl").is_file()  # the pickled task, in its own folder
    failed_log.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                          "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
                          "submitit ERROR (2026-01-01) - Submitted job triggered an exception\n")
    (log_dir / "masenet" / "4242_0" / "4242_0_0_log.out").write_text(f"{REQUEUE_MARK}: x resumes\n")
    code, out, err = run_cli("jobs", "masenet", "--log-dir", str(log_dir))
    assert code == 0, err
    assert "1 running, 1 pending, 1 failed" in out
    failure = next(line for line in out.splitlines() if line.startswith("failed 4242_2"))
    assert failure.endswith(f"OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB — log: {failed_log}")
    found = statuses(read_submissions(log_dir, "masenet"))
    assert [(s.job_id, s.state, s.requeues) for s in found] == [("4242_0", "running", 1), ("4242_1", "pending", 0),
                                                                 ("4242_2", "failed", 0)]
    assert all(s.cells == ["Table I / ResNet50* [16] / M"] for s in found)

    code, out, err = run_cli(*args)  # a re-run does not submit active tasks again
    assert code == 0, err
    assert "already submitted as job 4242_0 (running); not again" in " ".join(out.split())
    assert out.count("not again") == 2 and "submitted 1 task(s)" in out  # the failed one goes again

    code, out, err = run_cli("jobs", "masenet", "--log-dir", str(log_dir), "--cancel")
    assert code == 0, err
    assert (slurm / "scancel-args.txt").read_text().split() == ["4242_0", "4242_1"]


class TimeLimitAfterFirstEpoch(TrainTask):
    """On its first attempt, the task receives the scheduler's warning signal right after its first checkpoint,
    and submitit sees the job as timed out (as when the time limit is near): it checkpoints and requeues."""

    def __call__(self):
        marker = self.run_dir.with_name(f"{self.run_dir.name}.signalled")
        if self.run_dir.name == "requeued" and not marker.exists():
            from submitit.core import job_environment

            import reidbench.engine.trainer as trainer

            job_environment.SignalHandler.has_timed_out = lambda handler: True
            save = trainer.save_checkpoint

            def save_then_signal(path, state):
                save(path, state)
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR2)

            trainer.save_checkpoint = save_then_signal
        return super().__call__()


@pytest.mark.slow
def test_timed_out_task_requeues_and_resumes_to_the_uninterrupted_metrics(env, monkeypatch):
    import reidbench.launch.task as task_module
    from reidbench.papers.plan import READY, PlannedRun
    from reidbench.recipes.loading import load_recipe, recipe_hash, resolve_path

    recipe = load_recipe("bot/resnet50_market1501", scale="smoke", overrides=["train.epochs=2", "train.eval_every=2"])
    runs = [PlannedRun(resolve_path("bot/resnet50_market1501"), recipe, [], recipe_hash(recipe), env / name, READY)
            for name in ("uninterrupted", "requeued")]
    monkeypatch.setattr(task_module, "TrainTask", TimeLimitAfterFirstEpoch)
    launcher = make_launcher(LOCAL, load_settings(LOCAL, array_parallelism=2, log_dir=env / "jobs"))
    lines = []
    outcome = launcher.launch(runs, env / "data", lines.append, label="requeue")
    assert sorted(outcome.trained) == sorted(str(r.run_dir) for r in runs), (outcome.failed, lines)
    assert (env / "requeued.signalled").exists()
    logs = "".join(p.read_text() for p in (env / "jobs" / "requeue").glob("*_0_log.*"))
    assert f"{REQUEUE_MARK}: requeued resumes from its last checkpoint" in logs
    assert "remaining timeouts" in logs  # submitit counted it as a timeout
    a, b = (json.loads((r.run_dir / "run.json").read_text()) for r in runs)
    assert a["metrics"] == b["metrics"] and b["status"] == "finished"
    fa, fb = (torch.load(r.run_dir / "features.pt", weights_only=True)["query_features"] for r in runs)
    assert torch.equal(fa, fb)
    epochs = [json.loads(x).get("epoch") for x in (env / "requeued" / "metrics.jsonl").open() if "eval" not in x]
    assert epochs == [1, 2]  # epoch 1 was not trained again
    found = {Path(s.run_dir).name: (s.state, s.requeues) for s in statuses(read_submissions(env / "jobs", "requeue"))}
    assert found == {"uninterrupted": ("done", 0), "requeued": ("done", 1)}


@pytest.mark.slow  # submitit local jobs (~13 s); .ci/run runs the slow launcher tests
def test_local_launcher_trains_cells_as_jobs_with_the_in_process_rows(env, run_cli, monkeypatch):
    code, _, err = run_cli(*RESNET_M, *QUICK, "--csv", str(env / "in-process.csv"))
    assert code == 0, err
    monkeypatch.setenv("REIDBENCH_RUNS", str(env / "runs-local"))
    args = [*RESNET_M, *QUICK, "--csv", str(env / "local.csv"), "--launcher", "local"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "local job" in out and "finished bot_resnet50_market1501" in out
    measured = [pd.read_csv(env / f"{name}.csv", dtype=str, keep_default_na=False).drop(columns="updated")
                for name in ("in-process", "local")]
    # R1 and mAP of the trained cell, and its parameter count (counted at the paper's setting, without training)
    assert len(measured[0]) == 3 and measured[0]["reproduced"].ne("").all()
    pd.testing.assert_frame_equal(*measured)
    code, out, _ = run_cli("jobs", "masenet")
    assert code == 0 and "1 done" in out
    code, out, err = run_cli(*args)  # finished cells are skipped as in-process
    assert code == 0 and "local job" not in out


@pytest.mark.slow
def test_failed_local_job_names_its_log_and_error_line(env, run_cli):
    code, out, err = run_cli(*RESNET_M, "--set", "train.fixbase_epochs=1", "--set", "train.open_layers=[nope]",
                             "--launcher", "local")
    assert code == 1
    flat = " ".join(out.split())
    assert "train.open_layers: model small_cnn has no module 'nope'" in flat and "_0_log.err" in flat
    code, out, _ = run_cli("jobs", "masenet")
    assert "1 failed" in out and "ReidbenchError: train.open_layers: model small_cnn has no module" in out


@pytest.mark.slow
def test_masenet_row_through_the_local_executor_writes_the_in_process_rows(env, run_cli, monkeypatch):
    """The issue's check: `reproduce masenet --scale smoke --launcher local --row MASENet`, cells as separate jobs."""
    base = ["reproduce", "masenet", "--scale", "smoke", "--row", "MASENet"]
    code, _, err = run_cli(*base, "--csv", str(env / "in-process.csv"))
    assert code == 0, err
    monkeypatch.setenv("REIDBENCH_RUNS", str(env / "runs-local"))
    code, out, err = run_cli(*base, "--csv", str(env / "local.csv"), "--launcher", "local",
                             "--array-parallelism", "2")
    assert code == 0, err
    assert out.count("local job") == 4  # 6 cells, 4 distinct runs
    measured = [pd.read_csv(env / f"{name}.csv", dtype=str, keep_default_na=False).drop(columns="updated")
                for name in ("in-process", "local")]
    # R1 and mAP of 6 cells, and the MASENet row's parameter count (counted at the paper's setting, untrained)
    assert len(measured[0]) == 6 * 2 + 1 and measured[0]["reproduced"].ne("").all()
    pd.testing.assert_frame_equal(*measured)


def test_tasks_of_a_job_export_the_torchrun_environment(monkeypatch):
    import submitit

    for name, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2",
                        "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NODEID": "0",
                        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(name, "")  # restored (removed) after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    export_distributed_environment(submitit.JobEnvironment())
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] and int(os.environ["MASTER_PORT"]) > 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # each rank picks its GPU by local rank, as under torchrun
