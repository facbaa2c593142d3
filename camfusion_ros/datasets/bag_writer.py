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

from camfusion_ros.core.compressed import COMPRESSED_MSGTYPE, TRANSPORT_SUFFIX, encode_color
from camfusion_ros.core.compressed import encode_depth as encode_compressed_depth
from camfusion_ros.core.geometry import matrix_to_quaternion
from camfusion_ros.core.recording import RecordingTopics, ros_typestore
from camfusion_ros.datasets.tf_writer import TF_STATIC_TOPIC, TF_TOPIC, TfTrack, TfWriterError

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
    """Context manager: ``with BagWriter(out/'bag') as w: w.write_frame(...)``.

    ``compressed=True`` writes colour and depth as robots' bags hold them (image_transport): CompressedImage
    JPEG on ``<color>/compressed`` and compressedDepth PNG on ``<depth>/compressedDepth``, so the readers'
    compressed paths are exercised by the project's own recordings.
    """

    def __init__(self, path: str | Path, depth_encoding: str = "16UC1", topics: RecordingTopics | None = None,
                 with_instances: bool = True, compressed: bool = False, jpeg_quality: int = 95,
                 with_tf: bool = True) -> None:
        if depth_encoding not in DEPTH_ENCODINGS:
            raise BagWriterError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagWriterError(f"bag already exists: {self.path} (choose an empty --out directory)")
        self.depth_encoding = depth_encoding
        self.topics = topics or RecordingTopics()
        self.with_instances = with_instances
        self.compressed = compressed
        self.jpeg_quality = int(jpeg_quality)
        if not 1 <= self.jpeg_quality <= 100:
            raise BagWriterError(f"jpeg quality must be within 1..100, got {jpeg_quality}")
        self.color_topic = self.topics.color + (TRANSPORT_SUFFIX["color"] if compressed else "")
        self.depth_topic = self.topics.depth + (TRANSPORT_SUFFIX["depth"] if compressed else "")
        self.count = 0
        self._store = ros_typestore()
        t = self._store.types
        self._t = _Types(*(t[n] for n in (
            "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo", "geometry_msgs/msg/PoseStamped",
            "geometry_msgs/msg/Pose", "geometry_msgs/msg/Point", "geometry_msgs/msg/Quaternion",
            "std_msgs/msg/Header", "builtin_interfaces/msg/Time", "sensor_msgs/msg/RegionOfInterest")))
        self._compressed_image = t[COMPRESSED_MSGTYPE]
        self._writer: Writer | None = None
        self._conn: dict[str, object] = {}
        # /tf + /tf_static beside the pose topic (datasets/tf_writer.py), so pose_source tf reads the same bags
        self._tf = TfTrack(self._store, OPTICAL_FRAME, MAP_FRAME) if with_tf else None

    def __enter__(self) -> "BagWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        tp = self.topics
        image_type = COMPRESSED_MSGTYPE if self.compressed else "sensor_msgs/msg/Image"
        spec = [(self.color_topic, image_type), (self.depth_topic, image_type),
                (tp.camera_info, "sensor_msgs/msg/CameraInfo"), (tp.pose, "geometry_msgs/msg/PoseStamped")]
        if self.with_instances and tp.instances:
            spec.append((tp.instances, "sensor_msgs/msg/Image"))
        for topic, msgtype in spec:
            self._conn[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
        if self._tf is not None:
            self._conn[TF_TOPIC] = self._writer.add_connection(TF_TOPIC, "tf2_msgs/msg/TFMessage",
                                                               typestore=self._store, offered_qos_profiles=[_qos(False)])
            self._conn[TF_STATIC_TOPIC] = self._writer.add_connection(
                TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage", typestore=self._store, offered_qos_profiles=[_qos(True)])
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            if self._tf is not None and exc_type is None:
                for topic, t, msg in self._tf.close():
                    self._put(topic, t, msg)
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
        tf_before, tf_after = [], []
        if self._tf is not None:
            try:
                tf_before, tf_after = self._tf.frame(stamp_ns, T_world_cam)
            except TfWriterError as exc:
                raise BagWriterError(str(exc)) from None
        for topic, t, msg in tf_before:
            self._put(topic, t, msg)
        header = self._header(stamp_ns, OPTICAL_FRAME)
        self._put(self.color_topic, stamp_ns, self._color(header, rgb))
        self._put(self.depth_topic, stamp_ns, self._depth(header, depth_m))
        self._put(self.topics.camera_info, stamp_ns, self._camera_info(header, K, h, w))
        self._put(self.topics.pose, stamp_ns, self._pose(self._header(stamp_ns, MAP_FRAME), T_world_cam))
        if self.topics.instances in self._conn:
            if instances is None:
                raise BagWriterError("this bag has an instance topic; write_frame needs instances")
            self._put(self.topics.instances, stamp_ns, self._image(header, instances.astype(np.int32), "32SC1"))
        for topic, t, msg in tf_after:
            self._put(topic, t, msg)
        self.count += 1

    # --- message construction -------------------------------------------------
    def _put(self, topic: str, stamp_ns: int, msg: object) -> None:
        self._writer.write(self._conn[topic], stamp_ns, self._store.serialize_cdr(msg, msg.__msgtype__))

    def _header(self, stamp_ns: int, frame_id: str):
        return self._t.Header(stamp=self._t.Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                              frame_id=frame_id)

    def _color(self, header, rgb: np.ndarray):
        if not self.compressed:
            return self._image(header, rgb, "rgb8")
        fmt, payload = encode_color(rgb, "jpeg", self.jpeg_quality)
        return self._compressed_image(header=header, format=fmt, data=np.frombuffer(payload, np.uint8))

    def _depth(self, header, depth_m: np.ndarray):
        if not self.compressed:
            return self._image(header, encode_depth(depth_m, self.depth_encoding), self.depth_encoding)
        fmt, payload = encode_compressed_depth(depth_m, self.depth_encoding)
        return self._compressed_image(header=header, format=fmt, data=np.frombuffer(payload, np.uint8))

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


def _qos(latched: bool):
    """The offered QoS a recorder stores: /tf reliable volatile (depth 100), /tf_static reliable transient-local (depth 1)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(sec=9223372036, nsec=854775807)       # "infinite", as rosbag2 writes it
    return Qos(history=QosHistory.KEEP_LAST, depth=1 if latched else 100, reliability=QosReliability.RELIABLE,
               durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE, deadline=never,
               lifespan=never, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never,
               avoid_ros_namespace_conventions=False)
