"""The features file: what `reidbench test` writes and `reidbench evaluate` reads.

Format (``.pt``, a ``torch.save`` dict, or ``.npz``, a ``numpy.savez`` archive; same keys):

========================  ==========  ================================================
key                       shape       meaning
========================  ==========  ================================================
``query_features``        [Q, D]      float features of the query images
``gallery_features``      [G, D]      float features of the gallery images
``query_pids``            [Q]         integer identity labels
``query_camids``          [Q]         integer camera labels
``gallery_pids``          [G]         integer identity labels (0 = distractor, kept)
``gallery_camids``        [G]         integer camera labels
``protocol`` (optional)   str         ``market`` (default) or ``partial``
``query_paths``/``gallery_paths`` (optional)  [Q]/[G] image paths, for inspection
``meta`` (optional)       dict        free-form provenance (dataset, model, synthetic, ...);
                                      stored as a JSON string under ``meta_json`` in .npz
``query_local``/``gallery_local`` (optional)  [Q, H, C]/[G, H, C]  per-stripe local features
                                      (AlignedReID++ / AaP-ReID) for the DMLI local distance
``extra`` (optional, .pt) dict        further model outputs by name, ``{name: {"query": [Q, ...],
                                      "gallery": [G, ...]}}`` (2-D or [N, P, D] parts), so that an
                                      evaluation may rank by another output of the same run; in
                                      .npz as ``extra/<name>/query`` and ``extra/<name>/gallery``
========================  ==========  ================================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidbench.errors import ReidbenchError
from reidbench.evaluation.atomic import atomic_write
from reidbench.evaluation.distance import aligned_local_distance, compute_distance
from reidbench.evaluation.metrics import EvaluationResult, evaluate
from reidbench.evaluation.rerank import rerank as rerank_distances
from reidbench.evaluation.rerank import rerank_features
from reidbench.serialization import read_torch_file

REQUIRED_KEYS = (
    "query_features",
    "gallery_features",
    "query_pids",
    "query_camids",
    "gallery_pids",
    "gallery_camids",
)
SUFFIXES = (".pt", ".npz")


@dataclass
class FeatureSet:
    query_features: torch.Tensor
    gallery_features: torch.Tensor
    query_pids: np.ndarray
    query_camids: np.ndarray
    gallery_pids: np.ndarray
    gallery_camids: np.ndarray
    protocol: str = "market"
    query_paths: list[str] | None = None
    gallery_paths: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    query_local: torch.Tensor | None = None
    gallery_local: torch.Tensor | None = None
    # further outputs by name: (query [Q, ...], gallery [G, ...]); see select_feature
    extra: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def _array(value: Any, where: str) -> np.ndarray:
    """Any array-like as numpy (a tensor, a numpy array, nested lists); anything else names the key."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: expected an array, got {type(value).__name__}") from error


def _as_ids(value: Any, where: str) -> np.ndarray:
    array = _array(value, where)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: expected a 1-D integer vector, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def _as_float_tensor(value: Any, where: str, ndim: int, shape: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        array = _array(value, where)
        if not np.issubdtype(array.dtype, np.floating):  # strings, objects, integers: no features
            raise ValueError(f"{where}: expected a {ndim}-D float {shape}, got {array.dtype} {array.shape}")
        tensor = torch.from_numpy(array)
    if tensor.ndim != ndim or not tensor.is_floating_point():
        raise ValueError(f"{where}: expected a {ndim}-D float {shape}, got {tensor.dtype} {tuple(tensor.shape)}")
    return tensor


def _as_features(value: Any, where: str) -> torch.Tensor:
    return _as_float_tensor(value, where, 2, "matrix")


def _as_local(value: Any, where: str) -> torch.Tensor:
    return _as_float_tensor(value, where, 3, "[N, stripes, C] tensor")


def _as_paths(value: Any, where: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        array = _array(value, where)
        if array.ndim != 1:
            raise ValueError(f"{where}: expected a list of image paths, got {type(value).__name__} of shape "
                             f"{tuple(array.shape)}")
        items = array.tolist()
    if not all(isinstance(p, (str, os.PathLike)) for p in items):
        raise ValueError(f"{where}: expected a list of image paths (strings)")
    return [str(p) for p in items]


def _as_meta(raw: dict[str, Any], file: Path) -> dict[str, Any]:
    if "meta_json" in raw:
        text = raw["meta_json"]
        text = text.item() if isinstance(text, np.ndarray) and text.ndim == 0 else text
        if not isinstance(text, str):
            raise ValueError(f"{file}: meta_json: expected a JSON string, got {type(text).__name__}")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: meta_json: not valid JSON ({error.msg} at character {error.pos})") from error
        key = "meta_json"
    else:
        meta, key = raw.get("meta", {}), "meta"
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: {key}: expected a mapping of provenance fields, got {type(meta).__name__}")
    return dict(meta)


def _as_protocol(value: Any, file: Path) -> str:
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    if not isinstance(value, str):
        raise ValueError(f"{file}: protocol: expected a string (market or partial), got {type(value).__name__}")
    return value


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a features file; every problem is a ValueError naming the file and the key."""
    file = Path(path)
    if file.suffix not in SUFFIXES:
        raise ValueError(f"{file}: expected a features file ending in .pt or .npz")
    if not file.is_file():
        raise ValueError(f"{file}: features file not found")
    try:
        if file.suffix == ".pt":
            raw = read_torch_file(file, "features file")  # weights only: a crafted file cannot run code
        else:
            with np.load(file, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
    except ReidbenchError as error:
        raise ValueError(error.message) from error
    except Exception as error:  # noqa: BLE001 - any decoding failure is the file's fault
        raise ValueError(f"{file}: not a readable {file.suffix} features file ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a dict of arrays, got {type(raw).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ValueError(f"{file}: missing key(s) {', '.join(missing)}; expected {REQUIRED_KEYS}")
    fs = FeatureSet(
        query_features=_as_features(raw["query_features"], f"{file}: query_features"),
        gallery_features=_as_features(raw["gallery_features"], f"{file}: gallery_features"),
        query_pids=_as_ids(raw["query_pids"], f"{file}: query_pids"),
        query_camids=_as_ids(raw["query_camids"], f"{file}: query_camids"),
        gallery_pids=_as_ids(raw["gallery_pids"], f"{file}: gallery_pids"),
        gallery_camids=_as_ids(raw["gallery_camids"], f"{file}: gallery_camids"),
        protocol=_as_protocol(raw.get("protocol", "market"), file),
        query_paths=_as_paths(raw["query_paths"], f"{file}: query_paths") if "query_paths" in raw else None,
        gallery_paths=_as_paths(raw["gallery_paths"], f"{file}: gallery_paths") if "gallery_paths" in raw else None,
        meta=_as_meta(raw, file),
    )
    fs.extra = _read_extra(raw, file)
    if ("query_local" in raw) != ("gallery_local" in raw):
        raise ValueError(f"{file}: expected both query_local and gallery_local, or neither")
    kinds = ["pids", "camids"]
    if "query_local" in raw:
        fs.query_local = _as_local(raw["query_local"], f"{file}: query_local")
        fs.gallery_local = _as_local(raw["gallery_local"], f"{file}: gallery_local")
        kinds.append("local")
    kinds.append("paths")
    for side, n in (("query", fs.query_features.shape[0]), ("gallery", fs.gallery_features.shape[0])):
        for kind in kinds:
            value = getattr(fs, f"{side}_{kind}")
            if value is not None and len(value) != n:
                raise ValueError(
                    f"{file}: {side}_{kind}: expected length {n} ({side}_features rows), got {len(value)}"
                )
        for name, pair in fs.extra.items():
            got = pair[0 if side == "query" else 1].shape[0]
            if got != n:
                raise ValueError(f"{file}: extra {name} {side}: expected length {n} ({side}_features rows), got {got}")
    return fs


def _extra_tensor(value: Any, where: str) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    if tensor.ndim not in (2, 3) or not tensor.is_floating_point():
        raise ValueError(f"{where}: expected a 2-D or 3-D float tensor, got {tensor.dtype} {tuple(tensor.shape)}")
    return tensor


def _read_extra(raw: dict[str, Any], file: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``extra`` as a nested dict (.pt) or flat ``extra/<name>/<side>`` keys (.npz)."""
    nested = raw.get("extra")
    if nested is None:
        nested = {}
        for key, value in raw.items():
            if key.startswith("extra/"):
                _, name, side = key.split("/", 2)
                nested.setdefault(name, {})[side] = value
    if not isinstance(nested, dict):
        raise ValueError(f"{file}: extra: expected a dict of {{name: {{query, gallery}}}}")
    out = {}
    for name, sides in nested.items():
        if not isinstance(sides, dict) or set(sides) != {"query", "gallery"}:
            raise ValueError(f"{file}: extra {name}: expected query and gallery tensors")
        out[str(name)] = (_extra_tensor(sides["query"], f"{file}: extra {name} query"),
                          _extra_tensor(sides["gallery"], f"{file}: extra {name} gallery"))
    return out


def select_feature(features: FeatureSet, name: str, part: int | None = None) -> FeatureSet:
    """The feature set ranked by output ``name``: the stored main feature (``meta["feature"]``, the
    default when the file does not say) or one of ``extra``; ``part`` (1-based) picks one part of a
    [N, P, D] output, which is otherwise ranked as its concatenated parts."""
    main = features.meta.get("feature", name)
    if name == main:
        query, gallery = features.query_features, features.gallery_features
    elif name in features.extra:
        query, gallery = features.extra[name]
    else:
        stored = ", ".join([main, *features.extra])
        raise ValueError(f"eval.feature: {name!r} is not in the features file (it holds {stored}); "
                         f"add it to the recipe's eval.extra_features and train again")
    if part is not None:
        if query.ndim != 3 or not 1 <= part <= query.shape[1]:
            raise ValueError(f"eval.part: expected 1..P of a [N, P, D] feature, got part {part} of {name} "
                             f"with shape {tuple(query.shape[1:])}")
        query, gallery = query[:, part - 1], gallery[:, part - 1]
    return replace(features, query_features=query.flatten(1), gallery_features=gallery.flatten(1))


def save_features(path: str | os.PathLike[str], features: FeatureSet) -> Path:
    """Write a features file atomically (a temporary file in the same folder, then a rename)."""
    file = Path(path)
    if file.suffix not in SUFFIXES:
        raise ValueError(f"{file}: expected a features file ending in .pt or .npz")
    file.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "query_features": features.query_features.detach().cpu(),
        "gallery_features": features.gallery_features.detach().cpu(),
        "query_pids": features.query_pids,
        "query_camids": features.query_camids,
        "gallery_pids": features.gallery_pids,
        "gallery_camids": features.gallery_camids,
        "protocol": features.protocol,
    }
    if features.query_paths is not None:
        data["query_paths"] = list(features.query_paths)
    if features.gallery_paths is not None:
        data["gallery_paths"] = list(features.gallery_paths)
    if features.query_local is not None and features.gallery_local is not None:
        data["query_local"] = features.query_local.detach().cpu()
        data["gallery_local"] = features.gallery_local.detach().cpu()
    extra = {name: {"query": q.detach().cpu(), "gallery": g.detach().cpu()} for name, (q, g) in features.extra.items()}

    def write(handle: Any) -> None:
        if file.suffix == ".pt":
            tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}
            torch.save({**tensors, "meta": features.meta, **({"extra": extra} if extra else {})}, handle)
        else:
            arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in data.items()}
            arrays.update({f"extra/{name}/{side}": t.numpy() for name, sides in extra.items()
                           for side, t in sides.items()})
            np.savez(handle, **arrays, meta_json=np.asarray(json.dumps(features.meta)))

    atomic_write(file, write)
    return file


def feature_set_distance(
    features: FeatureSet,
    metric: str = "euclidean",
    normalize: bool = False,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    local: bool = False,
    device: Any = None,
) -> torch.Tensor:
    """The query-gallery distance [Q, G] a ranking uses: the global distance, plus AlignedReID's DMLI distance
    between the stripe features when ``local`` (the official ``global_local`` test distance), re-ranked when
    ``rerank`` (with ``local`` that needs the query-query and gallery-gallery matrices in memory). ``device``
    (``"cuda"``, ``"cuda:N"``) computes it there (the same numbers); by default where the features are."""
    q, g = features.query_features, features.gallery_features
    on = {"device": device}
    if local:
        if features.query_local is None or features.gallery_local is None:
            raise ValueError("local: the features have no query_local / gallery_local stripe features")
        ql, gl = features.query_local.float(), features.gallery_local.float()
        if device is not None:
            ql, gl = ql.to(device), gl.to(device)

        def global_local(a: torch.Tensor, b: torch.Tensor, a_local: torch.Tensor, b_local: torch.Tensor
                         ) -> torch.Tensor:
            return (compute_distance(a, b, metric=metric, normalize=normalize, **on)
                    + aligned_local_distance(a_local, b_local))

        dist = global_local(q, g, ql, gl)
        if rerank:
            dist = rerank_distances(dist, global_local(q, q, ql, ql), global_local(g, g, gl, gl),
                                    k1=k1, k2=k2, lambda_value=lambda_value, **on)
        return dist
    if rerank:
        return rerank_features(q, g, metric=metric, k1=k1, k2=k2, lambda_value=lambda_value, normalize=normalize,
                               **on)
    return compute_distance(q, g, metric=metric, normalize=normalize, **on)


def evaluate_feature_set(
    features: FeatureSet,
    metric: str = "euclidean",
    normalize: bool = False,
    rerank: bool = False,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    protocol: str | None = None,
    ap: str = "standard",
    max_rank: int = 50,
    local: bool = False,
    device: Any = None,
) -> EvaluationResult:
    """Distances (or re-ranked distances, see :func:`feature_set_distance`) and metrics, on ``device`` when
    given (the same numbers); the settings travel in the result."""
    dist = feature_set_distance(features, metric, normalize, rerank, k1, k2, lambda_value, local, device)
    result = evaluate(
        dist, features.query_pids, features.gallery_pids, features.query_camids,
        features.gallery_camids, max_rank=max_rank, protocol=protocol or features.protocol, ap=ap, device=device,
    )
    result.settings.update(
        metric=metric,
        normalize=normalize,
        rerank={"k1": k1, "k2": k2, "lambda_value": lambda_value} if rerank else None,
        local=local,
    )
    return result
