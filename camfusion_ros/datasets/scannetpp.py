"""ScanNet++ (v1/v2 release tree) -> rosbag2 + gt/, from the DSLR (default) or the iPhone stream.

Usage::

    camfusion-convert scannetpp ROOT --scene 0a5c013435 --out out/0a5c013435            # DSLR, raw labels
    camfusion-convert scannetpp ROOT --scene 0a5c013435 --stream iphone --stride 10 --out out/0a5c_iphone
    camfusion-convert scannetpp ROOT --split nvs_sem_train --out out/scannetpp           # OUT/<scene id>/ each
    camfusion-convert scannetpp ROOT --scene ID --vocabulary top100 --max-width 584 --out DIR

Source layout (``ROOT`` = the release root; names as in the official toolkit's common/scene_release.py)::

    ROOT/splits/<split>.txt                      scene ids, one per line (--split)
    ROOT/metadata/semantic_benchmark/map_benchmark.csv, top100.txt, top100_instance.txt   (--vocabulary top100)
    ROOT/data/<id>/scans/mesh_aligned_0.05.ply   the mesh every pose lives in (metric, +z up)
    ROOT/data/<id>/scans/mesh_aligned_0.05_mask.txt   anonymised vertex ids
    ROOT/data/<id>/scans/segments.json           {"segIndices": one segment id per vertex}
    ROOT/data/<id>/scans/segments_anno.json      {"segGroups": [{objectId, label, segments}, ...]} (groups overlap)
    ROOT/data/<id>/dslr/resized_images/DSC*.JPG  fisheye colour (1752x1168)
    ROOT/data/<id>/dslr/resized_anon_masks/*.png 255 keep, 0 anonymised
    ROOT/data/<id>/dslr/colmap/cameras.txt, images.txt   OPENCV_FISHEYE camera; world-to-camera poses
    ROOT/data/<id>/dslr/nerfstudio/transforms.json       frames/test_frames: mask_path, is_bad
    ROOT/data/<id>/iphone/rgb.mkv, rgb_mask.mkv  colour video and its anonymisation mask video
    ROOT/data/<id>/iphone/depth.bin              per frame: 4-byte little-endian length + LZ4 block of 256x192
                                                 uint16 mm (older files: raw-deflate float32 metres, per frame
                                                 or one stream for the whole file)
    ROOT/data/<id>/iphone/pose_intrinsic_imu.json  {"frame_%06d": {intrinsic, aligned_pose, pose, ...}}

What the recording holds:

- DSLR: every image of dslr/colmap/images.txt (sorted by name) except those flagged ``is_bad`` in
  nerfstudio/transforms.json; test images the release withholds are skipped. Images are undistorted to a
  pinhole camera exactly as the toolkit's dslr/undistort.py does (cv2.fisheye, balance 0, principal point at
  the image centre; COLMAP's parameters used by OpenCV as they are, as there), then reduced to ``--max-width``
  (default 876 = half width, INTER_AREA; K follows with pixel centres kept). Poses: COLMAP's world-to-camera
  inverted. The release has no DSLR depth, so depth is ray cast from the mesh (Embree) in the undistorted
  camera (the toolkit's common/render.py also renders it from the mesh).
- iPhone: every frame of pose_intrinsic_imu.json with a video frame and a depth.bin record (decode order from
  0 = ``frame_%06d``); use ``--stride`` (the video is 60 fps, ``--fps`` defaults to 60). Poses: ``aligned_pose``
  (camera-to-world in the mesh frame; ``pose`` is ARKit's own world and is never used). Depth is the sensor's,
  at its 256x192; colour is resized to it (as the ScanNet converter does) and K is the colour intrinsic scaled
  by 256/width (pixel centres kept). ``--max-width`` above 256 upsamples depth (nearest) instead. Frames
  without a pose, video frame or depth record are skipped (counted in the summary).
- Both: the ground-truth instance image (``/camera/instances/image_raw``) is ray cast from the annotated mesh
  with the frame's pose; a triangle takes the instance of its first vertex (the toolkit's rule). Anonymised
  pixels (mask 0) and triangles touching an anonymised vertex carry no instance (0); colour is kept as the
  release ships it (already blurred there).

Labels: per vertex, among the groups that survive the vocabulary the one with the fewest vertices wins
(the toolkit's single-label rule, semantic/transforms/mesh.py), membership through ``segIndices``.
``--vocabulary raw`` (default; the paper's free-form labels) keeps every non-empty label, classes sorted by
name; ``top100`` maps through map_benchmark.csv's ``semantic_map_to`` (empty = keep, ``None`` = drop -- the
toolkit's intent; with recent pandas it keeps the raw name, which top100 then ignores unless listed --, labels
missing from the csv dropped) and keeps names listed in top100.txt; top100 classes absent from
top100_instance.txt are gt background. Instance ids are the groups' ``objectId``. Unannotated and anonymised
vertices get instance 0 and label -1. gt/points.ply holds the mesh vertices with their colours.
"""
from __future__ import annotations

import csv
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from camfusion_ros.core.ply import PlyError, read_ply
from camfusion_ros.datasets.converter import (ConversionError, ConvertConfig, ConvertedFrame, fix_rotation,
                                              select_frames, write_bag)
from camfusion_ros.datasets.gt_writer import write_gt

__all__ = ["convert_scannetpp", "convert_split", "add_parser", "run_cli", "STREAMS", "VOCABULARIES",
           "resolve_groups", "read_colmap_cameras", "read_colmap_images", "DepthBin", "colmap_camera_to_world"]

STREAMS = ("dslr", "iphone")
VOCABULARIES = ("raw", "top100")
DEPTH_H, DEPTH_W = 192, 256                # depth.bin frames (hard-coded in the toolkit's extract_depth)
DSLR_MAX_WIDTH = 876                       # default output width: half of 1752
STREAM_FPS = {"dslr": 30.0, "iphone": 60.0}
RAW_BACKGROUND = ("wall", "floor", "ceiling")
IPHONE_POSE_KEY = "aligned_pose"           # camera-to-world in the mesh frame (module attribute: a test hook)


# --- small readers -----------------------------------------------------------------------------------------
def _need(path: Path) -> Path:
    if not path.is_file():
        raise ConversionError(f"missing file: {path}")
    return path


def _json(path: Path):
    try:
        return json.loads(_need(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in _need(path).read_text().splitlines() if ln.strip()]


def read_colmap_cameras(path: Path) -> dict[int, dict]:
    """cameras.txt -> {camera id: {model, width, height, params}}."""
    cams = {}
    for ln in _lines(path):
        if ln.startswith("#"):
            continue
        parts = ln.split()
        try:
            cams[int(parts[0])] = {"model": parts[1], "width": int(parts[2]), "height": int(parts[3]),
                                   "params": np.array([float(x) for x in parts[4:]])}
        except (IndexError, ValueError):
            raise ConversionError(f"{path}: not a COLMAP cameras.txt line: {ln[:80]!r}") from None
    if not cams:
        raise ConversionError(f"{path}: no camera")
    return cams


def read_colmap_images(path: Path) -> list[dict]:
    """images.txt -> [{name, camera_id, qvec (w x y z), tvec}] (world-to-camera), in file order.

    Each image takes two lines; the second (its 2D points) may be empty."""
    lines = _need(path).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        ln = lines[i].strip()
        if not ln or ln.startswith("#"):
            i += 1
            continue
        parts = ln.split()
        try:
            out.append({"qvec": np.array([float(x) for x in parts[1:5]]),
                        "tvec": np.array([float(x) for x in parts[5:8]]),
                        "camera_id": int(parts[8]), "name": " ".join(parts[9:])})
        except (IndexError, ValueError):
            raise ConversionError(f"{path}:{i + 1}: not a COLMAP images.txt line: {ln[:80]!r}") from None
        if not out[-1]["name"]:
            raise ConversionError(f"{path}:{i + 1}: image line without a name")
        i += 2
    return out


def colmap_camera_to_world(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """COLMAP stores world-to-camera (qw qx qy qz, t); return camera-to-world (OpenCV axes)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ np.asarray(tvec, dtype=np.float64)
    return T


class DepthBin:
    """iphone/depth.bin: ``frame(n)`` -> uint16 millimetres (192, 256); frames must be asked in increasing order
    only for the old one-stream format (the per-frame formats are indexed)."""

    def __init__(self, path: Path) -> None:
        self.path = _need(path)
        self._offsets: list[tuple[int, int]] = []
        self._stream = None
        size = path.stat().st_size
        with open(path, "rb") as f:
            pos = 0
            while pos + 4 <= size:
                f.seek(pos)
                n = int.from_bytes(f.read(4), "little")
                if n <= 0 or pos + 4 + n > size:
                    break
                self._offsets.append((pos + 4, n))
                pos += 4 + n
        if pos != size or not self._offsets or self._decode(self._record(0)) is None:
            self._offsets = []                      # not per-frame records: one raw-deflate float32 stream
            self._stream = _DeflateFrames(path)

    def __len__(self) -> int:
        return len(self._offsets) if self._stream is None else self._stream.count()

    def _record(self, n: int) -> bytes:
        off, size = self._offsets[n]
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(size)

    @staticmethod
    def _decode(data: bytes) -> Optional[np.ndarray]:
        try:
            import lz4.block
        except ImportError:
            raise ConversionError("reading iphone/depth.bin needs the python package lz4 (pip install lz4)") from None
        try:
            raw = lz4.block.decompress(data, uncompressed_size=DEPTH_H * DEPTH_W * 2)
            if len(raw) == DEPTH_H * DEPTH_W * 2:
                return np.frombuffer(raw, "<u2").reshape(DEPTH_H, DEPTH_W).copy()
        except Exception:                           # lz4.block.LZ4BlockError
            pass
        try:   # bounded: a hostile record cannot inflate past one frame
            raw = zlib.decompressobj(wbits=-zlib.MAX_WBITS).decompress(data, DEPTH_H * DEPTH_W * 4 + 1)
        except zlib.error:
            return None
        if len(raw) != DEPTH_H * DEPTH_W * 4:
            return None
        return _metres_to_mm(np.frombuffer(raw, "<f4").reshape(DEPTH_H, DEPTH_W))

    def frame(self, n: int) -> Optional[np.ndarray]:
        if self._stream is not None:
            return self._stream.frame(n)
        if n >= len(self._offsets):
            return None
        depth = self._decode(self._record(n))
        if depth is None:
            raise ConversionError(f"{self.path}: frame {n} is neither an LZ4 uint16 nor a deflate float32 depth map")
        return depth


def _metres_to_mm(d: np.ndarray) -> np.ndarray:
    d = np.where(np.isfinite(d), d, 0)
    return np.clip(d * 1000.0, 0, 65535).astype(np.uint16)


class _DeflateFrames:
    """The old depth.bin: the whole file one raw-deflate stream of float32 metres, read forward only."""

    FRAME = DEPTH_H * DEPTH_W * 4

    def __init__(self, path: Path) -> None:
        self.path, self._next, self._buf = path, 0, b""
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._f = open(path, "rb")
        if self.frame(0) is None:
            raise ConversionError(f"{path}: not a ScanNet++ depth.bin (neither LZ4/deflate records nor one "
                                  "deflate stream)")
        self._restart()

    def _restart(self) -> None:
        self._f.seek(0)
        self._z, self._buf, self._next = zlib.decompressobj(-zlib.MAX_WBITS), b"", 0

    def _pull(self) -> Optional[bytes]:
        while len(self._buf) < self.FRAME:
            chunk = self._f.read(1 << 16)   # deflate inflates <= ~1032x: at most ~66 MB per read
            try:
                self._buf += self._z.decompress(chunk) if chunk else self._z.flush()
            except zlib.error:
                return None
            if not chunk:
                break
        if len(self._buf) < self.FRAME:
            return None
        out, self._buf = self._buf[: self.FRAME], self._buf[self.FRAME:]
        self._next += 1
        return out

    def frame(self, n: int) -> Optional[np.ndarray]:
        if n < self._next:
            self._restart()
        data = None
        while self._next <= n:
            data = self._pull()
            if data is None:
                return None
        return _metres_to_mm(np.frombuffer(data, "<f4").reshape(DEPTH_H, DEPTH_W))

    def count(self) -> int:
        self._restart()
        n = 0
        while self._pull() is not None:
            n += 1
        self._restart()
        return n


class _Video:
    """Frames of a video in decode order, asked for in increasing order (VideoCapture, FFmpeg backend)."""

    def __init__(self, path: Path) -> None:
        self.path = _need(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise ConversionError(f"cannot open video {path} (OpenCV/FFmpeg could not decode it)")
        self._next = 0

    def frame(self, n: int) -> Optional[np.ndarray]:
        if n < self._next:
            raise ConversionError(f"{self.path}: frames must be read in increasing order")
        while self._next < n:
            if not self._cap.grab():
                return None
            self._next += 1
        ok, img = self._cap.read()
        self._next += 1
        return img if ok else None

    def close(self) -> None:
        self._cap.release()


# --- labels --------------------------------------------------------------------------------------------------
def resolve_groups(seg_indices: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Per vertex, the index of the group with the fewest vertices among those that contain it (-1: none).

    ``groups[g]`` lists segment ids; a vertex belongs to a group when its ``segIndices`` entry is listed (so
    both real over-segmentations and the current per-vertex identity work). Ties go to the earlier group."""
    seg_ids, inverse = np.unique(np.asarray(seg_indices, dtype=np.int64), return_inverse=True)
    seg_size = np.bincount(inverse.reshape(-1), minlength=len(seg_ids))
    best = np.full(len(seg_ids), -1, np.int64)
    best_size = np.full(len(seg_ids), np.iinfo(np.int64).max, np.int64)
    for g, segments in enumerate(groups):
        segs = np.unique(np.asarray(segments, dtype=np.int64))
        pos = np.searchsorted(seg_ids, segs)
        pos = pos[(pos < len(seg_ids)) & (seg_ids[np.minimum(pos, len(seg_ids) - 1)] == segs)]
        if len(pos) == 0:
            continue
        size = int(seg_size[pos].sum())
        win = pos[size < best_size[pos]]
        best[win] = g
        best_size[win] = size
    return best[inverse.reshape(-1)]


@dataclass
class Vocabulary:
    names: list[str]
    background: list[str]
    lookup: dict[str, int]            # raw label -> class index (missing = ignored)


def _raw_vocabulary(labels: Sequence[str]) -> Vocabulary:
    names = sorted({lab for lab in labels if lab})
    return Vocabulary(names, [b for b in RAW_BACKGROUND if b in names], {n: i for i, n in enumerate(names)})


def _top100_vocabulary(root: Path) -> Vocabulary:
    bench = root / "metadata" / "semantic_benchmark"
    names = _lines(bench / "top100.txt")
    instance_names = set(_lines(bench / "top100_instance.txt"))
    index = {n: i for i, n in enumerate(names)}
    path = _need(bench / "map_benchmark.csv")
    lookup = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None
    if rows and not {"class", "semantic_map_to"} <= set(rows[0]):
        raise ConversionError(f"{path}: expected columns class,count,semantic_map_to,instance_map_to")
    for row in rows:
        raw, target = (row.get("class") or "").strip(), (row.get("semantic_map_to") or "").strip()
        if not raw or target == "None":           # None: the class is dropped
            continue
        mapped = target or raw                    # empty: the raw label is kept as it is
        if mapped in index:
            lookup[raw] = index[mapped]
    return Vocabulary(names, [n for n in names if n not in instance_names], lookup)


@dataclass
class SceneLabels:
    xyz: np.ndarray
    rgb: np.ndarray
    faces: np.ndarray
    vertex_instance: np.ndarray       # int32, 0 = none
    vertex_label: np.ndarray          # int32, -1 = ignore
    face_instance: np.ndarray         # int32 per triangle (first vertex's instance; 0 when any vertex is anonymised)
    anonymised: np.ndarray            # bool per vertex
    vocabulary: Vocabulary
    instances: dict[int, int]


def load_labels(scene_dir: Path, vocabulary: Vocabulary | str, root: Optional[Path] = None) -> SceneLabels:
    scans = scene_dir / "scans"
    mesh_path = _need(scans / "mesh_aligned_0.05.ply")
    try:
        v = read_ply(mesh_path, faces=True)
    except PlyError as exc:
        raise ConversionError(str(exc)) from None
    if "faces" not in v or len(v["faces"]) == 0:
        raise ConversionError(f"{mesh_path}: the mesh has no faces")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    rgb = (np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8) if "red" in v
           else np.full((len(xyz), 3), 128, np.uint8))
    faces = np.asarray(v["faces"], dtype=np.int64)
    nv = len(xyz)
    seg_path = scans / "segments.json"
    seg = _json(seg_path)
    seg = np.asarray(seg.get("segIndices", []) if isinstance(seg, dict) else [], dtype=np.int64)
    if len(seg) != nv:
        raise ConversionError(f"{seg_path} has {len(seg)} segIndices but {mesh_path} has {nv} vertices")
    anno_path = scans / "segments_anno.json"
    anno = _json(anno_path)
    groups = anno.get("segGroups") if isinstance(anno, dict) else None
    if not isinstance(groups, list):
        raise ConversionError(f"{anno_path}: no segGroups list")
    mask_path = _need(scans / "mesh_aligned_0.05_mask.txt")
    try:                                          # often empty: no anonymised vertex
        anon_ids = np.array(mask_path.read_text().split(), dtype=np.int64)
    except ValueError as exc:
        raise ConversionError(f"{mask_path}: expected vertex ids ({exc})") from None
    if len(anon_ids) and (anon_ids.min() < 0 or anon_ids.max() >= nv):
        raise ConversionError(f"{mask_path}: vertex id out of range (the mesh has {nv} vertices)")
    if isinstance(vocabulary, str):
        if vocabulary == "raw":
            vocabulary = _raw_vocabulary([str(g.get("label") or "") for g in groups if isinstance(g, dict)])
        elif vocabulary == "top100":
            vocabulary = _top100_vocabulary(Path(root) if root is not None else scene_dir.parent.parent)
        else:
            raise ConversionError(f"unknown vocabulary {vocabulary!r} (choose from {', '.join(VOCABULARIES)})")
    kept, kept_class, kept_id, seen = [], [], [], set()
    for k, g in enumerate(groups):
        try:
            oid, label, segments = int(g["objectId"]), str(g.get("label") or ""), g["segments"]
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{anno_path}: segGroup {k} lacks objectId/segments") from None
        cls = vocabulary.lookup.get(label, -1)
        if oid <= 0 or cls < 0:                   # no object, or a label the vocabulary drops: it does not compete
            continue
        if oid in seen:
            raise ConversionError(f"{anno_path}: objectId {oid} appears in two segGroups")
        seen.add(oid)
        kept.append(segments)
        kept_class.append(cls)
        kept_id.append(oid)
    win = resolve_groups(seg, kept)
    has = win >= 0
    vertex_instance = np.zeros(nv, np.int32)
    vertex_label = np.full(nv, -1, np.int32)
    vertex_instance[has] = np.asarray(kept_id, np.int32)[win[has]]
    vertex_label[has] = np.asarray(kept_class, np.int32)[win[has]]
    anonymised = np.zeros(nv, bool)
    anonymised[anon_ids] = True
    vertex_instance[anonymised] = 0
    vertex_label[anonymised] = -1
    present = set(np.unique(vertex_instance[vertex_instance > 0]).tolist())
    instances = {oid: cls for oid, cls in zip(kept_id, kept_class) if oid in present}
    face_instance = vertex_instance[faces[:, 0]].copy()
    face_instance[anonymised[faces].any(axis=1)] = 0
    return SceneLabels(xyz, rgb, faces, vertex_instance, vertex_label, face_instance, anonymised, vocabulary,
                       instances)


# --- streams -------------------------------------------------------------------------------------------------
def _scaled_K(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by (sx, sy) with cv2.resize (pixel centres kept: c' = (c + 0.5) s - 0.5)."""
    out = np.array(K, dtype=np.float64)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def _resize_mask(anon: np.ndarray, w: int, h: int) -> np.ndarray:
    """Anonymised-pixel mask at another size; a pixel any anonymised source pixel touches stays anonymised."""
    if anon.shape == (h, w):
        return anon
    return cv2.resize(anon.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0


def _instances(labels: SceneLabels, face: np.ndarray, anon: np.ndarray) -> np.ndarray:
    inst = np.where(face >= 0, labels.face_instance[np.maximum(face, 0)], 0).astype(np.int32)
    inst[anon] = 0
    return inst


def _output_size(w: int, h: int, max_width: Optional[int]) -> tuple[int, int]:
    if max_width is None or max_width >= w:
        return w, h
    if max_width < 8:
        raise ConversionError(f"--max-width must be at least 8, got {max_width}")
    return max_width, max(1, int(round(h * max_width / w)))


@dataclass
class _Plan:
    numbers: list[int]
    load: Callable[[int], Optional[ConvertedFrame]]
    info: dict
    close: Optional[Callable[[], None]] = None


def _dslr(scene_dir: Path, labels: SceneLabels, raycaster, max_width: Optional[int]) -> _Plan:
    dslr = scene_dir / "dslr"
    cams = read_colmap_cameras(dslr / "colmap" / "cameras.txt")
    images = read_colmap_images(dslr / "colmap" / "images.txt")
    transforms = _json(dslr / "nerfstudio" / "transforms.json")
    flags, masks, test_names = {}, {}, set()
    for key in ("frames", "test_frames"):
        for fr in transforms.get(key, []) if isinstance(transforms, dict) else []:
            name = Path(str(fr.get("file_path", ""))).name
            flags[name] = bool(fr.get("is_bad", False))
            if fr.get("mask_path"):
                masks[name] = Path(str(fr["mask_path"])).name
            if key == "test_frames":
                test_names.add(name)
    frames, bad, withheld = [], 0, 0
    for im in sorted(images, key=lambda im: Path(im["name"]).name):
        name = Path(im["name"]).name
        if flags.get(name, False):
            bad += 1
            continue
        if not (dslr / "resized_images" / name).is_file() and name in test_names:
            withheld += 1                           # test images some scenes withhold (toolkit: skipped too)
            continue
        if im["camera_id"] not in cams:
            raise ConversionError(f"{dslr / 'colmap' / 'images.txt'}: {name} uses camera {im['camera_id']}, "
                                  "which cameras.txt does not list")
        masks[name] = dslr / "resized_anon_masks" / masks.get(name, Path(name).with_suffix(".png").name)
        for path in (dslr / "resized_images" / name, masks[name]):   # before anything is written
            _need(path)
        frames.append((name, im))
    if not frames:
        raise ConversionError(f"{dslr / 'colmap' / 'images.txt'}: no usable image ({bad} flagged is_bad, "
                              f"{withheld} withheld)")
    maps: dict[int, tuple] = {}

    def camera(cid: int):
        if cid not in maps:
            cam = cams[cid]
            w, h, p = cam["width"], cam["height"], cam["params"]
            expected = {"OPENCV_FISHEYE": 8, "PINHOLE": 4}.get(cam["model"])
            if expected is None or len(p) != expected:
                raise ConversionError(f"{dslr / 'colmap' / 'cameras.txt'}: camera {cid} is {cam['model']} with "
                                      f"{len(p)} parameters; expected OPENCV_FISHEYE (fx fy cx cy k1 k2 k3 k4)")
            K = np.array([[p[0], 0, p[2]], [0, p[1], p[3]], [0, 0, 1.0]])
            if cam["model"] == "OPENCV_FISHEYE":   # the toolkit's dslr/undistort.py
                D = p[4:8].astype(np.float64)
                K_new = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(K, D, (w, h), np.eye(3), balance=0.0)
                K_new[0, 2], K_new[1, 2] = w / 2.0, h / 2.0
                m1, m2 = cv2.fisheye.initUndistortRectifyMap(K, D, np.eye(3), K_new, (w, h), cv2.CV_32FC1)
            else:
                K_new, m1, m2 = K, None, None
            ow, oh = _output_size(w, h, max_width)
            maps[cid] = (w, h, m1, m2, ow, oh, _scaled_K(K_new, ow / w, oh / h))
        return maps[cid]

    def load(n: int) -> Optional[ConvertedFrame]:
        name, im = frames[n]
        w, h, m1, m2, ow, oh, K_out = camera(im["camera_id"])
        path = dslr / "resized_images" / name
        bgr = _read(path, cv2.IMREAD_COLOR)
        mask_path = masks[name]
        anon = _read(mask_path, cv2.IMREAD_GRAYSCALE) < 128
        for arr, p in ((bgr, path), (anon, mask_path)):
            if arr.shape[:2] != (h, w):
                raise ConversionError(f"{p} is {arr.shape[1]}x{arr.shape[0]} but its COLMAP camera is {w}x{h}")
        if m1 is not None:
            bgr = cv2.remap(bgr, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            anon = cv2.remap(anon.astype(np.float32), m1, m2, interpolation=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0) > 0
        if (ow, oh) != (w, h):
            bgr = cv2.resize(bgr, (ow, oh), interpolation=cv2.INTER_AREA)
            anon = _resize_mask(anon, ow, oh)
        T = fix_rotation(colmap_camera_to_world(im["qvec"], im["tvec"]))
        depth, face = raycaster.cast(K_out, T, ow, oh)
        return ConvertedFrame(n, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth, K_out, T,
                              _instances(labels, face, anon))

    ow, oh = camera(frames[0][1]["camera_id"])[4:6]
    return _Plan(list(range(len(frames))), load, {"bad_frames": bad, "withheld_frames": withheld,
                                                  "width": ow, "height": oh})


def _read(path: Path, flags: int) -> np.ndarray:
    img = cv2.imread(str(_need(path)), flags)
    if img is None:
        raise ConversionError(f"cannot decode image: {path}")
    return img


def _iphone(scene_dir: Path, labels: SceneLabels, raycaster, max_width: Optional[int]) -> _Plan:
    iph = scene_dir / "iphone"
    meta_path = iph / "pose_intrinsic_imu.json"
    meta = _json(meta_path)
    if not isinstance(meta, dict):
        raise ConversionError(f"{meta_path}: expected {{\"frame_%06d\": {{...}}}}")
    entries = {}
    for key, val in meta.items():
        if key.startswith("frame_") and key[6:].isdigit() and isinstance(val, dict):
            entries[int(key[6:])] = val
    depth_bin = DepthBin(iph / "depth.bin")
    n_depth = len(depth_bin)
    numbers = [n for n in sorted(entries) if n < n_depth]
    if not numbers:
        raise ConversionError(f"{meta_path}: no frame_%06d entry with a depth.bin record ({n_depth} records)")
    video, mask_video = _Video(iph / "rgb.mkv"), _Video(iph / "rgb_mask.mkv")
    ow = max_width if max_width is not None else DEPTH_W
    if ow < 8:
        raise ConversionError(f"--max-width must be at least 8, got {ow}")
    oh = int(round(ow * DEPTH_H / DEPTH_W))

    def load(n: int) -> Optional[ConvertedFrame]:
        entry = entries[n]
        if IPHONE_POSE_KEY not in entry or "intrinsic" not in entry:
            return None                             # a frame without a pose: skipped (counted)
        try:
            T = np.asarray(entry[IPHONE_POSE_KEY], dtype=np.float64).reshape(4, 4)
            K = np.asarray(entry["intrinsic"], dtype=np.float64).reshape(3, 3)
        except (TypeError, ValueError):
            raise ConversionError(f"{meta_path}: frame_{n:06d} lacks a 4x4 {IPHONE_POSE_KEY} or a 3x3 "
                                  "intrinsic") from None
        bgr, mask = video.frame(n), mask_video.frame(n)
        if bgr is None or mask is None:
            return None                             # the video ends before the json does
        if not (np.all(np.isfinite(T)) and np.all(np.isfinite(K))):
            return None
        T = fix_rotation(T)
        vh, vw = bgr.shape[:2]
        mm = depth_bin.frame(n)
        if mm is None:
            return None
        depth = mm.astype(np.float32) / np.float32(1000.0)
        if (ow, oh) != (DEPTH_W, DEPTH_H):
            depth = cv2.resize(depth, (ow, oh), interpolation=cv2.INTER_NEAREST_EXACT)
        rgb = cv2.cvtColor(cv2.resize(bgr, (ow, oh), interpolation=cv2.INTER_AREA if ow < vw else cv2.INTER_LINEAR),
                           cv2.COLOR_BGR2RGB)
        anon = _resize_mask((mask[..., 0] if mask.ndim == 3 else mask) < 128, ow, oh)
        K_out = _scaled_K(K, ow / vw, oh / vh)
        _, face = raycaster.cast(K_out, T, ow, oh)
        return ConvertedFrame(n, rgb, depth, K_out, T, _instances(labels, face, anon))

    def close() -> None:
        video.close()
        mask_video.close()

    return _Plan(numbers, load, {"width": ow, "height": oh, "depth_records": n_depth}, close)


# --- entry points ----------------------------------------------------------------------------------------------
def convert_scannetpp(root: str | Path, scene_id: str, out_dir: str | Path, cfg: ConvertConfig | None = None,
                      stream: str = "dslr", vocabulary: str = "raw", max_width: Optional[int] = None) -> dict:
    """Convert one scene ``ROOT/data/<scene_id>`` into ``out_dir`` (bag/ and gt/); returns the summary."""
    from camfusion_ros.datasets.render import MeshRaycaster

    cfg = cfg or ConvertConfig(fps=STREAM_FPS.get(stream, 30.0))
    root, out = Path(root), Path(out_dir)
    if stream not in STREAMS:
        raise ConversionError(f"unknown stream {stream!r} (choose from {', '.join(STREAMS)})")
    scene_dir = root / "data" / scene_id
    if not scene_dir.is_dir():
        raise ConversionError(f"scene folder not found: {scene_dir} (ROOT must hold data/<scene id>/)")
    if not (scene_dir / stream).is_dir():
        raise ConversionError(f"{scene_dir} has no {stream}/ folder")
    t0 = time.perf_counter()
    labels = load_labels(scene_dir, vocabulary, root)
    raycaster = MeshRaycaster(labels.xyz, labels.faces)
    if stream == "dslr":
        plan = _dslr(scene_dir, labels, raycaster, DSLR_MAX_WIDTH if max_width is None else max_width)
    else:
        plan = _iphone(scene_dir, labels, raycaster, max_width)
    numbers = select_frames(plan.numbers, cfg)
    try:
        summary = write_bag(out, numbers, plan.load, cfg, desc=f"scannetpp {scene_id} {stream}", with_instances=True)
    finally:
        if plan.close is not None:
            plan.close()
    paths = write_gt(out / "gt", labels.xyz, labels.rgb, labels.vertex_instance, labels.vertex_label,
                     labels.vocabulary.names, labels.vocabulary.background, labels.instances)
    summary.update(scene=scene_id, stream=stream, vocabulary=vocabulary, **plan.info,
                   gt_points=int(len(labels.xyz)), gt_instances=len(labels.instances),
                   gt_classes=len(labels.vocabulary.names), gt_anonymised_vertices=int(labels.anonymised.sum()),
                   gt_unlabelled_vertices=int((labels.vertex_label < 0).sum()),
                   seconds=round(time.perf_counter() - t0, 2), **{k: str(p) for k, p in paths.items()})
    return summary


def read_split(root: str | Path, split: str) -> list[str]:
    path = Path(root) / "splits" / f"{split}.txt"
    ids = [ln for ln in _lines(path) if not ln.startswith("#")]
    if not ids:
        raise ConversionError(f"{path} lists no scene")
    return ids


def convert_split(root: str | Path, split: str, out_dir: str | Path, cfg: ConvertConfig | None = None,
                  stream: str = "dslr", vocabulary: str = "raw", max_width: Optional[int] = None,
                  on_failure=None) -> dict:
    """Every scene of ``ROOT/splits/<split>.txt`` into ``out_dir/<scene id>/``; a scene that fails is recorded
    (and passed to ``on_failure(scene_id, message)``) and the others still run."""
    ids = read_split(root, split)
    scenes, failed = {}, {}
    for sid in ids:
        try:
            scenes[sid] = convert_scannetpp(root, sid, Path(out_dir) / sid, cfg, stream, vocabulary, max_width)
        except Exception as exc:                  # one bad scene must not stop a long split
            known = isinstance(exc, (ConversionError, OSError, ValueError))
            msg = str(exc) if known else f"{type(exc).__name__}: {exc}"
            failed[sid] = msg.splitlines()[0] if msg else type(exc).__name__
            if on_failure is not None:
                on_failure(sid, failed[sid])
    return {"split": split, "stream": stream, "out": str(out_dir), "converted": len(scenes), "failed": failed,
            "scenes": scenes}


# --- command line ----------------------------------------------------------------------------------------------
def add_parser(sub) -> None:
    """The ``scannetpp`` subcommand of camfusion-convert."""
    from camfusion_ros.datasets.bag_writer import DEPTH_ENCODINGS

    s = sub.add_parser("scannetpp", help="convert ScanNet++ scenes (DSLR or iPhone) from the release tree",
                       description=__doc__.split("\n\n")[0])
    s.add_argument("root", type=Path, help="release root (holds data/<scene id>/, splits/, metadata/)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--scene", help="one scene id: OUT gets bag/ and gt/")
    which.add_argument("--split", help="every scene of ROOT/splits/NAME.txt: OUT gets one folder per scene")
    s.add_argument("--out", required=True, type=Path, help="output directory")
    s.add_argument("--stream", choices=STREAMS, default="dslr",
                   help="dslr: the undistorted DSLR images with depth rendered from the mesh (the paper's images; "
                        "default); iphone: the video with its depth sensor")
    s.add_argument("--vocabulary", choices=VOCABULARIES, default="raw",
                   help="raw: the free-form annotation labels (default, as the paper); top100: the semantic "
                        "benchmark classes via metadata/semantic_benchmark/map_benchmark.csv")
    s.add_argument("--max-width", type=int,
                   help=f"output width (DSLR default {DSLR_MAX_WIDTH}, half the 1752 px images; iPhone default "
                        f"{DEPTH_W}, the depth resolution; wider upsamples depth)")
    s.add_argument("--max-frames", type=int)
    s.add_argument("--stride", type=int, default=1)
    s.add_argument("--fps", type=float, help="frame rate for the stamps (default: iPhone 60, DSLR 30)")
    s.add_argument("--depth-encoding", choices=DEPTH_ENCODINGS, default="16UC1")
    s.add_argument("--compressed", action="store_true",
                   help="colour as CompressedImage JPEG and depth as compressedDepth PNG (image_transport)")
    s.add_argument("--no-progress", action="store_true")


def _warnings(summary: dict, prefix: str = "") -> None:
    if summary.get("skipped"):
        print(f"warning: {prefix}skipped {summary['skipped']} frame(s) (non-finite pose or no video/depth frame)",
              file=sys.stderr)


def run_cli(args) -> int:
    """camfusion-convert scannetpp: one JSON line on stdout; errors as ``error: ...`` lines on stderr."""
    from camfusion_ros.core.output_folder import OutputFolderError
    from camfusion_ros.core.recording import exit_on_error
    from camfusion_ros.datasets.bag_writer import BagWriterError

    fps = args.fps if args.fps is not None else STREAM_FPS[args.stream]
    cfg = ConvertConfig(max_frames=args.max_frames, stride=args.stride, fps=fps, depth_encoding=args.depth_encoding,
                        compressed=args.compressed, progress=not args.no_progress)
    with exit_on_error(ConversionError, BagWriterError, OutputFolderError, OSError):
        if not args.root.is_dir():
            raise ConversionError(f"ScanNet++ root not found: {args.root}")
        if fps <= 0:
            raise ConversionError(f"--fps must be positive, got {fps}")
        select_frames([], cfg)                     # checks --stride / --max-frames before any work
        if args.scene is not None:
            summary = convert_scannetpp(args.root, args.scene, args.out, cfg, args.stream, args.vocabulary,
                                        args.max_width)
            _warnings(summary)
            print(json.dumps(summary))
            return 0
        ids = read_split(args.root, args.split)

    def failure(sid: str, msg: str) -> None:
        print(f"error: scene {sid} failed: {msg}", file=sys.stderr)

    summary = convert_split(args.root, args.split, args.out, cfg, args.stream, args.vocabulary, args.max_width,
                            on_failure=failure)
    for sid, s in summary["scenes"].items():
        _warnings(s, f"scene {sid}: ")
    print(json.dumps(summary))
    if summary["failed"]:
        print(f"warning: {len(summary['failed'])} of {len(ids)} scene(s) failed (listed above and under 'failed')",
              file=sys.stderr)
    return 2 if not summary["scenes"] else 0
