"""Pretrained weights: torchvision ResNets, ResNet50-IBN-a, MSINet and OSNet, in torch hub's cache.

torchvision's files carry the first 8 hex digits of their sha256 in the name; torch.hub checks
that prefix, and so does `reidbench weights verify`. Weights without a published hash are
checked for being a loadable checkpoint only (and the report says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidbench import paths
from reidbench.data.checksums import file_digest
from reidbench.data.download import DownloadError, check_archive, check_url, gdrive_download, http_download
from reidbench.errors import ReidbenchError, UnknownNameError


@dataclass(frozen=True)
class WeightsSpec:
    name: str
    filename: str
    source_kind: str  # torchvision | url | gdrive
    source: str  # torchvision enum path, URL or Drive id
    sha256_prefix: str | None
    description: str


WEIGHTS: dict[str, WeightsSpec] = {
    w.name: w
    for w in (
        WeightsSpec("resnet18", "resnet18-f37072fd.pth", "torchvision", "ResNet18_Weights.IMAGENET1K_V1",
                    "f37072fd", "torchvision ResNet-18, ImageNet"),
        WeightsSpec("resnet34", "resnet34-b627a593.pth", "torchvision", "ResNet34_Weights.IMAGENET1K_V1",
                    "b627a593", "torchvision ResNet-34, ImageNet"),
        WeightsSpec("resnet50", "resnet50-0676ba61.pth", "torchvision", "ResNet50_Weights.IMAGENET1K_V1",
                    "0676ba61", "torchvision ResNet-50, ImageNet (V1, used by BoT)"),
        WeightsSpec("resnet50_v2", "resnet50-11ad3fa6.pth", "torchvision",
                    "ResNet50_Weights.IMAGENET1K_V2", "11ad3fa6", "torchvision ResNet-50, ImageNet V2"),
        WeightsSpec("resnet101", "resnet101-63fe2227.pth", "torchvision",
                    "ResNet101_Weights.IMAGENET1K_V1", "63fe2227", "torchvision ResNet-101, ImageNet"),
        WeightsSpec("resnet50_ibn_a", "resnet50_ibn_a-d9d0bb7b.pth", "url",
                    "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/"
                    "resnet50_ibn_a-d9d0bb7b.pth", "d9d0bb7b", "ResNet50-IBN-a, ImageNet (IBN-Net)"),
        WeightsSpec("msinet_msmt", "msinet_msmt.pth.tar", "gdrive", "1ZNLDbtpsraiF149htbyhbh3UjCwREi9p",
                    None, "MSINet pretrained (official; state_dict inside a tar)"),
        WeightsSpec("osnet_x1_0_imagenet", "osnet_x1_0_imagenet.pth", "gdrive",
                    "1LaG1EJpHrxdAxKnSCJ_i0u-nbxSAeiFY", None, "OSNet x1_0, ImageNet (torchreid)"),
    )
}


def get_weights(name: str) -> WeightsSpec:
    if name not in WEIGHTS:
        raise UnknownNameError("weights", name, list(WEIGHTS))
    return WEIGHTS[name]


def weights_path(name: str) -> Path:
    return paths.weights_dir() / get_weights(name).filename


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
    from reidbench.serialization import read_torch_file

    try:
        read_torch_file(path, "weights file")  # weights_only=True: a crafted file cannot run code
    except ReidbenchError as error:
        report["status"] = f"not a loadable checkpoint ({error.message.removeprefix(f'{path}: ')[:160]})"
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
