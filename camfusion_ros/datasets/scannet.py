"""ScanNet (frames exported from .sens by ScanNet's SensReader) -> rosbag2 + gt/.

Source layout (``SRC`` = one scene folder, e.g. ``scans/scene0000_00``)::

    SRC/color/<i>.jpg        colour, 1296x968 (resized here to the depth size)
    SRC/depth/<i>.png        uint16 millimetres, 640x480, 0 = no reading
    SRC/pose/<i>.txt         4x4 camera-to-world (OpenCV axes); invalid frames are all -inf (skipped)
    SRC/intrinsic/intrinsic_depth.txt   4x4; its 3x3 block is K of the depth (and resized colour) image
    SRC/<scene>.txt                       optional: scene meta; ``axisAlignment = <16 numbers>`` (row-major 4x4)
    SRC/<scene>_vh_clean_2.ply            optional: mesh with the real vertex colours
    SRC/<scene>_vh_clean_2.labels.ply     optional: per-vertex NYU40 ``label``
    SRC/<scene>_vh_clean_2.0.010000.segs.json + SRC/<scene>.aggregation.json  optional: instances

Frame numbers are not zero-padded and are sorted numerically. Instance ids
follow the ScanNet benchmark (objectId + 1).

Frame (``axis_align`` / ``--axis-align``): by default everything stays in the
unaligned frame, the one the exported poses (and the .sens stream) live in, so
nothing is rewritten. With it, the scene meta file's ``axisAlignment`` matrix A
is applied to the poses (A @ T_world_cam) and to the gt/ points alike: gt/ is
then in the axis-aligned frame that ScanNet200's ``preprocess_scannet200.py``
(and tools built on it) give their ground-truth meshes, and depth back-projected
with the written poses still lands on the written gt/ points. A missing meta
file or a meta file without ``axisAlignment`` is an error.

Classes: without ``label_map`` an instance's class is the majority NYU40 label
(``*_vh_clean_2.labels.ply``) of its vertices. With ``label_map``
(``--label-map scannetv2-labels.combined.tsv``) every segGroup's raw category
(its ``label``) is looked up in the tsv's ``raw_category`` column and labelled by
``label_set`` (``--label-set``):

- ``scannet200`` (default): the tsv's ``id`` column; the 200 ScanNet200 benchmark
  ids, named and ordered as the shipped ``scannet200`` vocabulary (what
  camfusion-eval's ScanNet200 evaluation uses);
- ``nyu40``: the tsv's ``nyu40id`` column, ids 1..40, named as NYU40_CLASSES (the
  tsv's ``nyu40class``, with the standard spelling of 'refrigerator').

A segGroup whose raw category is not in the tsv, or whose id is outside the
chosen set, stays unlabelled (label -1, instance 0), as in ScanNet200's
preprocessing; the summary counts them per reason (``gt_unlabelled_instances``).
Vertices covered by no kept segGroup are unlabelled too. This mode needs the
mesh, segs and aggregation files (not the labels.ply).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from camfusion_ros.core.class_lists import ClassListError, load_vocabulary
from camfusion_ros.core.ply import PlyError, read_ply
from camfusion_ros.datasets.converter import (ConversionError, ConvertConfig, ConvertedFrame, fix_rotation,
                                              numbered, read_image, read_matrix, select_frames, write_bag)
from camfusion_ros.datasets.gt_writer import write_gt

__all__ = ["convert_scannet", "read_axis_alignment", "read_label_map", "label_set_classes", "LABEL_SETS",
           "NYU40_CLASSES", "SCANNET200_IDS"]

NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop",
)
BACKGROUND = ("wall", "floor", "ceiling")

# The ScanNet200 benchmark's class ids (the tsv's ``id`` column), in the order of its class list; the i-th id is
# the i-th name of the shipped ``scannet200`` vocabulary (config/vocabularies/scannet200.txt), as in ScanNet's
# BenchmarkScripts/ScanNet200/scannet200_constants.py and OVO's scannet200 eval info.
SCANNET200_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, 31, 32, 33, 34,
    35, 36, 38, 39, 40, 41, 42, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 59, 62, 63, 64, 65, 66, 67,
    68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 82, 84, 86, 87, 88, 89, 90, 93, 95, 96, 97, 98, 99, 100,
    101, 102, 103, 104, 105, 106, 107, 110, 112, 115, 116, 118, 120, 121, 122, 125, 128, 130, 131, 132, 134, 136,
    138, 139, 140, 141, 145, 148, 154, 155, 156, 157, 159, 161, 163, 165, 166, 168, 169, 170, 177, 180, 185, 188,
    191, 193, 195, 202, 208, 213, 214, 221, 229, 230, 232, 233, 242, 250, 261, 264, 276, 283, 286, 300, 304, 312,
    323, 325, 331, 342, 356, 370, 392, 395, 399, 408, 417, 488, 540, 562, 570, 572, 581, 609, 748, 776, 1156, 1163,
    1164, 1165, 1166, 1167, 1168, 1169, 1170, 1171, 1172, 1173, 1174, 1175, 1176, 1178, 1179, 1180, 1181, 1182,
    1183, 1184, 1185, 1186, 1187, 1188, 1189, 1190, 1191,
)
LABEL_SETS = {"scannet200": "id", "nyu40": "nyu40id"}    # label set -> the tsv column holding its ids


def convert_scannet(src: str | Path, out_dir: str | Path, cfg: ConvertConfig | None = None, *,
                    axis_align: bool = False, label_map: Optional[Path] = None,
                    label_set: Optional[str] = None) -> dict:
    cfg = cfg or ConvertConfig()
    src, out = Path(src), Path(out_dir)
    for sub in ("color", "depth", "pose", "intrinsic"):
        if not (src / sub).is_dir():
            raise ConversionError(f"{src} is not an exported ScanNet scene (no {sub}/ folder)")
    # every optional input is read before the bag is written, so a bad one leaves no half-written output
    A = read_axis_alignment(src / f"{src.name}.txt") if axis_align else None
    if label_set is not None and label_map is None:
        raise ConversionError(f"a label set ({label_set}) needs a label map (scannetv2-labels.combined.tsv)")
    labels = None
    if label_map is not None:
        label_set = label_set or "scannet200"
        label_set_classes(label_set)                       # an unknown set or a missing class list fails here
        labels = (read_label_map(label_map, LABEL_SETS[label_set]), label_set, Path(label_map))
        for f in _gt_files(src)[1:]:
            if not f.is_file():
                raise ConversionError(f"labelling through {Path(label_map).name} needs {f}, which is missing")
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
        T = fix_rotation(T) if A is None else fix_rotation(A @ fix_rotation(T))
        return ConvertedFrame(n, rgb, raw.astype(np.float32) / np.float32(1000.0), K, T)

    summary = write_bag(out, select_frames(numbers, cfg), load, cfg, desc=f"scannet {src.name}")
    summary["axis_aligned"] = A is not None
    if labels is not None:
        summary.update(_write_gt_mapped(src, out / "gt", A, *labels))
    else:
        labels_ply = src / f"{src.name}_vh_clean_2.labels.ply"
        if labels_ply.is_file():
            summary.update(_write_gt(src, out / "gt", labels_ply, A))
    return summary


def read_axis_alignment(meta: Path) -> np.ndarray:
    """The rigid 4x4 ``axisAlignment`` of a ScanNet scene meta file (``key = value`` lines)."""
    meta = Path(meta)
    if not meta.is_file():
        raise ConversionError(f"axis alignment needs the scene meta file {meta}, which is missing")
    values = None
    try:
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, val = line.partition("=")
            if sep and key.strip() == "axisAlignment":
                values = [float(v) for v in val.split()]
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{meta}: cannot read axisAlignment ({exc})") from None
    if values is None:
        raise ConversionError(f"{meta} has no 'axisAlignment = ...' line to align the scene with")
    if len(values) != 16:
        raise ConversionError(f"{meta}: axisAlignment needs 16 numbers (a row-major 4x4), got {len(values)}")
    A = np.asarray(values, dtype=np.float64).reshape(4, 4)
    R = A[:3, :3]
    if (not np.all(np.isfinite(A)) or not np.allclose(A[3], (0, 0, 0, 1), atol=1e-6)
            or not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) <= 0):
        raise ConversionError(f"{meta}: axisAlignment is not a rigid transform (rotation + translation)")
    return fix_rotation(A)


def read_label_map(path: Path, column: str) -> dict[str, Optional[int]]:
    """raw_category -> the integer in ``column`` (None where that cell is empty or not an integer), from
    ScanNet's tab-separated scannetv2-labels.combined.tsv; the first row of a repeated raw category wins."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"label map not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConversionError(f"cannot read label map {path}: {exc}") from None
    missing = [c for c in ("raw_category", column) if c not in header]
    if missing:
        raise ConversionError(f"{path} is not a ScanNet label map (scannetv2-labels.combined.tsv): "
                              f"no {' / '.join(missing)} column")
    out: dict[str, Optional[int]] = {}
    for row in rows:
        raw = row.get("raw_category")
        if raw is None or raw in out:
            continue
        try:
            out[raw] = int(str(row.get(column) or "").strip())
        except ValueError:
            out[raw] = None
    return out


def label_set_classes(label_set: str) -> tuple[list[str], dict[int, int]]:
    """(class names, dataset id -> class index) of a label set."""
    if label_set == "nyu40":
        return list(NYU40_CLASSES), {i + 1: i for i in range(len(NYU40_CLASSES))}
    if label_set != "scannet200":
        raise ConversionError(f"unknown label set {label_set!r} (choose from {', '.join(LABEL_SETS)})")
    try:
        names = load_vocabulary("scannet200")
    except ClassListError as exc:
        raise ConversionError(str(exc)) from None
    if len(names) != len(SCANNET200_IDS):
        raise ConversionError(f"the shipped scannet200 vocabulary has {len(names)} names, "
                              f"not the benchmark's {len(SCANNET200_IDS)}")
    return names, {cid: i for i, cid in enumerate(SCANNET200_IDS)}


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


def _gt_files(src: Path) -> tuple[Path, Path, Path, Path]:
    """(labels.ply, colour mesh, segs.json, aggregation.json) of a scene."""
    return (src / f"{src.name}_vh_clean_2.labels.ply", src / f"{src.name}_vh_clean_2.ply",
            src / f"{src.name}_vh_clean_2.0.010000.segs.json", src / f"{src.name}.aggregation.json")


def _points(ply: dict, A: Optional[np.ndarray]) -> np.ndarray:
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], axis=1).astype(np.float64)
    return xyz if A is None else xyz @ A[:3, :3].T + A[:3, 3]


def _seg_groups(segs_path: Path, agg_path: Path, n_vert: int):
    """Yield (instance id, raw category, vertex mask) per segGroup of the aggregation."""
    seg = np.asarray(_json(segs_path).get("segIndices", []), dtype=np.int64)
    if len(seg) != n_vert:
        raise ConversionError(f"{segs_path} has {len(seg)} segIndices but the mesh has {n_vert} vertices")
    for group in _json(agg_path).get("segGroups", []):
        try:
            iid, segments = int(group["objectId"]) + 1, group["segments"]
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{agg_path}: a segGroup lacks objectId/segments") from None
        yield iid, str(group.get("label", "")), np.isin(seg, np.asarray(segments, dtype=np.int64))


def _write_gt(src: Path, gt_dir: Path, labels_ply: Path, A: Optional[np.ndarray]) -> dict:
    lv = _read(labels_ply)
    if "label" not in lv:
        raise ConversionError(f"{labels_ply} has no per-vertex 'label' property")
    _, colour_ply, segs_path, agg_path = _gt_files(src)
    cv = _read(colour_ply) if colour_ply.is_file() else lv
    if len(cv["x"]) != len(lv["x"]):
        raise ConversionError(f"{colour_ply} and {labels_ply} have different vertex counts")
    xyz = _points(lv, A)
    rgb = np.stack([cv["red"], cv["green"], cv["blue"]], axis=1).astype(np.uint8)
    nyu = lv["label"].astype(np.int64)
    label = np.where((nyu >= 1) & (nyu <= len(NYU40_CLASSES)), nyu - 1, -1)
    instance = np.zeros(len(xyz), np.int32)
    instances: dict[int, int] = {}
    if segs_path.is_file() and agg_path.is_file():
        for iid, _, member in _seg_groups(segs_path, agg_path, len(xyz)):
            valid = label[member]
            valid = valid[valid >= 0]
            if len(valid) == 0:
                continue
            instance[member] = iid
            instances[iid] = int(np.bincount(valid).argmax())
    paths = write_gt(gt_dir, xyz, rgb, instance, label.astype(np.int32), list(NYU40_CLASSES), list(BACKGROUND),
                     instances)
    return {"gt_points": int(len(xyz)), "gt_instances": len(instances), "gt_labels": "nyu40 (labels.ply)",
            **{k: str(p) for k, p in paths.items()}}


def _write_gt_mapped(src: Path, gt_dir: Path, A: Optional[np.ndarray], raw_to_id: dict[str, Optional[int]],
                     label_set: str, tsv: Path) -> dict:
    names, id_to_index = label_set_classes(label_set)
    _, colour_ply, segs_path, agg_path = _gt_files(src)
    cv = _read(colour_ply)
    xyz = _points(cv, A)
    rgb = np.stack([cv["red"], cv["green"], cv["blue"]], axis=1).astype(np.uint8)
    label = np.full(len(xyz), -1, np.int32)
    instance = np.zeros(len(xyz), np.int32)
    kept: dict[int, int] = {}
    not_in_map, outside, empty = (f"raw category not in {tsv.name}", f"{LABEL_SETS[label_set]} not a {label_set} class",
                                  "no vertices left")
    dropped = {not_in_map: 0, outside: 0, empty: 0}
    for iid, raw, member in _seg_groups(segs_path, agg_path, len(xyz)):
        if raw not in raw_to_id:
            dropped[not_in_map] += 1
        elif raw_to_id[raw] not in id_to_index:
            dropped[outside] += 1
        elif not member.any():
            dropped[empty] += 1
        else:
            # a later segGroup overwrites shared vertices, as ScanNet's own exports do
            kept[iid] = id_to_index[raw_to_id[raw]]
            instance[member] = iid
            label[member] = kept[iid]
    present = set(np.unique(instance[instance > 0]).tolist())
    dropped[empty] += sum(1 for i in kept if i not in present)
    instances = {i: c for i, c in kept.items() if i in present}
    paths = write_gt(gt_dir, xyz, rgb, instance, label, names, list(BACKGROUND), instances)
    return {"gt_points": int(len(xyz)), "gt_instances": len(instances), "gt_labels": f"{label_set} via {tsv.name}",
            "gt_unlabelled_instances": dropped,
            **{k: str(p) for k, p in paths.items()}}
