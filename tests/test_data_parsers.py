"""Parsers on trees laid out from the real reference files (empty image files suffice for counts)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from reidbench.data.parsers import Subset, parse_dataset
from reidbench.data.registry import get_dataset
from reidbench.errors import ReidbenchError, UnknownNameError

from .reference import reference


def _mat_vector(path: Path) -> np.ndarray:
    data = scipy.io.loadmat(path)
    return next(v for k, v in data.items() if not k.startswith("__")).ravel().astype(int)


def _touch_all(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


@pytest.fixture(scope="module")
def market_tree(tmp_path_factory) -> Path:
    ref = reference("market1501")
    top = tmp_path_factory.mktemp("market") / "Market-1501-v15.09.15"
    for folder, ids, cams in (("bounding_box_train", "train_label", "train_cam"),
                              ("query", "queryID", "queryCam"),
                              ("bounding_box_test", "testID", "testCam")):
        pids, cameras = _mat_vector(ref / f"{ids}.mat"), _mat_vector(ref / f"{cams}.mat")
        _touch_all(top / folder, [f"{p:04d}_c{c}s1_{i:06d}_00.jpg" if p >= 0 else f"-1_c{c}s1_{i:06d}_00.jpg"
                                  for i, (p, c) in enumerate(zip(pids, cameras, strict=True))])
    (top / "bounding_box_test" / "Thumbs.db").touch()  # non-images are ignored
    return top


def test_market_junk_dropped_distractors_kept(market_tree):
    split = parse_dataset("market1501", market_tree.parent)
    stats = split.stats()
    assert stats["train"].as_tuple() == (12936, 751, 6)
    assert stats["query"].as_tuple() == (3368, 750, 6)
    assert stats["gallery"].as_tuple() == (15913, 751, 6)
    assert sum(r.pid == 0 for r in split.gallery) == 2798
    assert sorted({r.pid for r in split.train}) == list(range(751))
    assert {r.camid for r in split.query} == set(range(6))
    assert split.protocol == "market" and not split.synthetic


def test_root_may_be_the_top_folder_itself(market_tree):
    assert len(parse_dataset("market", market_tree).query) == 3368


def test_subset_first_ids_and_test_fraction(market_tree):
    split = parse_dataset("market1501", market_tree.parent,
                          subset=Subset(train_ids=50, test_id_fraction=0.1))
    assert split.num_train_pids == 50
    assert sorted({r.pid for r in split.train}) == list(range(50))
    query_ids = {r.pid for r in split.query}
    assert len(query_ids) == 75  # ceil(0.1 * 750)
    assert {r.pid for r in split.gallery} <= query_ids


def test_msmt17_train_is_train_plus_val(tmp_path):
    top = tmp_path / "MSMT17_V1"
    top.mkdir()
    for name in ("train", "val", "query", "gallery"):
        shutil.copy(reference("msmt17", f"list_{name}.txt"), top / f"list_{name}.txt")
    split = parse_dataset("msmt17", tmp_path)
    stats = split.stats()
    assert stats["train"].as_tuple() == (32621, 1041, 15)
    assert stats["query"].as_tuple() == (11659, 3060, 15)
    assert stats["gallery"].as_tuple() == (82161, 3060, 15)
    assert split.train[0].path.parent.parent.name == "train"
    (top / "mask_train_v2").mkdir()
    v2 = parse_dataset("msmt17", tmp_path)
    assert v2.train[0].path.parent.parent.name == "mask_train_v2"
    assert v2.query[0].path.parent.parent.name == "mask_test_v2"


@pytest.mark.parametrize("variant, expected", [
    ("detected", ((7365, 767, 2), (1400, 700, 2), (5332, 700, 2))),
    ("labeled", ((7368, 767, 2), (1400, 700, 2), (5328, 700, 2))),
])
def test_cuhk03_from_split_configs(tmp_path, variant, expected):
    top = tmp_path / "cuhk03_release"
    top.mkdir()
    shutil.copy(reference("cuhk03", f"cuhk03_new_protocol_config_{variant}.mat"), top)
    split = parse_dataset("cuhk03", tmp_path, variant=variant)
    stats = split.stats()
    assert (stats["train"].as_tuple(), stats["query"].as_tuple(), stats["gallery"].as_tuple()) == expected
    assert split.name == f"cuhk03/{variant}"
    if variant == "detected":
        listed = [line.split()[0].split("/")[1]
                  for line in reference("cuhk03", "train_cuhk03_detected.txt").read_text().splitlines()]
        assert sorted(r.path.name for r in split.train) == sorted(listed)


def test_cuhk03_np_layout(tmp_path):
    base = tmp_path / "cuhk03-np" / "labeled"
    _touch_all(base / "bounding_box_train", ["0001_c1_1.png", "0001_c2_2.png", "0003_c1_1.png"])
    _touch_all(base / "query", ["0005_c1_1.png"])
    _touch_all(base / "bounding_box_test", ["0005_c2_1.png", "0006_c1_1.png"])
    split = parse_dataset("cuhk03", tmp_path, variant="labeled")
    assert [r.pid for r in split.train] == [0, 0, 1]
    assert [r.camid for r in split.gallery] == [1, 0]


def test_occluded_duke_from_the_shipped_lists(tmp_path):
    lists = resources.files("reidbench.data") / "lists" / "occluded_duke"
    top = tmp_path / "Occluded_Duke"
    for list_name, folder in (("train.list", "bounding_box_train"), ("query.list", "query"),
                              ("gallery.list", "bounding_box_test")):
        _touch_all(top / folder, (lists / list_name).read_text().split())
    stats = parse_dataset("occluded_duke", tmp_path).stats()
    assert stats["train"].as_tuple() == (15618, 702, 8)
    assert stats["query"].as_tuple() == (2210, 519, 8)
    assert stats["gallery"].as_tuple() == (17661, 1110, 8)


def test_shipped_lists_equal_the_reference_lists():
    lists = resources.files("reidbench.data") / "lists" / "occluded_duke"
    for name in ("train.list", "query.list", "gallery.list"):
        assert (lists / name).read_bytes() == reference("occluded_duke", name).read_bytes()


def test_veri_p_duke_and_partial_layouts(tmp_path):
    veri = tmp_path / "VeRi"
    _touch_all(veri / "image_train", ["0001_c001_00016450_0.jpg", "0002_c002_00016450_1.jpg"])
    _touch_all(veri / "image_query", ["0002_c003_00084220_0.jpg"])
    _touch_all(veri / "image_test", ["0002_c004_00084220_0.jpg", "0009_c020_1_0.jpg"])
    split = parse_dataset("veri776", tmp_path)
    assert [r.camid for r in split.gallery] == [3, 19] and split.num_train_pids == 2

    pduke = tmp_path / "P-DukeMTMC-reid"
    _touch_all(pduke / "train" / "whole_body_images" / "0005", ["0005_c2_f0046985.jpg"])
    _touch_all(pduke / "train" / "occluded_body_images" / "0005", ["0005_c3_f0047000.jpg"])
    _touch_all(pduke / "test" / "occluded_body_images" / "0007", ["0007_c1_f0001.jpg"])
    _touch_all(pduke / "test" / "whole_body_images" / "0007", ["0007_c5_f0002.jpg"])
    split = parse_dataset("p_dukemtmc", tmp_path)
    assert len(split.train) == 2 and split.query[0].camid == 0 and split.gallery[0].camid == 4

    partial = tmp_path / "Partial_REID"
    _touch_all(partial / "partial_body_images", ["001_01.jpg", "002_01.jpg"])
    _touch_all(partial / "whole_body_images", ["001_01.jpg", "002_01.jpg"])
    split = parse_dataset("partial_reid", tmp_path)
    assert split.protocol == "partial" and split.train == []
    assert {r.camid for r in split.query} == {0} and {r.camid for r in split.gallery} == {1}

    ilids = tmp_path / "Partial_iLIDS"
    _touch_all(ilids / "Probe", ["1.jpg", "2.jpg"])
    _touch_all(ilids / "Gallery", ["1.jpg", "2.jpg"])
    assert [r.pid for r in parse_dataset("partial_ilids", tmp_path).query] == [1, 2]


def test_missing_dataset_names_the_command_to_run(tmp_path):
    with pytest.raises(ReidbenchError) as info:
        parse_dataset("dukemtmcreid", tmp_path)
    assert "DukeMTMC-reID" in info.value.message and "reidbench data download" in info.value.hint


def test_bad_file_name_is_reported(tmp_path):
    top = tmp_path / "Market-1501-v15.09.15"
    _touch_all(top / "bounding_box_train", ["nonsense.jpg"])
    _touch_all(top / "query", [])
    _touch_all(top / "bounding_box_test", [])
    with pytest.raises(ReidbenchError, match="nonsense.jpg"):
        parse_dataset("market1501", tmp_path)


def test_registry_names_and_aliases():
    for name in ("market1501", "dukemtmcreid", "cuhk03", "msmt17", "veri776", "occluded_duke",
                 "p_dukemtmc", "partial_reid", "partial_ilids"):
        assert get_dataset(name).name == name
    assert get_dataset("MSMT17_V2").name == "msmt17"
    with pytest.raises(UnknownNameError) as info:
        get_dataset("marker1501")
    assert info.value.suggestions[0] == "market1501"
