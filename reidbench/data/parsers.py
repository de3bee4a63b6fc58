"""Turn a dataset folder into a :class:`Split`, following each dataset's own conventions.

Every parser returns train pids relabelled to 0..N-1 (in ascending order of the original id) and
0-based camera ids; query and gallery keep their original ids so that they can be matched.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from reidbench.data.records import ImageRecord, Split
from reidbench.data.registry import DatasetSpec, get_dataset
from reidbench.errors import ReidbenchError

MANIFEST = "reidbench_manifest.json"  # written by `reidbench data synth`; marks synthetic data
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PERSON_NAME = re.compile(r"([-\d]+)_c(\d+)")
VEHICLE_NAME = re.compile(r"(\d+)_c(\d\d\d)")


@dataclass(frozen=True)
class Subset:
    """A reproducible part of a dataset: the first ``train_ids`` training identities (in id order)
    and the first ``test_id_fraction`` of the test identities (query and gallery alike)."""

    train_ids: int | None = None
    test_id_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.train_ids is not None and self.train_ids < 1:
            raise ReidbenchError(f"subset train_ids: expected a positive integer, got {self.train_ids}")
        if self.test_id_fraction is not None and not 0 < self.test_id_fraction <= 1:
            raise ReidbenchError(
                f"subset test_id_fraction: expected a value in (0, 1], got {self.test_id_fraction}"
            )


def locate(spec: DatasetSpec, root: Path) -> Path | None:
    """The dataset's top folder under a data root, or the root itself when it is that folder.

    Decided by what the folders contain (the dataset's layout), never by a folder's name: a data root
    named after its dataset (torchreid's ``reid-data/market1501/Market-1501-v15.09.15``) is a data root.
    When no folder holds the layout, an incomplete top folder (official name under the root, else the
    root itself when named like one) is returned, so that `verify` reports what is missing.
    """
    root = Path(root)
    children = [root / name for name in spec.top_folders]
    for candidate in (root, *children):
        if spec.holds_dataset(candidate):
            return candidate
    incomplete = next((c for c in children if c.is_dir()), None)
    if incomplete is None and root.name in spec.top_folders and root.is_dir():
        incomplete = root
    return incomplete


def require(spec: DatasetSpec, root: Path) -> Path:
    folder = locate(spec, root)
    if folder is None:
        raise ReidbenchError(
            f"{spec.name}: no dataset folder under {root} (expected one of "
            f"{', '.join(spec.top_folders)})",
            hint=f"run `reidbench data download {spec.name}` or `reidbench data prepare {spec.name}`",
        )
    return folder


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReidbenchError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ReidbenchError(f"{folder}: folder not found (expected the dataset's image folder)")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _named(folder: Path, pattern: re.Pattern[str], cam_offset: int = 1,
           drop_junk: bool = True) -> list[ImageRecord]:
    records = []
    for path in _images(folder):
        match = pattern.search(path.name)
        if match is None:
            raise ReidbenchError(f"{path}: file name does not match the dataset's naming "
                                 f"(expected {pattern.pattern})")
        pid, cam = int(match.group(1)), int(match.group(2))
        if drop_junk and pid == -1:
            continue
        records.append(ImageRecord(path, pid, cam - cam_offset))
    return records


def relabel(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    records = list(records)
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, mapping[r.pid], r.camid) for r in records]


def _market_style(spec: DatasetSpec, folder: Path, pattern: re.Pattern[str] = PERSON_NAME) -> tuple:
    train = relabel(_named(folder / "bounding_box_train", pattern))
    query = _named(folder / "query", pattern)
    gallery = _named(folder / "bounding_box_test", pattern)
    return train, query, gallery


def _parse_market(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    return _market_style(spec, folder)


def _parse_cuhk03(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    variant = spec.variant(variant).name
    if (folder / variant / "bounding_box_train").is_dir():  # pre-extracted CUHK03-NP layout
        return _market_style(spec, folder / variant)
    config = next((p for p in (folder / f"cuhk03_new_protocol_config_{variant}.mat",
                               folder.parent / f"cuhk03_new_protocol_config_{variant}.mat")
                   if p.is_file()), None)
    if config is None:
        raise ReidbenchError(
            f"{folder}: neither {variant}/bounding_box_train (CUHK03-NP) nor "
            f"cuhk03_new_protocol_config_{variant}.mat (raw release) found",
            hint="run `reidbench data prepare cuhk03 --from cuhk03_release.zip`",
        )
    import scipy.io

    mat = scipy.io.loadmat(config)
    names = [str(entry[0][0] if entry[0].ndim else entry[0]) for entry in mat["filelist"]]
    labels = mat["labels"].ravel().astype(int)
    image_dir = folder / f"images_{variant}"

    def pick(key: str) -> list[ImageRecord]:
        out = []
        for index in mat[key].ravel().astype(int) - 1:  # 1-based in the .mat
            name = names[index]
            out.append(ImageRecord(image_dir / name, int(labels[index]), int(name.split("_")[2]) - 1))
        return out

    return relabel(pick("train_idx")), pick("query_idx"), pick("gallery_idx")


def _parse_msmt17(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    if (folder / "mask_train_v2").is_dir():
        train_dir, test_dir = folder / "mask_train_v2", folder / "mask_test_v2"
    else:
        train_dir, test_dir = folder / "train", folder / "test"

    def read(list_name: str, image_dir: Path) -> list[ImageRecord]:
        path = folder / list_name
        if not path.is_file():
            raise ReidbenchError(f"{path}: list file not found (expected the official MSMT17 lists)")
        out = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                name, label = line.split()
                cam = int(Path(name).name.split("_")[2])
            except (ValueError, IndexError) as error:
                raise ReidbenchError(f"{path}:{number}: expected '<pid>/<name>.jpg <label>', "
                                     f"got {line!r}") from error
            out.append(ImageRecord(image_dir / name, int(label), cam - 1))
        return out

    train = relabel(read("list_train.txt", train_dir) + read("list_val.txt", train_dir))
    return train, read("list_query.txt", test_dir), read("list_gallery.txt", test_dir)


def _parse_veri(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    train = relabel(_named(folder / "image_train", VEHICLE_NAME))
    return train, _named(folder / "image_query", VEHICLE_NAME), _named(folder / "image_test", VEHICLE_NAME)


def _per_id_folders(folder: Path, fallback_cam: int) -> list[ImageRecord]:
    if not folder.is_dir():
        raise ReidbenchError(f"{folder}: folder not found (expected <pid>/<image> folders)")
    records = []
    for pid_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in _images(pid_dir):
            match = PERSON_NAME.search(path.name)
            cam = int(match.group(2)) - 1 if match else fallback_cam
            records.append(ImageRecord(path, int(pid_dir.name), cam))
    return records


def _parse_p_duke(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    train = relabel(_per_id_folders(folder / "train" / "whole_body_images", 1)
                    + _per_id_folders(folder / "train" / "occluded_body_images", 0))
    query = _per_id_folders(folder / "test" / "occluded_body_images", 0)
    gallery = _per_id_folders(folder / "test" / "whole_body_images", 1)
    return train, query, gallery


def _numbered(folder: Path, camid: int) -> list[ImageRecord]:
    records = []
    for path in _images(folder):
        match = re.match(r"(\d+)", path.stem)
        if match is None:
            raise ReidbenchError(f"{path}: expected a file name starting with the person id")
        records.append(ImageRecord(path, int(match.group(1)), camid))
    return records


def _parse_partial_reid(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    # Query and gallery are different "cameras" by construction; evaluated without camera filter.
    return [], _numbered(folder / "partial_body_images", 0), _numbered(folder / "whole_body_images", 1)


def _parse_partial_ilids(spec: DatasetSpec, folder: Path, variant: str | None) -> tuple:
    for query, gallery in (("query", "gallery"), ("Probe", "Gallery"), ("probe", "gallery")):
        if (folder / query).is_dir():
            return [], _numbered(folder / query, 0), _numbered(folder / gallery, 1)
    raise ReidbenchError(f"{folder}: expected query/ and gallery/ (or Probe/ and Gallery/) folders")


#: folder parsers by the name a DatasetSpec gives in its ``parser`` field
PARSERS: dict[str, Callable[[DatasetSpec, Path, str | None], tuple]] = {
    "market": _parse_market,
    "cuhk03": _parse_cuhk03,
    "msmt17": _parse_msmt17,
    "veri": _parse_veri,
    "p_duke": _parse_p_duke,
    "partial_reid": _parse_partial_reid,
    "partial_ilids": _parse_partial_ilids,
}


def apply_subset(split: Split, subset: Subset) -> Split:
    train, query, gallery = split.train, split.query, split.gallery
    if subset.train_ids is not None:
        keep = set(sorted({r.pid for r in train})[: subset.train_ids])
        train = relabel(r for r in train if r.pid in keep)
    if subset.test_id_fraction is not None:
        ids = sorted({r.pid for r in query})
        keep = set(ids[: max(1, math.ceil(subset.test_id_fraction * len(ids)))])
        query = [r for r in query if r.pid in keep]
        gallery = [r for r in gallery if r.pid in keep]
    notes = {**split.notes, "subset": f"train_ids={subset.train_ids}, "
                                      f"test_id_fraction={subset.test_id_fraction}"}
    return Split(split.name, split.root, train, query, gallery, split.protocol, split.synthetic, notes)


def parse_dataset(name: str, root: Path, variant: str | None = None,
                  subset: Subset | None = None) -> Split:
    """Parse a dataset found under a data root (or at its top folder itself)."""
    spec = get_dataset(name)
    folder = require(spec, Path(root))
    if spec.variants[0].name != "default":
        variant = spec.variant(variant).name
    train, query, gallery = PARSERS[spec.parser](spec, folder, variant)
    manifest = read_manifest(folder)
    split = Split(
        name=spec.name if variant in (None, "default") else f"{spec.name}/{variant}",
        root=folder, train=train, query=query, gallery=gallery, protocol=spec.protocol,
        synthetic=bool(manifest and manifest.get("synthetic")),
    )
    return apply_subset(split, subset) if subset else split
