"""Peak resident memory of a call, sampled from /proc (Linux), for memory figures in benchmarks."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import Any

_PAGE = resource.getpagesize()


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except OSError:  # not Linux: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_peak(fn: Callable[[], Any], interval: float = 0.002) -> tuple[Any, float, int]:
    """Run ``fn``; return (result, seconds, peak RSS above the RSS at the start, in bytes)."""
    baseline = current_rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], current_rss_bytes())
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
    peak[0] = max(peak[0], current_rss_bytes())
    return result, elapsed, peak[0] - baseline
