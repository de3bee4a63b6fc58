"""One entry per dataset: names, archives and sources, layout, statistics, access, protocol.

Statistics are (images, ids, cameras) per split after parsing (train pids relabelled, Market junk
dropped, distractors kept). ``cams=None`` where the figure has not been checked on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reidbench.errors import UnknownNameError


@dataclass(frozen=True)
class Source:
    """Where an archive comes from: ``gdrive`` (file id), ``url``, or ``request`` (instructions)."""

    kind: str
    value: str


# Extraction refuses an archive whose members declare more than this many times the dataset's known
# extracted size (a zip bomb, or not the dataset): the margin covers other releases and rounding.
EXTRACT_MARGIN = 1.5


@dataclass(frozen=True)
class Archive:
    name: str
    sources: tuple[Source, ...]
    md5: str | None = None
    sha256: str | None = None
    note: str = ""
    # approximate size of the extracted release in MB (stated from the published archive sizes, not
    # measured here); None for single files that are not extracted (split configs)
    extracted_mb: int | None = None


@dataclass(frozen=True)
class Stats:
    images: int
    ids: int
    cams: int | None = None


@dataclass(frozen=True)
class Variant:
    """A layout or labelling variant with its own statistics (CUHK03 detected/labeled...)."""

    name: str
    train: Stats | None
    query: Stats
    gallery: Stats


@dataclass(frozen=True)
class SyntheticPlan:
    """How ``data synth`` renders a miniature of the dataset (``data/synth.py``): the official file layout
    (``writer``) and the shape of its splits. Cameras come from the training split's statistics unless given."""

    writer: str  # a file-layout writer in data/synth.py (market, duke, msmt17, veri, p_duke, partial_reid, ...)
    queries_per_id: int = 1
    distractors: bool = False  # max(2, ids // 4) gallery distractors (pid 0)
    junk: int = 0  # junk gallery images (pid -1)
    gallery_only_ids: bool = False  # max(1, ids // 6) identities seen only in the gallery
    first_pid: int = 1
    query_look: str = "whole"  # whole | occluded: the look of every query image
    occluded_rate: float | None = None  # with an occluded query look: share of other images occluded
    train_occluded_rate: float = 0.0  # training images drawn occluded
    paired_partial: bool = False  # partial query / whole gallery pairs, no training split
    pairs_per_id: int | None = None  # with paired_partial: images per id per side (None: half of them)
    cameras: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    aliases: tuple[str, ...]
    top_folders: tuple[str, ...]  # folder names as extracted from the archive, first = canonical
    layout: tuple[str, ...]  # required sub-paths of the top folder, for the first top folder
    variants: tuple[Variant, ...]
    archives: tuple[Archive, ...]
    access: str
    protocol: str = "market"
    kind: str = "person"
    input_size: tuple[int, int] = (256, 128)
    stats_verified: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    parser: str = "market"  # the folder parser in data/parsers.py PARSERS
    synthetic: SyntheticPlan | None = None  # None: no synthetic miniature (CUHK03 has its own generator)

    @property
    def synthetic_cameras(self) -> int:
        plan = self.synthetic
        if plan is not None and plan.cameras is not None:
            return plan.cameras
        stats = self.default_variant.train or self.default_variant.query
        if stats.cams is None:
            raise ValueError(f"{self.name}: no camera count for its synthetic miniature")
        return stats.cams
    # Where ``layout`` is empty (several official layouts): a folder holding every path of one of these is
    # the dataset's top folder. `locate` decides by content, never by the folder's name.
    content_markers: tuple[tuple[str, ...], ...] = ()

    def holds_dataset(self, folder: Path) -> bool:
        """Whether ``folder`` is this dataset's top folder, judged by what it contains."""
        if not folder.is_dir():
            return False
        layouts = (self.layout,) if self.layout else self.content_markers
        return any(layout and all((folder / part).exists() for part in layout) for layout in layouts)

    @property
    def default_variant(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str | None) -> Variant:
        if name is None:
            return self.default_variant
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise UnknownNameError(f"{self.name} variant", name, [v.name for v in self.variants])

    def max_extracted_bytes(self, archive_name: str) -> int | None:
        """The most an archive of this dataset may expand to: its registry entry's size (the dataset's
        largest when the name is not one of them) times EXTRACT_MARGIN; None when nothing is stated."""
        sizes = [a.extracted_mb for a in self.archives if a.name == archive_name and a.extracted_mb] or \
                [a.extracted_mb for a in self.archives if a.extracted_mb]
        return int(max(sizes) * EXTRACT_MARGIN * 1024**2) if sizes else None

    @property
    def by_request(self) -> bool:
        return all(s.kind == "request" for a in self.archives for s in a.sources)


def _v(name: str, train: tuple | None, query: tuple, gallery: tuple) -> Variant:
    return Variant(name, Stats(*train) if train else None, Stats(*query), Stats(*gallery))


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register(DatasetSpec(
    name="market1501",
    title="Market-1501",
    aliases=("market", "market-1501"),
    top_folders=("Market-1501-v15.09.15", "Market-1501", "market1501"),
    layout=("bounding_box_train", "query", "bounding_box_test"),
    variants=(_v("default", (12936, 751, 6), (3368, 750, 6), (15913, 751, 6)),),
    archives=(Archive(
        "Market-1501-v15.09.15.zip",
        (Source("gdrive", "0B8-rUzbwVRk0c054eEozWG9COHM"),
         Source("url", "http://188.138.127.15:81/Datasets/Market-1501-v15.09.15.zip")),
        md5="65005ab7d12ec1c44de4eeafe813e68a",
        note="md5 as published by open-reid; the HTTP mirror is reported dead",
        extracted_mb=170,
    ),),
    access="free for research; Zheng et al., ICCV 2015",
    notes=("gallery: 3,819 junk images (pid -1) dropped, 2,798 distractors (pid 0) kept",),
    synthetic=SyntheticPlan("market", queries_per_id=2, distractors=True, junk=2),
))

register(DatasetSpec(
    name="dukemtmcreid",
    title="DukeMTMC-reID",
    aliases=("duke", "dukemtmc", "dukemtmc-reid"),
    top_folders=("DukeMTMC-reID",),
    layout=("bounding_box_train", "query", "bounding_box_test"),
    variants=(_v("default", (16522, 702, 8), (2228, 702, 8), (17661, 1110, 8)),),
    archives=(Archive(
        "DukeMTMC-reID.zip",
        (Source("gdrive", "1jjE85dRCMOgRtvJ5RQV9-Afs-2_5dY3O"),
         Source("gdrive", "0B0VOCNYh8HeRdnBPa2ZWaVBYSVk")),
        md5="2f93496f9b516d1ee5ef51c1d5e7d601",
        extracted_mb=480,
    ),),
    access="withdrawn by its authors (2019); use only a copy you are entitled to",
    stats_verified=False,
    synthetic=SyntheticPlan("duke", gallery_only_ids=True),
))

register(DatasetSpec(
    name="cuhk03",
    title="CUHK03 (new 767/700 protocol)",
    aliases=("cuhk03-np", "cuhk03np", "cuhk-03"),
    top_folders=("cuhk03_release", "cuhk03-np", "cuhk03"),
    layout=(),
    variants=(
        _v("detected", (7365, 767, 2), (1400, 700, 2), (5332, 700, 2)),
        _v("labeled", (7368, 767, 2), (1400, 700, 2), (5328, 700, 2)),
    ),
    archives=(
        Archive("cuhk03_release.zip",
                (Source("gdrive", "1BO4G9gbOTJgtYIB0VNyHQpZb8Lcn-05m"),
                 Source("request", "fill in the form at https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html")),
                md5="728939e58ad9f0ff53e521857dd8fb43", extracted_mb=1800),
        Archive("cuhk03_new_protocol_config_detected.mat",
                (Source("url", "https://raw.githubusercontent.com/zhunzhong07/person-re-ranking/master/"
                               "evaluation/data/CUHK03/cuhk03_new_protocol_config_detected.mat"),),
                sha256="ef438e7775fce6d08ef6dff84d2235bd4bed63850dbbf7025f3251e45c7fa721"),
        Archive("cuhk03_new_protocol_config_labeled.mat",
                (Source("url", "https://raw.githubusercontent.com/zhunzhong07/person-re-ranking/master/"
                               "evaluation/data/CUHK03/cuhk03_new_protocol_config_labeled.mat"),),
                sha256="15627d0913d59ac61220cf311dbca8b936499265da86c0c036d3b8162a180b9c"),
    ),
    access="research use; the raw release is requested from the authors",
    notes=("raw cuhk03_release (cuhk-03.mat + split configs) or the pre-extracted CUHK03-NP "
           "layout cuhk03-np/{detected,labeled}/...; camid = camera within the pair (0/1)",),
    parser="cuhk03",
    content_markers=(("detected/bounding_box_train",), ("labeled/bounding_box_train",), ("images_detected",),
                     ("images_labeled",), ("cuhk-03.mat",)),
))

register(DatasetSpec(
    name="msmt17",
    title="MSMT17",
    aliases=("msmt", "msmt17_v1", "msmt17_v2"),
    top_folders=("MSMT17_V1", "MSMT17_V2", "MSMT17"),
    layout=("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"),
    variants=(_v("default", (32621, 1041, 15), (11659, 3060, 15), (82161, 3060, 15)),),
    archives=(Archive("MSMT17_V1.tar.gz",
                      (Source("request", "ask the authors (Wei et al., CVPR 2018) via "
                                         "https://www.pkuvmc.com/dataset.html"),),
                      md5="ea5502ae9dd06c596ad866bd1db0280d",
                      note="md5 from third-party code, unverified", extracted_mb=3000),
              Archive("MSMT17_V2.tar.gz",
                      (Source("request", "ask the authors (Wei et al., CVPR 2018)"),), extracted_mb=3000)),
    access="by request from the authors; research only",
    notes=("training = train + val lists (32,621 images); V1: train/ test/, V2: mask_train_v2/ "
           "mask_test_v2/",),
    parser="msmt17",
    synthetic=SyntheticPlan("msmt17", queries_per_id=2, first_pid=0),
))

register(DatasetSpec(
    name="veri776",
    title="VeRi-776",
    aliases=("veri", "veri-776"),
    top_folders=("VeRi", "VeRi-776"),
    layout=("image_train", "image_query", "image_test"),
    variants=(_v("default", (37778, 576, 20), (1678, 200, None), (11579, 200, None)),),
    archives=(Archive("VeRi.zip", (Source("request", "ask the authors (Liu et al., ICME 2016) via "
                                                     "https://github.com/JDAI-CV/VeRidataset"),),
                      extracted_mb=1100),),
    access="by request from the authors; research only",
    kind="vehicle",
    input_size=(256, 256),
    stats_verified=False,
    parser="veri",
    synthetic=SyntheticPlan("veri"),
))

register(DatasetSpec(
    name="occluded_duke",
    title="Occluded-DukeMTMC",
    aliases=("occluded-duke", "occludedduke", "occ_duke"),
    top_folders=("Occluded_Duke",),
    layout=("bounding_box_train", "query", "bounding_box_test"),
    variants=(_v("default", (15618, 702, 8), (2210, 519, 8), (17661, 1110, 8)),),
    archives=(Archive("DukeMTMC-reID.zip", (Source("request", "built from DukeMTMC-reID with the "
                                                              "official lists (shipped)"),),
                      md5="2f93496f9b516d1ee5ef51c1d5e7d601", extracted_mb=480),),
    access="derived from DukeMTMC-reID (withdrawn); lists from lightas/Occluded-DukeMTMC-Dataset",
    notes=("reidbench data prepare occluded_duke --from DukeMTMC-reID.zip builds it",
           "protocol: trains on its training list; occluded queries against the (mostly whole-body) Duke "
           "gallery; Market rules (same id and camera removed), R1/R5/R10/mAP",),
    synthetic=SyntheticPlan("duke", gallery_only_ids=True, query_look="occluded", occluded_rate=0.2),
))

register(DatasetSpec(
    name="p_dukemtmc",
    title="P-DukeMTMC-reID",
    aliases=("p-duke", "pduke", "p_duke", "p-dukemtmc-reid"),
    top_folders=("P-DukeMTMC-reid", "P-DukeMTMC-reID"),
    layout=("train", "test"),
    variants=(_v("default", (12927, 665, None), (2163, 634, None), (9053, 634, None)),),
    archives=(Archive("P-DukeMTMC-reid.zip", (Source("request", "sign the user agreement at "
                      "https://github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets"),),
                      extracted_mb=450),),
    access="by user agreement",
    stats_verified=False,
    notes=("query: test/occluded_body_images, gallery: test/whole_body_images",
           "protocol: trains on train/ (whole and occluded bodies); occluded queries against whole-body "
           "gallery images; Market rules (same id and camera removed; folders without camera ids in the "
           "names give query camera 0, gallery camera 1), R1/R5/R10/mAP",),
    parser="p_duke",
    synthetic=SyntheticPlan("p_duke", query_look="occluded", occluded_rate=0.0, train_occluded_rate=0.4, cameras=8),
))

register(DatasetSpec(
    name="partial_reid",
    title="Partial-REID",
    aliases=("partial-reid", "partialreid"),
    top_folders=("Partial_REID", "Partial-REID_Dataset", "Partial-REID"),
    layout=("partial_body_images", "whole_body_images"),
    variants=(_v("default", None, (300, 60, 1), (300, 60, 1)),),
    archives=(Archive("Partial-REID_Dataset.rar",
                      (Source("url", "http://isee.sysu.edu.cn/files/resource/Partial-REID_Dataset.rar"),
                       Source("gdrive", "1p7Jvo-RJhU_B6hf9eAhIEFNhvrzM5cdh")),
                      note="RAR: extract by hand, then `reidbench data prepare partial_reid --from DIR`",
                      extracted_mb=40),),
    access="research use (Zheng et al., ICCV 2015)",
    protocol="partial",
    stats_verified=False,
    notes=("test only; trained on Market-1501; query = partial bodies, gallery = whole bodies",
           "protocol partial: cameras ignored (nothing removed from the gallery), R1/R3",),
    parser="partial_reid",
    synthetic=SyntheticPlan("partial_reid", paired_partial=True),
))

register(DatasetSpec(
    name="partial_ilids",
    title="Partial-iLIDS",
    aliases=("partial-ilids", "partialilids"),
    top_folders=("PartialiLIDS", "Partial_iLIDS"),
    layout=(),
    variants=(_v("default", None, (119, 119, 1), (119, 119, 1)),),
    archives=(Archive("PartialiLIDS.zip", (Source("gdrive", "1p7Jvo-RJhU_B6hf9eAhIEFNhvrzM5cdh"),),
                      note="part of a Partial-REID/Partial-iLIDS/Occluded-REID bundle, reported dead",
                      extracted_mb=20),),
    access="research use; 238 images, not the 476-image QMUL i-LIDS set",
    protocol="partial",
    stats_verified=False,
    notes=("test only; trained on Market-1501; query = partial bodies (Probe), gallery = whole bodies",
           "protocol partial: cameras ignored (nothing removed from the gallery), R1/R3",),
    parser="partial_ilids",
    synthetic=SyntheticPlan("partial_ilids", paired_partial=True, pairs_per_id=1),
    content_markers=(("query", "gallery"), ("Probe", "Gallery"), ("probe", "gallery")),
))


def _lookup() -> dict[str, str]:
    table = {}
    for spec in DATASETS.values():
        for key in (spec.name, *spec.aliases):
            table[key.lower()] = spec.name
    return table


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry for a name or alias (case-insensitive); suggests close names if unknown."""
    key = name.lower()
    found = _lookup().get(key)
    if found is None:
        raise UnknownNameError("dataset", name, list(DATASETS))
    return DATASETS[found]
