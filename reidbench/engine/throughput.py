"""What a run's throughput switches mean on its device: mixed precision, memory format, pinned memory, compile.

The recipe keys (``train.amp``, ``train.amp_dtype``, ``train.channels_last``, ``train.compile``,
``data.pin_memory``) say what a recipe wants; :func:`resolve_throughput` says what the run does with them on
its device, and the run record keeps that. On the CPU: fp16 autocast falls back to fp32 (the shipped recipes
ask for it on the GPU they were written for), bf16 autocast runs, channels_last and compile work, pinned memory
has nothing to speed up and is off. Asking for fp16 or pinned memory on the CPU explicitly, from the command
line, is refused by :func:`check_explicit_switches`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from reidbench.errors import ReidbenchError
from reidbench.recipes.schema import Recipe

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Throughput:
    device_type: str  # "cuda" or "cpu"
    amp: str | None  # "fp16", "bf16", or None for fp32
    channels_last: bool
    pin_memory: bool  # page-locked batches and non-blocking host-to-device copies
    compile: bool

    @property
    def grad_scaling(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none."""
        return self.amp == "fp16"

    def autocast(self) -> AbstractContextManager[Any]:
        dtype = AUTOCAST_DTYPES[self.amp] if self.amp else None
        return torch.autocast(self.device_type, dtype=dtype, enabled=self.amp is not None)

    def to_device(self, images: torch.Tensor, device: str) -> torch.Tensor:
        """A batch of images on the run's device, in the model's memory format."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(device, non_blocking=self.pin_memory, memory_format=memory_format)

    @property
    def precision(self) -> str:
        return f"amp {self.amp} ({self.device_type})" if self.amp else f"fp32 ({self.device_type})"

    def record(self) -> dict[str, Any]:
        return {"amp": self.amp, "grad_scaling": self.grad_scaling, "channels_last": self.channels_last,
                "pin_memory": self.pin_memory, "compile": self.compile}


def resolve_throughput(recipe: Recipe, device: str) -> Throughput:
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    train = recipe.train
    amp = train.amp_dtype if train.amp else None
    if device_type == "cpu" and amp == "fp16":
        amp = None  # float16 autocast is a GPU precision: the CPU run is fp32, and says so
    return Throughput(device_type=device_type, amp=amp, channels_last=train.channels_last,
                      pin_memory=recipe.data.pin_memory and device_type == "cuda", compile=train.compile)


def check_explicit_switches(device: str, amp: str | None, pin_memory: bool | None) -> None:
    """Refuse command-line switches that cannot mean anything on ``device`` (one line each)."""
    if device.startswith("cuda"):
        return
    if amp == "fp16":
        raise ReidbenchError(f"--amp fp16: float16 mixed precision needs a CUDA device, this run is on {device}",
                             hint="use --amp bf16 (CPU autocast) or --amp off")
    if pin_memory:
        raise ReidbenchError(f"--pin-memory: pinned memory speeds host-to-GPU copies, this run is on {device}",
                             hint="drop --pin-memory")


def switch_overrides(amp: str | None, channels_last: bool | None, pin_memory: bool | None,
                     compile_model: bool | None) -> list[str]:
    """The recipe overrides (``key=value``) that the command-line switches stand for."""
    overrides = []
    if amp is not None:
        if amp not in ("off", *AUTOCAST_DTYPES):
            raise ReidbenchError(f"--amp: expected off, {', '.join(AUTOCAST_DTYPES)}, got {amp!r}")
        overrides += ["train.amp=false"] if amp == "off" else ["train.amp=true", f"train.amp_dtype={amp}"]
    for key, value in (("train.channels_last", channels_last), ("data.pin_memory", pin_memory),
                       ("train.compile", compile_model)):
        if value is not None:
            overrides.append(f"{key}={str(value).lower()}")
    return overrides
