"""OVO-style 3D instance tracking: 2D masks are associated to 3D instances by projection.

Each instance owns a voxelised point set. For a new frame the points of every
instance are projected into the image; a point *matches* a pixel when its depth
agrees with the measured depth (a depth test, so occluded points never vote).
A mask takes the instance most of its matched points belong to (the mode, as
in OVO), creates a new instance when nothing matches, and merges instances
whose visible points fall mostly inside one mask (one object tracked twice).
Several masks that take the same instance in one frame are OR-ed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.geometry import backproject, project, transform, voxel_keys


@dataclass
class TrackerConfig:
    voxel_size: float = 0.02             # metres; one map point per voxel and instance
    max_points_per_instance: int = 50000  # memory bound; a deterministic subsample is kept
    pixel_stride: int = 2                # back-project every n-th pixel in each axis (OVO: 2)
    match_distance: float = 0.05         # |measured - projected depth| for a point to match (OVO: 5 cm)
    track_min_points: int = 20           # matched points a mask needs to take an instance ...
    track_min_fraction: float = 0.3      # ... or this fraction of the mask's own points, if smaller
    new_min_points: int = 20             # valid depth points a mask needs to start an instance
    merge_fraction: float = 0.5          # merge when this share of an instance's visible points is inside another's mask
    max_depth: float = 10.0              # metres; farther readings are ignored


@dataclass
class TrackedInstance:
    id: int
    points: np.ndarray                   # (N, 3) float32, world frame
    colors: np.ndarray                   # (N, 3) uint8
    keys: np.ndarray                     # (N,) sorted voxel keys, for de-duplication
    first_seen_ns: int
    last_seen_ns: int
    observations: int = 1


@dataclass
class Observation:
    """One instance seen in one frame: its (OR-ed) mask."""
    instance_id: int
    mask: np.ndarray
    created: bool


@dataclass
class TrackResult:
    observations: list[Observation] = field(default_factory=list)
    merged: list[tuple[int, int]] = field(default_factory=list)   # (removed id, kept id)
    dropped_masks: int = 0


class InstanceTracker:
    def __init__(self, cfg: TrackerConfig | None = None):
        self.cfg = cfg or TrackerConfig()
        self.instances: dict[int, TrackedInstance] = {}
        self.next_id = 1

    # -- association -------------------------------------------------------
    def update(self, frame: RGBDFrame, masks: np.ndarray) -> TrackResult:
        cfg = self.cfg
        depth = np.where(np.isfinite(frame.depth) & (frame.depth < cfg.max_depth), frame.depth, 0).astype(np.float32)
        result = TrackResult()
        if len(masks) == 0:
            return result
        owner = np.full(depth.shape, -1, dtype=np.int32)
        areas = masks.reshape(len(masks), -1).sum(1)
        for m in np.argsort(-areas, kind="stable"):   # smaller masks paint over larger ones
            owner[masks[m]] = m
        votes, visible, ids = self._votes(frame, depth, owner, len(masks))
        own_points = np.array([self._mask_point_count(depth, mk) for mk in masks])

        assigned: dict[int, np.ndarray] = {}
        created: set[int] = set()
        for m in np.argsort(-areas, kind="stable"):
            mv = votes[m] if len(ids) else np.zeros(0)
            need = min(cfg.track_min_points, cfg.track_min_fraction * own_points[m])
            if len(mv) and mv.max() >= max(need, 1):
                best = int(np.argmax(mv))
                iid = int(ids[best])
                # other instances mostly inside this mask are the same object tracked twice
                for j in np.flatnonzero(mv >= cfg.track_min_points):
                    other = int(ids[j])
                    if j != best and mv[j] >= cfg.merge_fraction * visible[j] and other in self.instances \
                            and iid in self.instances:
                        self._merge(other, iid)
                        result.merged.append((other, iid))
                        if other in assigned:
                            assigned[iid] = assigned.get(iid, np.zeros_like(masks[m])) | assigned.pop(other)
                        created.discard(other)
            elif own_points[m] >= cfg.new_min_points:
                iid = self._create(frame.stamp_ns)
                created.add(iid)
            else:
                result.dropped_masks += 1
                continue
            iid = self._resolve(iid, result.merged)
            assigned[iid] = assigned[iid] | masks[m] if iid in assigned else masks[m].copy()

        for iid, mask in assigned.items():
            self._add_points(self.instances[iid], frame, depth, mask)
            inst = self.instances[iid]
            inst.last_seen_ns = max(inst.last_seen_ns, frame.stamp_ns)
            inst.observations += 1
            result.observations.append(Observation(iid, mask, iid in created))
        return result

    def _votes(self, frame: RGBDFrame, depth: np.ndarray, owner: np.ndarray, n_masks: int):
        """votes[m, j]: matched points of instance ids[j] inside mask m; visible[j]: all its matched points."""
        ids = np.array(sorted(self.instances), dtype=np.int64)
        if len(ids) == 0:
            return np.zeros((n_masks, 0)), np.zeros(0), ids
        pts = np.concatenate([self.instances[i].points for i in ids])
        which = np.repeat(np.arange(len(ids)), [len(self.instances[i].points) for i in ids])
        u, v, z = project(pts.astype(np.float64), frame.K, frame.T_world_cam)
        h, w = depth.shape
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        ok = (z > 0.01) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        ui, vi, z, which = ui[ok], vi[ok], z[ok], which[ok]
        d = depth[vi, ui]
        match = (d > 0) & (np.abs(d - z) < self.cfg.match_distance)
        ui, vi, which = ui[match], vi[match], which[match]
        visible = np.bincount(which, minlength=len(ids)).astype(np.float64)
        o = owner[vi, ui]
        inside = o >= 0
        votes = np.zeros((n_masks, len(ids)))
        np.add.at(votes, (o[inside], which[inside]), 1)
        return votes, visible, ids

    def _mask_point_count(self, depth: np.ndarray, mask: np.ndarray) -> int:
        s = self.cfg.pixel_stride
        return int(np.count_nonzero(mask[::s, ::s] & (depth[::s, ::s] > 0)))

    @staticmethod
    def _resolve(iid: int, merged: list[tuple[int, int]]) -> int:
        for gone, kept in merged:
            if iid == gone:
                iid = kept
        return iid

    # -- instance bookkeeping ----------------------------------------------
    def _create(self, stamp_ns: int) -> int:
        iid = self.next_id
        self.next_id += 1
        self.instances[iid] = TrackedInstance(iid, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                                              np.zeros(0, np.int64), stamp_ns, stamp_ns, 0)
        return iid

    def _merge(self, gone: int, kept: int) -> None:
        a, b = self.instances[kept], self.instances.pop(gone)
        self._append(a, b.points, b.colors)
        a.first_seen_ns = min(a.first_seen_ns, b.first_seen_ns)
        a.last_seen_ns = max(a.last_seen_ns, b.last_seen_ns)
        a.observations += b.observations

    def _add_points(self, inst: TrackedInstance, frame: RGBDFrame, depth: np.ndarray, mask: np.ndarray) -> None:
        pc, rows, cols = backproject(depth, frame.K, mask, stride=self.cfg.pixel_stride)
        if len(pc) == 0:
            return
        self._append(inst, transform(pc, frame.T_world_cam).astype(np.float32), frame.rgb[rows, cols])

    def _append(self, inst: TrackedInstance, points: np.ndarray, colors: np.ndarray) -> None:
        keys = voxel_keys(points, self.cfg.voxel_size)
        keys, first = np.unique(keys, return_index=True)
        new = ~np.isin(keys, inst.keys, assume_unique=True)
        if not new.any():
            return
        idx = first[new]
        inst.points = np.concatenate([inst.points, points[idx].astype(np.float32)])
        inst.colors = np.concatenate([inst.colors, colors[idx].astype(np.uint8)])
        inst.keys = np.concatenate([inst.keys, keys[new]])
        order = np.argsort(inst.keys, kind="stable")
        inst.points, inst.colors, inst.keys = inst.points[order], inst.colors[order], inst.keys[order]
        cap = self.cfg.max_points_per_instance
        if len(inst.keys) > cap:
            keep = np.sort(np.random.default_rng(inst.id).choice(len(inst.keys), cap, replace=False))
            inst.points, inst.colors, inst.keys = inst.points[keep], inst.colors[keep], inst.keys[keep]

    # -- queries -----------------------------------------------------------
    def point_cloud(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All instance points: (points (P,3) float32, colors (P,3) uint8, instance ids (P,) int32)."""
        ids = sorted(self.instances)
        if not ids:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32)
        pts = np.concatenate([self.instances[i].points for i in ids])
        cols = np.concatenate([self.instances[i].colors for i in ids])
        inst = np.repeat(np.array(ids, np.int32), [len(self.instances[i].points) for i in ids])
        return pts, cols, inst

    def restore(self, points: np.ndarray, colors: np.ndarray, instance_ids: np.ndarray,
                stamps: dict[int, tuple[int, int]]) -> None:
        """Rebuild instances from a saved point cloud (map loading); ``stamps`` names every instance."""
        self.instances.clear()
        for iid in sorted(set(stamps) | set(np.unique(instance_ids[instance_ids >= 0]).tolist())):
            first, last = stamps.get(int(iid), (0, 0))
            inst = TrackedInstance(int(iid), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                                   np.zeros(0, np.int64), first, last)
            sel = instance_ids == iid
            if sel.any():
                self._append(inst, points[sel], colors[sel])
            self.instances[int(iid)] = inst
        self.next_id = max([self.next_id, *[i + 1 for i in self.instances]])
