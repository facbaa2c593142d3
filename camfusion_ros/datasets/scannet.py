"""ScanNet (frames exported from .sens by ScanNet's SensReader) -> rosbag2 + gt/.

Source layout (``SRC`` = one scene folder, e.g. ``scans/scene0000_00``)::

    SRC/color/<i>.jpg        colour, 1296x968 (resized here to the depth size)
    SRC/depth/<i>.png        uint16 millimetres, 640x480, 0 = no reading
    SRC/pose/<i>.txt         4x4 camera-to-world (OpenCV axes); invalid frames are all -inf (skipped)
    SRC/intrinsic/intrinsic_depth.txt   4x4; its 3x3 block is K of the depth (and resized colour) image
    SRC/<scene>_vh_clean_2.ply            optional: mesh with the real vertex colours
    SRC/<scene>_vh_clean_2.labels.ply     optional: per-vertex NYU40 ``label``
    SRC/<scene>_vh_clean_2.0.010000.segs.json + SRC/<scene>.aggregation.json  optional: instances

Frame numbers are not zero-padded and are sorted numerically. Instance ids
follow the ScanNet benchmark (objectId + 1); an instance's class is the
majority NYU40 label of its vertices. Mesh coordinates are kept unaligned
(the frame the poses live in).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from camfusion_ros.core.ply import PlyError, read_ply
from camfusion_ros.datasets.converter import (ConversionError, ConvertConfig, ConvertedFrame, fix_rotation,
                                              numbered, read_image, read_matrix, select_frames, write_bag)
from camfusion_ros.datasets.gt_writer import write_gt

__all__ = ["convert_scannet", "NYU40_CLASSES"]

NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)
BACKGROUND = ("wall", "floor", "ceiling")


def convert_scannet(src: str | Path, out_dir: str | Path, cfg: ConvertConfig | None = None) -> dict:
    cfg = cfg or ConvertConfig()
    src, out = Path(src), Path(out_dir)
    for sub in ("color", "depth", "pose", "intrinsic"):
        if not (src / sub).is_dir():
            raise ConversionError(f"{src} is not an exported ScanNet scene (no {sub}/ folder)")
    K = read_matrix(src / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    colors = numbered((src / "color").glob("*.jpg"))
    depths = numbered((src / "depth").glob("*.png"))
    poses = numbered((src / "pose").glob("*.txt"))
    numbers = [n for n in depths if n in colors and n in poses]
    if not numbers:
        raise ConversionError(f"{src}: no frame number has color/<i>.jpg, depth/<i>.png and pose/<i>.txt")

    def load(n: int) -> Optional[ConvertedFrame]:
        T = read_matrix(poses[n])
        if not np.all(np.isfinite(T)):
            return None
        raw = read_image(depths[n], cv2.IMREAD_UNCHANGED)
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise ConversionError(f"{depths[n]}: expected a 16-bit single-channel PNG, got {raw.dtype} {raw.shape}")
        rgb = cv2.cvtColor(read_image(colors[n], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        rgb = cv2.resize(rgb, (raw.shape[1], raw.shape[0]), interpolation=cv2.INTER_AREA)
        return ConvertedFrame(n, rgb, raw.astype(np.float32) / np.float32(1000.0), K, fix_rotation(T))

    summary = write_bag(out, select_frames(numbers, cfg), load, cfg, desc=f"scannet {src.name}")
    labels_ply = src / f"{src.name}_vh_clean_2.labels.ply"
    if labels_ply.is_file():
        summary.update(_write_gt(src, out / "gt", labels_ply))
    return summary


def _read(path: Path) -> dict:
    try:
        return read_ply(path)
    except PlyError as exc:
        raise ConversionError(str(exc)) from None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None


def _write_gt(src: Path, gt_dir: Path, labels_ply: Path) -> dict:
    lv = _read(labels_ply)
    if "label" not in lv:
        raise ConversionError(f"{labels_ply} has no per-vertex 'label' property")
    colour_ply = src / f"{src.name}_vh_clean_2.ply"
    cv = _read(colour_ply) if colour_ply.is_file() else lv
    if len(cv["x"]) != len(lv["x"]):
        raise ConversionError(f"{colour_ply} and {labels_ply} have different vertex counts")
    xyz = np.stack([lv["x"], lv["y"], lv["z"]], axis=1)
    rgb = np.stack([cv["red"], cv["green"], cv["blue"]], axis=1).astype(np.uint8)
    nyu = lv["label"].astype(np.int64)
    label = np.where((nyu >= 1) & (nyu <= len(NYU40_CLASSES)), nyu - 1, -1)
    instance = np.zeros(len(xyz), np.int32)
    instances: dict[int, int] = {}
    segs_path = src / f"{src.name}_vh_clean_2.0.010000.segs.json"
    agg_path = src / f"{src.name}.aggregation.json"
    if segs_path.is_file() and agg_path.is_file():
        seg = np.asarray(_json(segs_path).get("segIndices", []), dtype=np.int64)
        if len(seg) != len(xyz):
            raise ConversionError(f"{segs_path} has {len(seg)} segIndices but the mesh has {len(xyz)} vertices")
        for group in _json(agg_path).get("segGroups", []):
            try:
                iid, segments = int(group["objectId"]) + 1, group["segments"]
            except (KeyError, TypeError, ValueError):
                raise ConversionError(f"{agg_path}: a segGroup lacks objectId/segments") from None
            member = np.isin(seg, np.asarray(segments, dtype=np.int64))
            valid = label[member]
            valid = valid[valid >= 0]
            if len(valid) == 0:
                continue
            instance[member] = iid
            instances[iid] = int(np.bincount(valid).argmax())
    paths = write_gt(gt_dir, xyz, rgb, instance, label.astype(np.int32), list(NYU40_CLASSES), list(BACKGROUND),
                     instances)
    return {"gt_points": int(len(xyz)), "gt_instances": len(instances), **{k: str(p) for k, p in paths.items()}}
