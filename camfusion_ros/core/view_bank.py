"""The best K views of one instance, ranked by a visibility score.

A descriptor is worth computing only for a view that enters the bank, so the
pipeline asks ``accepts(score)`` first and extracts descriptors for those masks
only (OVO computes descriptors for top-k keyframes only, too).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ViewBankConfig:
    max_views: int = 5                 # K: the paper fuses the 5 best views
    border_margin: int = 10            # pixels; mask pixels this close to the border count as cut off


@dataclass(eq=False)   # identity, not value: descriptors are arrays
class View:
    score: float
    descriptor: np.ndarray            # (D,) float32, normalised
    stamp_ns: int
    frame_index: int
    bbox: tuple[int, int, int, int]   # x0, y0, x1, y1 of the mask in its image


def visibility_score(mask: np.ndarray, depth: np.ndarray, border_margin: int) -> float:
    """Mask area fraction x valid-depth fraction x fraction of the mask away from the border.

    Large, fully measured, uncut views score highest; a view clipped by the
    image border is likely partial and scores lower.
    """
    h, w = mask.shape
    area = int(mask.sum())
    if area == 0:
        return 0.0
    d = depth[mask]
    valid = float(np.count_nonzero(np.isfinite(d) & (d > 0))) / area
    m = border_margin
    inner = int(mask[m:h - m, m:w - m].sum()) if h > 2 * m and w > 2 * m else 0
    return (area / (h * w)) * valid * (inner / area)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return (0, 0, 0, 0)
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@dataclass
class ViewBank:
    max_views: int = 5
    views: list[View] = field(default_factory=list)

    def accepts(self, score: float) -> bool:
        return len(self.views) < self.max_views or score > min(v.score for v in self.views)

    def add(self, view: View) -> bool:
        """Insert if among the best K; the worst view goes. Returns whether the bank changed."""
        if not self.accepts(view.score):
            return False
        self.views.append(view)
        self.views.sort(key=lambda v: -v.score)
        del self.views[self.max_views:]
        return any(v is view for v in self.views)

    def merge(self, other: "ViewBank") -> bool:
        """Keep the best K of both banks (instance merges)."""
        before = [id(v) for v in self.views]
        self.views = sorted(self.views + other.views, key=lambda v: -v.score)[: self.max_views]
        return [id(v) for v in self.views] != before

    def descriptors(self) -> np.ndarray:
        if not self.views:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([v.descriptor for v in self.views]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.views)
