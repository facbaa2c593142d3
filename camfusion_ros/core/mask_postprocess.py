"""Per-frame post-processing of automatic masks: from overlapping proposals to one label map.

SAM2's automatic masks (and the ``gt_noisy`` segmenter that imitates them)
overlap: a whole object, its parts, a coarse mask over two objects, all at
once. The tracker needs one owner per pixel. Following OVO (its
``mask_nms`` + ``mask2segmap``):

1. proposals under ``min_score`` or ``min_mask_pixels`` go;
2. mask NMS, best score first: a mask whose IoU with a better one exceeds
   ``nms_iou_thresh`` goes (a near-duplicate), and so does a mask lying for
   the most part inside another (>= 85 % of it inside, < 50 % of the other
   covered, inner score above ``nms_inner_thresh``): a nested part of a kept
   whole, whichever of the two scored better;
3. the survivors paint a label map, best score first; a later mask keeps only
   the pixels nobody took; what is left of it under ``min_mask_pixels`` goes;
4. at most ``max_masks`` masks (the best scores) are kept.

Every dropped proposal is counted under its reason (``DROP_REASONS``), so a
caller can show where masks went; nothing is dropped silently.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from scipy import sparse

DROP_REASONS = ("low_score", "small", "nms_duplicate", "nms_nested", "overlap_leftover", "cap")


@dataclass
class MaskProposals:
    """Overlapping masks as a segmenter returns them, with a quality score each (higher = better)."""
    masks: np.ndarray                  # (M, H, W) bool
    scores: np.ndarray                 # (M,) float; SAM2: predicted IoU x stability score

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.masks.ndim != 3 or len(self.scores) != len(self.masks):
            raise ValueError(f"proposals need masks (M, H, W) and M scores, got {self.masks.shape} "
                             f"and {self.scores.shape}")

    @classmethod
    def empty(cls, height: int, width: int) -> "MaskProposals":
        return cls(np.zeros((0, height, width), bool), np.zeros(0))


@dataclass
class FrameMasks:
    """Non-overlapping masks of one frame: ``label_map[v, u]`` = index into ``masks`` or -1."""
    label_map: np.ndarray              # (H, W) int32
    masks: np.ndarray                  # (N, H, W) bool, pairwise disjoint
    scores: np.ndarray                 # (N,)
    proposals: int = 0                 # masks the segmenter returned
    dropped: collections.Counter = field(default_factory=collections.Counter)
    wholes: np.ndarray | None = None   # (K, H, W) the NMS survivors before ranking cut them; None = ``masks``

    def survivors(self) -> np.ndarray:
        """Full extents of the surviving proposals (a part that won its pixels still lies inside its whole)."""
        return self.masks if self.wholes is None else self.wholes

    def __len__(self) -> int:
        return len(self.masks)


def disk(radius: int) -> np.ndarray:
    """A round structuring element for growing or shrinking masks by ``radius`` pixels (OpenCV)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class PostprocessSettings(Protocol):
    """The fields of ``SegmenterConfig`` that post-processing reads (defaults live there)."""
    min_score: float
    min_mask_pixels: int
    nms_iou_thresh: float
    nms_inner_thresh: float
    max_masks: int


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_thresh: float, inner_thresh: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept (best score first) and the reason code per mask (0 kept, 1 duplicate, 2 nested)."""
    n = len(masks)
    order = np.argsort(-scores, kind="stable")
    flat = sparse.csr_matrix(masks[order].reshape(n, -1), dtype=np.float64)   # sparse: M x H*W stays small
    area = np.asarray(flat.sum(1)).ravel()
    inter = (flat @ flat.T).toarray()                       # pairwise intersections
    union = area[:, None] + area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    frac = np.divide(inter, area[:, None], out=np.zeros_like(inter), where=area[:, None] > 0)  # share of row inside col
    reason = np.zeros(n, np.int8)
    upper = np.triu(np.ones((n, n), bool), 1)               # (i, j): i scored better than j
    dup = (iou > iou_thresh) & upper
    reason[dup.any(0)] = 1
    if inner_thresh > 0:
        # j nested in i: >= 85 % of j inside i while j covers < 50 % of i (OVO's test)
        nested = (frac.T >= 0.85) & (frac < 0.5)            # [i, j]: j inside i
        inner = 1.0 - frac.T * frac                         # 1 - (inter/area_j) * (inter/area_i)
        gone = nested & (inner > 1.0 - inner_thresh) & ~np.eye(n, dtype=bool)
        reason[(gone.any(0)) & (reason == 0)] = 2
    out = np.zeros(n, np.int8)
    out[order] = reason
    return order[reason == 0], out


def postprocess(proposals: MaskProposals, cfg: PostprocessSettings) -> FrameMasks:
    """Overlapping proposals -> disjoint masks plus per-reason drop counts."""
    masks, scores = proposals.masks, proposals.scores
    h, w = masks.shape[1:]
    dropped: collections.Counter = collections.Counter()
    area = masks.reshape(len(masks), h * w).sum(1)
    low = scores < cfg.min_score
    small = ~low & (area < cfg.min_mask_pixels)
    dropped["low_score"] += int(low.sum())
    dropped["small"] += int(small.sum())
    idx = np.flatnonzero(~low & ~small)
    if len(idx):
        kept, reason = mask_nms(masks[idx], scores[idx], cfg.nms_iou_thresh, cfg.nms_inner_thresh)
        dropped["nms_duplicate"] += int((reason == 1).sum())
        dropped["nms_nested"] += int((reason == 2).sum())
        idx = idx[kept]
    label = np.full((h, w), -1, np.int32)
    out_masks, out_scores = [], []
    for i in idx:
        free = masks[i] & (label < 0)
        if free.sum() < cfg.min_mask_pixels:
            dropped["overlap_leftover"] += 1
            continue
        if len(out_masks) >= cfg.max_masks:
            dropped["cap"] += 1
            continue
        label[free] = len(out_masks)
        out_masks.append(free)
        out_scores.append(scores[i])
    stacked = np.stack(out_masks) if out_masks else np.zeros((0, h, w), bool)
    return FrameMasks(label, stacked, np.asarray(out_scores, np.float64), len(masks),
                      collections.Counter({k: v for k, v in dropped.items() if v}), masks[idx])


def from_partition(instance_image: np.ndarray, min_pixels: int, max_masks: int) -> FrameMasks:
    """Exact masks from an instance-id image (0 = none): already disjoint, only size and cap apply."""
    ids, counts = np.unique(instance_image, return_counts=True)
    ids, counts = ids[ids > 0], counts[ids > 0]
    order = np.argsort(-counts, kind="stable")
    ids, counts = ids[order], counts[order]
    dropped: collections.Counter = collections.Counter()
    small = counts < min_pixels
    if small.any():
        dropped["small"] = int(small.sum())
    kept = ids[~small]
    if len(kept) > max_masks:
        dropped["cap"] = len(kept) - max_masks
        kept = kept[:max_masks]
    masks = instance_image[None] == kept[:, None, None]
    label = np.full(instance_image.shape, -1, np.int32)
    for k, m in enumerate(masks):
        label[m] = k
    return FrameMasks(label, masks, np.ones(len(kept)), len(ids), dropped)
