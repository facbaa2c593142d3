"""What every descriptor extractor shares: its config, its contract, input checks.

Contract: ``extract(rgb uint8 (H,W,3), masks bool (M,H,W)) -> (desc float32
(M,D) L2-normalised, keep bool (M,))``; a mask that leaves no weight gets
``keep = False`` and a zero row, so callers can index rows by mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("textregion", "maskcrop", "bboxcrop", "hovsg", "hovsg_fixed")


class DescriptorError(ValueError):
    """Bad extractor input or configuration, or a model the method cannot use."""


@dataclass
class DescriptorConfig:
    method: str = "textregion"  # textregion | maskcrop | bboxcrop | hovsg | hovsg_fixed
    # TextRegion: multi-resolution tiling (paper setting: long side <= 2016, short <= 672)
    tiling: bool = True  # False: one forward pass on the whole image resized to the model input
    max_long_side: int = 2016
    max_short_side: int = 672
    global_token_weight: float = 0.5  # weight of the upsampled whole-image tokens added to each tile's
    remove_global_patches: bool = True
    global_patch_threshold: float = 0.07
    pool_mlp: bool = False  # TextRegion skips the attention-pool head's MLP residual; True runs it
    # all methods
    batch_size: int = 64  # masks pooled / crops encoded per batch
    min_mask_pixels: int = 1  # smaller masks get keep=False
    # crops / HOV-SG
    bbox_margin_px: int = 50  # context kept around a BBox Crop (HOV-SG's margin)
    hovsg_mask_weight: float = 0.4418  # local = normalise(w mask-crop + (1 - w) bbox-crop)
    hovsg_fixed_global_weight: float = 0.1  # hovsg_fixed: w_global for every mask

    def validate(self) -> None:
        if self.method not in METHODS:
            raise DescriptorError(f"unknown descriptor method {self.method!r}; use one of {METHODS}")
        if self.batch_size < 1:
            raise DescriptorError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_long_side < 1 or self.max_short_side < 1:
            raise DescriptorError("max_long_side and max_short_side must be positive")
        if self.min_mask_pixels < 0 or self.bbox_margin_px < 0:
            raise DescriptorError("min_mask_pixels and bbox_margin_px must be >= 0")
        for name in ("hovsg_mask_weight", "hovsg_fixed_global_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DescriptorError(f"{name} must lie in [0, 1]")


class DescriptorExtractor(Protocol):
    dim: int
    model_name: str

    def extract(self, rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_inputs(rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (rgb uint8 (H,W,3), masks bool (M,H,W)); raises DescriptorError."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DescriptorError(f"rgb must be uint8 (H, W, 3); got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DescriptorError(f"rgb is empty: {rgb.shape}")
    masks = np.asarray(masks)
    if masks.size == 0:
        return rgb, np.zeros((0,) + rgb.shape[:2], dtype=bool)
    if masks.ndim != 3:
        raise DescriptorError(f"masks must be (M, H, W); got shape {masks.shape}")
    if masks.shape[1:] != rgb.shape[:2]:
        raise DescriptorError(f"masks are {masks.shape[1]}x{masks.shape[2]} but the image is "
                              f"{rgb.shape[0]}x{rgb.shape[1]}")
    if masks.dtype != bool:
        if not (np.issubdtype(masks.dtype, np.integer) or np.issubdtype(masks.dtype, np.floating)):
            raise DescriptorError(f"masks must be bool; got {masks.dtype}")
        masks = masks != 0
    return rgb, masks


def empty_result(m: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((m, dim), np.float32), np.zeros((m,), bool)


def big_enough(masks: np.ndarray, min_pixels: int) -> np.ndarray:
    area = masks.reshape(masks.shape[0], int(np.prod(masks.shape[1:]))).sum(1)
    return (area >= max(min_pixels, 1))


def to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (H,W,3) -> float (1,3,H,W) in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of (B,C,H,W), antialiased when shrinking."""
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
