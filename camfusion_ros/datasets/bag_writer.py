"""Writes posed RGB-D frames as a rosbag2 bag in the layout of docs/architecture.md.

Shared by the synthetic generator and the dataset converters so every
recording the project produces has exactly the same topics, types, encodings,
frame ids and stamps. Uses the ``rosbags`` library (no ROS installation needed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from camfusion_ros.core.geometry import matrix_to_quaternion
from camfusion_ros.core.recording import RecordingTopics, ros_typestore

__all__ = ["BagWriter", "BagWriterError", "encode_depth", "DEPTH_ENCODINGS", "OPTICAL_FRAME", "MAP_FRAME"]

OPTICAL_FRAME = "camera_color_optical_frame"
MAP_FRAME = "map"
DEPTH_ENCODINGS = ("16UC1", "32FC1")


class BagWriterError(ValueError):
    """The bag cannot be written as asked (bad path, bad encoding, bad frame)."""


@dataclass
class _Types:
    Image: type
    CameraInfo: type
    PoseStamped: type
    Pose: type
    Point: type
    Quaternion: type
    Header: type
    Time: type
    RegionOfInterest: type


class BagWriter:
    """Context manager: ``with BagWriter(out/'bag') as w: w.write_frame(...)``."""

    def __init__(self, path: str | Path, depth_encoding: str = "16UC1", topics: RecordingTopics | None = None,
                 with_instances: bool = True) -> None:
        if depth_encoding not in DEPTH_ENCODINGS:
            raise BagWriterError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagWriterError(f"bag already exists: {self.path} (choose an empty --out directory)")
        self.depth_encoding = depth_encoding
        self.topics = topics or RecordingTopics()
        self.with_instances = with_instances
        self.count = 0
        self._store = ros_typestore()
        t = self._store.types
        self._t = _Types(*(t[n] for n in (
            "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/PoseStamped",
            "geometry_msgs/msg/Pose", "geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion",
            "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "sensor_msgs/msg/RegionOfInterest")))
        self._writer: Writer | None = None
        self._conn: dict[str, object] = {}

    def __enter__(self) -> "BagWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        tp = self.topics
        spec = [(tp.color, "sensor_msgs/msg/Image"), (tp.depth, "sensor_msgs/msg/Image"),
                (tp.camera_info, "sensor_msgs/msg/CameraInfo"), (tp.pose, "geometry_msgs/msg/PoseStamped")]
        if self.with_instances and tp.instances:
            spec.append((tp.instances, "sensor_msgs/msg/Image"))
        for topic, msgtype in spec:
            self._conn[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_frame(self, stamp_ns: int, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                    T_world_cam: np.ndarray, instances: np.ndarray | None = None) -> None:
        """One frame on all topics with one stamp; depth in metres (0/NaN = none)."""
        if self._writer is None:
            raise BagWriterError("BagWriter used outside its 'with' block")
        h, w = depth_m.shape
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise BagWriterError(f"rgb must be uint8 ({h}, {w}, 3), got {rgb.dtype} {rgb.shape}")
        header = self._header(stamp_ns, OPTICAL_FRAME)
        self._put(self.topics.color, stamp_ns, self._image(header, rgb, "rgb8"))
        self._put(self.topics.depth, stamp_ns, self._image(header, encode_depth(depth_m, self.depth_encoding), self.depth_encoding))
        self._put(self.topics.camera_info, stamp_ns, self._camera_info(header, K, h, w))
        self._put(self.topics.pose, stamp_ns, self._pose(self._header(stamp_ns, MAP_FRAME), T_world_cam))
        if self.topics.instances in self._conn:
            if instances is None:
                raise BagWriterError("this bag has an instance topic; write_frame needs instances")
            self._put(self.topics.instances, stamp_ns, self._image(header, instances.astype(np.int32), "32SC1"))
        self.count += 1

    # --- message construction -------------------------------------------------
    def _put(self, topic: str, stamp_ns: int, msg: object) -> None:
        self._writer.write(self._conn[topic], stamp_ns, self._store.serialize_cdr(msg, msg.__msgtype__))

    def _header(self, stamp_ns: int, frame_id: str):
        return self._t.Header(stamp=self._t.Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                              frame_id=frame_id)

    def _image(self, header, arr: np.ndarray, encoding: str):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1)
        return self._t.Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                             step=int(data.size // h), data=data)

    def _camera_info(self, header, K: np.ndarray, h: int, w: int):
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self._t.CameraInfo(header=header, height=h, width=w, distortion_model="plumb_bob",
                                  d=np.zeros(5), k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                                  binning_x=0, binning_y=0,
                                  roi=self._t.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def _pose(self, header, T: np.ndarray):
        T = np.asarray(T, dtype=np.float64)
        qx, qy, qz, qw = matrix_to_quaternion(T[:3, :3])
        x, y, z = (float(v) for v in T[:3, 3])
        pose = self._t.Pose(position=self._t.Point(x=x, y=y, z=z),
                            orientation=self._t.Quaternion(x=qx, y=qy, z=qz, w=qw))
        return self._t.PoseStamped(header=header, pose=pose)


def encode_depth(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    """16UC1: rounded millimetres, 0 = none (saturates at 65.535 m); 32FC1: metres, NaN = none."""
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    if encoding == "16UC1":
        mm = np.zeros(d.shape, dtype=np.uint16)
        mm[valid] = np.clip(np.rint(d[valid] * 1000.0), 0, 65535).astype(np.uint16)
        return mm
    if encoding == "32FC1":
        return np.where(valid, d, np.nan).astype(np.float32)
    raise BagWriterError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")
