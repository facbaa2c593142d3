"""Reads rosbag2 recordings as time-ordered, synchronised ``RGBDFrame``s.

Every offline consumer (evaluation, training precomputation, benchmarks, the
bag runner) reads recordings through ``read_frames`` so they all agree on
synchronisation, depth units and error handling. Reading uses the ``rosbags``
library (pure Python, no ROS), and every failure a user can cause (wrong
path, not a bag, damaged file, missing topic, unknown encoding) becomes one
``RecordingError`` with a readable one-line message.
"""
from __future__ import annotations

import bisect
import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from camfusion_ros.cli_errors import one_line, report_error
from camfusion_ros.core.compressed import COMPRESSED_MSGTYPE, TRANSPORT_SUFFIX, CompressedImageError
from camfusion_ros.core.compressed import decode_color as _compressed_color
from camfusion_ros.core.compressed import decode_depth as _compressed_depth
from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.geometry import pose_matrix

__all__ = ["RecordingTopics", "RecordingError", "CorruptImageError", "read_frames", "inspect_recording",
           "exit_on_error", "decode_image", "decode_depth", "ros_typestore", "open_recording", "POSE_SOURCES",
           "TF_TOPIC", "TF_STATIC_TOPIC"]

log = logging.getLogger(__name__)

DEPTH_ENCODINGS = {"16UC1": "mm", "mono16": "mm", "32FC1": "m"}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
INSTANCE_ENCODINGS = ("32SC1", "16UC1", "mono16", "32UC1")


POSE_SOURCES = ("topic", "tf")   # where a frame's camera pose comes from: the pose topic, or /tf + /tf_static
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
TF_TOPICS = (TF_TOPIC, TF_STATIC_TOPIC)


class RecordingError(ValueError):
    """A recording that cannot be read; the message is one line a user can act on."""


class CorruptImageError(RecordingError):
    """One image whose compressed payload is damaged: ``read_frames`` skips its frame (counted), a robot bag with
    one bad JPEG still maps."""


@dataclass
class RecordingTopics:
    """Topic names of a recording; ``instances`` empty = do not read ground-truth instances."""
    color: str = "/camera/color/image_raw"
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/color/camera_info"
    pose: str = "/camera/pose"
    instances: str = "/camera/instances/image_raw"

    def required(self) -> dict[str, str]:
        return {"color": self.color, "depth": self.depth, "camera_info": self.camera_info, "pose": self.pose}


def ros_typestore():
    """Message definitions for bags without embedded ones: the newest ROS 2 store rosbags ships up to Kilted (the venv's ROS)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST)


def open_recording(path: str | Path):
    """An opened rosbags AnyReader, or RecordingError saying why not (shared with the replayer)."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise RecordingError(f"recording not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise RecordingError(f"not a rosbag2 recording: {path} (directory without metadata.yaml)")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise RecordingError(f"not a rosbag2 recording: {path} (expected a bag directory, .mcap or .db3)")
    try:
        reader = AnyReader([path], default_typestore=ros_typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several types for damaged files
        raise RecordingError(f"cannot open recording {path}: corrupt or truncated ({_why(exc)})") from None
    return reader


def _why(exc: BaseException) -> str:
    """A library's own error, shortened to fit inside one of ours."""
    text = one_line(exc)
    return text if len(text) < 200 else text[:197] + "..."


def inspect_recording(path: str | Path) -> dict:
    """Topics, types, message counts and duration of a recording (from its index, without decoding)."""
    path = Path(path)
    reader = open_recording(path)
    try:
        topics = {name: {"type": info.msgtype, "count": int(info.msgcount)} for name, info in sorted(reader.topics.items())}
        count = int(reader.message_count)
        start, end = (int(reader.start_time), int(reader.end_time)) if count else (0, 0)
    except Exception as exc:
        raise RecordingError(f"cannot read recording {path}: corrupt or truncated ({_why(exc)})") from None
    finally:
        reader.close()
    return {"path": str(path), "topics": topics, "message_count": count, "start_ns": start, "end_ns": end,
            "duration_s": (end - start) / 1e9}


def read_frames(bag_path: str | Path, topics: RecordingTopics | None = None, max_frames: int | None = None,
                tolerance_s: float = 0.05, pose_source: str = "topic", map_frame: str = "map",
                camera_frame: str = "", tf_tolerance_s: float = 0.01) -> Iterator[RGBDFrame]:
    """Synchronised frames in stamp order.

    Colour, depth and the instance image are matched on exactly equal header
    stamps; pose and camera info take the nearest stamp within ``tolerance_s``
    (frames without one are skipped with a warning). Depth comes out in metres.
    Colour and depth may be ``sensor_msgs/CompressedImage`` (image_transport's
    ``compressed`` / ``compressedDepth``; detected from the recorded message
    type, and ``<topic>/compressed`` / ``<topic>/compressedDepth`` are read
    when the raw topic is absent); a frame whose payload is damaged is skipped
    with a warning and counted like an unsynchronised one.

    ``pose_source="tf"`` takes the camera pose from ``/tf`` + ``/tf_static``
    instead of the pose topic: ``T_map_camera`` at the image stamp, interpolated
    and composed through the tree as tf2 does (core/transforms.py); the camera
    frame is the colour image's ``header.frame_id`` unless ``camera_frame`` is
    given. A frame without a transform (missing link, or a stamp more than
    ``tf_tolerance_s`` outside the data) is skipped with a warning.
    """
    topics = topics or RecordingTopics()
    if pose_source not in POSE_SOURCES:
        raise RecordingError(f"pose source must be one of {', '.join(POSE_SOURCES)}, got {pose_source!r}")
    path = Path(bag_path)
    reader = open_recording(path)
    tf = _TfSource(map_frame, camera_frame, int(tf_tolerance_s * 1e9)) if pose_source == "tf" else None
    try:
        yield from _frames(reader, path, topics, max_frames, int(tolerance_s * 1e9), tf)
    except RecordingError:
        raise
    except Exception as exc:  # a damaged chunk shows up as any decode error while streaming
        raise RecordingError(f"cannot read recording {path}: corrupt or truncated ({_why(exc)})") from None
    finally:
        reader.close()


def _frames(reader, path: Path, topics: RecordingTopics, max_frames: int | None, tol_ns: int,
            tf: "_TfSource | None" = None) -> Iterator[RGBDFrame]:
    by_topic: dict[str, list] = {}
    for c in reader.connections:
        by_topic.setdefault(c.topic, []).append(c)
    topics = _compressed_fallback(topics, by_topic)
    required = topics.required()
    if tf is not None:
        required.pop("pose")
        if not any(t in by_topic for t in TF_TOPICS):
            required["tf"] = " or ".join(TF_TOPICS)
    missing = [f"{role} ({name})" for role, name in required.items() if name not in by_topic]
    if missing:
        raise RecordingError(f"{path}: missing required topic {', '.join(missing)}; topics present: "
                             f"{', '.join(sorted(by_topic)) or 'none'}")
    # Small messages first: pose and intrinsics for the whole recording.
    poses: list[tuple[int, np.ndarray]] = []
    infos: list[tuple[int, np.ndarray]] = []
    pose_conns = [c for t in TF_TOPICS for c in by_topic.get(t, [])] if tf is not None else by_topic[topics.pose]
    for conn, _, raw in reader.messages(connections=pose_conns + by_topic[topics.camera_info]):
        msg = reader.deserialize(raw, conn.msgtype)
        if tf is not None and conn.topic in TF_TOPICS:
            tf.add(msg, static=conn.topic == TF_STATIC_TOPIC, where=path)
            continue
        stamp = _stamp(msg.header)
        if conn.topic == topics.pose:
            T = _pose_matrix(msg)
            if T is None:
                log.warning("%s: pose at %d ns is not finite or has a non-unit quaternion; ignored", path, stamp)
            else:
                poses.append((stamp, T))
        else:
            infos.append((stamp, np.asarray(msg.k, dtype=np.float64).reshape(3, 3)))
    poses.sort(key=lambda p: p[0])
    infos.sort(key=lambda p: p[0])
    pose_t = [p[0] for p in poses]
    info_t = [p[0] for p in infos]

    with_inst = bool(topics.instances) and topics.instances in by_topic
    image_conns = by_topic[topics.color] + by_topic[topics.depth] + (by_topic[topics.instances] if with_inst else [])
    pending: dict[int, dict] = {}
    emitted = skipped = 0

    def build(stamp: int, parts: dict) -> RGBDFrame | None:
        nonlocal skipped
        T = _nearest(pose_t, poses, stamp, tol_ns) if tf is None else tf.pose(stamp, parts["frame_id"], path)
        K = _nearest(info_t, infos, stamp, tol_ns)
        if T is None and tf is not None:
            skipped += 1
            return None
        if T is None or K is None:
            skipped += 1
            log.warning("%s: frame at %d ns has no %s within %.3f s; skipped", path, stamp,
                        "pose" if T is None else "camera_info", tol_ns / 1e9)
            return None
        rgb, depth = parts["rgb"], parts["depth"]
        if rgb.shape[:2] != depth.shape:
            import cv2
            rgb = cv2.resize(rgb, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_AREA)
        return RGBDFrame(stamp_ns=stamp, rgb=rgb, depth=depth, K=K, T_world_cam=T,
                         gt_instances=parts.get("inst"), frame_id=parts["frame_id"], index=emitted)

    def complete(parts: dict) -> bool:
        return "rgb" in parts and "depth" in parts and (not with_inst or "inst" in parts)

    def groups() -> Iterator[tuple[int, dict]]:
        """Image parts grouped by stamp, in stamp order, once complete or past the tolerance."""
        for conn, _, raw in reader.messages(connections=image_conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = _stamp(msg.header)
            parts = pending.setdefault(stamp, {})
            try:
                if conn.topic == topics.color:
                    parts["rgb"] = decode_image(msg, conn.topic)
                    parts["frame_id"] = msg.header.frame_id
                elif conn.topic == topics.depth:
                    parts["depth"] = decode_depth(msg, conn.topic)
                else:
                    parts["inst"] = decode_instances(msg, conn.topic)
            except CorruptImageError as exc:   # the frame goes without this part: skipped and counted below
                log.warning("%s: frame at %d ns: %s", path, stamp, exc)
                continue
            for s in sorted(pending):
                if not (complete(pending[s]) or s < stamp - tol_ns):
                    break
                yield s, pending.pop(s)
        for s in sorted(pending):
            yield s, pending.pop(s)

    for s, group in groups():
        if "rgb" not in group or "depth" not in group:
            skipped += 1
            log.warning("%s: frame at %d ns lacks colour or depth; skipped", path, s)
            continue
        frame = build(s, group)
        if frame is None:
            continue
        yield frame
        emitted += 1
        if max_frames is not None and emitted >= max_frames:
            return
    if skipped:
        log.warning("%s: %d frame(s) skipped (incomplete or unsynchronised)", path, skipped)


def _compressed_fallback(topics: RecordingTopics, by_topic: dict) -> RecordingTopics:
    """Read ``<colour>/compressed`` / ``<depth>/compressedDepth`` when the configured raw topic is not recorded.

    Robot bags record image_transport's compressed topics beside (or instead of) the raw ones; the message
    type of the topic read then decides how each message is decoded (``decode_image`` / ``decode_depth``).
    """
    changes = {}
    for role, suffixes in (("color", (TRANSPORT_SUFFIX["color"],)),
                           ("depth", (TRANSPORT_SUFFIX["depth"], TRANSPORT_SUFFIX["color"]))):
        name = getattr(topics, role)
        if name and name not in by_topic:
            found = [name + s for s in suffixes if name + s in by_topic]
            if found:
                changes[role] = found[0]
    return replace(topics, **changes) if changes else topics


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _nearest(times: list[int], values: list, stamp: int, tol_ns: int):
    if not times:
        return None
    i = bisect.bisect_left(times, stamp)
    best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - stamp))
    return values[best][1] if abs(times[best] - stamp) <= tol_ns else None


class _TfSource:
    """The camera poses of a recording from its /tf and /tf_static (all of it: no cache limit offline)."""

    def __init__(self, map_frame: str, camera_frame: str, tolerance_ns: int) -> None:
        from camfusion_ros.core.transforms import TransformBuffer

        self.map_frame, self.camera_frame, self.tolerance_ns = map_frame, camera_frame, tolerance_ns
        self.buffer = TransformBuffer(cache_ns=None)
        self._warned = 0

    def add(self, msg, static: bool, where: Path) -> None:
        _, errors = self.buffer.add_message(msg, static=static)
        for e in errors[:max(0, 5 - self._warned)]:
            log.warning("%s: transform ignored: %s", where, e)
        self._warned += len(errors)

    def pose(self, stamp: int, image_frame: str, where: Path) -> np.ndarray | None:
        from camfusion_ros.core.transforms import TransformError

        camera = self.camera_frame or image_frame
        try:
            return self.buffer.lookup(self.map_frame, camera, stamp, self.tolerance_ns)
        except TransformError as exc:
            log.warning("%s: frame at %d ns has no transform %s <- %s (%s); skipped", where, stamp,
                        self.map_frame, camera, exc)
            return None


def _pose_matrix(msg) -> np.ndarray | None:
    p, q = msg.pose.position, msg.pose.orientation
    try:
        return pose_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
    except ValueError:
        return None


def _pixels(msg, topic: str, dtype: np.dtype, channels: int) -> np.ndarray:
    """(H, W[, C]) array view of an Image message, honouring step padding and endianness."""
    h, w = int(msg.height), int(msg.width)
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row = w * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.step < row or data.size < msg.step * h:
        raise RecordingError(f"{topic}: image data too short for {w}x{h} {msg.encoding} (step {msg.step}, {data.size} bytes)")
    rows = data[: msg.step * h].reshape(h, msg.step)[:, :row]
    arr = np.ascontiguousarray(rows).view(dtype).reshape((h, w, channels) if channels > 1 else (h, w))
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _decode_compressed(decode, msg, topic: str) -> np.ndarray:
    """A CompressedImage through core/compressed.py: damaged payloads become CorruptImageError (the frame is
    skipped), unsupported formats RecordingError (every frame would fail: stop with the reason)."""
    try:
        return decode(msg.format, msg.data)
    except CompressedImageError as exc:
        cls = CorruptImageError if exc.reason == "bad_compressed" else RecordingError
        raise cls(f"{topic}: {exc}") from None


def decode_image(msg, topic: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) RGB from rgb8/bgr8/rgba8/bgra8/mono8, or a CompressedImage (JPEG/PNG)."""
    if getattr(msg, "__msgtype__", "") == COMPRESSED_MSGTYPE:
        return _decode_compressed(_compressed_color, msg, topic)
    enc = msg.encoding
    if enc not in COLOR_ENCODINGS:
        raise RecordingError(f"{topic}: unknown colour encoding {enc!r} (supported: {', '.join(COLOR_ENCODINGS)})")
    if enc == "mono8":
        g = _pixels(msg, topic, np.uint8, 1)
        return np.repeat(g[:, :, None], 3, axis=2)
    arr = _pixels(msg, topic, np.uint8, 4 if enc.endswith("a8") else 3)[:, :, :3]
    return np.ascontiguousarray(arr[:, :, ::-1] if enc.startswith("bgr") else arr)


def decode_depth(msg, topic: str = "depth") -> np.ndarray:
    """float32 metres from 16UC1/mono16 (millimetres) or 32FC1 (metres), or a compressedDepth CompressedImage
    (PNG; RVL refused); no reading = 0."""
    if getattr(msg, "__msgtype__", "") == COMPRESSED_MSGTYPE:
        return _decode_compressed(_compressed_depth, msg, topic)
    unit = DEPTH_ENCODINGS.get(msg.encoding)
    if unit is None:
        raise RecordingError(f"{topic}: unknown depth encoding {msg.encoding!r} (supported: 16UC1 mm, 32FC1 m)")
    if unit == "mm":
        return _pixels(msg, topic, np.uint16, 1).astype(np.float32) / np.float32(1000.0)
    d = _pixels(msg, topic, np.float32, 1).astype(np.float32, copy=True)
    d[~np.isfinite(d)] = 0.0
    return d


def decode_instances(msg, topic: str = "instances") -> np.ndarray:
    """int32 instance ids (0 = none)."""
    enc = msg.encoding
    if enc not in INSTANCE_ENCODINGS:
        raise RecordingError(f"{topic}: unknown instance encoding {enc!r} (supported: {', '.join(INSTANCE_ENCODINGS)})")
    dtype = {"32SC1": np.int32, "16UC1": np.uint16, "mono16": np.uint16, "32UC1": np.uint32}[enc]
    return _pixels(msg, topic, dtype, 1).astype(np.int32)


@contextlib.contextmanager
def exit_on_error(*errors: type[BaseException]) -> Iterator[None]:
    """For CLIs: RecordingError (and the given types) become ``error: ...`` on stderr and exit status 2."""
    from camfusion_ros.core.ply import PlyError

    try:
        yield
    except (RecordingError, PlyError, *errors) as exc:
        raise SystemExit(report_error(exc)) from None   # the whole message: hints come last
