"""How well tracking recovers the objects of a scene: recall, fragments, spurious instances.

Measured on the ground-truth surface points the camera saw (a point is seen
when it projects into some frame onto the measured depth within
``tolerance``), so surfaces no frame showed neither help nor hurt.

- Each seen GT point takes the instance of the nearest map point within
  ``radius`` (else none); IoU(g, m) counts seen GT points.
- recall: share of GT *objects* (walls, floor, ceiling excluded, as in
  ScanNet's AP) whose best map instance has IoU >= ``iou``.
- Each map instance goes to the GT instance most of its transferred points
  lie on. Instances on objects are judged: the best match of an object is
  *matched*; another instance on a matched object is a *fragment*; any other
  is *spurious*. Rates are over map instances on objects; instances on the
  room shell are counted apart (``background_instances``), and so are map
  instances with fewer than ``min_points`` map points (``small_instances``;
  ScanNet's instance evaluation skips predictions under 100 points alike).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from scipy.spatial import cKDTree

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.geometry import project

# gt_noisy settings that turn every error off, and each error alone at its default strength (None = exact GT masks)
ERRORS_OFF = dict(border_px=0, split_fraction=0.0, join_fraction=0.0, miss_prob=0.0, spurious_per_frame=0.0)
ERROR_KINDS: dict[str, Optional[dict]] = {
    "exact": None, "default": {},
    "border": {**ERRORS_OFF, "border_px": 2}, "split": {**ERRORS_OFF, "split_fraction": 0.5},
    "join": {**ERRORS_OFF, "join_fraction": 0.25}, "miss": {**ERRORS_OFF, "miss_prob": 0.05},
    "spurious": {**ERRORS_OFF, "spurious_per_frame": 1.0},
}


@dataclass
class TrackingScores:
    gt_objects: int
    map_instances: int
    object_instances: int            # map instances lying mostly on a GT object
    background_instances: int        # map instances lying mostly on walls / floor / ceiling
    small_instances: int             # map instances under min_points, not judged
    matched: int
    fragments: int
    spurious: int
    recall: float
    fragment_rate: float
    spurious_rate: float
    mean_best_iou: float

    def as_dict(self) -> dict:
        return asdict(self)


def seen_points(gt_xyz: np.ndarray, frames: Iterable[RGBDFrame], tolerance: float = 0.03) -> np.ndarray:
    """Bool (N,): GT points that at least one frame shows (projection + depth test)."""
    seen = np.zeros(len(gt_xyz), bool)
    for f in frames:
        u, v, z = project(gt_xyz, f.K, f.T_world_cam)
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        ok = (z > 0.01) & (ui >= 0) & (ui < f.width) & (vi >= 0) & (vi < f.height)
        idx = np.flatnonzero(ok & ~seen)
        d = f.depth[vi[idx], ui[idx]]
        seen[idx[np.isfinite(d) & (np.abs(d - z[idx]) < tolerance)]] = True
    return seen


def score_tracking(map_xyz: np.ndarray, map_ids: np.ndarray, gt_xyz: np.ndarray, gt_instance: np.ndarray,
                   background: set[int], radius: float = 0.05, iou: float = 0.5,
                   min_points: int = 100) -> TrackingScores:
    """Scores of a map (points + instance per point) against GT points (pass the seen ones only)."""
    sizes = dict(zip(*np.unique(map_ids, return_counts=True)))
    small = sorted(int(m) for m, c in sizes.items() if m >= 0 and c < min_points)
    keep = ~np.isin(map_ids, small)
    map_xyz, map_ids = map_xyz[keep], map_ids[keep]
    if len(map_xyz):
        d, j = cKDTree(map_xyz).query(gt_xyz)
        pred = np.where(d < radius, map_ids[j], -1)
    else:
        pred = np.full(len(gt_xyz), -1)
    gids = [int(g) for g in np.unique(gt_instance) if g > 0]
    mids = [int(m) for m in np.unique(map_ids) if m >= 0]
    gi = {g: k for k, g in enumerate(gids)}
    mi = {m: k for k, m in enumerate(mids)}
    inter = np.zeros((len(gids), len(mids)))
    both = (gt_instance > 0) & (pred >= 0)
    np.add.at(inter, ([gi[int(g)] for g in gt_instance[both]], [mi[int(m)] for m in pred[both]]), 1)
    g_size = np.array([np.count_nonzero(gt_instance == g) for g in gids], float)
    m_size = np.array([np.count_nonzero(pred == m) for m in mids], float)
    union = g_size[:, None] + m_size[None, :] - inter
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    objects = [k for k, g in enumerate(gids) if g not in background]
    best = {k: int(np.argmax(ious[k])) for k in range(len(gids)) if len(mids) and ious[k].max() >= iou}
    matched_maps = set(best.values())
    home = np.argmax(inter, axis=0) if len(gids) and len(mids) else np.zeros(len(mids), int)
    on_object = [b for b in range(len(mids)) if m_size[b] > 0 and gids[home[b]] not in background]
    n_bg = sum(1 for b in range(len(mids)) if m_size[b] > 0 and gids[home[b]] in background)
    matched = fragments = spurious = 0
    for b in on_object:
        if b in matched_maps:
            matched += 1
        elif home[b] in best:
            fragments += 1
        else:
            spurious += 1
    spurious += sum(1 for b in range(len(mids)) if m_size[b] == 0)      # seen nowhere on the GT
    n_obj = len(on_object) + sum(1 for b in range(len(mids)) if m_size[b] == 0)
    rec = [ious[k].max() if len(mids) else 0.0 for k in objects]
    return TrackingScores(
        gt_objects=len(objects), map_instances=len(mids) + len(small), object_instances=n_obj,
        background_instances=n_bg, small_instances=len(small),
        matched=matched, fragments=fragments, spurious=spurious,
        recall=float(np.mean([r >= iou for r in rec])) if objects else 1.0,
        fragment_rate=fragments / n_obj if n_obj else 0.0, spurious_rate=spurious / n_obj if n_obj else 0.0,
        mean_best_iou=float(np.mean(rec)) if objects else 1.0)


@dataclass
class TrackingScene:
    """A recording with its seen ground truth: what ``score_tracking`` needs."""
    frames: list[RGBDFrame]
    xyz: np.ndarray                  # (N, 3) seen GT points
    instance: np.ndarray             # (N,) their GT instance ids
    background: set[int]             # GT instance ids of the background classes (walls, floor, ceiling)


def load_tracking_scene(recording: str | Path) -> TrackingScene:
    """A folder with ``bag/`` and ``gt/`` (camfusion-synth, the converters) as a TrackingScene."""
    from camfusion_ros.core.recording import read_frames
    from camfusion_ros.eval.gt import load_gt

    d = Path(recording)
    frames = list(read_frames(d / "bag"))
    gt = load_gt(d / "gt")
    seen = seen_points(gt.xyz, frames)
    background = {i for i, name in gt.instances.items() if name in set(gt.background)}
    return TrackingScene(frames, gt.xyz[seen], gt.instance[seen], background)


def segmenter_for(kind: str, seed: int = 0):
    """The SegmenterConfig of an ``ERROR_KINDS`` entry, noise drawn from ``seed``."""
    from camfusion_ros.core.segmentation import NoiseConfig, SegmenterConfig

    over = ERROR_KINDS[kind]
    if over is None:
        return SegmenterConfig(name="gt")
    return SegmenterConfig(name="gt_noisy", noise=NoiseConfig(seed=seed, **over))


def run_tracking(frames: Iterable[RGBDFrame], segmenter_cfg, tracker_cfg=None):
    """Segment + track every frame; returns (tracker, segmentation seconds, tracking seconds, proposals) per frame."""
    from camfusion_ros.core.segmentation import make_segmenter
    from camfusion_ros.core.tracking import InstanceTracker

    seg, tr = make_segmenter(segmenter_cfg), InstanceTracker(tracker_cfg)
    t_seg, t_track, proposals = [], [], []
    for f in frames:
        t0 = time.perf_counter()
        masks = seg.segment(f)
        t1 = time.perf_counter()
        tr.update(f, masks)
        t_track.append(time.perf_counter() - t1)
        t_seg.append(t1 - t0)
        proposals.append(masks.proposals)
    return tr, t_seg, t_track, proposals


def score_tracker(tracker, scene: TrackingScene) -> TrackingScores:
    pts, _, ids = tracker.point_cloud()
    return score_tracking(pts, ids, scene.xyz, scene.instance, scene.background)
