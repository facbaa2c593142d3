"""The /tf and /tf_static messages of a recording, as a robot would have published them.

Robots give the camera pose as a transform tree, not a pose topic, so the
project's recordings carry both and every reader can be checked against the
other on the same data. The tree written here:

- ``/tf_static``: two latched messages from two "publishers", stamped one
  second before the recording: ``base_link -> camera_link`` (the mount) and
  ``camera_link -> <optical frame>`` (REP-103 optical rotation);
- ``/tf``: ``map -> odom`` (constant, at half the frame rate, its own message)
  and ``odom -> base_link`` (moving) at ``stamp - h`` and ``stamp + h`` around
  each image, never at the image stamps. The two samples lie symmetrically on
  the local motion, so linear/slerp interpolation at the image stamp gives
  exactly the frame's pose (a reader that interpolates wrongly, or not at all,
  is off by centimetres).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from camfusion_ros.core.geometry import invert_pose
from camfusion_ros.core.recording import TF_STATIC_TOPIC, TF_TOPIC
from camfusion_ros.core.transforms import OPTICAL_ROTATION, transform_matrix

__all__ = ["TfTrack", "TfWriterError", "TF_TOPIC", "TF_STATIC_TOPIC", "ODOM_FRAME", "BASE_FRAME", "CAMERA_LINK",
           "T_MAP_ODOM", "T_BASE_CAMERA_LINK", "T_CAMERA_LINK_OPTICAL", "TF_OFFSET_MAX_NS"]

ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
CAMERA_LINK = "camera_link"
TF_OFFSET_MAX_NS = 10_000_000            # /tf samples lie at most 10 ms before and after each image
STATIC_LEAD_NS = 1_000_000_000           # /tf_static is stamped this long before the first frame
T_MAP_ODOM = transform_matrix((0.4, -0.3, 0.0), Rotation.from_euler("z", 20, degrees=True).as_quat())
T_BASE_CAMERA_LINK = transform_matrix((0.10, -0.02, 0.25), Rotation.from_euler("y", 5, degrees=True).as_quat())
T_CAMERA_LINK_OPTICAL = transform_matrix((0.0, 0.015, 0.0), OPTICAL_ROTATION)


class TfWriterError(ValueError):
    """Frames whose stamps leave no room for the /tf samples around them."""


class TfTrack:
    """Turns (stamp, camera-to-map pose) per frame into /tf and /tf_static messages, in log-time order.

    ``frame(stamp, T)`` yields ``(topic, log_time_ns, message)`` to write before
    and after the frame's images (``before`` / ``after`` lists); ``close()`` the
    last ``map -> odom`` sample so every frame is bracketed on every link.
    """

    def __init__(self, store, optical_frame: str, map_frame: str = "map") -> None:
        t = store.types
        self._TS, self._Tr, self._V3, self._Q = (t[n] for n in (
            "geometry_msgs/msg/TransformStamped", "geometry_msgs/msg/Transform", "geometry_msgs/msg/Vector3",
            "geometry_msgs/msg/Quaternion"))
        self._Header, self._Time, self._TF = (t[n] for n in (
            "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "tf2_msgs/msg/TFMessage"))
        self.optical_frame, self.map_frame = optical_frame, map_frame
        self._T_base_opt = T_BASE_CAMERA_LINK @ T_CAMERA_LINK_OPTICAL
        self._prev: tuple[int, int, np.ndarray] | None = None     # stamp, offset h, T_odom_base
        self._index = 0

    def frame(self, stamp_ns: int, T_map_cam: np.ndarray) -> tuple[list, list]:
        stamp_ns = int(stamp_ns)
        T = invert_pose(T_MAP_ODOM) @ np.asarray(T_map_cam, np.float64) @ invert_pose(self._T_base_opt)
        before: list = []
        if self._prev is None:
            h = TF_OFFSET_MAX_NS
            v, w = np.zeros(3), np.zeros(3)
            lead = stamp_ns - h
            before += [(TF_STATIC_TOPIC, lead, self._msg([(BASE_FRAME, CAMERA_LINK, T_BASE_CAMERA_LINK)],
                                                         stamp_ns - STATIC_LEAD_NS)),
                       (TF_STATIC_TOPIC, lead, self._msg([(CAMERA_LINK, self.optical_frame, T_CAMERA_LINK_OPTICAL)],
                                                         stamp_ns - STATIC_LEAD_NS))]
        else:
            s0, h0, T0 = self._prev
            gap = stamp_ns - s0
            if gap <= h0:
                raise TfWriterError(f"frame stamps must increase by more than {h0 / 1e6:.1f} ms (the /tf samples "
                                    f"around each frame); got {s0} then {stamp_ns}")
            h = max(1, min(TF_OFFSET_MAX_NS, gap // 4, (gap - h0) // 2))
            v = (T[:3, 3] - T0[:3, 3]) * (h / gap)                       # local motion over h
            w = Rotation.from_matrix(T0[:3, :3].T @ T[:3, :3]).as_rotvec() * (h / gap)
        R = Rotation.from_matrix(T[:3, :3])
        minus, plus = np.eye(4), np.eye(4)
        minus[:3, :3], minus[:3, 3] = (R * Rotation.from_rotvec(-w)).as_matrix(), T[:3, 3] - v
        plus[:3, :3], plus[:3, 3] = (R * Rotation.from_rotvec(w)).as_matrix(), T[:3, 3] + v
        if self._index % 2 == 0:       # map -> odom: slower, from another publisher
            before.append((TF_TOPIC, stamp_ns - h, self._msg([(self.map_frame, ODOM_FRAME, T_MAP_ODOM)], stamp_ns - h)))
        before.append((TF_TOPIC, stamp_ns - h, self._msg([(ODOM_FRAME, BASE_FRAME, minus)], stamp_ns - h)))
        after = [(TF_TOPIC, stamp_ns + h, self._msg([(ODOM_FRAME, BASE_FRAME, plus)], stamp_ns + h))]
        self._prev = (stamp_ns, h, T)
        self._index += 1
        return before, after

    def close(self) -> Iterator[tuple[str, int, object]]:
        if self._prev is not None:
            s, h, _ = self._prev
            yield TF_TOPIC, s + h, self._msg([(self.map_frame, ODOM_FRAME, T_MAP_ODOM)], s + h)

    def _msg(self, links: list[tuple[str, str, np.ndarray]], stamp_ns: int):
        out = []
        for parent, child, T in links:
            x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
            tr = self._Tr(translation=self._V3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                          rotation=self._Q(x=float(x), y=float(y), z=float(z), w=float(w)))
            header = self._Header(stamp=self._Time(sec=int(stamp_ns // 1_000_000_000),
                                                   nanosec=int(stamp_ns % 1_000_000_000)), frame_id=parent)
            out.append(self._TS(header=header, child_frame_id=child, transform=tr))
        return self._TF(transforms=out)
