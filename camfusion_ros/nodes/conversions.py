"""ROS message <-> numpy conversions for the node (cv_bridge is not installable here).

Every rejection raises ``ConversionError`` whose ``reason`` is a short counter
key (``encoding``, ``size``, ``empty``, ``depth``, ``camera_info``, ``pose``,
``bad_compressed``), so the node can count drops per reason and log one
readable line. Colour and depth also arrive as ``CompressedImage``
(image_transport's ``compressed`` / ``compressedDepth``), decoded by
``core/compressed.py`` exactly as the bag reader decodes them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from camfusion_ros.core import compressed
from camfusion_ros.core.geometry import matrix_to_quaternion, pose_matrix
from camfusion_ros.msg import Instance

__all__ = ["ConversionError", "IMAGE_ENCODINGS", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "image_to_numpy",
           "numpy_to_image", "color_from_msg", "depth_from_msg", "instances_from_msg", "camera_info_to_K",
           "pose_to_matrix", "matrix_to_pose", "stamp_to_ns", "ns_to_stamp", "instance_to_msg", "cloud_to_msg",
           "cloud_from_msg", "image_input"]

# encoding -> (dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3), "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1), "32FC1": (np.dtype(np.float32), 1), "32SC1": (np.dtype(np.int32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
INSTANCE_ENCODINGS = ("32SC1", "16UC1")
QUATERNION_TOLERANCE = 1e-3


class ConversionError(ValueError):
    """A message the node cannot use; ``reason`` is the drop-counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_numpy(msg: Image, allowed: Sequence[str] | None = None) -> np.ndarray:
    """(H, W[, C]) array of an Image, honouring row padding (step) and endianness."""
    enc = msg.encoding
    if enc not in IMAGE_ENCODINGS or (allowed is not None and enc not in allowed):
        ok = ", ".join(allowed if allowed is not None else IMAGE_ENCODINGS)
        raise ConversionError("encoding", f"unsupported image encoding {enc!r} (supported: {ok})")
    dtype, ch = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError("empty", f"empty image ({w}x{h})")
    row = w * ch * dtype.itemsize
    data = np.frombuffer(msg.data, dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if data.size == 0:
        raise ConversionError("empty", f"image {w}x{h} {enc} has no data")
    if step < row:
        raise ConversionError("size", f"image step {step} is shorter than a {w}-pixel {enc} row ({row} bytes)")
    if data.size != step * h:
        raise ConversionError("size", f"image data has {data.size} bytes, expected {step * h} ({h} rows of {step})")
    rows = data.reshape(h, step)[:, :row]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    arr = arr.reshape((h, w, ch) if ch > 1 else (h, w))
    return arr.astype(dtype, copy=False) if arr.dtype != dtype else arr


def numpy_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Image message of an array (the inverse of ``image_to_numpy``; no padding, little endian)."""
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError("encoding", f"unsupported image encoding {encoding!r}")
    dtype, ch = IMAGE_ENCODINGS[encoding]
    arr = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))
    if arr.ndim != (3 if ch > 1 else 2) or (ch > 1 and arr.shape[2] != ch):
        raise ConversionError("size", f"{encoding} needs shape (H, W{', %d' % ch if ch > 1 else ''}), got {arr.shape}")
    h, w = arr.shape[:2]
    msg = Image(header=header or Header(), height=h, width=w, encoding=encoding, is_bigendian=0,
                step=w * ch * dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def _from_compressed(decode, msg: CompressedImage) -> np.ndarray:
    """The core decoder's reason (bad_compressed / encoding) becomes the node's drop-counter key."""
    try:
        return decode(msg.format, msg.data)
    except compressed.CompressedImageError as exc:
        raise ConversionError(exc.reason, str(exc)) from None


def image_input(topic: str, transport: str, stream: str) -> tuple[type, str]:
    """(message class, topic) a colour/depth subscription uses: CompressedImage on image_transport's
    ``/compressed`` / ``/compressedDepth`` topics (by suffix with ``auto``, or appended with ``compressed``)."""
    name, is_compressed = compressed.input_topic(topic, transport, stream)
    return (CompressedImage if is_compressed else Image), name


def color_from_msg(msg: Image | CompressedImage) -> np.ndarray:
    """uint8 (H, W, 3) RGB from rgb8 / bgr8 / mono8, or a CompressedImage (JPEG / PNG)."""
    if isinstance(msg, CompressedImage):
        return _from_compressed(compressed.decode_color, msg)
    arr = image_to_numpy(msg, COLOR_ENCODINGS)
    if msg.encoding == "mono8":
        return np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, ::-1]) if msg.encoding == "bgr8" else arr


def depth_from_msg(msg: Image | CompressedImage) -> np.ndarray:
    """float32 metres from 16UC1 (mm) or 32FC1 (m), or a compressedDepth CompressedImage (PNG; RVL refused);
    non-finite or negative = 0 (no reading)."""
    if isinstance(msg, CompressedImage):
        d = _from_compressed(compressed.decode_depth, msg)
    else:
        arr = image_to_numpy(msg, DEPTH_ENCODINGS)
        d = arr.astype(np.float32) / np.float32(1000.0) if msg.encoding == "16UC1" else arr.astype(np.float32)
    d[~np.isfinite(d) | (d < 0)] = 0.0
    if not np.any(d > 0):
        raise ConversionError("depth", "depth image has no valid reading (all zero / NaN / inf)")
    return d


def instances_from_msg(msg: Image) -> np.ndarray:
    """int32 instance ids (0 = none) from 32SC1 / 16UC1."""
    return image_to_numpy(msg, INSTANCE_ENCODINGS).astype(np.int32, copy=False)


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """3x3 float64 intrinsics; rejects zero / non-finite focal lengths."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError("camera_info", f"camera_info has unusable intrinsics (fx={K[0, 0]}, fy={K[1, 1]})")
    return K


def pose_to_matrix(msg: PoseStamped | Odometry | Pose) -> np.ndarray:
    """4x4 float64 camera-to-map from PoseStamped, Odometry or Pose; rejects NaN and non-unit quaternions."""
    pose = msg.pose.pose if isinstance(msg, Odometry) else msg.pose if isinstance(msg, PoseStamped) else msg
    p, q = pose.position, pose.orientation
    try:
        return pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    except ValueError as exc:
        raise ConversionError("pose", f"pose rejected: {exc}") from None


def matrix_to_pose(T: np.ndarray) -> Pose:
    T = np.asarray(T, dtype=np.float64)
    x, y, z, w = matrix_to_quaternion(T[:3, :3])
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=x, y=y, z=z, w=w))


def _get(rec: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(rec, dict) and n in rec:
            return rec[n]
        if hasattr(rec, n):
            return getattr(rec, n)
    return default


def _point(v: Any) -> Point:
    if v is None:
        return Point()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    return Point(x=float(a[0]), y=float(a[1]), z=float(a[2]))


def instance_to_msg(rec: Any, embedding_model: str = "", fusion_method: str = "",
                    include_embedding: bool = True) -> Instance:
    """Instance message of a pipeline ``InstanceRecord`` (attribute or dict access)."""
    m = Instance()
    m.id = int(_get(rec, "id", "instance_id"))
    m.label = str(_get(rec, "label", default="") or "")
    score = _get(rec, "score", default=0.0)
    m.score = float(score) if score is not None and math.isfinite(float(score)) else 0.0
    m.top_labels = [str(s) for s in (_get(rec, "top_labels", default=None) or [])]
    m.top_scores = [float(s) for s in (_get(rec, "top_scores", default=None) or [])]
    emb = _get(rec, "embedding", "fused", default=None)
    if include_embedding and emb is not None:
        m.embedding = np.asarray(emb, dtype=np.float32).reshape(-1).tolist()
    m.embedding_model = str(_get(rec, "embedding_model", default="") or embedding_model)
    m.fusion_method = str(_get(rec, "fusion_method", default="") or fusion_method)
    m.num_views = int(_get(rec, "num_views", default=0) or 0)
    m.num_points = int(_get(rec, "num_points", default=0) or 0)
    m.centroid = _point(_get(rec, "centroid"))
    m.bbox_min = _point(_get(rec, "bbox_min"))
    m.bbox_max = _point(_get(rec, "bbox_max"))
    m.first_seen = ns_to_stamp(int(_get(rec, "first_seen_ns", default=0) or 0))
    m.last_seen = ns_to_stamp(int(_get(rec, "last_seen_ns", default=0) or 0))
    return m


_CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("instance", "<i4"), ("label", "<i4")])


def cloud_to_msg(xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray, label: np.ndarray,
                 header: Header) -> PointCloud2:
    """PointCloud2 with fields x y z rgb (packed float, the RViz convention) instance label (int32)."""
    n = len(xyz)
    rec = np.zeros(n, dtype=_CLOUD_DTYPE)
    xyz = np.asarray(xyz, dtype=np.float32).reshape(n, 3)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    c = np.asarray(rgb, dtype=np.uint8).reshape(n, 3).astype(np.uint32)
    rec["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    rec["instance"] = np.asarray(instance, dtype=np.int32).reshape(n)
    rec["label"] = np.asarray(label, dtype=np.int32).reshape(n)
    F = PointField
    fields = [F(name="x", offset=0, datatype=F.FLOAT32, count=1), F(name="y", offset=4, datatype=F.FLOAT32, count=1),
              F(name="z", offset=8, datatype=F.FLOAT32, count=1), F(name="rgb", offset=12, datatype=F.FLOAT32, count=1),
              F(name="instance", offset=16, datatype=F.INT32, count=1), F(name="label", offset=20, datatype=F.INT32, count=1)]
    msg = PointCloud2(header=header, height=1, width=n, fields=fields, is_bigendian=False,
                      point_step=_CLOUD_DTYPE.itemsize, row_step=_CLOUD_DTYPE.itemsize * n, is_dense=True)
    msg.data = rec.tobytes()
    return msg


def cloud_from_msg(msg: PointCloud2) -> dict[str, np.ndarray]:
    """xyz (N,3) float32, rgb (N,3) uint8, instance, label of a cloud written by ``cloud_to_msg``."""
    names = [f.name for f in msg.fields]
    if names != list(_CLOUD_DTYPE.names) or msg.point_step != _CLOUD_DTYPE.itemsize:
        raise ConversionError("size", f"unexpected cloud layout {names} step {msg.point_step}")
    rec = np.frombuffer(bytes(msg.data), dtype=_CLOUD_DTYPE)
    c = rec["rgb"].copy().view(np.uint32)
    rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=1).astype(np.uint8)
    return {"xyz": np.stack([rec["x"], rec["y"], rec["z"]], axis=1), "rgb": rgb,
            "instance": rec["instance"].copy(), "label": rec["label"].copy()}
