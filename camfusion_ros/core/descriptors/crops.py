"""Crop baselines: each mask's image crop encoded by the whole model.

Mask Crop: the mask's bounding box, background blacked out, padded to a
square (centred) and resized to the model input. BBox Crop: the bounding box
grown by a margin in pixels (context kept), resized to the model input.
Both are batched through ``encode_image``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..vlm import VisionLanguageModel
from .base import DescriptorConfig, big_enough, check_inputs, empty_result, resize, to_tensor


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y1, x1, y2, x2), end-exclusive, of a non-empty mask."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def mask_crop(img: torch.Tensor, mask: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """(1,3,size,size): the box, pixels outside the mask black, padded to a square."""
    y1, x1, y2, x2 = box
    crop = img[..., y1:y2, x1:x2] * mask[y1:y2, x1:x2].to(img.dtype)
    h, w = y2 - y1, x2 - x1
    side = max(h, w)
    square = torch.zeros((1, 3, side, side), dtype=img.dtype, device=img.device)
    oy, ox = (side - h) // 2, (side - w) // 2
    square[..., oy:oy + h, ox:ox + w] = crop
    return resize(square, size, size)


def bbox_crop(img: torch.Tensor, box: tuple[int, int, int, int], margin: int, size: int) -> torch.Tensor:
    """(1,3,size,size): the box grown by margin pixels (clipped to the image), context kept."""
    y1, x1, y2, x2 = box
    h, w = img.shape[-2:]
    y1, x1 = max(y1 - margin, 0), max(x1 - margin, 0)
    y2, x2 = min(y2 + margin, h), min(x2 + margin, w)
    return resize(img[..., y1:y2, x1:x2], size, size)


class CropEncoder:
    """Encodes mask crops, bbox crops and the whole image for one frame."""

    def __init__(self, cfg: DescriptorConfig, vlm: VisionLanguageModel):
        cfg.validate()
        self.cfg = cfg
        self.vlm = vlm
        self.dim = vlm.embed_dim
        self.model_name = vlm.model_name

    def encode(self, rgb: np.ndarray, masks: np.ndarray, kinds: tuple[str, ...]) -> tuple[dict, np.ndarray]:
        """({kind: (K,D) for the K usable masks}, usable mask indices); kinds from mask|bbox|global."""
        idx = np.flatnonzero(big_enough(masks, self.cfg.min_mask_pixels))
        out: dict[str, np.ndarray] = {}
        if idx.size == 0:
            return out, idx
        size = self.vlm.image_size
        img = to_tensor(rgb, self.vlm.device)
        with torch.inference_mode():
            boxes = [mask_bbox(masks[i]) for i in idx]
            if "mask" in kinds:
                m = torch.from_numpy(masks).to(self.vlm.device)
                crops = torch.cat([mask_crop(img, m[i], b, size) for i, b in zip(idx, boxes)])
                out["mask"] = self.vlm.encode_images(crops, self.cfg.batch_size)
            if "bbox" in kinds:
                crops = torch.cat([bbox_crop(img, b, self.cfg.bbox_margin_px, size) for b in boxes])
                out["bbox"] = self.vlm.encode_images(crops, self.cfg.batch_size)
            if "global" in kinds:
                out["global"] = self.vlm.encode_images(resize(img, size, size), 1)[0]
        return out, idx


class CropExtractor:
    """DescriptorExtractor for ``maskcrop`` (kind 'mask') and ``bboxcrop`` (kind 'bbox')."""

    def __init__(self, cfg: DescriptorConfig, vlm: VisionLanguageModel, kind: str):
        self.encoder = CropEncoder(cfg, vlm)
        self.kind = kind
        self.dim = self.encoder.dim
        self.model_name = self.encoder.model_name

    def extract(self, rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, masks = check_inputs(rgb, masks)
        desc, keep = empty_result(masks.shape[0], self.dim)
        enc, idx = self.encoder.encode(rgb, masks, (self.kind,))
        if idx.size:
            desc[idx] = enc[self.kind]
            keep[idx] = True
        return desc, keep
