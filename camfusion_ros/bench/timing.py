"""Repeat-until-stable timing and summary statistics, shared by every benchmark."""
from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

import numpy as np


def progress(msg: str) -> None:
    """One progress line on stderr (stdout carries the JSON)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def summary(seconds: Sequence[float]) -> dict:
    """Mean / percentiles in milliseconds of a list of durations in seconds."""
    a = np.asarray(list(seconds), dtype=np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"n": int(a.size), "mean_ms": float(a.mean()), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99), "min_ms": float(a.min()), "max_ms": float(a.max())}


def repeat(fn: Callable[[], object], sync: Callable[[], None] = lambda: None, min_seconds: float = 0.3,
           min_reps: int = 3, max_reps: int = 200, warmup: int = 1) -> list[float]:
    """Call ``fn`` warmup times, then until both min_reps and min_seconds are reached; per-call seconds."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_reps and time.perf_counter() - t_start >= min_seconds:
            break
    return times

