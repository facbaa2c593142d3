"""A transform buffer with tf2's lookup semantics, in numpy/scipy (no ROS).

Robots publish the camera pose as a tree of transforms on ``/tf`` and
``/tf_static`` (``map -> odom -> base_link -> camera_*_optical_frame``), not as
one pose topic. ``tf2_ros`` (which answers "where was frame A in frame B at
time t") is not installable from pip, and the offline tools read bags without
ROS at all, so this module re-implements the part of tf2 the mapping needs,
with the same conventions, so a pose looked up here equals tf2's:

- ``set_transform(parent, child, stamp, t, q)`` stores ``T_parent_child`` (maps
  points in ``child`` into ``parent``), as a TransformStamped whose
  ``header.frame_id`` is ``parent`` and ``child_frame_id`` is ``child``;
- ``lookup(target, source, stamp)`` returns ``T_target_source`` (tf2's
  ``lookupTransform(target_frame, source_frame, time)``), composed through the
  frames' common ancestor;
- each dynamic link is interpolated between the two samples around ``stamp``
  (linear translation, slerp rotation); a stamp outside a link's samples is an
  extrapolation error (optionally tolerated by ``tolerance_ns``, holding the
  end sample); static links (``/tf_static``) are timeless; stamp 0 means the
  latest time every link on the path has data for;
- a repeated stamp on a link is ignored (tf2's TF_REPEATED_DATA), samples older
  than the cache length are pruned and refused, out-of-order samples are put in
  place.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

__all__ = ["TransformBuffer", "TransformError", "transform_matrix", "OPTICAL_ROTATION", "MAX_GRAPH_DEPTH"]

MAX_GRAPH_DEPTH = 1000                      # tf2's guard against loops in the tree
QUATERNION_TOLERANCE = 1e-3                 # |norm - 1| accepted (and normalised); others are rejected
# REP-103: an optical frame (z forward, x right, y down) under its body frame (x forward, y left, z up).
OPTICAL_ROTATION = (-0.5, 0.5, -0.5, 0.5)   # x, y, z, w


class TransformError(LookupError):
    """A transform that cannot be stored or looked up; ``kind`` says why.

    kinds: ``unknown_frame`` (never seen), ``connectivity`` (no common ancestor),
    ``extrapolation`` (stamp outside a link's data), ``invalid`` (a bad sample).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def transform_matrix(translation: Iterable[float], quaternion: Iterable[float]) -> np.ndarray:
    """4x4 float64 of a translation and an (x, y, z, w) quaternion."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(np.asarray(list(quaternion), dtype=np.float64)).as_matrix()
    T[:3, 3] = np.asarray(list(translation), dtype=np.float64)
    return T


def _strip(frame: str) -> str:
    """ROS 1 bags name frames with a leading '/'; tf2 in ROS 2 does not."""
    return frame[1:] if frame.startswith("/") else frame


@dataclass
class _Link:
    """The samples of one child frame: ``T_parent_child`` over time (or one timeless sample if static)."""
    static: bool
    stamps: list[int] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    trans: list[np.ndarray] = field(default_factory=list)
    quats: list[np.ndarray] = field(default_factory=list)

    def newest(self) -> int:
        return self.stamps[-1]

    def sample(self, stamp: int, tol: int, child: str) -> tuple[str, np.ndarray]:
        """(parent, T_parent_child) at ``stamp``; TransformError('extrapolation') outside the data."""
        if self.static:
            return self.parents[0], transform_matrix(self.trans[0], self.quats[0])
        st = self.stamps
        if stamp == 0:
            i = len(st) - 1
            return self.parents[i], transform_matrix(self.trans[i], self.quats[i])
        if stamp < st[0] or stamp > st[-1]:
            future = stamp > st[-1]
            edge = len(st) - 1 if future else 0
            if abs(stamp - st[edge]) <= tol:
                return self.parents[edge], transform_matrix(self.trans[edge], self.quats[edge])
            raise TransformError("extrapolation", (
                f"lookup would require extrapolation into the {'future' if future else 'past'}: requested "
                f"{stamp / 1e9:.6f} s but the {'latest' if future else 'earliest'} data for frame {child!r} "
                f"(under {self.parents[edge]!r}) is at {st[edge] / 1e9:.6f} s"
                + (f" ({len(st)} sample)" if len(st) == 1 else "")))
        i = bisect.bisect_left(st, stamp)
        if st[i] == stamp:
            return self.parents[i], transform_matrix(self.trans[i], self.quats[i])
        a, b = i - 1, i
        if self.parents[a] != self.parents[b]:      # tf2: the parent changed in between, take the older sample
            return self.parents[a], transform_matrix(self.trans[a], self.quats[a])
        r = (stamp - st[a]) / (st[b] - st[a])
        T = np.eye(4)
        T[:3, 3] = self.trans[a] + r * (self.trans[b] - self.trans[a])
        T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_quat(np.stack([self.quats[a], self.quats[b]])))([r]).as_matrix()[0]
        return self.parents[a], T


class TransformBuffer:
    """Time-stamped transforms between named frames; see the module docstring for the semantics.

    ``cache_ns`` bounds how far back a dynamic link keeps samples (tf2's cache
    time, 10 s by default); None keeps everything (offline reading of a bag).
    Not thread-safe: the node calls it under its own lock.
    """

    def __init__(self, cache_ns: Optional[int] = 10_000_000_000) -> None:
        if cache_ns is not None and cache_ns <= 0:
            raise ValueError(f"cache length must be > 0 ns, got {cache_ns}")
        self.cache_ns = cache_ns
        self._links: dict[str, _Link] = {}
        self._parents_seen: set[str] = set()
        self.latest_ns = 0            # newest stamp of any dynamic sample stored
        self.ignored: dict[str, int] = {"repeated": 0, "old": 0}

    # -- storing -----------------------------------------------------------------
    def set_transform(self, parent: str, child: str, stamp_ns: int, translation: Iterable[float],
                      quaternion: Iterable[float], static: bool = False) -> bool:
        """Store ``T_parent_child``; False when tf2 would ignore it (repeated stamp, older than the cache).

        Raises TransformError('invalid') for empty or equal frame ids, non-finite
        numbers or a quaternion that is not (close to) unit length.
        """
        parent, child = _strip(str(parent)), _strip(str(child))
        if not parent or not child:
            raise TransformError("invalid", f"transform with an empty frame id (parent {parent!r}, child {child!r})")
        if parent == child:
            raise TransformError("invalid", f"transform from frame {child!r} to itself")
        t = np.asarray(list(translation), dtype=np.float64)
        q = np.asarray(list(quaternion), dtype=np.float64)
        if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            raise TransformError("invalid", f"transform {parent} -> {child}: translation/rotation not finite")
        n = float(np.linalg.norm(q))
        if abs(n - 1.0) > QUATERNION_TOLERANCE:
            raise TransformError("invalid", f"transform {parent} -> {child}: quaternion {q.tolist()} is not unit "
                                            f"length (norm {n:.4f})")
        q = q / n
        stamp_ns = int(stamp_ns)
        link = self._links.get(child)
        if link is None:
            link = self._links[child] = _Link(static=static)
        self._parents_seen.add(parent)
        if link.static:         # timeless: the latest value replaces the previous one (several publishers merge)
            link.stamps[:], link.parents[:], link.trans[:], link.quats[:] = [stamp_ns], [parent], [t], [q]
            return True
        st = link.stamps
        if self.cache_ns is not None and st and stamp_ns < st[-1] - self.cache_ns:
            self.ignored["old"] += 1
            return False
        i = bisect.bisect_left(st, stamp_ns)
        if i < len(st) and st[i] == stamp_ns:
            self.ignored["repeated"] += 1
            return False
        for lst, v in ((st, stamp_ns), (link.parents, parent), (link.trans, t), (link.quats, q)):
            lst.insert(i, v)
        if self.cache_ns is not None:
            cut = bisect.bisect_left(st, st[-1] - self.cache_ns)
            if cut:
                for lst in (st, link.parents, link.trans, link.quats):
                    del lst[:cut]
        self.latest_ns = max(self.latest_ns, stamp_ns)
        return True

    def add_message(self, msg: Any, static: bool = False) -> tuple[int, list[str]]:
        """Store every TransformStamped of a tf2_msgs/TFMessage (an rclpy or a rosbags message alike).

        Returns (stored, errors): a bad transform is skipped with its reason, the others still count.
        """
        stored, errors = 0, []
        for ts in msg.transforms:
            h, tr = ts.header, ts.transform
            try:
                stamp = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
                ok = self.set_transform(h.frame_id, ts.child_frame_id, stamp,
                                        (tr.translation.x, tr.translation.y, tr.translation.z),
                                        (tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w), static=static)
                stored += int(ok)
            except TransformError as exc:
                errors.append(str(exc))
        return stored, errors

    # -- queries -----------------------------------------------------------------
    def frames(self) -> set[str]:
        return set(self._links) | self._parents_seen

    def has_frame(self, frame: str) -> bool:
        frame = _strip(frame)
        return frame in self._links or frame in self._parents_seen

    def lookup(self, target: str, source: str, stamp_ns: int, tolerance_ns: int = 0) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns`` (0 = the latest common time), float64 4x4.

        ``tolerance_ns`` lets a stamp lie that far outside a link's samples (the end
        sample is then used); beyond it the lookup is an extrapolation error.
        """
        target, source = _strip(target), _strip(source)
        for name, f in (("target", target), ("source", source)):
            if not self.has_frame(f):
                raise TransformError("unknown_frame", f"frame {f!r} ({name}) does not exist in the transform "
                                                      f"tree (known: {', '.join(sorted(self.frames())) or 'none'})")
        if target == source:
            return np.eye(4)
        if stamp_ns == 0:
            stamp_ns = self._latest_common(target, source)
        return self._walk(target, source, int(stamp_ns), int(tolerance_ns))

    def can_transform(self, target: str, source: str, stamp_ns: int, tolerance_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns, tolerance_ns)
            return True
        except TransformError:
            return False

    def _chain_up(self, start: str, stamp: int, tol: int, stop: Callable[[str], bool]
                  ) -> tuple[dict[str, np.ndarray], str, Optional[TransformError]]:
        """Frames from ``start`` upwards with ``T_frame_start``, up to the first frame where ``stop`` holds, the
        root, or a link that has no sample near ``stamp`` (returned as the failure): (chain, last frame, failure)."""
        chain: dict[str, np.ndarray] = {start: np.eye(4)}
        cur, acc = start, np.eye(4)
        for _ in range(MAX_GRAPH_DEPTH):
            link = self._links.get(cur)
            if stop(cur) or link is None:
                return chain, cur, None
            try:
                parent, T = link.sample(stamp, tol, cur)
            except TransformError as exc:
                return chain, cur, exc
            acc = T @ acc
            cur = parent
            if cur in chain:
                raise TransformError("connectivity", f"the transform tree has a loop through {cur!r}")
            chain[cur] = acc
        raise TransformError("connectivity", f"the transform tree is deeper than {MAX_GRAPH_DEPTH} "
                                             f"frames above {start!r} (a loop?)")

    def _walk(self, target: str, source: str, stamp: int, tol: int) -> np.ndarray:
        """Up from the source to its root, then up from the target until a frame of the source's chain."""
        up, top, failure = self._chain_up(source, stamp, tol, lambda f: f == target)   # frame -> T_frame_source
        if top == target:
            return up[target]
        down, meet, failure_down = self._chain_up(target, stamp, tol, lambda f: f in up)  # frame -> T_frame_target
        if meet in up:
            R, t = down[meet][:3, :3], down[meet][:3, 3]
            inv = np.eye(4)                                                       # T_target_meet
            inv[:3, :3], inv[:3, 3] = R.T, -R.T @ t
            return inv @ up[meet]
        failure = failure or failure_down
        if failure is not None:
            raise TransformError(failure.kind, f"{target} <- {source}: {failure}")
        raise TransformError("connectivity", f"no connection between {target!r} and {source!r}: they are not part "
                                             f"of the same tree ({source!r} is under {_root(up)!r}, {target!r} "
                                             f"under {meet!r})")

    def _latest_common(self, target: str, source: str) -> int:
        """tf2's latest common time: the oldest of the newest samples of the dynamic links between the frames."""
        def up(frame: str) -> list[str]:
            path = [frame]
            for _ in range(MAX_GRAPH_DEPTH):
                link = self._links.get(path[-1])
                if link is None or link.parents[-1] in path:
                    break
                path.append(link.parents[-1])
            return path

        src, tgt = up(source), up(target)
        common = next((f for f in src if f in tgt), None)
        below = src[:src.index(common)] + tgt[:tgt.index(common)] if common is not None else src + tgt
        newest = [self._links[f].newest() for f in below if f in self._links and not self._links[f].static]
        return min(newest) if newest else 0


def _root(chain: dict[str, np.ndarray]) -> str:
    return list(chain)[-1]
