"""Per-view region descriptors: TextRegion (the paper's) and the crop / HOV-SG baselines."""
from __future__ import annotations

from ..vlm import VisionLanguageModel
from .base import METHODS, DescriptorConfig, DescriptorError, DescriptorExtractor
from .crops import CropExtractor
from .hovsg import HOVSGExtractor, hovsg_blend
from .textregion import TextRegionExtractor

__all__ = ["METHODS", "DescriptorConfig", "DescriptorError", "DescriptorExtractor", "make_extractor",
           "TextRegionExtractor", "CropExtractor", "HOVSGExtractor", "hovsg_blend"]


def make_extractor(cfg: DescriptorConfig, vlm: VisionLanguageModel) -> DescriptorExtractor:
    """The extractor cfg.method names, on vlm's model."""
    cfg.validate()
    if cfg.method == "textregion":
        return TextRegionExtractor(cfg, vlm)
    if cfg.method == "maskcrop":
        return CropExtractor(cfg, vlm, "mask")
    if cfg.method == "bboxcrop":
        return CropExtractor(cfg, vlm, "bbox")
    return HOVSGExtractor(cfg, vlm, fixed=cfg.method == "hovsg_fixed")
