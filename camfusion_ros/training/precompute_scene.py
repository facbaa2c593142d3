"""One scene of ``camfusion-precompute``: ground-truth masks of a recording -> per-instance view descriptors.

For every frame of a recording (a bag from ``camfusion-synth`` / ``camfusion-convert``, streamed with
``core.recording.read_frames``) the ground-truth instance image gives one mask per instance; the descriptor
extractor (TextRegion on the VLM by default) turns each (image, mask) into a view descriptor. With
``augment_copies = N`` each frame is also extracted N more times after the paper's augmentation (random crop,
hue and saturation changes), each copy adding one more view per instance. Every view records its source frame
(``view_source``: the frame's index in the recording, the same for a frame and its augmented copies), so the
trainer never puts two views of one frame on both the input and the target side. Visibility = the online view
bank's score of the mask (used to pick the best views); only the ``max_views`` best views of an instance are
kept while streaming (a bounded heap per instance), so memory does not grow with the length of the recording.
"""
from __future__ import annotations

import heapq
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


class PrecomputeError(ValueError):
    """A recording or ground-truth folder that cannot be turned into shards."""


@dataclass
class AugmentConfig:
    crop_min_scale: float = 0.7  # each side keeps at least this fraction
    hue: float = 0.05  # hue shift in [-hue, hue] (fraction of a turn)
    saturation: tuple[float, float] = (0.7, 1.3)  # saturation factor range


def augment(rgb: np.ndarray, masks: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()):
    """The same random crop on image and masks, then a hue and saturation change of the image."""
    import torchvision.transforms.v2.functional as TF

    h, w = rgb.shape[:2]
    ch = max(1, int(round(h * rng.uniform(cfg.crop_min_scale, 1.0))))
    cw = max(1, int(round(w * rng.uniform(cfg.crop_min_scale, 1.0))))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    rgb = rgb[y0 : y0 + ch, x0 : x0 + cw]
    masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    img = TF.adjust_hue(img, float(rng.uniform(-cfg.hue, cfg.hue)))
    img = TF.adjust_saturation(img, float(rng.uniform(*cfg.saturation)))
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy()), np.ascontiguousarray(masks)


def scene_seed(seed: int, scene: str) -> list[int]:
    """The augmentation seed of a scene: the run's seed and the CRC-32 of the scene's name (a SeedSequence entropy),
    so a scene draws the same copies whatever its place in the list, the rank that computes it or the world size."""
    return [int(seed), zlib.crc32(scene.encode("utf-8"))]


def read_gt_classes(gt_dir: Path) -> tuple[list[str], dict[int, int], set[str]]:
    """(class names, instance id -> class id, background class names) from a gt/ folder."""
    try:
        classes = json.loads((gt_dir / "classes.json").read_text())
        inst = json.loads((gt_dir / "instances.json").read_text())
        names = list(classes["names"])
        mapping = {int(k): int(v["class_id"]) for k, v in inst.items()}
    except FileNotFoundError as e:
        raise PrecomputeError(f"ground truth incomplete: {e.filename} not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrecomputeError(f"cannot read ground truth in {gt_dir}: {e}") from None
    bad = [i for i, c in mapping.items() if not 0 <= c < len(names)]
    if bad:
        raise PrecomputeError(f"{gt_dir}/instances.json: class_id out of range for instance {bad[0]}")
    return names, mapping, set(classes.get("background", []))


def locate_recording(rec: Path, gt: Path | None = None) -> tuple[Path, Path]:
    """(bag, gt folder) of a recording folder (``rec/bag`` + ``rec/gt``) or of a bag path (gt beside it)."""
    bag = rec / "bag" if (rec / "bag").exists() else rec
    gt_dir = gt or (rec / "gt" if (rec / "gt").is_dir() else rec.parent / "gt")
    if not bag.exists():
        raise PrecomputeError(f"recording not found: {rec}")
    if not gt_dir.is_dir():
        raise PrecomputeError(f"no ground-truth folder for {rec} (looked for {gt_dir}; pass --gt)")
    return bag, gt_dir


class _BestViews:
    """The ``k`` best (visibility, arrival order) views of one instance: a min-heap whose root is the view to drop
    next (lowest visibility; among equals the latest, so the result equals a stable sort of all views)."""

    def __init__(self, k: int):
        self.k, self.heap, self.seen = k, [], 0

    def add(self, vis: float, desc: np.ndarray, source: int) -> None:
        item = (vis, -self.seen, source, desc)
        self.seen += 1
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def best_first(self) -> list[tuple[float, int, np.ndarray]]:
        return [(v, s, d) for v, _, s, d in sorted(self.heap, key=lambda t: (-t[0], -t[1]))]


def precompute_recording(
    bag: Path, gt_dir: Path, extractor, augment_copies: int = 0, max_views: int = 32, frame_stride: int = 1,
    min_pixels: int = 100, skip_background: bool = False, seed: int | Sequence[int] = 0, max_frames: int | None = None,
    aug_cfg: AugmentConfig = AugmentConfig(),
) -> dict:
    """Per instance: class id and up to ``max_views`` (highest visibility) view descriptors with their source frame.

    Returns ``class_ids`` (N,), ``descriptors`` float32 (N, V, D), ``view_valid`` (N, V), ``visibility`` (N, V),
    ``view_source`` int64 (N, V) (frame index; -1 where no view), ``class_names``, ``instance_ids``, ``frames``
    (frames read). ``seed``: the augmentation RNG's seed (an int or a SeedSequence entropy list)."""
    from camfusion_ros.core.recording import read_frames
    from camfusion_ros.core.view_bank import ViewBankConfig, visibility_score

    if max_views < 1:
        raise PrecomputeError("max_views must be >= 1")
    border_margin = ViewBankConfig().border_margin

    names, inst_class, background = read_gt_classes(gt_dir)
    rng = np.random.default_rng(seed)
    views: dict[int, _BestViews] = {}
    frames = 0
    for fi, frame in enumerate(read_frames(bag, max_frames=max_frames)):
        frames += 1
        if fi % frame_stride or frame.gt_instances is None:
            continue
        ids = [int(i) for i in np.unique(frame.gt_instances) if i != 0 and int(i) in inst_class]
        if skip_background:
            ids = [i for i in ids if names[inst_class[i]] not in background]
        if not ids:
            continue
        masks = frame.gt_instances[None] == np.asarray(ids)[:, None, None]
        # the online view bank's score, so training ranks views the way mapping does
        # (augmented copies are the same views: they keep the original's score and source frame)
        scores = np.array([visibility_score(mk, frame.depth, border_margin) for mk in masks], np.float32)
        for copy in range(augment_copies + 1):
            rgb, m = (frame.rgb, masks) if copy == 0 else augment(frame.rgb, masks, rng, aug_cfg)
            area = m.reshape(len(ids), -1).sum(1)
            ok = (area >= min_pixels) & (scores > 0)   # score 0: the mask lies in the border band
            if not ok.any():
                continue
            desc, keep = extractor.extract(rgb, m[ok])
            for iid, d, k, v in zip(np.asarray(ids)[ok], desc, keep, scores[ok]):
                if k:
                    views.setdefault(int(iid), _BestViews(max_views)).add(float(v), d.astype(np.float32), fi)
    if not views:
        raise PrecomputeError(f"{bag}: no instance mask with at least {min_pixels} pixels in any frame")
    order = sorted(views)
    v = max(len(views[i].heap) for i in order)
    dim = views[order[0]].heap[0][3].shape[0]
    desc = np.zeros((len(order), v, dim), np.float32)
    valid = np.zeros((len(order), v), bool)
    visibility = np.zeros((len(order), v), np.float32)
    source = np.full((len(order), v), -1, np.int64)
    for r, iid in enumerate(order):
        for c, (vis, src, d) in enumerate(views[iid].best_first()):
            desc[r, c], valid[r, c], visibility[r, c], source[r, c] = d, True, vis, src
    return {
        "class_ids": np.array([inst_class[i] for i in order], np.int64), "descriptors": desc, "view_valid": valid,
        "visibility": visibility, "view_source": source, "class_names": names, "instance_ids": order,
        "frames": frames,
    }
