"""2D instance masks per frame: SAM2 automatic masks, ground-truth instance images, or SAM-like noisy GT.

Every segmenter returns ``FrameMasks`` (core/mask_postprocess.py): disjoint
masks, a label map and the count of dropped proposals per reason. SAM2 and
``gt_noisy`` produce overlapping proposals that go through OVO-style mask NMS
and ranking; ``gt`` is an exact partition already.

``gt_noisy`` (``NoiseConfig``) makes the errors SAM2's automatic masks make,
from the ground-truth instance image, deterministically from a seed and the
frame stamp: borders dilated or eroded, objects split into parts emitted
beside the whole, coarse masks over two neighbouring objects, missed masks,
spurious blobs, shuffled order. It is how tracking is measured as it will be
met in the field without SAM2 weights.
"""
from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from typing import Optional, Protocol

import cv2
import numpy as np

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.mask_postprocess import FrameMasks, MaskProposals, disk, from_partition, postprocess

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


SEGMENTERS = ("sam2", "gt", "gt_noisy")
GT_SEGMENTERS = ("gt", "gt_noisy")       # read the recording's instance image


@dataclass
class NoiseConfig:
    """Errors of ``gt_noisy``; each is off at 0. Defaults: the acceptance strength of issue 12."""
    seed: int = 0
    border_px: int = 2                 # every mask dilated or eroded by a random 0..border_px pixels
    split_fraction: float = 0.5        # share of instances that also come split into parts (beside the whole)
    split_parts: int = 2               # pieces per split (cuts through the mask's centre at random angles)
    join_fraction: float = 0.25        # share of instances that a coarse mask joins to a touching neighbour ...
    join_frame_prob: float = 0.3       # ... in this share of the frames where both are visible
    join_max_area: float = 0.2         # only masks under this share of the image join (objects, not the room)
    miss_prob: float = 0.05            # each instance's masks are missing from a frame with this probability
    spurious_per_frame: float = 1.0    # mean number of small random blobs per frame
    shuffle: bool = True               # emit proposals in random order


@dataclass
class SegmenterConfig:
    name: str = "sam2"                 # sam2 | gt | gt_noisy
    # post-processing of every segmenter's masks (core/mask_postprocess.py; OVO's NMS + label map)
    min_mask_pixels: int = 100         # proposals and their leftovers after ranking smaller than this are dropped
    max_masks: int = 256               # per frame, best scores first; the rest is counted ("cap"), never silent
    min_score: float = 0.0             # proposals scoring lower are dropped (SAM2: predicted IoU x stability)
    nms_iou_thresh: float = 0.8        # OVO's nms_iou_th: near-duplicates of a better mask go
    nms_inner_thresh: float = 0.5      # OVO's nms_inner_th: parts nested in a kept whole go (0 = off)
    noise: NoiseConfig = field(default_factory=NoiseConfig)   # gt_noisy only
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
    def segment(self, frame: RGBDFrame) -> FrameMasks: ...


def _instance_image(frame: RGBDFrame, name: str) -> np.ndarray:
    if frame.gt_instances is None:
        raise SegmenterError(f"segmenter {name!r} needs an instance-id image with every frame "
                             "(topic /camera/instances/image_raw); use segmenter 'sam2' for plain RGB-D")
    return frame.gt_instances


class GTSegmenter:
    """Masks from the frame's ground-truth instance image (how the paper isolates fusion)."""

    def __init__(self, cfg: SegmenterConfig):
        self.cfg = cfg

    def segment(self, frame: RGBDFrame) -> FrameMasks:
        return from_partition(_instance_image(frame, "gt"), self.cfg.min_mask_pixels, self.cfg.max_masks)


def _stable_uniform(seed: int, key: int, what: str) -> float:
    """A per-instance draw that does not change from frame to frame."""
    return float(np.random.default_rng([seed, key & 0xFFFFFFFF, zlib.crc32(what.encode())]).random())


class NoisyGTSegmenter:
    """SAM-like overlapping proposals from the ground-truth instance image (see ``NoiseConfig``).

    Scores imitate SAM2's (predicted IoU x stability): wholes 0.80-1.00,
    parts 0.75-0.98, coarse joins 0.75-0.95, spurious blobs 0.60-0.90, so the
    post-processing's ranking sometimes prefers a part or a coarse mask, as it
    does with SAM2.
    """

    def __init__(self, cfg: SegmenterConfig):
        self.cfg = cfg
        self.noise = cfg.noise

    def proposals(self, frame: RGBDFrame) -> MaskProposals:
        n = self.noise
        ids_img = _instance_image(frame, "gt_noisy")
        h, w = ids_img.shape
        rng = np.random.default_rng([n.seed, frame.stamp_ns & 0xFFFFFFFF, (frame.stamp_ns >> 32) & 0xFFFFFFFF])
        ids = [int(i) for i in np.unique(ids_img) if i > 0]
        ids = [i for i in ids if rng.random() >= n.miss_prob]
        wholes = {i: ids_img == i for i in ids}
        masks, scores = [], []

        def emit(mask: np.ndarray, lo: float, hi: float) -> None:
            if mask.any():
                masks.append(self._border(mask, rng))
                scores.append(rng.uniform(lo, hi))

        for i, m in wholes.items():
            emit(m, 0.80, 1.00)
            if n.split_parts > 1 and _stable_uniform(n.seed, i, "split") < n.split_fraction:
                for part in self._split(m, rng):
                    emit(part, 0.75, 0.98)
        small = [i for i, m in wholes.items() if m.sum() < n.join_max_area * h * w]
        for i in small:
            if _stable_uniform(n.seed, i, "join") >= n.join_fraction or rng.random() >= n.join_frame_prob:
                continue
            near = cv2.dilate(wholes[i].astype(np.uint8), disk(2)).astype(bool)
            touching = [j for j in small if j != i and (near & wholes[j]).any()]
            if touching:
                j = touching[int(rng.integers(len(touching)))]
                emit(wholes[i] | wholes[j], 0.75, 0.95)
        for _ in range(rng.poisson(n.spurious_per_frame) if n.spurious_per_frame > 0 else 0):
            emit(self._blob(h, w, rng), 0.60, 0.90)
        if not masks:
            return MaskProposals.empty(h, w)
        order = rng.permutation(len(masks)) if n.shuffle else np.arange(len(masks))
        return MaskProposals(np.stack(masks)[order], np.asarray(scores)[order])

    def segment(self, frame: RGBDFrame) -> FrameMasks:
        return postprocess(self.proposals(frame), self.cfg)

    def _border(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        r = int(rng.integers(-self.noise.border_px, self.noise.border_px + 1)) if self.noise.border_px > 0 else 0
        if r == 0:
            return mask
        op = cv2.dilate if r > 0 else cv2.erode
        return op(mask.astype(np.uint8), disk(abs(r))).astype(bool)

    def _split(self, mask: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Pieces of the mask cut by lines through its centre (an object segmented into parts)."""
        rows, cols = np.nonzero(mask)
        if len(rows) == 0:
            return []
        cy, cx = rows.mean(), cols.mean()
        k = self.noise.split_parts
        angle = np.arctan2(rows - cy, cols - cx)
        start = rng.uniform(0, 2 * np.pi)
        sector = (((angle - start) % (2 * np.pi)) / (2 * np.pi / k)).astype(int)
        out = []
        for s_ in range(k):
            part = np.zeros_like(mask)
            sel = sector == s_
            part[rows[sel], cols[sel]] = True
            out.append(part)
        return out

    @staticmethod
    def _blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """An ellipse of 0.2-1 % of the image anywhere: a spurious mask on whatever lies there."""
        area = rng.uniform(0.002, 0.01) * h * w
        a = np.sqrt(area / np.pi) * rng.uniform(0.6, 1.6)
        b = area / (np.pi * a)
        img = np.zeros((h, w), np.uint8)
        cv2.ellipse(img, (int(rng.integers(w)), int(rng.integers(h))), (max(1, int(a)), max(1, int(b))),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return img.astype(bool)


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
            with torch.random.fork_rng(devices=[]):   # random weights: the same model in every process and test order
                torch.manual_seed(0)
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

    def proposals(self, frame: RGBDFrame) -> MaskProposals:
        import torch

        with torch.inference_mode():
            anns = self.generator.generate(frame.rgb)
        if not anns:
            return MaskProposals.empty(frame.height, frame.width)
        # OVO ranks by stability x predicted IoU
        return MaskProposals(np.stack([a["segmentation"] for a in anns]),
                             np.array([float(a["predicted_iou"]) * float(a["stability_score"]) for a in anns]))

    def segment(self, frame: RGBDFrame) -> FrameMasks:
        return postprocess(self.proposals(frame), self.cfg)


def make_segmenter(cfg: SegmenterConfig) -> Segmenter:
    if cfg.name == "gt":
        return GTSegmenter(cfg)
    if cfg.name == "gt_noisy":
        return NoisyGTSegmenter(cfg)
    if cfg.name == "sam2":
        return SAM2Segmenter(cfg)
    raise SegmenterError(f"unknown segmenter {cfg.name!r}; choose one of {', '.join(SEGMENTERS)}")
