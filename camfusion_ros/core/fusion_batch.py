"""The batch contract every fuser shares: ``fuse(views (B, K, D), valid (B, K)) -> (B, D)`` L2-normalised.

Its own module so that ``core.fusion`` (which chooses fusers by name) and ``core.camfusion.fuser`` (one of them)
both import it and neither imports the other's module at load time.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Fuser(Protocol):
    name: str

    def fuse(self, views: np.ndarray, valid: np.ndarray) -> np.ndarray: ...


class FusionError(ValueError):
    """Unknown fuser name or inputs of the wrong shape."""


def normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def check_batch(views: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    views = np.asarray(views, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if views.ndim != 3 or valid.shape != views.shape[:2]:
        raise FusionError(f"views must be (B, K, D) with valid (B, K); got {views.shape} and {valid.shape}")
    return views, valid
