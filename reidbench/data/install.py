"""`reidbench data download` and `reidbench data prepare`: bring a dataset into a known-good state."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reidbench.data.download import (
    DownloadError,
    check_archive,
    check_extraction,
    check_url,
    gdrive_download,
    http_download,
    install_tree,
    safe_extract,
)
from reidbench.data.parsers import locate
from reidbench.data.registry import Archive, DatasetSpec, get_dataset
from reidbench.errors import ReidbenchError

DOWNLOADS = ".downloads"


@dataclass
class InstallResult:
    dataset: str
    folder: Path | None
    message: str
    installed: bool


def obtain_instructions(spec: DatasetSpec, root: Path) -> str:
    lines = [f"{spec.title} is not downloadable automatically ({spec.access})."]
    for archive in spec.archives:
        for source in archive.sources:
            if source.kind == "request":
                lines.append(f"- {archive.name}: {source.value}")
    lines.append(f"Then run: reidbench data prepare {spec.name} --from PATH/TO/ARCHIVE_OR_FOLDER "
                 f"--root {root}")
    return "\n".join(lines)


def install_command(name: str, root: Path | None = None) -> str:
    """The exact command that installs a dataset: download when a source is public, else prepare.
    Without ``root`` the command installs into the default data root (no ``--root``)."""
    spec = get_dataset(name)
    where = f" --root {root}" if root is not None else ""
    downloadable = any(s.kind in ("url", "gdrive") for a in spec.archives for s in a.sources)
    if downloadable and spec.name != "occluded_duke":
        return f"reidbench data download {spec.name}{where}"
    source = "DukeMTMC-reID.zip" if spec.name == "occluded_duke" else spec.archives[0].name
    return f"reidbench data prepare {spec.name} --from PATH/TO/{source}{where}"


def fetch_archive(archive: Archive, downloads: Path, url: str | None = None) -> Path:
    """Download one archive from ``url`` or its registry sources (in order) and check it."""
    dest = downloads / archive.name
    if dest.is_file():
        try:
            check_archive(dest, archive.md5, archive.sha256)
            return dest
        except DownloadError:
            pass  # a stale or broken earlier download: fetch again
    sources = [("url", url)] if url else [(s.kind, s.value) for s in archive.sources
                                          if s.kind in ("url", "gdrive")]
    if not sources:
        raise ReidbenchError(f"{archive.name}: no downloadable source")
    errors = []
    for kind, value in sources:
        try:
            path = http_download(value, dest) if kind == "url" else gdrive_download(value, dest)
            check_archive(path, archive.md5, archive.sha256)
            return path
        except DownloadError as error:
            errors.append(error.message)
    raise DownloadError(f"{archive.name}: every source failed: " + " | ".join(errors),
                        hint="fetch it by hand, then `reidbench data prepare --from FILE`")


def download_dataset(name: str, root: Path, url: str | None = None,
                     force: bool = False) -> InstallResult:
    spec = get_dataset(name)
    if url is not None:
        check_url(url)
    existing = locate(spec, root)
    if existing is not None and not force:
        return InstallResult(spec.name, existing, f"{spec.name} is already at {existing}", False)
    main = next((a for a in spec.archives if any(s.kind != "request" for s in a.sources)), None)
    if spec.name == "occluded_duke" or (main is None and url is None):
        return InstallResult(spec.name, None, obtain_instructions(spec, root), False)
    main = main or spec.archives[0]
    archive = fetch_archive(main, root / DOWNLOADS, url)
    extras = []
    if spec.name == "cuhk03":  # the split configs are separate files
        extras = [fetch_archive(a, root / DOWNLOADS) for a in spec.archives[1:]]
    folder = prepare_dataset(spec.name, archive, root, force=force, extra_files=extras)
    return InstallResult(spec.name, folder, f"installed {spec.name} at {folder}", True)


def _unpack_source(spec: DatasetSpec, source: Path, tmp: Path) -> Path:
    """An archive is extracted into tmp/src (after the size checks); a folder is used in place (copied later)."""
    if source.is_dir():
        return source
    if not source.is_file():
        raise ReidbenchError(f"{source}: not found (expected an archive or a folder)")
    unpacked = tmp / "src"
    check_extraction(source, tmp, spec.max_extracted_bytes(source.name), spec.title)
    safe_extract(source, unpacked)
    return unpacked


def _find(spec_name: str, base: Path, names: tuple[str, ...]) -> Path | None:
    spec = get_dataset(spec_name)
    found = locate(spec, base)
    if found is not None:
        return found
    for path in sorted(base.rglob("*")):
        if path.is_dir() and path.name in names:
            return path
    return None


def _checked_source(spec: DatasetSpec, source: Path) -> None:
    """A user's archive with a registry name must match its published checksum (and is kept)."""
    if source.is_file():
        known = next((a for a in spec.archives if a.name == source.name), None)
        if known is not None:
            check_archive(source, known.md5, known.sha256, remove_rejected=False)


def prepare_dataset(name: str, source: Path, root: Path, force: bool = False,
                    extra_files: list[Path] | None = None) -> Path:
    """Install a dataset from an archive or folder obtained by hand, atomically."""
    spec = get_dataset(name)
    source = Path(source)
    _checked_source(spec, source)

    def build(tmp: Path) -> Path:
        return _verified(spec, source, _assemble(spec, source, tmp, extra_files))

    return install_tree(Path(root), build, force=force)


def _assemble(spec: DatasetSpec, source: Path, tmp: Path, extra_files: list[Path] | None) -> Path:
    base = _unpack_source(spec, source, tmp)
    if spec.name == "occluded_duke":
        return _build_occluded_duke(base, tmp)
    if spec.name == "cuhk03":
        return _build_cuhk03(base, tmp, list(extra_files or []) + [source.parent])
    found = _find(spec.name, base, spec.top_folders)
    if found is None:
        raise ReidbenchError(f"{source}: does not contain {spec.title} (expected a folder "
                             f"named {' or '.join(spec.top_folders)})")
    out = tmp / "out" / found.name
    out.parent.mkdir(parents=True)
    if base is source:  # a user's folder: copy, never move their files
        shutil.copytree(found, out)
    else:
        found.rename(out)
    return out


def _verified(spec: DatasetSpec, source: Path, folder: Path) -> Path:
    """`verify` the assembled folder before it is renamed into place: a failure installs nothing and says why."""
    from reidbench.data.verify import verify_dataset

    report = verify_dataset(spec.name, folder)
    failed = [c for c in report.checks if not c.ok]
    if failed:
        first = failed[0]
        why = "; ".join(filter(None, [str(first.found) if first.found is not None else "", first.detail]))
        raise ReidbenchError(f"{source}: nothing installed, {spec.title} from it fails verify: {first.name}: {why}"
                             + (f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""),
                             hint=f"check the folder with `reidbench data verify {spec.name} --root FOLDER`")
    return folder


def _build_occluded_duke(base: Path, tmp: Path) -> Path:
    duke = _find("dukemtmcreid", base, ("DukeMTMC-reID",))
    if duke is None:
        raise ReidbenchError(f"{base}: DukeMTMC-reID not found (Occluded-Duke is built from "
                             "DukeMTMC-reID.zip or its extracted folder)")
    index = {}
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        for path in (duke / folder).glob("*.jpg"):
            index[path.name] = path
    out = tmp / "out" / "Occluded_Duke"
    lists = resources.files("reidbench.data") / "lists" / "occluded_duke"
    for list_name, folder in (("train.list", "bounding_box_train"), ("query.list", "query"),
                              ("gallery.list", "bounding_box_test")):
        names = [n.strip() for n in (lists / list_name).read_text().splitlines() if n.strip()]
        missing = [n for n in names if n not in index]
        if missing:
            raise ReidbenchError(f"{duke}: {len(missing)} images of Occluded-Duke's {list_name} are "
                                 f"missing, first: {', '.join(missing[:5])}",
                                 hint="the official converter needs the original DukeMTMC-reID.zip")
        target = out / folder
        target.mkdir(parents=True)
        for name in names:
            shutil.copy2(index[name], target / name)
    return out


def _build_cuhk03(base: Path, tmp: Path, config_dirs: list[Path]) -> Path:
    np_layout = next((p for p in [base, *sorted(base.rglob("*"))]
                      if p.is_dir() and (p / "detected" / "bounding_box_train").is_dir()), None)
    if np_layout is not None:  # pre-extracted CUHK03-NP
        out = tmp / "out" / "cuhk03-np"
        out.parent.mkdir(parents=True)
        if tmp in np_layout.parents:
            np_layout.rename(out)  # extracted by us: move
        else:
            shutil.copytree(np_layout, out)  # the user's folder: copy
        return out
    mat = next(iter(sorted(base.rglob("cuhk-03.mat"))), None)
    if mat is None:
        raise ReidbenchError(f"{base}: neither cuhk-03.mat (raw release) nor a CUHK03-NP layout "
                             "(detected/bounding_box_train) found")
    out = tmp / "out" / "cuhk03_release"
    out.mkdir(parents=True)
    extract_cuhk03_images(mat, out)
    for variant in ("detected", "labeled"):
        name = f"cuhk03_new_protocol_config_{variant}.mat"
        candidates = [mat.parent / name, *[Path(d) / name if Path(d).is_dir() else Path(d)
                                           for d in config_dirs]]
        config = next((c for c in candidates if c.is_file() and c.name == name), None)
        if config is None:
            raise ReidbenchError(f"{name}: split config not found beside cuhk-03.mat",
                                 hint="download it from the person-re-ranking repository "
                                      "(evaluation/data/CUHK03/) and put it beside the archive")
        shutil.copy2(config, out / name)
    return out


def extract_cuhk03_images(mat_path: Path, out: Path) -> dict[str, int]:
    """Write the images stored in cuhk-03.mat (HDF5) as PNGs named like the split configs:
    ``{camera pair}_{pid:03d}_{view}_{index:02d}.png`` under images_detected/ and images_labeled/."""
    import h5py
    import numpy as np
    import torch
    from torchvision.io import write_png

    counts = {}
    with h5py.File(mat_path, "r") as mat:
        for kind in ("detected", "labeled"):
            folder = out / f"images_{kind}"
            folder.mkdir(parents=True, exist_ok=True)
            written = 0
            for pair, pair_ref in enumerate(mat[kind][0]):
                cells = mat[pair_ref][:].T  # [pids, 10] references
                for pid in range(cells.shape[0]):
                    for index, ref in enumerate(cells[pid]):
                        image = mat[ref][:].T  # [H, W, 3]
                        if image.size == 0 or image.ndim < 3:
                            continue  # empty cell: fewer than 10 images for this person
                        view = 1 if index < 5 else 2
                        name = f"{pair + 1}_{pid + 1:03d}_{view}_{index + 1:02d}.png"
                        tensor = torch.from_numpy(np.ascontiguousarray(image.astype(np.uint8)))
                        write_png(tensor.permute(2, 0, 1).contiguous(), str(folder / name))
                        written += 1
            counts[kind] = written
    return counts
