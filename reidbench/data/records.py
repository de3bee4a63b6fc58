"""What a parsed dataset is: lists of (image path, pid, camid) for train, query and gallery."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    pid: int
    camid: int


@dataclass
class SplitStats:
    images: int
    ids: int
    cams: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.images, self.ids, self.cams)


def stats_of(records: list[ImageRecord]) -> SplitStats:
    return SplitStats(
        images=len(records),
        ids=len({r.pid for r in records}),
        cams=len({r.camid for r in records}),
    )


@dataclass
class Split:
    """A dataset parsed into its three lists; train pids are relabelled 0..N-1, camids 0-based."""

    name: str
    root: Path
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    protocol: str = "market"
    synthetic: bool = False
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    def stats(self) -> dict[str, SplitStats]:
        return {"train": stats_of(self.train), "query": stats_of(self.query),
                "gallery": stats_of(self.gallery)}
