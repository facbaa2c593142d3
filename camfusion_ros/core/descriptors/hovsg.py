"""HOV-SG descriptors: a mask's local crops blended with the whole-image embedding.

local = normalise(0.4418 mask-crop + 0.5582 bbox-crop); the whole image's
weight per mask is the softmax over the image's masks of cos(global, local)
(or a fixed 0.1); descriptor = normalise(w global + (1 - w) local).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..vlm import VisionLanguageModel
from ..fusion import normalize
from .base import DescriptorConfig, check_inputs, empty_result
from .crops import CropEncoder


def hovsg_blend(global_emb: np.ndarray, mask_emb: np.ndarray, bbox_emb: np.ndarray,
                mask_weight: float = 0.4418, fixed_global_weight: Optional[float] = None) -> np.ndarray:
    """(M,D) blended descriptors from global (D,), mask crops (M,D) and bbox crops (M,D)."""
    g = normalize(np.asarray(global_emb, np.float32)[None])[0]
    local = normalize(mask_weight * np.asarray(mask_emb, np.float32)
                + (1.0 - mask_weight) * np.asarray(bbox_emb, np.float32))
    if fixed_global_weight is None:
        cos = local @ g
        e = np.exp(cos - cos.max())
        w = (e / e.sum())[:, None]  # softmax over the image's masks
    else:
        w = np.full((local.shape[0], 1), fixed_global_weight, np.float32)
    return normalize(w * g[None] + (1.0 - w) * local)


class HOVSGExtractor:
    """DescriptorExtractor for ``hovsg`` (softmax weights) and ``hovsg_fixed`` (w = 0.1)."""

    def __init__(self, cfg: DescriptorConfig, vlm: VisionLanguageModel, fixed: bool = False):
        self.encoder = CropEncoder(cfg, vlm)
        self.cfg = cfg
        self.fixed = fixed
        self.dim = self.encoder.dim
        self.model_name = self.encoder.model_name

    def extract(self, rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, masks = check_inputs(rgb, masks)
        desc, keep = empty_result(masks.shape[0], self.dim)
        enc, idx = self.encoder.encode(rgb, masks, ("mask", "bbox", "global"))
        if idx.size:
            desc[idx] = hovsg_blend(enc["global"], enc["mask"], enc["bbox"], self.cfg.hovsg_mask_weight,
                                    self.cfg.hovsg_fixed_global_weight if self.fixed else None)
            keep[idx] = True
        return desc, keep
