"""Datasets: registry, parsers, verification, download and preparation, synthetic miniatures."""

from reidbench.data.records import ImageRecord, Split
from reidbench.data.registry import DATASETS, DatasetSpec, get_dataset

__all__ = ["DATASETS", "DatasetSpec", "ImageRecord", "Split", "get_dataset"]
