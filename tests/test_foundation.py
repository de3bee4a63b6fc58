"""Foundation: CLI surface, path resolution, and the one error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reidbench import __version__, paths
from reidbench.errors import UnknownNameError, closest


def test_help_lists_every_command_with_a_description(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("env", "evaluate", "bench"):
        line = next(line for line in out.splitlines() if line.strip().startswith(command))
        assert len(line.split()) > 1, f"{command} has no one-line description"


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"reidbench {__version__}"


def test_env_json_reports_versions_devices_and_directories(run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "my-runs"))
    code, out, _ = run_cli("--data-root", str(tmp_path / "d"), "env", "--json")
    assert code == 0
    info = json.loads(out)
    for key in ("python", "torch", "torchvision", "fvcore", "cuda_available", "devices",
                "torch_threads"):
        assert key in info
    assert info["torchvision"] and info["fvcore"]
    assert info["directories"]["data"] == {"path": str(tmp_path / "d"), "source": "cli"}
    assert info["directories"]["runs"]["path"] == str(tmp_path / "my-runs")
    assert info["directories"]["weights"]["path"].endswith("checkpoints")


def test_env_table(run_cli):
    code, out, _ = run_cli("env")
    assert code == 0
    assert "torch" in out and "data dir" in out


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("REIDBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    default = paths.resolve_data_root()
    assert default.source == "default"
    assert default.path == tmp_path / "cache" / "reidbench" / "data"
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "env-data"))
    assert paths.resolve_data_root() == paths.ResolvedPath(tmp_path / "env-data", "env:REIDBENCH_DATA")
    cli = paths.resolve_data_root(tmp_path / "cli-data")
    assert cli == paths.ResolvedPath(tmp_path / "cli-data", "cli")


def test_runs_dir_default_is_relative_to_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("REIDBENCH_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.runs_dir() == tmp_path / "runs"
    monkeypatch.setenv("REIDBENCH_RUNS", "~/somewhere")
    assert paths.runs_dir() == Path.home() / "somewhere"


def test_weights_dir_follows_torch_home(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert paths.weights_dir() == tmp_path / "th" / "hub" / "checkpoints"


def test_user_error_is_one_red_line_with_exit_code_2(run_cli, tmp_path):
    missing = tmp_path / "nope.pt"
    code, out, err = run_cli("evaluate", str(missing))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "nope.pt" in lines[0] and "not found" in lines[0]
    assert "Traceback" not in err and out == ""


def test_verbose_shows_the_traceback(run_cli, tmp_path):
    code, _, err = run_cli("--verbose", "evaluate", str(tmp_path / "nope.pt"))
    assert code == 2
    assert "Traceback" in err


def test_unknown_name_suggests_closest(run_cli, tmp_path):
    code, _, err = run_cli("evaluate", str(tmp_path / "x.pt"), "--metric", "cosin")
    assert code == 2
    assert "'cosine'" in err and "did you mean" in err


def test_closest_names():
    names = ["market1501", "dukemtmcreid", "msmt17", "cuhk03"]
    assert closest("market", names)[0] == "market1501"
    assert closest("MSMT", names)[0] == "msmt17"
    error = UnknownNameError("dataset", "markt1501", names)
    assert error.suggestions[0] == "market1501"
    assert "unknown dataset 'markt1501'" in error.message


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "reidbench", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("reidbench ")


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["evaluate", "--help"]])
def test_help_pages_render(run_cli, args):
    code, out, _ = run_cli(*args)
    assert code == 0 and "Usage" in out
