"""Pretrained weights (registered in ``models/pretrained.py``) in torch hub's cache: list, download, verify.

torchvision's files carry the first 8 hex digits of their sha256 in the name; torch.hub checks
that prefix, and so does `reidbench weights verify`. Weights without a published hash are
checked for being a loadable checkpoint only (and the report says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reidbench.data.checksums import file_digest
from reidbench.data.download import DownloadError, check_archive, check_url, gdrive_download, http_download
from reidbench.errors import ReidbenchError
from reidbench.models.pretrained import WEIGHTS, get_weights, read_state_dict


def weights_path(name: str) -> Path:
    return get_weights(name).path()


def verify_weights(name: str) -> dict[str, Any]:
    spec = get_weights(name)
    path = weights_path(name)
    report: dict[str, Any] = {"name": name, "path": str(path), "ok": False}
    if not path.is_file():
        report["status"] = "missing"
        return report
    if spec.sha256_prefix:
        digest = file_digest(path, "sha256")
        report["sha256"] = digest
        if not digest.startswith(spec.sha256_prefix):
            report["status"] = f"sha256 prefix mismatch: expected {spec.sha256_prefix}, got {digest[:8]}"
            return report
    try:
        read_state_dict(path)  # tensors only: a file that would run code is refused
    except ReidbenchError as error:
        report["status"] = f"not a loadable checkpoint ({error.message.removeprefix(f'{path}: ')[:120]})"
        return report
    report["ok"] = True
    report["status"] = "verified" if spec.sha256_prefix else "loadable (no published hash)"
    return report


def list_weights() -> list[dict[str, Any]]:
    rows = []
    for name, spec in WEIGHTS.items():
        path = weights_path(name)
        rows.append({"name": name, "description": spec.description, "file": spec.filename,
                     "source": f"{spec.source_kind}: {spec.source}",
                     "status": "present" if path.is_file() else "missing"})
    return rows


def download_weights(name: str, url: str | None = None) -> Path:
    spec = get_weights(name)
    if url is not None:
        check_url(url)
    dest = weights_path(name)
    if dest.is_file() and verify_weights(name)["ok"]:
        return dest
    if spec.source_kind == "torchvision" and url is None:
        import torchvision.models as models

        enum_name, member = spec.source.split(".")
        weights = getattr(getattr(models, enum_name), member)
        try:
            weights.get_state_dict(progress=True, check_hash=True)
        except Exception as error:  # noqa: BLE001 - network and hash errors alike
            raise DownloadError(f"{name}: torchvision download failed ({error})") from error
        return dest
    if url is not None or spec.source_kind == "url":
        http_download(url or spec.source, dest)
    else:
        gdrive_download(spec.source, dest)
    check_archive(dest)  # an HTML page saved instead of weights
    report = verify_weights(name)
    if not report["ok"]:
        dest.unlink(missing_ok=True)
        raise ReidbenchError(f"{dest.name}: {report['status']}; the file was removed")
    return dest
