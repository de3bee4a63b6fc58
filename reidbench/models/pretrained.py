"""Published weights as data, and the one path that loads them into a model.

A :class:`PretrainedCfg` names a file in the weights registry (``reidbench weights list``), where it
comes from and its hash, the input normalisation it was trained with, and how its keys map onto the
model (the submodule it loads into, prefix renames, keys never loaded). :func:`load_pretrained` reads
the file safely (tensors only), maps the keys, loads what matches by name and shape, and returns a
:class:`LoadReport` that the run record keeps. A missing file is :class:`PretrainedWeightsMissing`,
naming the download command; whether a run may go on from scratch is the trainer's decision (only at
smoke scale, recorded). See ``docs/models.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidbench import paths
from reidbench.errors import ReidbenchError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    name: str  # the weights registry name (`reidbench weights download NAME`)
    filename: str  # file name in torch hub's checkpoint cache
    source_kind: str  # torchvision | url | gdrive
    source: str  # torchvision enum path, URL or Drive id
    sha256_prefix: str | None  # published hash prefix, when there is one
    description: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # keys of the file whose prefix is one of these are never loaded (e.g. an ImageNet "fc.")
    skip_prefixes: tuple[str, ...] = ()
    # (file prefix, model prefix) renames applied before loading, first match wins
    rename: tuple[tuple[str, str], ...] = ()
    # (model prefix, model prefix) copies made after renaming: a tensor loaded under the first prefix is
    # also loaded under the second (branches that start as copies of one pretrained stage, e.g. MGN's)
    duplicate: tuple[tuple[str, str], ...] = ()

    def path(self) -> Path:
        return paths.weights_dir() / self.filename

    def with_mapping(self, skip_prefixes: tuple[str, ...] = (), rename: tuple[tuple[str, str], ...] = (),
                     duplicate: tuple[tuple[str, str], ...] = ()) -> PretrainedCfg:
        """The same file loaded into another model layout."""
        from dataclasses import replace

        return replace(self, skip_prefixes=skip_prefixes, rename=rename, duplicate=duplicate)


@dataclass
class LoadReport:
    weights: str
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys the file did not provide (new modules)
    unexpected: list[str] = field(default_factory=list)  # file keys the model lacks
    skipped_shape: list[str] = field(default_factory=list)  # same name, other shape (another dataset's classifier)

    def note(self) -> str:
        return (f"{self.weights} ({Path(self.path).name}): {len(self.loaded)} tensors loaded, "
                f"{len(self.missing)} missing (new modules), {len(self.unexpected)} unexpected, "
                f"{len(self.skipped_shape)} skipped for shape")

    def as_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "path": self.path, "loaded": len(self.loaded),
                "missing": self.missing, "unexpected": self.unexpected, "skipped_shape": self.skipped_shape}


class PretrainedWeightsMissing(ReidbenchError):
    """The weights file a model asks for is not in the cache."""


WEIGHTS: dict[str, PretrainedCfg] = {}


def register_weights(cfg: PretrainedCfg) -> PretrainedCfg:
    WEIGHTS[cfg.name] = cfg
    return cfg


def get_weights(name: str) -> PretrainedCfg:
    if name not in WEIGHTS:
        raise UnknownNameError("weights", name, list(WEIGHTS))
    return WEIGHTS[name]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, read without running code: a state dict, or a dict holding one under
    ``state_dict`` / ``model`` (official checkpoints of MSINet, torchreid, IBN-Net)."""
    from reidbench.serialization import read_torch_file

    raw = read_torch_file(path, "weights file")  # weights_only=True: a crafted file cannot run code
    if isinstance(raw, dict):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ReidbenchError(f"{path}: expected a state dict of tensors (or one under 'state_dict')")
    return {str(k).removeprefix("module."): v for k, v in raw.items()}


def map_keys(state: dict[str, torch.Tensor], cfg: PretrainedCfg) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if any(key.startswith(p) for p in cfg.skip_prefixes):
            continue
        for old, new in cfg.rename:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
        for source, copy in cfg.duplicate:
            if key.startswith(source):
                out[copy + key[len(source):]] = value
    return out


def load_state_by_name(model: nn.Module, state: dict[str, torch.Tensor], weights: str, path: str) -> LoadReport:
    """Copy every tensor whose name and shape match; report the rest."""
    own = model.state_dict()
    report = LoadReport(weights, path)
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.skipped_shape.append(key)
        else:
            own[key] = value
            report.loaded.append(key)
    model.load_state_dict(own)
    done = set(report.loaded) | set(report.skipped_shape)
    report.missing = sorted(k for k in own if k not in done)
    return report


def load_pretrained(model: nn.Module, cfg: PretrainedCfg, path: str | Path | None = None) -> LoadReport:
    """Load ``cfg``'s file (or ``path``) into ``model`` by name; stores and returns the report."""
    path = Path(path) if path is not None else cfg.path()
    if not path.is_file():
        raise PretrainedWeightsMissing(f"pretrained weights {cfg.name!r} not found at {path}",
                                       hint=f"run `reidbench weights download {cfg.name}`")
    report = load_state_by_name(model, map_keys(read_state_dict(path), cfg), cfg.name, str(path))
    if not report.loaded:
        raise ReidbenchError(f"{path}: none of its tensors match the model ({cfg.name}); "
                             f"expected the layout of {cfg.description}")
    model.pretrained_report = report  # declared by the model contract
    return report


# torchvision's ImageNet ResNets (their files carry the sha256 prefix in the name)
for _depth, _digest in ((18, "f37072fd"), (34, "b627a593"), (50, "0676ba61"), (101, "63fe2227")):
    register_weights(PretrainedCfg(
        f"resnet{_depth}", f"resnet{_depth}-{_digest}.pth", "torchvision",
        f"ResNet{_depth}_Weights.IMAGENET1K_V1", _digest,
        f"torchvision ResNet-{_depth}, ImageNet" + (" (V1, used by BoT)" if _depth == 50 else ""),
        skip_prefixes=("fc.",)))
register_weights(PretrainedCfg("resnet50_v2", "resnet50-11ad3fa6.pth", "torchvision",
                               "ResNet50_Weights.IMAGENET1K_V2", "11ad3fa6", "torchvision ResNet-50, ImageNet V2",
                               skip_prefixes=("fc.",)))
# IBN-Net's ImageNet ResNet-IBN-a releases (sha256 prefix in the name, as torchvision's)
for _depth, _digest in ((18, "2f571257"), (34, "94bc1577"), (50, "d9d0bb7b")):
    register_weights(PretrainedCfg(
        f"resnet{_depth}_ibn_a", f"resnet{_depth}_ibn_a-{_digest}.pth", "url",
        f"https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet{_depth}_ibn_a-{_digest}.pth", _digest,
        f"ResNet{_depth}-IBN-a, ImageNet (IBN-Net)", skip_prefixes=("fc.",)))
register_weights(PretrainedCfg("msinet_msmt", "msinet_msmt.pth.tar", "gdrive", "1ZNLDbtpsraiF149htbyhbh3UjCwREi9p",
                               None, "MSINet pretrained (official; state_dict inside a tar)"))
register_weights(PretrainedCfg("osnet_x1_0_imagenet", "osnet_x1_0_imagenet.pth", "gdrive",
                               "1LaG1EJpHrxdAxKnSCJ_i0u-nbxSAeiFY", None, "OSNet x1_0, ImageNet (torchreid)",
                               skip_prefixes=("classifier.",)))
