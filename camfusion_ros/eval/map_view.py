"""The parts of a saved map (core.map_store) that the evaluation needs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .metrics import EvalError


@dataclass
class MapView:
    xyz: np.ndarray                        # (M, 3) map points
    point_instance: np.ndarray             # (M,) int64, -1 = none
    ids: np.ndarray                        # (K,) int64 instance ids
    labels: list[Optional[str]]            # (K,) label name per instance (None = unlabelled)
    scores: np.ndarray                     # (K,) label confidence
    fused: Optional[np.ndarray] = None     # (K, D)
    view_descriptors: Optional[np.ndarray] = None  # (K, V, D)
    view_valid: Optional[np.ndarray] = None        # (K, V) bool
    meta: Optional[dict] = None


def load_map_view(map_dir: str | Path) -> MapView:
    """Map points, their instance ids, the per-instance labels (meta.json) and embeddings."""
    from camfusion_ros.core.map_store import MapFileError, load_map
    try:
        snap = load_map(map_dir)
    except MapFileError as e:
        raise EvalError(str(e)) from None
    labels = snap.labels
    if len(labels) != len(snap.ids):
        raise EvalError(f"{map_dir}/meta.json has {len(labels)} labels for {len(snap.ids)} instances")
    return MapView(
        xyz=np.asarray(snap.points, dtype=np.float64), point_instance=snap.point_instance.astype(np.int64),
        ids=snap.ids.astype(np.int64), labels=[str(s) if s else None for s in labels],
        scores=np.asarray(snap.label_scores, dtype=np.float64), fused=snap.fused,
        view_descriptors=snap.view_descriptors, view_valid=snap.view_valid.astype(bool), meta=snap.meta)
