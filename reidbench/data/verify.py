"""`reidbench data verify`: is a dataset folder exactly what the registry (or its manifest) says?"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reidbench import __version__
from reidbench.data.checksums import file_digest
from reidbench.data.parsers import locate, parse_dataset, read_manifest
from reidbench.data.records import stats_of
from reidbench.data.registry import DatasetSpec, Stats, get_dataset
from reidbench.errors import ReidbenchError

VERIFIED_MARKER = ".reidbench_verified.json"
SHOWN = 5  # how many missing/unexpected/undecodable files a report names


@dataclass
class Check:
    name: str
    ok: bool
    expected: Any = None
    found: Any = None
    detail: str = ""
    files: list[str] = field(default_factory=list)  # every damaged file, full path and why (printed whole)


@dataclass
class VerifyReport:
    dataset: str
    variant: str | None
    folder: str | None
    synthetic: bool = False
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, *args: Any, **kwargs: Any) -> Check:
        check = Check(*args, **kwargs)
        self.checks.append(check)
        return check

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "variant": self.variant, "folder": self.folder,
                "synthetic": self.synthetic, "ok": self.ok,
                "checks": [asdict(c) for c in self.checks]}


def _expected_stats(spec: DatasetSpec, variant: str | None, manifest: dict | None) -> dict:
    if manifest:
        entry = manifest["splits"][variant or "default"]
        return {k: (Stats(*v) if v else None) for k, v in entry.items()}
    chosen = spec.variant(variant)
    return {"train": chosen.train, "query": chosen.query, "gallery": chosen.gallery}


def _decode_failure(path: Path) -> str | None:
    from torchvision.io import decode_image, read_file

    try:
        image = decode_image(read_file(str(path)))
    except Exception as error:  # noqa: BLE001 - report, do not stop
        return f"{path}: {str(error).splitlines()[0][:120]}"
    if image.ndim != 3 or min(image.shape[1:]) < 1:
        return f"{path}: decoded to shape {tuple(image.shape)}"
    return None


def _decode_sample(paths: list[Path], count: int) -> list[str]:
    if not paths:
        return []
    step = max(1, len(paths) // max(1, count))
    return [f for f in map(_decode_failure, paths[::step][:count]) if f]


def _decode_all(paths: list[Path], progress: bool) -> list[str]:
    """--deep: decode every image (minutes on a real dataset, hence the progress bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    failures = []
    bar = Progress("decoding", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                   disable=not progress)
    with bar:
        for path in bar.track(paths):
            failure = _decode_failure(path)
            if failure:
                failures.append(failure)
    return failures


def damage(path: Path) -> str | None:
    """Why an image file is damaged, from its size and format markers only (no decoding), or None.

    JPEG: starts with the start-of-image marker FFD8 and has the end-of-image marker FFD9 in its last bytes
    (some writers pad after it); PNG: the signature and an IEND chunk at the end; BMP: the "BM" signature.
    """
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(max(0, size - 64))
        tail = handle.read()
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if head[:2] != b"\xff\xd8":
            return "not a JPEG (no start-of-image marker)"
        if b"\xff\xd9" not in tail:
            return "truncated JPEG (no end-of-image marker)"
    elif suffix == ".png":
        if head != b"\x89PNG\r\n\x1a\n":
            return "not a PNG (bad signature)"
        if b"IEND" not in tail:
            return "truncated PNG (no IEND chunk)"
    elif suffix == ".bmp" and head[:2] != b"BM":
        return "not a BMP (bad signature)"
    return None


def _damaged(paths: list[Path]) -> list[str]:
    return [f"{path}: {why}" for path in paths if (why := damage(path))]


def verify_archive(spec: DatasetSpec, archive: Path) -> Check:
    if not archive.is_file():
        return Check("archive", False, "an archive file", "missing", str(archive))
    known = next((a for a in spec.archives if a.name == archive.name), None)
    known = known or next((a for a in spec.archives if a.md5 or a.sha256), None)
    if known is None or not (known.md5 or known.sha256):
        return Check("archive checksum", True, None, file_digest(archive, "sha256"),
                     "no published checksum for this dataset; sha256 shown for your records")
    algorithm, expected = ("sha256", known.sha256) if known.sha256 else ("md5", known.md5)
    found = file_digest(archive, algorithm)
    return Check(f"archive {algorithm}", found == expected, expected, found, archive.name)


def verify_dataset(name: str, root: Path, variant: str | None = None, archive: Path | None = None,
                   decode: int = 16, mark: bool = True, deep: bool = False, progress: bool = False) -> VerifyReport:
    """Check a dataset folder: layout, per-split counts, every listed file present and undamaged (size and
    format markers), a decode sample (``deep``: every image decoded), a synthetic manifest's checksums."""
    spec = get_dataset(name)
    if spec.variants[0].name != "default":
        variant = spec.variant(variant).name
    else:
        variant = None
    folder = locate(spec, Path(root))
    report = VerifyReport(spec.name, variant, str(folder) if folder else None)
    if archive is not None:
        report.checks.append(verify_archive(spec, Path(archive)))
    if folder is None:
        report.add("location", False, " or ".join(spec.top_folders), "missing",
                   f"nothing under {root}")
        return report
    report.add("location", True, None, str(folder))
    manifest = read_manifest(folder)
    report.synthetic = bool(manifest and manifest.get("synthetic"))
    missing_layout = [part for part in spec.layout if not (folder / part).exists()]
    report.add("layout", not missing_layout, list(spec.layout),
               f"missing: {', '.join(missing_layout)}" if missing_layout else "complete")
    if spec.name == "msmt17":
        version = "V2" if (folder / "mask_train_v2").is_dir() else "V1"
        report.add("msmt17 version", True, None, version,
                   "V2 ships the same split under mask_train_v2/ and mask_test_v2/")
    try:
        split = parse_dataset(spec.name, folder, variant)
    except ReidbenchError as error:
        report.add("parse", False, "a parsable dataset", "error", error.message)
        return report
    expected = _expected_stats(spec, variant, manifest)
    all_paths: list[Path] = []
    for split_name in ("train", "query", "gallery"):
        records = getattr(split, split_name)
        want = expected.get(split_name)
        got = stats_of(records)
        if want is None:
            if records:
                report.add(f"{split_name} counts", False, "no such split", got.as_tuple())
            continue
        mismatches = [f"{k} expected {getattr(want, k)} found {getattr(got, k)}"
                      for k in ("images", "ids", "cams")
                      if getattr(want, k) is not None and getattr(want, k) != getattr(got, k)]
        report.add(f"{split_name} counts", not mismatches, (want.images, want.ids, want.cams),
                   got.as_tuple(), "; ".join(mismatches))
        missing = [str(r.path) for r in records if not r.path.is_file()]
        if missing:
            report.add(f"{split_name} files", False, "every listed image present",
                       f"{len(missing)} missing", "first missing: " + ", ".join(missing[:SHOWN]),
                       files=[f"{path}: missing" for path in missing])
        all_paths.extend(r.path for r in records if r.path.is_file())
    if manifest and manifest.get("files"):
        changed = [rel for rel, digest in manifest["files"].items()
                   if not (folder / rel).is_file() or file_digest(folder / rel) != digest]
        report.add("manifest checksums", not changed, f"{len(manifest['files'])} files as written",
                   f"{len(changed)} differ" if changed else "all match",
                   ("first differing: " + ", ".join(changed[:SHOWN])) if changed else "")
    damaged = _damaged(all_paths)
    report.add("image files", not damaged, f"{len(all_paths)} images: non-empty, format markers intact",
               f"{len(damaged)} damaged" if damaged else "ok",
               ("first damaged: " + damaged[0]) if damaged else "", files=damaged)
    if deep:
        failures = _decode_all(all_paths, progress)
        report.add("decode all", not failures, f"{len(all_paths)} images decode",
                   f"{len(failures)} failed" if failures else "ok",
                   ("first failed: " + failures[0]) if failures else "", files=failures)
    elif decode:
        failures = _decode_sample(all_paths, decode)
        report.add("decode sample", not failures, f"{min(decode, len(all_paths))} images decode",
                   f"{len(failures)} failed" if failures else "ok", "; ".join(failures[:SHOWN]), files=failures)
    if report.ok and mark:
        _write_marker(folder, report)
    return report


def _write_marker(folder: Path, report: VerifyReport) -> None:
    record = {"dataset": report.dataset, "variant": report.variant, "synthetic": report.synthetic,
              "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "reidbench": __version__}
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".verified-", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        os.replace(tmp, folder / VERIFIED_MARKER)
    except OSError:
        pass  # a read-only dataset folder is fine: `data list` then shows it as present


def dataset_status(name: str, root: Path) -> dict[str, Any]:
    """missing / present / verified, with the location and (cheap) counts when present."""
    spec = get_dataset(name)
    folder = locate(spec, Path(root))
    if folder is None:
        return {"dataset": spec.name, "status": "missing", "location": None}
    status = "verified" if (folder / VERIFIED_MARKER).is_file() else "present"
    info: dict[str, Any] = {"dataset": spec.name, "status": status, "location": str(folder)}
    manifest = read_manifest(folder)
    info["synthetic"] = bool(manifest and manifest.get("synthetic"))
    try:
        split = parse_dataset(spec.name, folder)
        info["counts"] = {k: v.as_tuple() for k, v in split.stats().items()}
    except ReidbenchError as error:
        info["status"] = "broken"
        info["error"] = error.message
    return info
