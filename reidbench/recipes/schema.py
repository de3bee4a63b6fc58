"""The recipe schema: every key a recipe may hold, with its type and default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelSection:
    name: str = "bot_resnet50"
    options: dict[str, Any] = field(default_factory=dict)  # constructor keywords, checked by the registry


@dataclass
class SubsetSection:
    train_ids: int | None = None
    test_id_fraction: float | None = None


@dataclass
class TransformSection:
    flip: float = 0.5
    pad: int = 10  # pad + random crop back to size (BoT); 0 disables
    translate: float = 0.0  # Random2DTranslation probability (AlignedReID): enlarge 1/8, crop
    erasing: float = 0.5  # random erasing probability
    erasing_fill: list[float] | str = "mean"  # per-channel fill after normalisation, or "mean"/"random"
    erasing_area: list[float] = field(default_factory=lambda: [0.02, 0.33])  # erased fraction of the image, min/max
    # height / width of the erased rectangle, min/max (torchvision RandomErasing's ``ratio``, drawn log-uniformly)
    erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 3.3])
    color_jitter: list[float] | None = None  # brightness, contrast, saturation, hue
    cutout: float = 0.0  # Cutout probability (MHSA-Net)
    cutout_size: int = 64
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class SamplerSection:
    name: str = "pk"  # pk: every image once per epoch in P x K batches (BoT); random_identity: one
    num_instances: int = 4  # draw of K images per identity per epoch (open-reid)


@dataclass
class DataSection:
    train: str = "market1501"
    test: str = "market1501"
    variant: str | None = None
    height: int = 256
    width: int = 128
    batch_size: int = 64
    test_batch_size: int = 128
    workers: int = 4
    pin_memory: bool = True  # page-locked batches and non-blocking copies when training on CUDA (no effect on CPU)
    synthetic: bool = False  # use the built-in synthetic miniature instead of the real dataset
    synthetic_ids: int = 24
    synthetic_images_per_id: int = 8
    subset: SubsetSection = field(default_factory=SubsetSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    transforms: TransformSection = field(default_factory=TransformSection)


@dataclass
class LossTerm:
    name: str = "cross_entropy"  # cross_entropy | triplet | center | spatial_align | fdrt | ihtl | acm
    output: str = "logits"  # which model output the term reads (aux.<name>: one of the model's aux tensors)
    weight: float = 1.0  # 0 switches the term off (not computed)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimSection:
    name: str = "adam"  # sgd | adam | amsgrad
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    bias_lr_factor: float = 1.0
    bias_weight_decay: float | None = None
    center_lr: float = 0.5  # center loss parameters get their own SGD optimiser


@dataclass
class ScheduleSection:
    name: str = "multistep"  # multistep | step | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [40, 70])
    step_size: int = 40
    gamma: float = 0.1
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    # linear: from warmup_factor up to 1; step: (epoch // warmup_step + 1) * warmup_step / warmup_epochs
    # (MHSA-Net's released schedule: 1e-4 x (epoch // 5 + 1) up to 1e-3 over 50 epochs)
    warmup_method: str = "linear"
    warmup_step: int = 5
    min_lr: float = 0.0
    per_iteration: bool = False


@dataclass
class TrainSection:
    epochs: int = 120
    seed: int = 0
    amp: bool = True  # mixed precision on CUDA; CPU runs in fp32 and records it, unless amp_dtype is bf16
    amp_dtype: str = "fp16"  # fp16 (with loss scaling) | bf16 (also on CPU)
    channels_last: bool = False  # NHWC memory format for the model and its input images
    compile: bool = False  # torch.compile the network for training
    grad_clip: float | None = None
    eval_every: int = 40
    log_every: int = 20
    # torchreid's "fixbase": the first N epochs train only these top-level modules (others frozen, eval mode)
    fixbase_epochs: int = 0
    open_layers: list[str] = field(default_factory=list)  # empty: the model's classifiers (get_classifier)


@dataclass
class RerankSection:
    enabled: bool = False  # k-reciprocal re-ranking on/off; k1/k2/lambda_value alone never turn it on
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3


@dataclass
class EvalSection:
    feature: str = "embedding"
    local_feature: str | None = None  # stripe output added as the DMLI local distance (AlignedReID++)
    # further eval outputs saved in features.pt, so that a paper row's `evaluate:` may rank by them
    # (eval.feature=<one of these>) without training again
    extra_features: list[str] = field(default_factory=list)
    part: int | None = None  # rank by part number `part` (1-based) of a [N, P, D] feature (one head)
    metric: str = "euclidean"
    normalize: bool = False
    rerank: RerankSection = field(default_factory=RerankSection)
    flip: bool = False


@dataclass
class ReportedSection:
    paper: str | None = None
    table: str | None = None
    row: str | None = None
    column: str | None = None


# Keys that change how fast a run goes, never what it computes (beyond float rounding): kept out of the recipe
# hash, so switching them on does not make a finished run look stale (the run record says what was used).
THROUGHPUT_KEYS = ("data.pin_memory", "train.channels_last", "train.compile")
# Keys added after runs were recorded: in the hash only when they differ from what runs did before them.
HASHED_WHEN_CHANGED = {"train.amp_dtype": "fp16"}
AMP_DTYPES = ("fp16", "bf16")


@dataclass
class Recipe:
    name: str = "unnamed"
    description: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm()])
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    reported: ReportedSection = field(default_factory=ReportedSection)
    # overrides applied per scale: {"small": {...}, "smoke": {...}} in the same key structure
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    scale: str = "full"
