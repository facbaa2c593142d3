"""OVO-style 3D instance tracking: 2D masks are associated to 3D instances by projection.

The map is one voxelised point cloud in which every point belongs to exactly
one instance (as in OVO, where each map point carries one instance id). Per
keyframe, with the frame's disjoint masks (``FrameMasks``):

1. **Regions.** Each mask is eroded by ``mask_erosion_px`` and loses its
   depth-edge pixels (3x3 depth range above ``depth_edge_rel`` of the depth),
   then splits into its connected pieces. A mask border that spills onto the
   wall behind an object never reaches the map, and a coarse mask over two
   objects at different depths becomes two regions.
2. **Votes.** Map points are projected into the frame; a point matches when
   its depth agrees with the measured depth within ``match_distance`` (a
   depth test, so occluded points never vote). Each region counts the matched
   points of every instance inside it.
3. **Association (OVO).** A region with at least ``track_min_points`` matched
   points (or ``track_min_fraction`` of its points, for small objects) takes
   the instance most of them belong to (the mode); else a region
   with at least ``new_min_points`` voxels that no instance owns starts a new
   instance; else it is dropped (counted as ``too_few_points``). Only voxels
   that no instance owns join an instance: points never change owner.
4. **Merging, only when safe.** Regions split an object whose mask is cut by
   an occluder or a self-occluding edge into several instances at first
   sight. Two instances that each lie for the most part (``merge_fraction``
   of their visible points) inside one mask (its full extent as proposed,
   before ranking gave some of it to a part) are one object seen in pieces,
   or two objects a coarse mask joined in that frame. The difference is
   persistence and contact: they merge only when one mask held both in at
   least ``merge_min_keyframes`` keyframes and in ``merge_min_ratio`` of the
   keyframes that saw both, their points come within ``merge_max_gap`` of
   each other (pieces of one object touch; waived when one mask held both in
   ``merge_no_contact_ratio`` of those keyframes), AND the caller's ``merge_gate`` agrees (the
   pipeline compares the instances' descriptors, OVO-like); never on one
   mask alone.

Masks whose regions go to the same instance are OR-ed into one observation.
Thresholds count voxels, so they do not depend on the image resolution.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np
from scipy.spatial import cKDTree

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.geometry import backproject, project, transform, voxel_keys
from camfusion_ros.core.mask_postprocess import FrameMasks, disk

MIN_VISIBLE = 10                                   # matched points for an instance to count as seen in a frame
MergeGate = Callable[[int, int], Optional[bool]]   # True merge, False never, None not yet decidable


@dataclass
class TrackerConfig:
    voxel_size: float = 0.02             # metres; one map point per voxel, owned by one instance
    max_points_per_instance: int = 200000  # memory bound (a room's floor at 2 cm is ~100 000); a full instance takes no new points
    pixel_stride: int = 2                # back-project every n-th pixel in each axis (OVO: 2)
    match_distance: float = 0.05         # |measured - projected depth| for a point to match (OVO: 5 cm)
    track_min_points: int = 20           # matched points a region needs to take their mode instance (OVO: 100 px) ...
    track_min_fraction: float = 0.3      # ... or this share of the region's points, if fewer (small objects)
    new_min_points: int = 20             # unowned voxels a region needs to start an instance (OVO: 100 px)
    mask_erosion_px: int = 2             # masks shrink by this many pixels before back-projection
    depth_edge_rel: float = 0.04         # 3x3 depth range above this share of the depth = depth edge (0 = off)
    merge_fraction: float = 0.7          # share of each instance's visible points inside one mask ...
    merge_min_keyframes: int = 2         # ... in this many keyframes ...
    merge_min_ratio: float = 0.4         # ... and in this share of the keyframes that saw both ...
    merge_max_gap: float = 0.1           # ... with points within this distance (metres; also groups a mask's regions),
    merge_no_contact_ratio: float = 0.8  # ... or, without contact, in this share of the keyframes: merge candidates
    merge_min_cosine: float = 0.8        # the pipeline's gate: cosine of the candidates' descriptors
    max_depth: float = 10.0              # metres; farther readings are ignored


@dataclass
class TrackedInstance:
    id: int
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
    dropped: collections.Counter = field(default_factory=collections.Counter)   # masks, per reason

    @property
    def dropped_masks(self) -> int:
        return sum(self.dropped.values())


def depth_edges(depth: np.ndarray, rel: float) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood spans more depth than ``rel`` x their depth (missing depth counts)."""
    if rel <= 0:
        return np.zeros(depth.shape, bool)
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(depth, kernel)
    lo = cv2.erode(depth, kernel)
    return (hi - lo) > rel * depth


class InstanceTracker:
    def __init__(self, cfg: TrackerConfig | None = None):
        self.cfg = cfg or TrackerConfig()
        self.instances: dict[int, TrackedInstance] = {}
        self.next_id = 1
        # the map: sorted voxel keys, one point, colour and owning instance each
        self.keys = np.zeros(0, np.int64)
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)
        self.owner = np.zeros(0, np.int32)
        self._merge_evidence: collections.Counter = collections.Counter()   # pair -> keyframes held by one mask
        self._seen_in: dict[int, set[int]] = {}                             # instance -> keyframes it was seen in
        self._keyframes = 0

    # -- association -------------------------------------------------------
    def update(self, frame: RGBDFrame, masks: FrameMasks, merge_gate: MergeGate | None = None) -> TrackResult:
        cfg = self.cfg
        depth = np.where(np.isfinite(frame.depth) & (frame.depth < cfg.max_depth), frame.depth, 0).astype(np.float32)
        result = TrackResult()
        if len(masks) == 0:
            return result
        regions, region_mask = self._regions(depth, masks)
        # back-projected once: grouping relabels regions but keeps their pixels
        pc, rows, cols = backproject(depth, frame.K, regions >= 0, stride=cfg.pixel_stride)
        pts = transform(pc, frame.T_world_cam).astype(np.float32)
        regions, region_mask = self._group_regions(pts, regions[rows, cols], regions, region_mask)
        votes, mask_votes, visible = self._votes(frame, depth, regions, masks.survivors())
        new_pts, new_keys, new_cols = self._region_points(pts, regions[rows, cols], frame.rgb[rows, cols],
                                                          len(region_mask))

        assigned: dict[int, list[int]] = collections.defaultdict(list)   # instance -> regions
        created: set[int] = set()
        for r in range(len(region_mask)):
            v = votes.get(r)
            total = sum(v.values()) + len(new_keys[r]) if v else 0
            if v and max(v.values()) >= max(MIN_VISIBLE, min(cfg.track_min_points, cfg.track_min_fraction * total)):
                iid = max(sorted(v), key=lambda i: v[i])
            elif len(new_keys[r]) >= cfg.new_min_points:
                iid = self._create(frame.stamp_ns)
                created.add(iid)
            else:
                continue
            assigned[iid].append(r)
        self._collect_merge_evidence(mask_votes, visible)
        for gone, kept in self._merges(merge_gate):
            result.merged.append((gone, kept))
            if gone in assigned:
                assigned[kept].extend(assigned.pop(gone))
            if gone in created:
                created.discard(gone)
                created.add(kept)

        used = np.zeros(len(masks), bool)
        for iid, rs in assigned.items():
            for r in rs:
                self._add_points(iid, new_pts[r], new_keys[r], new_cols[r])
                used[region_mask[r]] = True
            obs = self._observation_mask(masks, regions, rs, region_mask)
            inst = self.instances[iid]
            inst.last_seen_ns = max(inst.last_seen_ns, frame.stamp_ns)
            inst.observations += 1
            result.observations.append(Observation(iid, obs, iid in created))
        if (~used).any():
            result.dropped["too_few_points"] += int((~used).sum())
        return result

    def _regions(self, depth: np.ndarray, masks: FrameMasks) -> tuple[np.ndarray, np.ndarray]:
        """Region map (H, W) int32 (-1 = none) and the mask each region comes from."""
        cfg = self.cfg
        usable = (depth > 0) & ~depth_edges(depth, cfg.depth_edge_rel)
        regions = np.full(depth.shape, -1, np.int32)
        region_mask: list[int] = []
        kernel = disk(cfg.mask_erosion_px) if cfg.mask_erosion_px > 0 else None
        for m, mask in enumerate(masks.masks):
            core = mask.astype(np.uint8)
            if kernel is not None:
                core = cv2.erode(core, kernel)
            core &= usable
            n, lab = cv2.connectedComponents(core, connectivity=8)
            if n > 1:
                sel = lab > 0
                regions[sel] = lab[sel] - 1 + len(region_mask)
                region_mask.extend([m] * (n - 1))
        return regions, np.asarray(region_mask, np.int64)

    def _group_regions(self, pts: np.ndarray, reg: np.ndarray, regions: np.ndarray, region_mask: np.ndarray):
        """Regions of one mask whose 3D points (``pts``, region ``reg`` each) come within ``merge_max_gap``
        are one object.

        A self-occluding edge (a chair's back over its seat) cuts a mask into
        regions that still touch in 3D; a coarse mask over two objects gives
        regions far apart in depth, which stay separate.
        """
        n = len(region_mask)
        gap = self.cfg.merge_max_gap
        multi = [m for m, c in zip(*np.unique(region_mask, return_counts=True)) if c > 1] if n else []
        if not multi or gap <= 0:
            return regions, region_mask
        parent = np.arange(n)

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for m in multi:
            sel = np.flatnonzero(np.isin(reg, np.flatnonzero(region_mask == m)))
            sel = sel[:: max(1, len(sel) // 4000)]           # bounded cost on huge masks
            pairs = cKDTree(pts[sel]).query_pairs(gap, output_type="ndarray")
            ra, rb = reg[sel][pairs[:, 0]], reg[sel][pairs[:, 1]]
            for a, b in np.unique(np.stack([ra, rb], 1)[ra != rb], axis=0):
                parent[root(b)] = root(a)
        roots = np.array([root(i) for i in range(n)])
        uniq, new_index = np.unique(roots, return_inverse=True)
        lut = np.append(new_index, -1).astype(np.int32)      # -1 stays -1
        return lut[regions], region_mask[uniq]

    def _votes(self, frame: RGBDFrame, depth: np.ndarray, regions: np.ndarray, wholes: np.ndarray):
        """Matched map points per (region, instance) and per (whole proposal, instance); visible: all of them."""
        if len(self.keys) == 0:
            return {}, {}, {}
        u, v, z = project(self.points.astype(np.float64), frame.K, frame.T_world_cam)
        h, w = depth.shape
        ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        ok = (z > 0.01) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        idx = np.flatnonzero(ok)
        d = depth[vi[idx], ui[idx]]
        idx = idx[(d > 0) & (np.abs(d - z[idx]) < self.cfg.match_distance)]
        owner = self.owner[idx]
        ids, counts = np.unique(owner, return_counts=True)
        visible = dict(zip(ids.tolist(), counts.tolist()))
        per_whole: dict[int, dict[int, int]] = {}
        for k, whole in enumerate(wholes):                   # proposals overlap: one tally each
            inside = whole[vi[idx], ui[idx]]
            if inside.any():
                ids_k, counts_k = np.unique(owner[inside], return_counts=True)
                per_whole[k] = dict(zip(ids_k.tolist(), counts_k.tolist()))
        return self._tally(regions[vi[idx], ui[idx]], owner), per_whole, visible

    @staticmethod
    def _tally(where: np.ndarray, owner: np.ndarray) -> dict[int, dict[int, int]]:
        inside = where >= 0
        pair = where[inside].astype(np.int64) * (1 << 32) + owner[inside]
        pairs, counts = np.unique(pair, return_counts=True)
        out: dict[int, dict[int, int]] = collections.defaultdict(dict)
        for p, c in zip(pairs.tolist(), counts.tolist()):
            out[p >> 32][p & 0xFFFFFFFF] = c
        return out

    def _region_points(self, pts: np.ndarray, reg: np.ndarray, cols_rgb: np.ndarray, n: int):
        """Per region: world points, voxel keys and colours of the voxels no instance owns yet."""
        keys = voxel_keys(pts, self.cfg.voxel_size)
        pos = np.searchsorted(self.keys, keys)
        owned = (pos < len(self.keys)) & (self.keys[np.minimum(pos, len(self.keys) - 1)] == keys) \
            if len(self.keys) else np.zeros(len(keys), bool)
        out_p, out_k, out_c = [], [], []
        order = np.argsort(reg, kind="stable")
        bounds = np.searchsorted(reg[order], np.arange(n + 1))
        for r in range(n):
            sel = order[bounds[r]:bounds[r + 1]]
            sel = sel[~owned[sel]]
            k, first = np.unique(keys[sel], return_index=True)
            out_p.append(pts[sel][first])
            out_k.append(k)
            out_c.append(cols_rgb[sel][first])
        return out_p, out_k, out_c

    def _observation_mask(self, masks: FrameMasks, regions: np.ndarray, rs: list[int],
                          region_mask: np.ndarray) -> np.ndarray:
        """The instance's pixels: its regions grown back by the erosion radius, within their masks."""
        core = np.isin(regions, rs)
        r = self.cfg.mask_erosion_px + 1
        grown = cv2.dilate(core.astype(np.uint8), disk(r)).astype(bool)
        whole = np.zeros_like(core)
        for m in np.unique(region_mask[rs]):
            whole |= masks.masks[m]
        return (grown & whole) | core

    # -- merging -------------------------------------------------------------
    def _collect_merge_evidence(self, mask_votes: dict, visible: dict) -> None:
        """Count, per pair of instances seen together, the keyframes in which one mask holds both."""
        frac = self.cfg.merge_fraction
        together: set[tuple[int, int]] = set()
        for v in mask_votes.values():
            inside = sorted(i for i, c in v.items() if visible.get(i, 0) >= MIN_VISIBLE and c >= frac * visible[i])
            together.update((inside[a], inside[b]) for a in range(len(inside)) for b in range(a + 1, len(inside)))
        for pair in together:
            self._merge_evidence[pair] += 1
        self._keyframes += 1
        for i, c in visible.items():
            if c >= MIN_VISIBLE and i in self.instances:
                self._seen_in.setdefault(i, set()).add(self._keyframes)

    def _merges(self, gate: MergeGate | None) -> list[tuple[int, int]]:
        out = []
        for (a, b), n in sorted(self._merge_evidence.items()):
            if n < self.cfg.merge_min_keyframes or a not in self.instances or b not in self.instances:
                continue
            both = len(self._seen_in.get(a, set()) & self._seen_in.get(b, set()))
            if n < self.cfg.merge_min_ratio * both:
                continue
            if n < self.cfg.merge_no_contact_ratio * both and self.cfg.merge_max_gap > 0 and not self._adjacent(a, b):
                continue
            verdict = gate(a, b) if gate is not None else True
            if verdict is None:
                continue
            del self._merge_evidence[(a, b)]
            if not verdict:
                continue
            sizes = np.bincount(self.owner, minlength=max(a, b) + 1) if len(self.owner) else np.zeros(max(a, b) + 1)
            kept, gone = (a, b) if sizes[a] >= sizes[b] else (b, a)
            self._merge(gone, kept)
            out.append((gone, kept))
        alive = lambda p: p[0] in self.instances and p[1] in self.instances   # noqa: E731
        self._merge_evidence = collections.Counter({p: n for p, n in self._merge_evidence.items() if alive(p)})
        return out

    def _adjacent(self, a: int, b: int) -> bool:
        """Pieces of one object touch: some points of the two lie within ``merge_max_gap``."""
        pa, pb = self.points[self.owner == a], self.points[self.owner == b]
        if len(pa) == 0 or len(pb) == 0:
            return False
        small, large = (pa, pb) if len(pa) <= len(pb) else (pb, pa)
        d, _ = cKDTree(large).query(small, k=1, distance_upper_bound=self.cfg.merge_max_gap)
        return bool(np.isfinite(d).any())

    def _merge(self, gone: int, kept: int) -> None:
        a, b = self.instances[kept], self.instances.pop(gone)
        self.owner[self.owner == gone] = kept
        a.first_seen_ns = min(a.first_seen_ns, b.first_seen_ns)
        a.last_seen_ns = max(a.last_seen_ns, b.last_seen_ns)
        a.observations += b.observations
        self._seen_in.setdefault(kept, set()).update(self._seen_in.pop(gone, set()))
        self._enforce_cap(kept)

    # -- instance bookkeeping ----------------------------------------------
    def _create(self, stamp_ns: int) -> int:
        iid = self.next_id
        self.next_id += 1
        self.instances[iid] = TrackedInstance(iid, stamp_ns, stamp_ns, 0)
        return iid

    def _add_points(self, iid: int, points: np.ndarray, keys: np.ndarray, colors: np.ndarray) -> None:
        """Unowned voxels join ``iid`` (keys unique, none in the map yet), up to the per-instance cap."""
        room = self.cfg.max_points_per_instance - int(np.count_nonzero(self.owner == iid))
        if room <= 0 or len(keys) == 0:
            return
        if len(keys) > room:
            keep = np.sort(np.random.default_rng(iid).choice(len(keys), room, replace=False))
            points, keys, colors = points[keep], keys[keep], colors[keep]
        self._insert(keys, points, colors, np.full(len(keys), iid, np.int32))

    def _insert(self, keys, points, colors, owner) -> None:
        self.keys = np.concatenate([self.keys, keys])
        order = np.argsort(self.keys, kind="stable")
        self.keys = self.keys[order]
        self.points = np.concatenate([self.points, points.astype(np.float32)])[order]
        self.colors = np.concatenate([self.colors, colors.astype(np.uint8)])[order]
        self.owner = np.concatenate([self.owner, owner])[order]

    def _enforce_cap(self, iid: int) -> None:
        idx = np.flatnonzero(self.owner == iid)
        extra = len(idx) - self.cfg.max_points_per_instance
        if extra > 0:
            drop = np.random.default_rng(iid).choice(idx, extra, replace=False)
            keep = np.ones(len(self.keys), bool)
            keep[drop] = False
            self.keys, self.points, self.colors, self.owner = (
                self.keys[keep], self.points[keep], self.colors[keep], self.owner[keep])

    # -- queries -----------------------------------------------------------
    def point_cloud(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All map points grouped by instance: (points (P,3) float32, colors (P,3) uint8, instance ids (P,) int32)."""
        order = np.argsort(self.owner, kind="stable")
        return self.points[order], self.colors[order], self.owner[order].astype(np.int32)

    def instance_points(self) -> dict[int, np.ndarray]:
        """Points (N, 3) of every instance, in one pass over the map."""
        pts, _, ids = self.point_cloud()
        uniq, start = np.unique(ids, return_index=True)
        bounds = list(start) + [len(ids)]
        out = {int(i): pts[bounds[k]:bounds[k + 1]] for k, i in enumerate(uniq)}
        return {i: out.get(i, np.zeros((0, 3), np.float32)) for i in self.instances}

    def restore(self, points: np.ndarray, colors: np.ndarray, instance_ids: np.ndarray,
                stamps: dict[int, tuple[int, int]]) -> None:
        """Rebuild the map from a saved point cloud (map loading); ``stamps`` names every instance."""
        self.instances.clear()
        self._merge_evidence.clear()
        self._seen_in.clear()
        ids = set(stamps) | set(np.unique(instance_ids[instance_ids >= 0]).tolist())
        for iid in sorted(ids):
            first, last = stamps.get(int(iid), (0, 0))
            self.instances[int(iid)] = TrackedInstance(int(iid), first, last)
        sel = instance_ids >= 0
        pts = points[sel].astype(np.float32)
        keys, first = np.unique(voxel_keys(pts, self.cfg.voxel_size), return_index=True)   # one owner per voxel
        self.keys, self.points = keys, pts[first]
        self.colors = colors[sel][first].astype(np.uint8)
        self.owner = instance_ids[sel][first].astype(np.int32)
        self.next_id = max([self.next_id, *[i + 1 for i in self.instances]])
