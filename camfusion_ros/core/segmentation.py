"""2D instance masks per frame: SAM2 automatic masks, or ground-truth instance images.

Both return a bool array (M, H, W); tiny masks are dropped and at most
``max_masks`` (the largest) are kept, so one cluttered frame cannot flood the
tracker and the descriptor batch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np

from camfusion_ros.core.frames import RGBDFrame

log = logging.getLogger(__name__)

SAM2_CONFIGS = {
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt"),
}
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/{}"


class SegmenterError(ValueError):
    """A segmenter that cannot run (missing weights, no GT image, bad config)."""


@dataclass
class SegmenterConfig:
    name: str = "sam2"                 # sam2 | gt
    min_mask_pixels: int = 100         # masks smaller than this are dropped
    max_masks: int = 64                # keep the largest masks of a frame
    # SAM2 (TextRegion's settings by default)
    sam2_model: str = "large"          # tiny | small | base_plus | large
    sam2_checkpoint: str = ""          # path to the .pt; "random" = untrained weights (tests)
    points_per_side: int = 16
    pred_iou_thresh: float = 0.6
    stability_score_thresh: float = 0.6
    box_nms_thresh: float = 0.9
    multimask_output: bool = True
    device: Optional[str] = None


class Segmenter(Protocol):
    def segment(self, frame: RGBDFrame) -> np.ndarray: ...


def filter_masks(masks: np.ndarray, min_pixels: int, max_masks: int) -> np.ndarray:
    """Drop masks under min_pixels; keep the max_masks largest, largest first."""
    if masks.size == 0:
        return masks.reshape(0, *masks.shape[1:]).astype(bool)
    area = masks.reshape(len(masks), -1).sum(1)
    order = np.argsort(-area, kind="stable")
    order = order[area[order] >= min_pixels][:max_masks]
    return masks[order].astype(bool)


class GTSegmenter:
    """Masks from the frame's ground-truth instance image (how the paper isolates fusion)."""

    def __init__(self, cfg: SegmenterConfig):
        self.cfg = cfg

    def segment(self, frame: RGBDFrame) -> np.ndarray:
        ids = frame.gt_instances
        if ids is None:
            raise SegmenterError("segmenter 'gt' needs an instance-id image with every frame "
                                 "(topic /camera/instances/image_raw); use segmenter 'sam2' for plain RGB-D")
        labels = np.unique(ids)
        labels = labels[labels > 0]
        masks = ids[None, :, :] == labels[:, None, None]
        return filter_masks(masks, self.cfg.min_mask_pixels, self.cfg.max_masks)


def resolve_sam2_checkpoint(cfg: SegmenterConfig) -> Optional[str]:
    """The checkpoint path, None for random weights; a clear error for a missing file."""
    if cfg.sam2_model not in SAM2_CONFIGS:
        raise SegmenterError(f"unknown sam2_model {cfg.sam2_model!r}; choose one of {', '.join(SAM2_CONFIGS)}")
    fname = SAM2_CONFIGS[cfg.sam2_model][1]
    if cfg.sam2_checkpoint == "random":
        return None
    path = cfg.sam2_checkpoint or os.path.join(os.path.expanduser("~/.cache/camfusion_ros/sam2"), fname)
    if not os.path.isfile(path):
        raise SegmenterError(
            f"SAM2 checkpoint not found: {path} (download {SAM2_URL.format(fname)} and pass its path as "
            f"segmenter.sam2_checkpoint, or 'random' for untrained weights)")
    return path


class SAM2Segmenter:
    """SAM2.1 automatic mask generation (sam2's own SAM2AutomaticMaskGenerator)."""

    def __init__(self, cfg: SegmenterConfig):
        import torch
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2

        self.cfg = cfg
        ckpt = resolve_sam2_checkpoint(cfg)
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if ckpt is None:
            log.warning("SAM2 %s runs with RANDOM weights: masks are meaningless (tests only)", cfg.sam2_model)
        try:
            model = build_sam2(SAM2_CONFIGS[cfg.sam2_model][0], ckpt_path=ckpt, device=device)
        except (RuntimeError, KeyError) as e:
            raise SegmenterError(f"SAM2 checkpoint {ckpt} does not fit {cfg.sam2_model}: {e}") from None
        self.weights_are_random = ckpt is None
        self.generator = SAM2AutomaticMaskGenerator(
            model,
            points_per_side=cfg.points_per_side,
            pred_iou_thresh=cfg.pred_iou_thresh,
            stability_score_thresh=cfg.stability_score_thresh,
            box_nms_thresh=cfg.box_nms_thresh,
            multimask_output=cfg.multimask_output,
        )

    def segment(self, frame: RGBDFrame) -> np.ndarray:
        import torch

        with torch.inference_mode():
            anns = self.generator.generate(frame.rgb)
        if not anns:
            return np.zeros((0, frame.height, frame.width), dtype=bool)
        masks = np.stack([a["segmentation"] for a in anns]).astype(bool)
        return filter_masks(masks, self.cfg.min_mask_pixels, self.cfg.max_masks)


def make_segmenter(cfg: SegmenterConfig) -> Segmenter:
    if cfg.name == "gt":
        return GTSegmenter(cfg)
    if cfg.name == "sam2":
        return SAM2Segmenter(cfg)
    raise SegmenterError(f"unknown segmenter {cfg.name!r}; choose 'sam2' or 'gt'")
