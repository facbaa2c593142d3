"""Fusion of an instance's per-view descriptors into one embedding.

All fusers work on a padded batch, so every instance that needs re-fusing goes
through in one call (CAMFusion runs it as one GPU batch):
``fuse(views (B, K, D) float32, valid (B, K) bool) -> (B, D)`` L2-normalised.
An instance with no valid view gets a zero row.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# the batch contract lives in fusion_batch so the CAMFusion fuser can share it without importing this module
from camfusion_ros.core.fusion_batch import Fuser, FusionError, check_batch, normalize  # noqa: F401 (re-exported)


class AveragePooling:
    """Mean of the normalised valid views, renormalised."""

    name = "avg"

    def fuse(self, views: np.ndarray, valid: np.ndarray) -> np.ndarray:
        views, valid = check_batch(views, valid)
        return normalize(np.where(valid[..., None], normalize(views), 0.0).sum(1))


class Medoid:
    """The valid view minimising the summed distance to the other valid views (OVO's fusion)."""

    def __init__(self, metric: str):
        if metric not in ("l1", "cos"):
            raise FusionError(f"unknown medoid metric {metric!r}")
        self.metric = metric
        self.name = f"{metric}medoid"

    def fuse(self, views: np.ndarray, valid: np.ndarray) -> np.ndarray:
        views, valid = check_batch(views, valid)
        views = normalize(views)
        B, K, D = views.shape
        step = max(1, (1 << 25) // max(1, K * K * D))      # bounds the (b, K, K, D) L1 intermediate
        best = np.concatenate([self._best(views[i:i + step], valid[i:i + step]) for i in range(0, B, step)]) \
            if B else np.zeros(0, np.int64)
        out = views[np.arange(B), best] if B else np.zeros((0, D), np.float32)
        out[~valid.any(1)] = 0.0
        return out.astype(np.float32)

    def _best(self, views: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self.metric == "l1":
            dist = np.abs(views[:, :, None, :] - views[:, None, :, :]).sum(-1)
        else:
            dist = 1.0 - np.einsum("bkd,bld->bkl", views, views)
        pair_ok = valid[:, :, None] & valid[:, None, :]
        cost = np.where(pair_ok, dist, 0.0).sum(-1)
        cost = np.where(valid, cost, np.inf)
        return np.argmin(cost, axis=1)


def _camfusion(**kwargs) -> Fuser:
    from camfusion_ros.core.camfusion.fuser import CamFusionFuser

    return CamFusionFuser(**kwargs)


FUSERS: dict[str, Callable[..., Fuser]] = {
    "avg": lambda **kw: AveragePooling(),
    "l1medoid": lambda **kw: Medoid("l1"),
    "cosmedoid": lambda **kw: Medoid("cos"),
    "camfusion": _camfusion,
}


def make_fuser(name: str, **kwargs) -> Fuser:
    """A fuser by name; ``camfusion`` needs ``checkpoint=`` (and takes ``device=``)."""
    try:
        factory = FUSERS[name]
    except KeyError:
        raise FusionError(f"unknown fusion {name!r}; choose one of {', '.join(FUSERS)}") from None
    return factory(**kwargs)
