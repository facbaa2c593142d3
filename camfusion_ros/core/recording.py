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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from camfusion_ros.cli_errors import one_line, report_error
from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.geometry import pose_matrix

__all__ = ["RecordingTopics", "RecordingError", "read_frames", "inspect_recording", "exit_on_error",
           "decode_image", "decode_depth", "ros_typestore", "open_recording"]

log = logging.getLogger(__name__)

DEPTH_ENCODINGS = {"16UC1": "mm", "mono16": "mm", "32FC1": "m"}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
INSTANCE_ENCODINGS = ("32SC1", "16UC1", "mono16", "32UC1")


class RecordingError(ValueError):
    """A recording that cannot be read; the message is one line a user can act on."""


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
                tolerance_s: float = 0.05) -> Iterator[RGBDFrame]:
    """Synchronised frames in stamp order.

    Colour, depth and the instance image are matched on exactly equal header
    stamps; pose and camera info take the nearest stamp within ``tolerance_s``
    (frames without one are skipped with a warning). Depth comes out in metres.
    """
    topics = topics or RecordingTopics()
    path = Path(bag_path)
    reader = open_recording(path)
    try:
        yield from _frames(reader, path, topics, max_frames, int(tolerance_s * 1e9))
    except RecordingError:
        raise
    except Exception as exc:  # a damaged chunk shows up as any decode error while streaming
        raise RecordingError(f"cannot read recording {path}: corrupt or truncated ({_why(exc)})") from None
    finally:
        reader.close()


def _frames(reader, path: Path, topics: RecordingTopics, max_frames: int | None, tol_ns: int) -> Iterator[RGBDFrame]:
    by_topic: dict[str, list] = {}
    for c in reader.connections:
        by_topic.setdefault(c.topic, []).append(c)
    missing = [f"{role} ({name})" for role, name in topics.required().items() if name not in by_topic]
    if missing:
        raise RecordingError(f"{path}: missing required topic {', '.join(missing)}; topics present: "
                             f"{', '.join(sorted(by_topic)) or 'none'}")
    # Small messages first: pose and intrinsics for the whole recording.
    poses: list[tuple[int, np.ndarray]] = []
    infos: list[tuple[int, np.ndarray]] = []
    for conn, _, raw in reader.messages(connections=by_topic[topics.pose] + by_topic[topics.camera_info]):
        msg = reader.deserialize(raw, conn.msgtype)
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
        T = _nearest(pose_t, poses, stamp, tol_ns)
        K = _nearest(info_t, infos, stamp, tol_ns)
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
            if conn.topic == topics.color:
                parts["rgb"] = decode_image(msg, conn.topic)
                parts["frame_id"] = msg.header.frame_id
            elif conn.topic == topics.depth:
                parts["depth"] = decode_depth(msg, conn.topic)
            else:
                parts["inst"] = decode_instances(msg, conn.topic)
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


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _nearest(times: list[int], values: list, stamp: int, tol_ns: int):
    if not times:
        return None
    i = bisect.bisect_left(times, stamp)
    best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - stamp))
    return values[best][1] if abs(times[best] - stamp) <= tol_ns else None


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


def decode_image(msg, topic: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) RGB from rgb8/bgr8/rgba8/bgra8/mono8."""
    enc = msg.encoding
    if enc not in COLOR_ENCODINGS:
        raise RecordingError(f"{topic}: unknown colour encoding {enc!r} (supported: {', '.join(COLOR_ENCODINGS)})")
    if enc == "mono8":
        g = _pixels(msg, topic, np.uint8, 1)
        return np.repeat(g[:, :, None], 3, axis=2)
    arr = _pixels(msg, topic, np.uint8, 4 if enc.endswith("a8") else 3)[:, :, :3]
    return np.ascontiguousarray(arr[:, :, ::-1] if enc.startswith("bgr") else arr)


def decode_depth(msg, topic: str = "depth") -> np.ndarray:
    """float32 metres from 16UC1/mono16 (millimetres) or 32FC1 (metres); no reading = 0."""
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
