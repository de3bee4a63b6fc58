"""`reidbench data synth`: miniatures of every registered dataset in its official layout.

The miniature lands in ``OUT/<official top folder>`` with the official file naming (and list,
XML or .mat files where the dataset has them), so the real parsers read it unchanged. A
``reidbench_manifest.json`` beside it records the per-split counts (read back with the real
parser), a sha256 per file, and ``"synthetic": true``; `reidbench data verify` checks a synthetic
folder against its manifest instead of the official statistics. Same arguments and seed give
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import encode_jpeg, encode_png

from reidbench import __version__
from reidbench.data.checksums import file_digest
from reidbench.data.parsers import MANIFEST, parse_dataset
from reidbench.data.registry import DatasetSpec, get_dataset
from reidbench.data.render import (
    crop_partial,
    make_camera,
    make_person,
    make_vehicle,
    occlude,
    render_person,
    render_vehicle,
)
from reidbench.errors import ReidbenchError

DEFAULT_IDS = 24
DEFAULT_IMAGES_PER_ID = 8
# SeedSequence tags keep identity, camera and per-image streams independent of each other.
_IDENTITY, _CAMERA, _IMAGE, _PLAN = 1, 2, 3, 4


@dataclass
class Shot:
    split: str  # train | query | gallery
    pid: int
    cam: int  # 1-based, as in file names
    look: str = "whole"  # whole | occluded | partial
    path: str = ""  # relative to the top folder, filled by the layout


@dataclass
class SynthResult:
    dataset: str
    folder: Path
    images: int
    seconds: float
    splits: dict[str, dict[str, list[int]]] = field(default_factory=dict)


class _World:
    """Identities and cameras of one miniature; every image has its own random stream."""

    def __init__(self, seed: int, vehicles: bool) -> None:
        self.seed = seed
        self.vehicles = vehicles
        self._ids: dict[int, Any] = {}
        self._cams: dict[int, Any] = {}

    def rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *key])

    def identity(self, pid: int) -> Any:
        if pid not in self._ids:
            make = make_vehicle if self.vehicles else make_person
            self._ids[pid] = make(self.rng(_IDENTITY, pid + 1000))
        return self._ids[pid]

    def camera(self, cam: int) -> Any:
        if cam not in self._cams:
            self._cams[cam] = make_camera(self.rng(_CAMERA, cam))
        return self._cams[cam]

    def render(self, shot: Shot, index: int) -> np.ndarray:
        rng = self.rng(_IMAGE, index)
        render = render_vehicle if self.vehicles else render_person
        image = render(self.identity(shot.pid), self.camera(shot.cam), rng)
        if shot.look == "occluded":
            other = render_person(make_person(rng), self.camera(shot.cam), rng)
            image = occlude(image, rng, other)
        elif shot.look == "partial":
            image = crop_partial(image, rng)
        return image


def _cams_for(rng: np.random.Generator, count: int, num_cams: int, distinct: int) -> list[int]:
    """``count`` camera numbers (1-based) covering at least ``distinct`` different cameras."""
    distinct = min(distinct, num_cams, count)
    first = list(rng.choice(num_cams, size=distinct, replace=False) + 1)
    rest = list(rng.integers(1, num_cams + 1, size=count - distinct))
    return [int(c) for c in first + rest]


def plan_reid(ids: int, per_id: int, num_cams: int, rng: np.random.Generator,
              queries_per_id: int = 1, distractors: int = 0, gallery_only_ids: int = 0,
              first_pid: int = 1) -> list[Shot]:
    """Train on the first half of the ids, test on the rest: for every test id, one query per
    camera for ``queries_per_id`` cameras, the other images in the gallery (always including a
    camera the query was not taken in)."""
    num_train = (ids + 1) // 2
    shots: list[Shot] = []
    for pid in range(first_pid, first_pid + ids):
        test = pid - first_pid >= num_train
        cams = _cams_for(rng, per_id, num_cams, 3 if test else 2)
        if not test:
            shots += [Shot("train", pid, cam) for cam in cams]
            continue
        queried: set[int] = set()
        for cam in cams:
            take = cam not in queried and len(queried) < min(queries_per_id, len(set(cams)) - 1)
            if take:
                queried.add(cam)
            shots.append(Shot("query" if take else "gallery", pid, cam))
    extra = first_pid + ids
    for i in range(gallery_only_ids):
        shots += [Shot("gallery", extra + i, cam) for cam in _cams_for(rng, 2, num_cams, 2)]
    shots += [Shot("gallery", 0, int(rng.integers(1, num_cams + 1))) for _ in range(distractors)]
    return shots


# ---- layouts: each fills Shot.path and returns the extra (non-image) files to write ----

def _market(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for frame, shot in enumerate(shots):
        shot.path = f"{folders[shot.split]}/{shot.pid:04d}_c{shot.cam}s1_{frame * 25:06d}_00.jpg"
        if shot.pid == -1:
            shot.path = f"{folders[shot.split]}/-1_c{shot.cam}s1_{frame * 25:06d}_00.jpg"
    return {}


def _duke(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for frame, shot in enumerate(shots):
        shot.path = f"{folders[shot.split]}/{shot.pid:04d}_c{shot.cam}_f{frame * 120 + 4000:07d}.jpg"
    return {}


def _msmt17(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    lists: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    train_labels = {p: i for i, p in enumerate(sorted({s.pid for s in shots if s.split == "train"}))}
    test_labels = {p: i for i, p in enumerate(sorted({s.pid for s in shots if s.split != "train"}))}
    for n, shot in enumerate(shots):
        label = train_labels[shot.pid] if shot.split == "train" else test_labels[shot.pid]
        name = f"{label:04d}/{label:04d}_{n:03d}_{shot.cam:02d}_0303morning_{n:04d}_{n % 3}.jpg"
        folder = "train" if shot.split == "train" else "test"
        shot.path = f"{folder}/{name}"
        key = shot.split if shot.split != "train" else ("val" if rng.random() < 0.15 else "train")
        lists[key].append(f"{name} {label}")
    return {f"list_{k}.txt": ("\n".join(v) + "\n").encode() for k, v in lists.items()}


def _veri(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    folders = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
    names: dict[str, list[str]] = {"train": [], "query": [], "gallery": []}
    items: dict[str, list[str]] = {"train": [], "test": []}
    for n, shot in enumerate(shots):
        name = f"{shot.pid:04d}_c{shot.cam:03d}_{n * 40 + 100000:08d}_{n % 2}.jpg"
        shot.path = f"{folders[shot.split]}/{name}"
        names[shot.split].append(name)
        if shot.split != "query":
            group = "train" if shot.split == "train" else "test"
            items[group].append(f'<Item imageName="{name}" vehicleID="{shot.pid:04d}" '
                                f'cameraID="c{shot.cam:03d}" colorID="1" typeID="1" />')
    gallery = [s for s in shots if s.split == "gallery"]
    gt = [" ".join(Path(g.path).name for g in gallery if g.pid == q.pid and g.cam != q.cam)
          for q in shots if q.split == "query"]
    junk = [" ".join(Path(g.path).name for g in gallery if g.pid == q.pid and g.cam == q.cam)
            for q in shots if q.split == "query"]

    def xml(tag: str, rows: list[str]) -> bytes:
        body = "\n".join(rows)
        return (f'<?xml version="1.0" encoding="gb2312"?>\n<{tag}>\n<Items number="{len(rows)}">\n'
                f"{body}\n</Items>\n</{tag}>\n").encode()

    cams = sorted({s.cam for s in shots})
    return {
        "name_train.txt": ("\n".join(names["train"]) + "\n").encode(),
        "name_query.txt": ("\n".join(names["query"]) + "\n").encode(),
        "name_test.txt": ("\n".join(names["gallery"]) + "\n").encode(),
        "train_label.xml": xml("TrainingImages", items["train"]),
        "test_label.xml": xml("TestImages", items["test"]),
        "gt_image.txt": ("\n".join(gt) + "\n").encode(),
        "jk_image.txt": ("\n".join(junk) + "\n").encode(),
        "camera_ID.txt": ("\n".join(f"c{c:03d}" for c in cams) + "\n").encode(),
    }


def _p_duke(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    for frame, shot in enumerate(shots):
        body = "occluded_body_images" if shot.look == "occluded" else "whole_body_images"
        part = "train" if shot.split == "train" else "test"
        shot.path = f"{part}/{body}/{shot.pid:04d}/{shot.pid:04d}_c{shot.cam}_f{frame * 120:07d}.jpg"
    return {}


def _partial_reid(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    counter: dict[tuple[str, int], int] = {}
    for shot in shots:
        folder = "partial_body_images" if shot.split == "query" else "whole_body_images"
        n = counter[(folder, shot.pid)] = counter.get((folder, shot.pid), 0) + 1
        shot.path = f"{folder}/{shot.pid:03d}_{n:02d}.jpg"
    return {}


def _partial_ilids(shots: list[Shot], rng: np.random.Generator) -> dict[str, bytes]:
    for shot in shots:
        shot.path = f"{'query' if shot.split == 'query' else 'gallery'}/{shot.pid:03d}.jpg"
    return {}


def _looks(shots: list[Shot], rng: np.random.Generator, query: str, other_rate: float) -> None:
    for shot in shots:
        if shot.split == "query":
            shot.look = query
        elif shot.pid > 0 and rng.random() < other_rate:
            shot.look = "occluded"


def _plan(spec: DatasetSpec, ids: int, per_id: int, rng: np.random.Generator) -> list[Shot]:
    """The shots of a miniature, from the dataset's ``SyntheticPlan`` (registry)."""
    plan = spec.synthetic
    if plan is None:
        raise ReidbenchError(f"{spec.name}: no synthetic plan")
    if plan.paired_partial:
        count = plan.pairs_per_id or max(1, per_id // 2)
        shots = []
        for pid in range(1, ids + 1):
            shots += [Shot("query", pid, 1, "partial") for _ in range(count)]
            shots += [Shot("gallery", pid, 2) for _ in range(count)]
        return shots
    cams = spec.synthetic_cameras
    shots = plan_reid(ids, per_id, cams, rng, queries_per_id=plan.queries_per_id,
                      distractors=max(2, ids // 4) if plan.distractors else 0,
                      gallery_only_ids=max(1, ids // 6) if plan.gallery_only_ids else 0, first_pid=plan.first_pid)
    shots += [Shot("gallery", -1, int(rng.integers(1, cams + 1)), "partial") for _ in range(plan.junk)]
    if plan.occluded_rate is not None:
        _looks(shots, rng, plan.query_look, plan.occluded_rate)
    if plan.train_occluded_rate:
        for shot in shots:  # training holds both whole and occluded images of each person
            if shot.split == "train" and rng.random() < plan.train_occluded_rate:
                shot.look = "occluded"
    return shots


#: file-layout writers by the name a SyntheticPlan gives in its ``writer`` field
WRITERS: dict[str, Callable[[list[Shot], np.random.Generator], dict[str, bytes]]] = {
    "market": _market,
    "duke": _duke,
    "msmt17": _msmt17,
    "veri": _veri,
    "p_duke": _p_duke,
    "partial_reid": _partial_reid,
    "partial_ilids": _partial_ilids,
}


def _encode(image: np.ndarray, path: str) -> bytes:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    encoded = encode_png(tensor) if path.endswith(".png") else encode_jpeg(tensor, quality=90)
    return encoded.numpy().tobytes()


def _plan_cuhk03(ids: int, per_id: int) -> list[Shot]:
    """Each person alternates between the pair's two cameras; a test person's first view is the
    query, the rest (always including the other camera) the gallery."""
    num_train = (ids + 1) // 2
    shots = []
    for pid in range(1, ids + 1):
        for k in range(per_id):
            split = "train" if pid <= num_train else ("query" if k == 0 else "gallery")
            shots.append(Shot(split, pid, 1 + k % 2))
    return shots


class _Writer:
    """Writes files on background threads: on slow file systems opening a file costs as much as
    rendering the image, and file I/O and hashing release the GIL, so the two overlap."""

    def __init__(self, top: Path, files: dict[str, str], workers: int = 2) -> None:
        self.top = top
        self.files = files
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth-write")
        self._pending: deque[Future[None]] = deque()

    def _store(self, rel: str, content: bytes) -> None:
        target = self.top / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.files[rel] = hashlib.sha256(content).hexdigest()

    def write(self, rel: str, content: bytes) -> None:
        self._pending.append(self._pool.submit(self._store, rel, content))
        if len(self._pending) > 256:  # bound the bytes held in memory
            self._drain(128)

    def _drain(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self._pending.popleft().result()  # re-raises a failed write here

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _cuhk03_files(world: _World, shots: list[Shot], release: bool, top: Path, writer: _Writer) -> int:
    """CUHK03: two variants (detected crops are misaligned); NP layout or raw release + configs."""
    written = 0
    for v, variant in enumerate(("detected", "labeled")):
        rows = []
        seen: dict[int, int] = {}
        for n, shot in enumerate(shots):
            cam = shot.cam
            count = seen[shot.pid] = seen.get(shot.pid, 0) + 1
            image = world.render(shot, n * 2 + v)
            if variant == "detected":  # detector boxes: shifted and rescaled crops
                rng = world.rng(_IMAGE, 10_000_000 + n)
                dy, dx = int(rng.integers(-10, 11)), int(rng.integers(-5, 6))
                image = np.roll(image, (dy, dx), axis=(0, 1))
            if release:
                # cells 1-5 hold the first camera's views, 6-10 the second's
                index = (count + 1) // 2 + (0 if cam == 1 else 5)
                name = f"1_{shot.pid:03d}_{cam}_{index:02d}.png"
                rel = f"images_{variant}/{name}"
                rows.append((name, shot.pid, cam, shot.split))
            else:
                folder = {"train": "bounding_box_train", "query": "query",
                          "gallery": "bounding_box_test"}[shot.split]
                rel = f"{variant}/{folder}/{shot.pid:04d}_c{cam}_{n}.png"
            writer.write(rel, _encode(image, rel))
            written += 1
        if release:
            import scipy.io

            names = np.empty((len(rows), 1), dtype=object)
            for i, row in enumerate(rows):
                names[i, 0] = row[0]
            idx = {s: np.array([[i + 1] for i, r in enumerate(rows) if r[3] == s], np.uint16)
                   for s in ("train", "query", "gallery")}
            config = f"cuhk03_new_protocol_config_{variant}.mat"
            scipy.io.savemat(top / config, {
                "filelist": names, "labels": np.array([[r[1]] for r in rows], np.uint16),
                "camId": np.array([[r[2]] for r in rows], np.uint8),
                "train_idx": idx["train"], "query_idx": idx["query"], "gallery_idx": idx["gallery"],
            })
            writer.files[config] = file_digest(top / config)
    return written


def check_size(name: str, ids: int, per_id: int, keys: tuple[str, str] = ("--ids", "--images-per-id"),
               cuhk03_layout: str = "np") -> None:
    """Refuse a miniature too small to have train, query and gallery images (or too large for CUHK03's
    release format); the error names the setting as the user wrote it (``keys``: the options of
    `data synth`, or the recipe keys ``data.synthetic_ids`` / ``data.synthetic_images_per_id``)."""
    spec = get_dataset(name)
    min_per_id = 3 if spec.name == "cuhk03" else 2  # CUHK03: a query view and gallery views of the other camera
    if ids < 2:
        raise ReidbenchError(f"{keys[0]}: expected at least 2 identities (half train, half test), got {ids}")
    if per_id < min_per_id:
        raise ReidbenchError(f"{keys[1]}: expected at least {min_per_id} images per identity for "
                             f"{spec.name}, got {per_id}")
    if spec.name == "cuhk03" and cuhk03_layout == "release" and per_id > 10:
        raise ReidbenchError(f"{keys[1]}: the CUHK03 release holds at most 10 images per person, got {per_id}")


def synthesize(name: str, out: Path, ids: int = DEFAULT_IDS, images_per_id: int = DEFAULT_IMAGES_PER_ID,
               seed: int = 0, cuhk03_layout: str = "np") -> SynthResult:
    """Write a miniature of dataset ``name`` under the data root ``out``."""
    spec = get_dataset(name)
    if cuhk03_layout not in ("np", "release"):
        raise ReidbenchError(f"--cuhk03-layout: expected np or release, got {cuhk03_layout!r}")
    check_size(spec.name, ids, images_per_id, cuhk03_layout=cuhk03_layout)
    start = time.perf_counter()
    world = _World(seed, vehicles=spec.kind == "vehicle")
    rng = world.rng(_PLAN)
    files: dict[str, str] = {}  # relative path -> sha256, hashed from the bytes as written
    if spec.name == "cuhk03":
        top_name = "cuhk03-np" if cuhk03_layout == "np" else "cuhk03_release"
        top = _fresh(out, top_name)
        shots = _plan_cuhk03(ids, images_per_id)
        with _Writer(top, files) as writer:
            images = _cuhk03_files(world, shots, cuhk03_layout == "release", top, writer)
        variants = ["detected", "labeled"]
    else:
        if spec.synthetic is None:
            raise ReidbenchError(f"{spec.name}: no synthetic miniature")
        layout = WRITERS[spec.synthetic.writer]
        top = _fresh(out, spec.top_folders[0])
        shots = _plan(spec, ids, images_per_id, rng)
        extras = layout(shots, rng)
        with _Writer(top, files) as writer:
            for index, shot in enumerate(shots):
                writer.write(shot.path, _encode(world.render(shot, index), shot.path))
            for rel, content in extras.items():
                writer.write(rel, content)
        images = len(shots)
        variants = ["default"]
    files = dict(sorted(files.items()))
    splits = {}
    for variant in variants:
        split = parse_dataset(spec.name, top, None if variant == "default" else variant)
        splits[variant] = {k: (list(v.as_tuple()) if (k != "train" or split.train) else None)
                           for k, v in split.stats().items()}
    manifest = {"synthetic": True, "dataset": spec.name, "generator": f"reidbench {__version__}",
                "seed": seed, "ids": ids, "images_per_id": images_per_id, "splits": splits,
                "files": files}
    (top / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return SynthResult(spec.name, top, images, time.perf_counter() - start, splits)


def _fresh(out: Path, top_name: str) -> Path:
    top = Path(out) / top_name
    if top.exists():
        manifest = top / MANIFEST
        if not manifest.is_file():
            raise ReidbenchError(f"{top}: exists and is not a synthetic miniature; refusing to "
                                 "overwrite it (choose another --out)")
        import shutil

        shutil.rmtree(top)
    top.mkdir(parents=True)
    return top


def ensure_synthetic(name: str, root: Path, **kwargs: Any) -> Path:
    """The miniature of ``name`` under ``root``, generated once (used by smoke runs and tests)."""
    spec = get_dataset(name)
    from reidbench.data.parsers import locate, read_manifest

    folder = locate(spec, root)
    if folder is not None and (read_manifest(folder) or {}).get("synthetic"):
        return folder
    return synthesize(name, root, **kwargs).folder
