"""Carry labels from a map's points to ground-truth points by nearest neighbour."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .metrics import EvalError


def nearest_within(src_xyz: np.ndarray, dst_xyz: np.ndarray, max_distance: float) -> np.ndarray:
    """Index of the nearest source point for each destination point, -1 beyond ``max_distance``."""
    src = np.asarray(src_xyz, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst_xyz, dtype=np.float64).reshape(-1, 3)
    if not max_distance > 0:
        raise EvalError(f"transfer distance must be positive, got {max_distance}")
    if len(src) == 0 or len(dst) == 0:
        return np.full(len(dst), -1, dtype=np.int64)
    dist, idx = cKDTree(src).query(dst, k=1, distance_upper_bound=max_distance)
    idx = np.asarray(idx, dtype=np.int64)
    idx[~np.isfinite(dist)] = -1
    return idx


def transfer_labels(map_xyz: np.ndarray, map_labels: np.ndarray, gt_xyz: np.ndarray,
                    max_distance: float = 0.05) -> np.ndarray:
    """Per GT point, the label of the nearest labelled map point within ``max_distance``; -1 otherwise.

    Unlabelled map points (label < 0) are dropped first, as OVO does before its KD-tree match.
    """
    labels = np.asarray(map_labels, dtype=np.int64).reshape(-1)
    xyz = np.asarray(map_xyz, dtype=np.float64).reshape(-1, 3)
    if len(labels) != len(xyz):
        raise EvalError(f"{len(labels)} map labels for {len(xyz)} map points")
    keep = labels >= 0
    labels, xyz = labels[keep], xyz[keep]
    idx = nearest_within(xyz, gt_xyz, max_distance)
    out = np.full(len(idx), -1, dtype=np.int64)
    hit = idx >= 0
    out[hit] = labels[idx[hit]]
    return out
