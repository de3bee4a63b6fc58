"""Fetch archives (HTTP with resume, Google Drive through gdown), check them, extract them safely
and install them atomically.

Nothing is ever extracted in place: an archive is unpacked into a temporary folder inside the data
root and the dataset's top folder is renamed into place only once it is complete, so an interrupted
run leaves no folder that `verify` or training would accept.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from reidbench.data.checksums import file_digest
from reidbench.errors import ReidbenchError

CHUNK = 1 << 16
TMP_PREFIX = ".reidbench-tmp-"


class DownloadError(ReidbenchError):
    """A download, checksum or extraction failure (the message names the file or URL)."""


def looks_like_html(path: Path) -> bool:
    """True for an HTML page saved under an archive's name (Drive quota or permission pages)."""
    with open(path, "rb") as handle:
        head = handle.read(1024).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]


def _progress(total: int | None, description: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
    return progress, progress.add_task(description, total=total)


def check_url(url: str, option: str = "--url") -> str:
    """An http(s) URL with a host, or a user error naming the option (before anything is created)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as error:
        raise DownloadError(f"{option} {url!r}: not a valid URL ({error})") from error
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(f"{option} {url!r}: expected an http:// or https:// URL with a host")
    return url


def http_download(url: str, dest: Path, retries: int = 5, timeout: float = 60.0,
                  show_progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest.part`` with HTTP Range requests.

    A dropped connection is retried from where it stopped; a server that ignores Range restarts
    the file. The final rename happens only when the advertised length has been received.
    """
    check_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for _attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "reidbench"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:
                    offset = 0  # Range ignored: start over
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                mode = "ab" if offset else "wb"
                progress, task = _progress(total, dest.name)
                with open(part, mode) as handle, progress if show_progress else nullcontext():
                    progress.update(task, completed=offset)
                    while block := response.read(CHUNK):
                        handle.write(block)
                        progress.advance(task, len(block))
            if total is not None and part.stat().st_size != total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:  # nothing left to fetch: the part file is complete
                os.replace(part, dest)
                return dest
            if error.code in (401, 403, 404, 410):
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
            last_error = error
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError,
                OSError) as error:
            last_error = error
    size = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"{url}: download failed after {retries + 1} attempts with {size} bytes received "
        f"({last_error})", hint="run the same command again to resume",
    )


def gdrive_download(file_id: str, dest: Path) -> Path:
    import gdown

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        result = gdown.download(id=file_id, output=str(part), quiet=False, resume=True)
    except Exception as error:  # noqa: BLE001 - gdown raises many types
        raise DownloadError(f"Google Drive file {file_id}: {str(error).splitlines()[0]}") from error
    if result is None or not part.exists():
        raise DownloadError(f"Google Drive file {file_id}: download failed (quota or permission?)")
    os.replace(part, dest)
    return dest


def check_archive(path: Path, md5: str | None = None, sha256: str | None = None,
                  size: int | None = None, remove_rejected: bool = True) -> None:
    """Reject HTML pages, wrong sizes and wrong checksums. A rejected download is removed; a
    user's own file (``remove_rejected=False``) is left where it is."""
    problem = None
    if looks_like_html(path):
        problem = (f"{path.name} is an HTML page, not an archive (Google Drive quota exceeded or "
                   "no permission?)")
    elif size is not None and path.stat().st_size != size:
        problem = f"{path.name}: expected {size} bytes, got {path.stat().st_size}"
    else:
        for algorithm, expected in (("sha256", sha256), ("md5", md5)):
            if expected:
                found = file_digest(path, algorithm)
                if found != expected:
                    problem = f"{path.name}: {algorithm} mismatch, expected {expected}, got {found}"
                break
    if problem:
        if remove_rejected:
            path.unlink(missing_ok=True)
            raise DownloadError(problem, hint="the file was removed; download it again or fetch it by hand")
        raise DownloadError(f"{path}: {problem}", hint="the archive is not the official one or is damaged")


def _inside(base: Path, target: Path) -> bool:
    try:
        target.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


def _member_path(base: Path, name: str, archive: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"{archive.name}: member {name!r} has an absolute path; refusing to extract")
    if ".." in pure.parts:
        raise DownloadError(f"{archive.name}: member {name!r} escapes the target with '..'; "
                            "refusing to extract")
    return base.joinpath(*pure.parts)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive, refusing absolute paths, '..' and links that leave ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    path = _member_path(target, info.filename, archive)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink member
                        link = zf.read(info).decode()
                        if not _inside(target, path.parent / link):
                            raise DownloadError(f"{archive.name}: link {info.filename!r} -> {link!r} "
                                                "points outside the target; refusing to extract")
                bad = zf.testzip()
                if bad is not None:
                    raise DownloadError(f"{archive.name}: member {bad!r} is corrupt (CRC mismatch)")
                zf.extractall(target)
            return
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for member in members:
                    path = _member_path(target, member.name, archive)
                    if member.issym() or member.islnk():
                        base = target if member.islnk() else path.parent
                        if not _inside(target, base / member.linkname):
                            raise DownloadError(f"{archive.name}: link {member.name!r} -> "
                                                f"{member.linkname!r} points outside the target; "
                                                "refusing to extract")
                    elif not (member.isfile() or member.isdir()):
                        raise DownloadError(f"{archive.name}: member {member.name!r} is a device or "
                                            "fifo; refusing to extract")
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(target, members=members, **kwargs)
            return
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, DownloadError):
            raise
        raise DownloadError(f"{archive.name}: truncated or corrupt archive ({error})") from error
    raise DownloadError(f"{archive.name}: not a zip or tar archive (or truncated); RAR archives "
                        "must be extracted by hand, then use `reidbench data prepare --from FOLDER`")


def declared_size(archive: Path) -> int | None:
    """The uncompressed size the archive's members declare (zip and tar bound what extraction writes to
    it: zipfile stops each member at its declared size), or None for a file that is neither."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return sum(info.file_size for info in zf.infolist())
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                return sum(member.size for member in tf.getmembers())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DownloadError(f"{archive.name}: truncated or corrupt archive ({error})") from error
    return None


def check_extraction(archive: Path, target: Path, max_bytes: int | None, what: str) -> None:
    """Before extracting: refuse an archive declaring more than ``max_bytes`` (a zip bomb, or not ``what``),
    and one that would not fit in the free space of ``target``'s file system."""
    size = declared_size(archive)
    if size is None:
        return  # not an archive: safe_extract says so
    mib = 1024**2
    if max_bytes is not None and size > max_bytes:
        raise DownloadError(f"{archive}: its members declare {size / mib:,.0f} MB uncompressed, more than the "
                            f"{max_bytes / mib:,.0f} MB {what} can take; refusing to extract",
                            hint="a zip bomb or another archive; if it is the dataset, extract it yourself and "
                                 "run `reidbench data prepare` on the folder")
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if size > free:
        raise DownloadError(f"{archive}: needs {size / mib:,.0f} MB to extract, {probe} has {free / mib:,.0f} MB free",
                            hint="free some space or choose another --root")


def install_tree(root: Path, build: Callable[[Path], Path], force: bool = False) -> Path:
    """Build a dataset folder inside a temporary folder of ``root``, then rename it into place.

    ``build(tmp)`` returns the finished top folder inside ``tmp``; its name is kept.
    """
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    try:
        top = build(tmp)
        destination = root / top.name
        if destination.exists():
            if not force:
                raise ReidbenchError(f"{destination}: already exists",
                                     hint="remove it first or pass --force to replace it")
            shutil.rmtree(destination)
        os.rename(top, destination)
        return destination
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
