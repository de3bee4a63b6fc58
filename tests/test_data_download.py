"""Downloads, checks, safe extraction and atomic installs, against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from torchvision.io import decode_image, encode_jpeg, read_file

from reidbench.data import registry
from reidbench.data.download import DownloadError, http_download, safe_extract
from reidbench.data.install import download_dataset, extract_cuhk03_images, prepare_dataset
from reidbench.data.parsers import parse_dataset
from reidbench.data.verify import VERIFIED_MARKER, dataset_status, verify_dataset
from reidbench.errors import ReidbenchError

from .httpserver import FileServer
from .reference import reference


def tiny_jpeg() -> bytes:
    return reference("market1501", "sample_images", "0032_c6s1_002851_01.jpg").read_bytes()


def market_zip(ids: int = 4) -> bytes:
    """A miniature Market-1501 archive with real JPEG bytes."""
    image = tiny_jpeg()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for pid in range(1, ids + 1):
            for cam in (1, 2):
                top = "Market-1501-v15.09.15"
                zf.writestr(f"{top}/bounding_box_train/{pid:04d}_c{cam}s1_000001_00.jpg", image)
                zf.writestr(f"{top}/bounding_box_test/{pid:04d}_c{cam}s1_000002_00.jpg", image)
            zf.writestr(f"Market-1501-v15.09.15/query/{pid:04d}_c1s1_000003_00.jpg", image)
        zf.writestr("Market-1501-v15.09.15/bounding_box_test/-1_c1s1_000009_00.jpg", image)
        zf.writestr("Market-1501-v15.09.15/bounding_box_test/0000_c2s1_000009_00.jpg", image)
    return buffer.getvalue()


@pytest.fixture
def server():
    with FileServer() as srv:
        yield srv


@pytest.fixture
def small_market(monkeypatch):
    """Point the registry's Market entry at the miniature's statistics and checksum."""
    data = market_zip()
    spec = registry.DATASETS["market1501"]
    variant = registry.Variant("default", registry.Stats(8, 4, 2), registry.Stats(4, 4, 1),
                               registry.Stats(9, 5, 2))
    archive = replace(spec.archives[0], md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(registry.DATASETS, "market1501",
                        replace(spec, variants=(variant,), archives=(archive,)))
    return data


def test_download_success_installs_and_verifies(server, small_market, tmp_path):
    server.files["/m.zip"] = small_market
    result = download_dataset("market1501", tmp_path, url=server.url("/m.zip"))
    assert result.installed and result.folder == tmp_path / "Market-1501-v15.09.15"
    report = verify_dataset("market1501", tmp_path,
                            archive=tmp_path / ".downloads" / "Market-1501-v15.09.15.zip")
    assert report.ok, report.to_dict()
    assert (result.folder / VERIFIED_MARKER).is_file()
    assert dataset_status("market1501", tmp_path)["status"] == "verified"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".reidbench-tmp")] == []


def test_resume_after_a_dropped_connection(server, small_market, tmp_path):
    server.files["/m.zip"] = small_market
    server.drop_once.add("/m.zip")
    download_dataset("market1501", tmp_path, url=server.url("/m.zip"))
    ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) == len(small_market) // 2
    assert parse_dataset("market1501", tmp_path).stats()["train"].images == 8


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    body = bytes(range(256)) * 100
    server.files["/f.bin"] = body
    server.ignore_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(body[:1000])
    assert http_download(server.url("/f.bin"), tmp_path / "f.bin").read_bytes() == body


def test_checksum_mismatch_installs_nothing(server, small_market, tmp_path):
    server.files["/m.zip"] = small_market[:-10] + b"0123456789"
    with pytest.raises(ReidbenchError, match="md5 mismatch"):
        download_dataset("market1501", tmp_path, url=server.url("/m.zip"))
    assert not (tmp_path / "Market-1501-v15.09.15").exists()
    assert not (tmp_path / ".downloads" / "Market-1501-v15.09.15.zip").exists()
    assert verify_dataset("market1501", tmp_path).ok is False


def test_html_page_instead_of_zip_is_recognised(server, small_market, tmp_path):
    server.files["/m.zip"] = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    with pytest.raises(ReidbenchError, match="HTML page"):
        download_dataset("market1501", tmp_path, url=server.url("/m.zip"))
    assert dataset_status("market1501", tmp_path)["status"] == "missing"


def test_truncated_archive_is_rejected_and_nothing_installed(tmp_path):
    archive = tmp_path / "market-copy.zip"  # a name without a registry checksum: extraction must catch it
    archive.write_bytes(market_zip()[:-300])
    with pytest.raises(ReidbenchError, match="truncated or corrupt|not a zip"):
        prepare_dataset("market1501", archive, tmp_path / "root")
    assert dataset_status("market1501", tmp_path / "root")["status"] == "missing"
    assert list((tmp_path / "root").iterdir()) == []  # no temporary folder left


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_path_traversal_members_are_refused(tmp_path, kind):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo({"dotdot": "top/../../escaped.txt", "absolute": "/tmp/escaped.txt",
                                "symlink": "top/link"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../../etc"
            tf.addfile(info)
        else:
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DownloadError, match="refusing to extract"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_zip_traversal_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(DownloadError, match="'\\.\\.'"):
        safe_extract(archive, tmp_path / "out")


def test_by_request_dataset_prints_instructions(tmp_path):
    result = download_dataset("msmt17", tmp_path)
    assert result.folder is None and "reidbench data prepare msmt17 --from" in result.message


def test_prepare_from_a_folder_copies_and_does_not_touch_the_source(small_market, tmp_path):
    safe_extract_dir = tmp_path / "by-hand"
    archive = tmp_path / "m.zip"
    archive.write_bytes(small_market)
    safe_extract(archive, safe_extract_dir)
    folder = prepare_dataset("market1501", safe_extract_dir, tmp_path / "root")
    assert folder.is_dir() and (safe_extract_dir / "Market-1501-v15.09.15").is_dir()
    with pytest.raises(ReidbenchError, match="already exists"):
        prepare_dataset("market1501", safe_extract_dir, tmp_path / "root")


def test_verify_reports_count_mismatch_and_missing_files(small_market, tmp_path):
    archive = tmp_path / "m.zip"
    archive.write_bytes(small_market)
    folder = prepare_dataset("market1501", archive, tmp_path / "root")
    next((folder / "query").iterdir()).unlink()
    report = verify_dataset("market1501", tmp_path / "root")
    assert not report.ok
    failed = {c.name: c for c in report.checks if not c.ok}
    assert "query counts" in failed and "images expected 4 found 3" in failed["query counts"].detail


def test_verify_reports_undecodable_images(small_market, tmp_path):
    archive = tmp_path / "m.zip"
    archive.write_bytes(small_market)
    folder = prepare_dataset("market1501", archive, tmp_path / "root")
    victim = sorted((folder / "bounding_box_train").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    report = verify_dataset("market1501", tmp_path / "root", decode=100)
    check = next(c for c in report.checks if c.name == "decode sample")
    assert not check.ok and victim.name in check.detail


def test_occluded_duke_is_built_from_duke(tmp_path, monkeypatch):
    from importlib import resources

    lists = resources.files("reidbench.data") / "lists" / "occluded_duke"
    names = {n: (lists / n).read_text().split() for n in ("train.list", "query.list", "gallery.list")}
    duke = tmp_path / "src" / "DukeMTMC-reID"
    image = encode_jpeg(torch.zeros(3, 8, 4, dtype=torch.uint8)).numpy().tobytes()  # install verifies every file
    # Occluded-Duke re-splits Duke: put list images in mixed original folders.
    for i, name in enumerate(sorted(set().union(*names.values()))):
        folder = duke / ("bounding_box_train", "bounding_box_test", "query")[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(image)
    folder = prepare_dataset("occluded_duke", duke.parent, tmp_path / "root")
    assert folder.name == "Occluded_Duke"
    stats = parse_dataset("occluded_duke", tmp_path / "root").stats()
    assert stats["query"].as_tuple() == (2210, 519, 8)
    assert stats["gallery"].images == 17661 and stats["train"].images == 15618
    next((duke / "query").iterdir()).unlink()
    with pytest.raises(ReidbenchError, match="missing, first"):
        prepare_dataset("occluded_duke", duke.parent, tmp_path / "root2")


def test_cuhk03_images_extracted_from_hdf5(tmp_path):
    mat_path = tmp_path / "cuhk03_release" / "cuhk-03.mat"
    mat_path.parent.mkdir()
    rng = np.random.default_rng(0)
    with h5py.File(mat_path, "w") as f:
        empty = f.create_dataset("empty", data=np.zeros((2,), np.uint8))
        for kind in ("detected", "labeled"):
            pair_refs = []
            for pair in range(2):
                cells = np.empty((10, 3), dtype=h5py.ref_dtype)  # stored transposed, as MATLAB does
                for pid in range(3):
                    for index in range(10):
                        if index == 9 and pid == 2:
                            cells[index, pid] = empty.ref
                            continue
                        img = rng.integers(0, 255, (3, 20, 40), dtype=np.uint8)  # [3, W, H]
                        ds = f.create_dataset(f"{kind}_{pair}_{pid}_{index}", data=img)
                        cells[index, pid] = ds.ref
                pair_refs.append(f.create_dataset(f"{kind}_pair{pair}", data=cells).ref)
            f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))
    counts = extract_cuhk03_images(mat_path, tmp_path / "out")
    assert counts == {"detected": 58, "labeled": 58}
    image = decode_image(read_file(str(tmp_path / "out" / "images_detected" / "2_003_2_07.png")))
    assert tuple(image.shape) == (3, 40, 20)
    assert not (tmp_path / "out" / "images_detected" / "1_003_2_10.png").exists()


def test_verify_json_cli(run_cli, small_market, tmp_path):
    archive = tmp_path / "Market-1501-v15.09.15.zip"
    archive.write_bytes(small_market)
    code, out, _ = run_cli("data", "prepare", "market1501", "--from", str(archive),
                           "--root", str(tmp_path / "r"))
    assert code == 0 and "reidbench data verify" in out
    code, out, _ = run_cli("data", "verify", "market", "--root", str(tmp_path / "r"),
                           "--archive", str(archive), "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run_cli("data", "verify", "market", "--root", str(tmp_path / "elsewhere"), "--json")
    assert code == 1 and json.loads(out)["checks"][0]["found"] == "missing"
    code, out, _ = run_cli("data", "list", "--root", str(tmp_path / "r"), "--json")
    rows = {r["dataset"]: r for r in json.loads(out)}
    assert rows["market1501"]["status"] == "verified" and rows["msmt17"]["status"] == "missing"
    code, _, err = run_cli("data", "info", "markt1501")
    assert code == 2 and "did you mean 'market1501'" in err


def test_weights_verify_and_download(server, tmp_path, monkeypatch, run_cli):
    import torch

    from reidbench import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buffer)
    blob = buffer.getvalue()
    prefix = hashlib.sha256(blob).hexdigest()[:8]
    spec = replace(weights.WEIGHTS["resnet50_ibn_a"], filename=f"ibn-{prefix}.pth", sha256_prefix=prefix)
    monkeypatch.setitem(weights.WEIGHTS, "resnet50_ibn_a", spec)
    assert weights.verify_weights("resnet50_ibn_a")["status"] == "missing"
    server.files["/w.pth"] = blob
    path = weights.download_weights("resnet50_ibn_a", url=server.url("/w.pth"))
    assert path.parent == tmp_path / "th" / "hub" / "checkpoints"
    assert weights.verify_weights("resnet50_ibn_a")["status"] == "verified"
    path.write_bytes(blob + b"x")
    code, out, _ = run_cli("weights", "verify", "resnet50_ibn_a")
    assert code == 1 and "prefix mismatch" in out
    server.files["/bad.pth"] = b"<html>quota</html>"
    path.unlink()
    with pytest.raises(ReidbenchError, match="HTML page"):
        weights.download_weights("resnet50_ibn_a", url=server.url("/bad.pth"))
    code, out, _ = run_cli("weights", "list", "--json")
    assert {row["name"] for row in json.loads(out)} >= {"resnet50", "resnet50_ibn_a", "msinet_msmt"}


def test_users_archive_with_wrong_checksum_is_reported_and_kept(tmp_path):
    archive = tmp_path / "Market-1501-v15.09.15.zip"  # the registry name: its md5 is checked
    archive.write_bytes(market_zip())
    with pytest.raises(ReidbenchError, match="md5 mismatch") as info:
        prepare_dataset("market1501", archive, tmp_path / "root")
    assert archive.is_file() and "not the official one" in info.value.hint
    assert dataset_status("market1501", tmp_path / "root")["status"] == "missing"
