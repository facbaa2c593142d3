"""pose_source tf for the mapping node: /tf + /tf_static in, the camera pose of each synchronised frame out.

Robots publish the camera pose as a transform tree, and the transform for an
image often arrives after the image itself (odometry runs behind the camera
driver). So a synchronised frame waits here, bounded, until the tree can give
``T_map_camera`` at the image's header stamp; then it goes on to the node's
queue with that pose, or it is dropped and counted as ``no_transform``.

A frame waits at most ``tf_wait_s``, measured two ways, neither of them the
wall clock directly: on the node's clock (the bag's time under
``use_sim_time``, fed by ``camfusion-replay --clock``), and on the TF stream
itself (once transforms stamped ``tf_wait_s`` after the frame have arrived, its
own will not come). Lookups use header stamps only. At most ``sync_buffer``
frames wait; the oldest goes first.

``tf2_ros`` does the lookups where it is importable (a ROS 2 distro); in the
pip venv, where it cannot be installed, ``core.transforms.TransformBuffer``
does, with the same semantics. Either way this module subscribes to the two
topics itself, so the waiting logic is the same.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from camfusion_ros.core.config import ConfigError
from camfusion_ros.core.transforms import TransformBuffer, TransformError, transform_matrix
from camfusion_ros.nodes.sync import Matched

__all__ = ["TfPoseSource", "make_buffer", "TF_TOPIC", "TF_STATIC_TOPIC", "DROP_REASON"]

TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
DROP_REASON = "no_transform"
CHECK_PERIOD_S = 0.05           # how often waiting frames are checked against the clock (node clock)


class _Tf2RosBuffer:
    """tf2_ros.Buffer behind the calls of core.transforms.TransformBuffer (used where tf2_ros is installed)."""

    backend = "tf2_ros"

    def __init__(self, cache_s: float) -> None:
        import tf2_ros
        from rclpy.duration import Duration

        self._tf2 = tf2_ros
        self._buf = tf2_ros.Buffer(cache_time=Duration(nanoseconds=int(cache_s * 1e9)))
        self.latest_ns = 0

    def add_message(self, msg: Any, static: bool = False) -> tuple[int, list[str]]:
        stored, errors = 0, []
        for ts in msg.transforms:
            try:
                if static:
                    self._buf.set_transform_static(ts, "camfusion_ros")
                else:
                    self._buf.set_transform(ts, "camfusion_ros")
                    self.latest_ns = max(self.latest_ns, int(ts.header.stamp.sec) * 10**9 + int(ts.header.stamp.nanosec))
                stored += 1
            except self._tf2.TransformException as exc:
                errors.append(str(exc))
        return stored, errors

    def lookup(self, target: str, source: str, stamp_ns: int, tolerance_ns: int = 0) -> np.ndarray:
        from rclpy.time import Time

        try:
            ts = self._buf.lookup_transform_core(target, source, Time(nanoseconds=int(stamp_ns)))
        except self._tf2.ExtrapolationException as exc:
            ts = self._latest_within(target, source, stamp_ns, tolerance_ns)
            if ts is None:
                raise TransformError("extrapolation", str(exc)) from None
        except self._tf2.TransformException as exc:
            raise TransformError("connectivity" if isinstance(exc, self._tf2.ConnectivityException)
                                 else "unknown_frame", str(exc)) from None
        t, q = ts.transform.translation, ts.transform.rotation
        return transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))

    def _latest_within(self, target: str, source: str, stamp_ns: int, tolerance_ns: int):
        """tf2 has no tolerance: the latest transform, when it is within ``tolerance_ns`` of the stamp."""
        from rclpy.time import Time

        if tolerance_ns <= 0:
            return None
        try:
            ts = self._buf.lookup_transform_core(target, source, Time())
        except self._tf2.TransformException:
            return None
        latest = int(ts.header.stamp.sec) * 10**9 + int(ts.header.stamp.nanosec)
        return ts if abs(stamp_ns - latest) <= tolerance_ns else None


def make_buffer(cache_s: float) -> Any:
    """tf2_ros's buffer where it is importable, else the package's own (same lookup semantics)."""
    try:
        return _Tf2RosBuffer(cache_s)
    except ImportError:
        return TransformBuffer(cache_ns=int(cache_s * 1e9))


@dataclass
class _Waiting:
    frame: Matched
    camera: str
    arrived_ns: Optional[int]       # node clock at arrival (None: a sim clock that has not started yet)


class TfPoseSource:
    """Subscribes /tf and /tf_static and releases frames with ``items['pose']`` = T_map_camera.

    ``lock`` is the node's lock (held by its image callbacks when they call
    ``add``); ``release(frame)`` and the ``dropped`` counter are the node's and
    are used with the lock held. ``nmsg``: input messages per frame, for the counters.
    """

    def __init__(self, node: Any, cfg: Any, lock: threading.Condition, release: Callable[[Matched], None],
                 dropped: collections.Counter, nmsg: int) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            raise ConfigError("pose_source tf needs the tf2_msgs interface: run `make setup` (it builds it into the "
                              "venv) or install your distro's tf2_msgs") from None
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        self.node, self.lock, self.release, self.dropped, self.nmsg = node, lock, release, dropped, nmsg
        self.map_frame, self.camera_frame = cfg.map_frame, cfg.camera_frame
        self.tolerance_ns, self.wait_ns = int(cfg.tf_tolerance_s * 1e9), int(cfg.tf_wait_s * 1e9)
        self.max_waiting = int(cfg.sync_buffer)
        self.throttle_s = cfg.log_throttle_s
        self.buffer = make_buffer(cfg.tf_cache_s)
        self.waiting: collections.deque[_Waiting] = collections.deque()
        self.counts: collections.Counter = collections.Counter()
        self.last_lookup = {"stamp_ns": 0, "clock_ns": 0}
        group = MutuallyExclusiveCallbackGroup()
        # tf2_ros's own listener QoS: /tf reliable volatile, /tf_static reliable transient-local (latched)
        dynamic = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        static = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subs = [node.create_subscription(TFMessage, TF_TOPIC, lambda m: self._on_tf(m, False), dynamic,
                                               callback_group=group),
                      node.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda m: self._on_tf(m, True), static,
                                               callback_group=group)]
        self._timer = node.create_timer(CHECK_PERIOD_S, self._on_timer, callback_group=group)

    # -- called by the node, lock held ---------------------------------------------
    def add(self, frame: Matched) -> None:
        """A synchronised frame: released now if its transform is there, else it waits."""
        camera = self.camera_frame or frame.items["color"][1]
        now = self._now()
        w = _Waiting(frame, camera, now or None)
        self.waiting.append(w)
        while len(self.waiting) > self.max_waiting:
            self._drop(self.waiting.popleft(), f"more than {self.max_waiting} frames waiting for TF (sync_buffer)")
        self._resolve(now)
        if self.waiting and self.waiting[-1] is w:
            self.counts["waited"] += 1        # its transform was not there yet when it arrived (late TF)

    def pending(self) -> int:
        return len(self.waiting)

    def stats(self) -> dict[str, Any]:
        return {"backend": getattr(self.buffer, "backend", "camfusion_ros.core.transforms"),
                "frames_waiting": len(self.waiting),
                "tf_messages": self.counts["tf"], "tf_static_messages": self.counts["tf_static"],
                "frames_waited": self.counts["waited"], "transforms_rejected": self.counts["rejected"],
                "latest_tf_stamp_ns": int(self.buffer.latest_ns),
                "last_lookup_stamp_ns": self.last_lookup["stamp_ns"],
                "last_lookup_clock_ns": self.last_lookup["clock_ns"]}

    # -- callbacks ----------------------------------------------------------------
    def _on_tf(self, msg: Any, static: bool) -> None:
        with self.lock:
            try:
                _, errors = self.buffer.add_message(msg, static=static)
            except Exception as exc:  # a hostile message must never take the node down
                errors = [f"{type(exc).__name__}: {exc}"]
            self.counts["tf_static" if static else "tf"] += 1
            self.counts["rejected"] += len(errors)
            self._resolve(self._now())
        if errors:
            self.node.get_logger().warning(f"transform ignored: {errors[0]}", throttle_duration_sec=self.throttle_s)

    def _on_timer(self) -> None:
        with self.lock:
            if self.waiting:
                self._resolve(self._now())

    # -- the waiting line, lock held ----------------------------------------------
    def _now(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def _resolve(self, now: int) -> None:
        """Release or drop waiting frames in stamp order; stop at the first one that may still get its transform."""
        while self.waiting:
            w = self.waiting[0]
            if w.arrived_ns is None and now:
                w.arrived_ns = now
            stamp = w.frame.stamp_ns
            try:
                T = self.buffer.lookup(self.map_frame, w.camera, stamp)
            except TransformError as exc:
                timed_out = w.arrived_ns is not None and now - w.arrived_ns >= self.wait_ns
                passed = self.buffer.latest_ns > stamp + self.wait_ns
                if not (timed_out or passed):
                    return
                try:     # given up waiting: the end sample within the tolerance, else no transform
                    T = self.buffer.lookup(self.map_frame, w.camera, stamp, self.tolerance_ns)
                except TransformError as exc2:
                    self.waiting.popleft()
                    why = "waited tf_wait_s on the node clock" if timed_out else "newer TF arrived meanwhile"
                    self._drop(w, f"{exc2} ({why})" if str(exc2) else str(exc))
                    continue
            self.waiting.popleft()
            self.last_lookup = {"stamp_ns": stamp, "clock_ns": now}
            w.frame.items["pose"] = T
            self.release(w.frame)

    def _drop(self, w: _Waiting, text: str) -> None:
        self.dropped[DROP_REASON] += self.nmsg
        self.node.get_logger().warning(f"frame at {w.frame.stamp_ns} ns dropped ({DROP_REASON}): {self.map_frame} <- "
                                       f"{w.camera}: {text}", throttle_duration_sec=self.throttle_s)
