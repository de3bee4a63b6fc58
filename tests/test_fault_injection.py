"""Fault injection: what a hostile or careless user can hand reidbench, and what must happen.

Every case asserts the exit code, that the error is one line naming the culprit (file, key, option or
variable), and that nothing was written, run or damaged. Crafted pickles try to create a marker file when
unpickled, as `os.system` in a real attack would.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from reidbench.data.registry import get_dataset
from reidbench.data.synth import synthesize
from reidbench.engine.checkpoint import load_checkpoint, read_torch_file, set_rng_state, state_dict_of
from reidbench.engine.trainer import Trainer
from reidbench.errors import ReidbenchError
from reidbench.evaluation.features import FeatureSet, save_features
from reidbench.recipes import load_recipe

BOT = "bot/resnet50_market1501"
SMOKE = ["data.synthetic_ids=12", "data.synthetic_images_per_id=6", "data.batch_size=8",
         "data.sampler.num_instances=2", "model.width=8", "data.height=64", "data.width=32"]


def _sets(*overrides: str) -> list[str]:
    return [a for o in (*SMOKE, *overrides) for a in ("--set", o)]


class _Payload:
    """Unpickling this calls os.system, as the attack did; the command only creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious(path: Path, marker: Path, wrap: str | None = "model") -> Path:
    payload = _Payload(marker)
    torch.save({wrap: payload, "recipe_hash": "x"} if wrap else payload, path)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: 'nothing written or damaged' compares two of these."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(code: int, err: str, *culprits: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("REIDBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("REIDBENCH_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("REIDBENCH_LEADERBOARDS", str(tmp_path / "leaderboards"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished 1-epoch smoke run (its checkpoint, features and data root) shared by the cases below."""
    base = tmp_path_factory.mktemp("trained")
    recipe = load_recipe(BOT, scale="smoke", overrides=[*SMOKE, "train.epochs=1"])
    Trainer(recipe, run_dir=base / "run", device="cpu", data_root=base / "data", quiet=True).run()
    return base


# ---- no pickle from disk runs code ------------------------------------------------------------------

def test_resume_from_a_malicious_checkpoint_runs_nothing(env, run_cli):
    run = env / "runs" / "evil"
    (run / "checkpoints").mkdir(parents=True)
    malicious(run / "checkpoints" / "last.pt", env / "pwned")
    before = snapshot(env)
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", "--resume", str(run), *_sets())
    one_line_error(code, err, str(run / "checkpoints" / "last.pt"), "refused", "posix.system")
    assert not (env / "pwned").exists()
    assert snapshot(env) == before


def test_test_checkpoint_malicious_runs_nothing_and_writes_nothing(env, run_cli):
    evil = malicious(env / "evil.pt", env / "pwned", wrap=None)
    code, _, err = run_cli("test", BOT, "--scale", "smoke", "--checkpoint", str(evil), "--out",
                           str(env / "f.pt"), "--device", "cpu", *_sets())
    one_line_error(code, err, str(evil), "refused")
    assert not (env / "pwned").exists() and not (env / "f.pt").exists() and not (env / "data").exists()


def test_features_file_malicious_runs_nothing(env, run_cli):
    evil = malicious(env / "features.pt", env / "pwned", wrap="query_features")
    code, _, err = run_cli("evaluate", str(evil))
    one_line_error(code, err, str(evil))
    assert not (env / "pwned").exists()


def test_weights_file_malicious_runs_nothing(env, run_cli, monkeypatch):
    from reidbench.models import create_model
    from reidbench.models.pretrained import get_weights, load_pretrained
    from reidbench.weights import weights_path

    monkeypatch.setenv("TORCH_HOME", str(env / "torch"))
    target = weights_path("osnet_x1_0_imagenet")  # no published hash: verify must unpickle it
    target.parent.mkdir(parents=True)
    malicious(target, env / "pwned", wrap="state_dict")
    code, out, _ = run_cli("weights", "verify", "osnet_x1_0_imagenet")
    assert code == 1 and "refused" in out
    with pytest.raises(ReidbenchError, match="refused") as info:
        load_pretrained(create_model("small_cnn", num_classes=2, width=8), get_weights("osnet_x1_0_imagenet"))
    assert "\n" not in str(info.value)
    assert not (env / "pwned").exists()


def test_run_folder_files_malicious_run_nothing(env):
    from reidbench.engine.checkpoint import load_checkpoint
    from reidbench.papers.plan import READY, RESUME, run_state
    from reidbench.papers.reproduce import _reevaluate
    from reidbench.recipes.schema import EvalSection

    run = env / "runs" / "cell"
    (run / "checkpoints").mkdir(parents=True)
    malicious(run / "checkpoints" / "last.pt", env / "pwned")
    malicious(run / "features.pt", env / "pwned", wrap="query_features")
    (run / "run.json").write_bytes(open(run / "features.pt", "rb").read())  # a pickle where JSON belongs
    with pytest.raises(ReidbenchError, match="last.pt: refused"):
        load_checkpoint(run / "checkpoints" / "last.pt")
    with pytest.raises(ReidbenchError, match="features.pt"):
        _reevaluate(run, EvalSection())
    assert run_state(run) == RESUME  # a damaged run record is an unfinished run
    (run / "checkpoints" / "last.pt").unlink()
    (run / "run.json").write_text("[1, 2]")
    assert run_state(run) == READY
    assert not (env / "pwned").exists()


def test_released_checkpoint_in_the_old_format_still_loads(env, run_cli, trained):
    """A legacy (pre-zip) torch file with numpy scalars and DataParallel names, as released checkpoints are."""
    weights = torch.load(trained / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    released = {"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": np.int64(120),
                "rank1": np.float64(0.941), "mAP": np.float32(0.857)}
    path = env / "released.pth.tar"
    torch.save(released, path, _use_new_zipfile_serialization=False)
    assert state_dict_of(read_torch_file(path), path).keys() == weights.keys()
    code, _, err = run_cli("--data-root", str(trained / "data"), "test", BOT, "--scale", "smoke", "--checkpoint",
                           str(path), "--out", str(env / "f.npz"), "--device", "cpu", *_sets("train.epochs=1"))
    assert code == 0, err
    assert (env / "f.npz").is_file()


def test_checkpoint_rng_state_is_plain_data_and_old_numpy_states_restore(env, trained):
    state = load_checkpoint(trained / "run" / "checkpoints" / "last.pt")  # weights_only=True
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"rng": old}, env / "old.pt")  # a checkpoint written before the tensor format
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(read_torch_file(env / "old.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


# ---- tracebacks that are one-line errors ------------------------------------------------------------

def test_resume_with_a_foreign_checkpoint(env, run_cli):
    run = env / "runs" / "foreign"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, run / "checkpoints" / "last.pt")
    before = snapshot(env)
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", "--resume", str(run), *_sets())
    one_line_error(code, err, "last.pt", "not a reidbench checkpoint", "'recipe_hash'")
    assert snapshot(env) == before


@pytest.mark.parametrize("content", [[1, 2, 3], torch.zeros(3), {"epoch": 3}], ids=["list", "tensor", "dict"])
def test_test_checkpoint_that_is_no_model(env, run_cli, content):
    path = env / "other.pt"
    torch.save(content, path)
    code, _, err = run_cli("test", BOT, "--scale", "smoke", "--checkpoint", str(path), "--out", str(env / "f.pt"),
                           "--device", "cpu", *_sets())
    one_line_error(code, err, str(path), "not a model checkpoint")
    assert not (env / "f.pt").exists()


def test_paths_that_are_files(env, run_cli, monkeypatch):
    (env / "afile").write_text("x")
    monkeypatch.setenv("REIDBENCH_RUNS", str(env / "afile"))
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", *_sets())
    one_line_error(code, err, str(env / "afile"), "$REIDBENCH_RUNS")
    monkeypatch.setenv("REIDBENCH_RUNS", str(env / "runs"))
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", "--run-dir",
                           str(env / "afile" / "run"), *_sets())
    one_line_error(code, err, str(env / "afile"), "--run-dir")
    monkeypatch.setenv("REIDBENCH_DATA", str(env / "afile"))
    for args in (["data", "list"], ["train", BOT, "--scale", "smoke", *_sets()]):
        code, _, err = run_cli(*args)
        one_line_error(code, err, str(env / "afile"), "$REIDBENCH_DATA")
    assert (env / "afile").read_text() == "x" and not (env / "runs").exists()


_UNWRITABLE_DRIVER = """
import contextlib, io, json, os, sys
from reidbench.cli.app import main
results = []
for env, args in json.loads(sys.argv[1]):
    os.environ.update(env)
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 0
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_read_only_folders(env):
    """Runs, leaderboard and data folders that cannot be written: refused before any work, naming the setting.

    Root ignores permissions, so as root the cases run in a child without the capability to override them."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    ro = env / "ro"
    ro.mkdir()
    (env / "m.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # never opened: the root is refused first
    ro.chmod(0o555)
    smoke = ["--scale", "smoke", "--device", "cpu", *_sets()]
    cases = [
        ({"REIDBENCH_RUNS": str(ro)}, ["train", BOT, *smoke], "$REIDBENCH_RUNS"),
        ({"REIDBENCH_RUNS": str(env / "runs")}, ["train", BOT, *smoke, "--run-dir", str(ro / "r")], "--run-dir"),
        ({"REIDBENCH_DATA": str(ro)}, ["train", BOT, *smoke], "$REIDBENCH_DATA"),
        ({}, ["data", "synth", "market1501", "--out", str(ro)], "--out"),
        ({}, ["data", "prepare", "market1501", "--from", str(env / "m.zip"), "--root", str(ro)], "--root"),
        ({"REIDBENCH_DATA": str(env / "data"), "REIDBENCH_LEADERBOARDS": str(ro)},
         ["reproduce", "masenet", "--scale", "smoke", "--table", "Table I", "--row", "MASENet", "--dataset", "M"],
         "$REIDBENCH_LEADERBOARDS"),
    ]
    try:
        result = subprocess.run([*prefix, sys.executable, "-W", "ignore", "-c", _UNWRITABLE_DRIVER,
                                 json.dumps([[e, a] for e, a, _ in cases])],
                                capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1])
    finally:
        ro.chmod(0o755)
    assert result.returncode == 0, result.stderr[-3000:]
    for (code, err), (_, _args, setting) in zip(json.loads(result.stdout.splitlines()[-1]), cases, strict=True):
        one_line_error(code, err, str(ro), setting, "read-only")
    assert list(ro.iterdir()) == [] and not (env / "runs").exists()


def test_download_url_that_is_not_a_url(env, run_cli):
    code, _, err = run_cli("data", "download", "market1501", "--url", "notaurl", "--root", str(env / "d"))
    one_line_error(code, err, "--url", "'notaurl'", "http")
    assert not (env / "d").exists()


def test_recipe_file_that_is_not_utf8(env, run_cli):
    recipe = env / "latin1.yaml"
    recipe.write_bytes("base: bot/resnet50_market1501\ndescription: caf\xe9\n".encode("latin-1"))
    code, _, err = run_cli("train", str(recipe), "--scale", "smoke")
    one_line_error(code, err, str(recipe), "not UTF-8", "0xe9")


@pytest.mark.parametrize("override, culprit", [
    ("data.sampler.num_instances=0", "data.sampler.num_instances: expected a positive integer"),
    ("train.seed=-1", "train.seed"),
    ("data.workers=-1", "data.workers"),
    ("data.test_batch_size=0", "data.test_batch_size"),
    ("eval.metric=bogus", "eval.metric: unknown metric 'bogus'"),
    ("eval.feature=bogus", "eval.feature: model small_cnn has no eval output 'bogus'"),
    ("data.synthetic_ids=1", "data.synthetic_ids: expected at least 2"),
    ("data.transforms.erasing=1.5", "data.transforms.erasing: expected a probability"),
    ("optim.name=sgdd", "optim.name: unknown optimiser"),
])
def test_bad_recipe_values_are_refused_before_any_work(env, run_cli, override, culprit):
    code, _, err = run_cli("train", BOT, "--scale", "smoke", "--device", "cpu", *_sets(override))
    one_line_error(code, err, culprit)
    assert not (env / "runs").exists()
    if not override.startswith("eval.feature"):  # needs the model, not the data: still no data generated
        assert not (env / "data").exists()


def _write_features(path: Path, **changes) -> Path:
    fs = FeatureSet(torch.randn(3, 4), torch.randn(5, 4), np.arange(3), np.zeros(3, int), np.arange(5),
                    np.ones(5, int), meta={"dataset": "x"})
    save_features(path, fs)
    if path.suffix == ".pt":
        data = torch.load(path, weights_only=True)
        data.update(changes)
        torch.save(data, path)
    else:
        with np.load(path) as archive:
            data = {k: archive[k] for k in archive.files}
        data.update(changes)
        np.savez(path, **data)
    return path


@pytest.mark.parametrize("name, changes, culprit", [
    ("strings.npz", {"query_features": np.array([["a", "b"]] * 3)}, "query_features: expected a 2-D float matrix"),
    ("meta.pt", {"meta": [1, 2]}, "meta: expected a mapping"),
    ("paths.pt", {"query_paths": torch.tensor(3)}, "query_paths: expected a list of image paths"),
    ("json.npz", {"meta_json": np.asarray("{not json")}, "meta_json: not valid JSON"),
    ("short.pt", {"gallery_paths": ["a.jpg"]}, "gallery_paths: expected length 5"),
])
def test_evaluate_refuses_malformed_features(env, run_cli, name, changes, culprit):
    path = _write_features(env / name, **changes)
    code, _, err = run_cli("evaluate", str(path))
    one_line_error(code, err, str(path), culprit)


def test_rerank_options_without_rerank(env, run_cli):
    path = _write_features(env / "good.npz")
    code, _, err = run_cli("evaluate", str(path), "--k1", "-5", "--lambda-value", "0.5")
    one_line_error(code, err, "--k1, --lambda-value", "without --rerank")
    code, _, err = run_cli("evaluate", str(path), "--rerank", "--k1", "-5")
    one_line_error(code, err, "--k1: expected a positive integer, got -5")


# ---- accepted silently or reported weakly -----------------------------------------------------------

def _bomb(path: Path, megabytes: int, member: str = "Market-1501-v15.09.15/bomb.bin") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(member, "w", force_zip64=True) as handle:
            chunk = bytes(1 << 20)
            for _ in range(megabytes):
                handle.write(chunk)
    return path


def test_archive_bomb_is_refused_before_extraction(env, run_cli):
    bomb = _bomb(env / "bomb.zip", 300)
    assert bomb.stat().st_size < 2 * 1024**2
    code, _, err = run_cli("data", "prepare", "market1501", "--from", str(bomb), "--root", str(env / "d"))
    one_line_error(code, err, str(bomb), "300 MB", "255 MB", "refusing to extract")
    assert list((env / "d").iterdir()) == []  # no temporary folder left either


def test_archive_that_fails_verify_installs_nothing(env, run_cli):
    bomb = _bomb(env / "small.zip", 1)  # within the size limit, but only bomb.bin in the folder
    code, _, err = run_cli("data", "prepare", "market1501", "--from", str(bomb), "--root", str(env / "d"))
    one_line_error(code, err, str(bomb), "nothing installed", "fails verify", "layout")
    assert list((env / "d").iterdir()) == []


def test_archive_larger_than_the_free_space_is_refused(env, run_cli, monkeypatch):
    import reidbench.data.download as download

    bomb = _bomb(env / "b.zip", 2)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 10**6))
    code, _, err = run_cli("data", "prepare", "market1501", "--from", str(bomb), "--root", str(env / "d"))
    one_line_error(code, err, str(bomb), "needs 2 MB to extract", "1 MB free")
    assert list((env / "d").iterdir()) == []


def _tiny_jpeg() -> bytes:
    return encode_jpeg(torch.full((3, 16, 8), 128, dtype=torch.uint8)).numpy().tobytes()


def test_verify_checks_every_file_and_prints_names_whole(env, run_cli):
    root = env / "a-rather-long-folder-name-so-that-a-table-would-cut-it" / "market1501"
    folder = synthesize("market1501", root, ids=8, images_per_id=6).folder
    images = sorted(p for p in (folder / "bounding_box_test").glob("*.jpg") if not p.name.startswith("-1"))
    empty, truncated = images[1], images[-2]
    empty.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    code, out, _ = run_cli("data", "verify", "market1501", "--root", str(root))
    assert code == 1
    lines = out.splitlines()
    assert f"  {empty}: empty file (0 bytes)" in lines
    assert f"  {truncated}: truncated JPEG (no end-of-image marker)" in lines
    assert not (folder / ".reidbench_verified.json").exists()


def test_full_size_market_tree_with_one_empty_image_fails_verify_and_names_it(env, run_cli):
    """12,936 / 3,368 / 15,913 images with Market-1501's ids and cameras (hard links to one tiny JPEG), one
    of them emptied away from the decode sample: verify fails on that file alone and names it."""
    spec = get_dataset("market1501").default_variant
    top = env / "market1501" / "Market-1501-v15.09.15"
    source = env / "tiny.jpg"
    source.write_bytes(_tiny_jpeg())
    distractors = 2798  # pid 0 in the gallery; 5 junk images (pid -1) are dropped by the parser
    plan = {"bounding_box_train": [1 + i % 751 for i in range(spec.train.images)],
            "query": [752 + i % 750 for i in range(spec.query.images)],
            "bounding_box_test": [752 + i % 750 for i in range(spec.gallery.images - distractors)]
            + [0] * distractors + [-1] * 5}
    for sequence, (folder, pids) in enumerate(plan.items(), 1):
        (top / folder).mkdir(parents=True)
        for number, pid in enumerate(pids):
            person = "-1" if pid < 0 else f"{pid:04d}"
            os.link(source, top / folder / f"{person}_c{1 + number % 6}s{sequence}_{number:06d}_00.jpg")
    gallery = sorted(p for p in (top / "bounding_box_test").iterdir() if not p.name.startswith("-1"))
    victim = gallery[1001]  # record 12,936 + 3,368 + 1,001: not one of the 16 decoded (every 2,013th)
    victim.unlink()
    victim.write_bytes(b"")
    code, out, _ = run_cli("data", "verify", "market1501", "--root", str(env / "market1501"), "--json")
    report = json.loads(out)
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert code == 1 and list(failed) == ["image files"], failed
    assert failed["image files"]["files"] == [f"{victim}: empty file (0 bytes)"]


@pytest.mark.parametrize("text, culprit", [
    ("base: bot/resnet50_market1501\ntrain: {epochs: -3}\n", "train.epochs: expected a positive integer, got -3"),
    ("base: bot/resnet50_market1501\nmodel: {name: resnet9000}\n", "model.name: unknown model 'resnet9000'"),
])
def test_a_scale_does_not_hide_a_bad_value_in_the_file(env, run_cli, text, culprit):
    recipe = env / "bad.yaml"
    recipe.write_text(text)
    code, _, err = run_cli("train", str(recipe), "--scale", "smoke", "--device", "cpu")
    one_line_error(code, err, str(recipe), culprit)
    assert not (env / "runs").exists()


def test_the_smoke_substitution_is_a_recorded_choice_of_the_recipe(trained):
    record = json.loads((trained / "run" / "run.json").read_text())
    assert record["model"] == "small_cnn" and record["scale_overrides"] == {"model": {"name": "small_cnn"}}


@pytest.mark.parametrize("name", sorted(["market1501", "dukemtmcreid", "cuhk03", "msmt17", "veri776",
                                         "occluded_duke", "p_dukemtmc", "partial_reid", "partial_ilids"]))
def test_a_data_root_named_after_its_dataset(env, run_cli, name):
    root = env / name
    code, _, err = run_cli("data", "synth", name, "--out", str(root), "--ids", "4", "--images-per-id", "3")
    assert code == 0, err
    code, out, _ = run_cli("data", "verify", name, "--root", str(root), "--json")
    assert code == 0 and json.loads(out)["ok"], out
    assert Path(json.loads(out)["folder"]).parent == root


# ---- exact resume: a kill at every point of an epoch cycle --------------------------------------------

class Killed(BaseException):
    """Stands in for kill -9: nothing of the trainer catches it, nothing after it runs."""


KILL_EPOCH = 1  # 0-based: the second of three epochs, each followed by an evaluation (eval_every=1)


def _kill_mid_epoch(monkeypatch, trainer_cls):
    from reidbench.data.samplers import IdentityBatchSampler

    original = IdentityBatchSampler.__iter__

    def batches(self):
        for number, batch in enumerate(original(self)):
            if self.epoch == KILL_EPOCH and number == 2:
                raise Killed
            yield batch
    monkeypatch.setattr(IdentityBatchSampler, "__iter__", batches)


def _kill_after_checkpoint(monkeypatch, trainer_cls):
    import reidbench.engine.trainer as module

    original = module.save_checkpoint

    def save(path, state):
        original(path, state)
        if state["epoch"] == KILL_EPOCH:
            raise Killed
    monkeypatch.setattr(module, "save_checkpoint", save)


def _kill_during_evaluation(monkeypatch, trainer_cls):
    from reidbench.engine import features as module

    original = module.extract_outputs
    calls = []

    def extract(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2 * KILL_EPOCH + 2:  # the gallery pass of the second evaluation
            raise Killed
        return original(*args, **kwargs)
    monkeypatch.setattr(module, "extract_outputs", extract)


def _kill_after_evaluation(monkeypatch, trainer_cls):
    original = trainer_cls._log

    def log(self, record):
        original(self, record)
        if record.get("epoch") == KILL_EPOCH + 1 and "eval" in record:
            raise Killed
    monkeypatch.setattr(trainer_cls, "_log", log)


KILLS = {"mid-epoch": _kill_mid_epoch, "after-checkpoint": _kill_after_checkpoint,
         "during-evaluation": _kill_during_evaluation, "after-evaluation": _kill_after_evaluation}


def _final(run: Path) -> tuple[dict, torch.Tensor]:
    return (json.loads((run / "run.json").read_text())["metrics"],
            torch.load(run / "features.pt", weights_only=True)["gallery_features"])


def assert_same_features(a: torch.Tensor, b: torch.Tensor, workers: int) -> None:
    """Bit for bit in one process; with loader workers even two uninterrupted runs differ by float rounding
    (measured: up to 3e-7 in the features), so that is all a resumed run may differ by."""
    if workers == 0:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# workers 2 forks three loaders per epoch: those runs are the slow half of the matrix
@pytest.fixture(scope="module", params=[0, pytest.param(2, marks=pytest.mark.slow)], ids=["workers0", "workers2"])
def uninterrupted(request, tmp_path_factory):
    """Uninterrupted 3-epoch runs evaluating after every epoch and only after the last: same final numbers."""
    base = tmp_path_factory.mktemp(f"resume-w{request.param}")
    finals = {}
    for every in (1, 3):
        recipe = load_recipe(BOT, scale="smoke", overrides=[*SMOKE, "train.epochs=3", f"train.eval_every={every}",
                                                             f"data.workers={request.param}"])
        Trainer(recipe, run_dir=base / f"every{every}", device="cpu", data_root=base / "data", quiet=True).run()
        finals[every] = _final(base / f"every{every}")
    return base, request.param, finals


def test_final_metrics_do_not_depend_on_eval_every(uninterrupted):
    _, workers, finals = uninterrupted
    assert finals[1][0] == finals[3][0]
    assert_same_features(finals[1][1], finals[3][1], workers)


@pytest.mark.parametrize("point", list(KILLS))
def test_resume_after_a_kill_gives_identical_final_metrics(uninterrupted, point, monkeypatch):
    base, workers, finals = uninterrupted
    recipe = load_recipe(BOT, scale="smoke", overrides=[*SMOKE, "train.epochs=3", "train.eval_every=1",
                                                         f"data.workers={workers}"])
    run = base / f"killed-{point}"
    with monkeypatch.context() as patch:
        KILLS[point](patch, Trainer)
        with pytest.raises(Killed):
            Trainer(recipe, run_dir=run, device="cpu", data_root=base / "data", quiet=True).run()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == KILL_EPOCH - (point == "mid-epoch")
    torch.manual_seed(12345)  # a fresh process would not share this one's random state either
    Trainer(recipe, run_dir=run, device="cpu", data_root=base / "data", quiet=True, resume=True).run()
    metrics, gallery = _final(run)
    assert metrics == finals[1][0]
    assert_same_features(gallery, finals[1][1], workers)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "eval" not in json.loads(line)]
    assert epochs == [1, 2, 3]  # the epoch redone after a mid-epoch kill is logged once


# The reproduction with a real kill -9: the process SIGKILLs itself right after the evaluation of
# epoch 2 is logged (a deterministic point; polling from outside would race the run).
_KILL_AFTER_SECOND_EVALUATION = """
import os, signal, sys
from reidbench.engine.trainer import Trainer
from reidbench.cli.app import main
log = Trainer._log
def log_then_die(self, record):
    log(self, record)
    if record.get("epoch") == 2 and "eval" in record:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer._log = log_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_after_an_evaluation_then_resume_is_exact(env):
    import signal

    args = ["train", BOT, "--scale", "smoke", "--device", "cpu", "--set", "train.epochs=3", "--set",
            "train.seed=0", "--set", "data.workers=2"]
    cwd = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "reidbench", *args, "--run-dir", str(env / "full")], check=True,
                   capture_output=True, cwd=cwd)
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_SECOND_EVALUATION, *args, "--run-dir",
                             str(env / "killed")], capture_output=True, text=True, cwd=cwd)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "reidbench", *args, "--resume", str(env / "killed")],
                             capture_output=True, text=True, cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _final(env / "full")[0] == _final(env / "killed")[0]
    assert_same_features(_final(env / "full")[1], _final(env / "killed")[1], workers=2)
