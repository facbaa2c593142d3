"""Replica as rendered by NICE-SLAM -> rosbag2 + gt/.

Source layout (``SRC`` = one scene, e.g. ``Replica/room0``)::

    SRC/results/frame%06d.jpg   colour (1200x680)
    SRC/results/depth%06d.png   uint16, metres = png / scale (scale 6553.5)
    SRC/traj.txt                one row-major 4x4 camera-to-world per line, OpenCV axes
    SRC/../cam_params.json      {"camera": {w, h, fx, fy, cx, cy, scale}} (or SRC/cam_params.json;
                                defaults fx = fy = 600, cx = 599.5, cy = 339.5, scale 6553.5)
    SRC/../<scene>_mesh.ply     optional: the scene mesh (ground-truth points = its vertices)
    SRC/../semantic_gt/<scene>.txt  optional (OVO): one Replica class id per mesh vertex

Poses are kept as OVO uses them (OpenCV axes; NICE-SLAM's OpenGL flip is not
applied). OVO's semantic ground truth has classes but no instances, so gt/
points carry instance 0 and instances.json is empty; with ``eval_info`` (OVO's
replica_eval_info.yaml) labels are mapped to its reduced class list.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import yaml

from camfusion_ros.core.ply import PlyError, read_ply
from camfusion_ros.datasets.converter import (ConversionError, ConvertConfig, ConvertedFrame, fix_rotation,
                                              numbered, read_image, select_frames, write_bag)
from camfusion_ros.datasets.gt_writer import write_gt

__all__ = ["convert_replica"]

DEFAULT_CAMERA = {"w": 1200, "h": 680, "fx": 600.0, "fy": 600.0, "cx": 599.5, "cy": 339.5, "scale": 6553.5}
IGNORE_IDS = (-1, -2, 256)


def _camera(src: Path) -> dict:
    for p in (src / "cam_params.json", src.parent / "cam_params.json"):
        if p.is_file():
            try:
                cam = json.loads(p.read_text())["camera"]
                return {k: float(cam.get(k, DEFAULT_CAMERA[k])) for k in DEFAULT_CAMERA}
            except (ValueError, KeyError, TypeError) as exc:
                raise ConversionError(f"{p}: expected {{\"camera\": {{fx, fy, cx, cy, scale}}}} ({exc})") from None
    return dict(DEFAULT_CAMERA)


def _trajectory(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ConversionError(f"missing trajectory: {path}")
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ConversionError(f"{path}: not numeric ({exc})") from None
    if rows.shape[1] != 16:
        raise ConversionError(f"{path}: expected 16 numbers per line (a row-major 4x4), got {rows.shape[1]}")
    return rows.reshape(-1, 4, 4)


def convert_replica(src: str | Path, out_dir: str | Path, cfg: ConvertConfig | None = None,
                    mesh: Optional[Path] = None, semantic_gt: Optional[Path] = None,
                    eval_info: Optional[Path] = None) -> dict:
    cfg = cfg or ConvertConfig()
    src, out = Path(src), Path(out_dir)
    if not (src / "results").is_dir():
        raise ConversionError(f"{src} is not a NICE-SLAM Replica scene (no results/ folder)")
    cam = _camera(src)
    K = np.array([[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1.0]])
    colors = numbered((src / "results").glob("frame*.jpg"), "frame")
    depths = numbered((src / "results").glob("depth*.png"), "depth")
    traj = _trajectory(src / "traj.txt")
    numbers = [n for n in colors if n in depths]
    if not numbers:
        raise ConversionError(f"{src / 'results'}: no frame%06d.jpg with a matching depth%06d.png")
    if max(numbers) >= len(traj):
        raise ConversionError(f"{src / 'traj.txt'} has {len(traj)} poses but frames go up to {max(numbers)}")

    def load(n: int) -> Optional[ConvertedFrame]:
        T = traj[n]
        if not np.all(np.isfinite(T)):
            return None
        rgb = cv2.cvtColor(read_image(colors[n], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        raw = read_image(depths[n], cv2.IMREAD_UNCHANGED)
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise ConversionError(f"{depths[n]}: expected a 16-bit single-channel PNG, got {raw.dtype} {raw.shape}")
        if rgb.shape[:2] != raw.shape:
            rgb = cv2.resize(rgb, (raw.shape[1], raw.shape[0]), interpolation=cv2.INTER_AREA)
        return ConvertedFrame(n, rgb, raw.astype(np.float32) / np.float32(cam["scale"]), K, fix_rotation(T))

    summary = write_bag(out, select_frames(numbers, cfg), load, cfg, desc=f"replica {src.name}")
    mesh = mesh or src.parent / f"{src.name}_mesh.ply"
    semantic_gt = semantic_gt or src.parent / "semantic_gt" / f"{src.name}.txt"
    if mesh.is_file():
        summary.update(_write_gt(out / "gt", mesh, semantic_gt if semantic_gt.is_file() else None, eval_info))
    return summary


def _write_gt(gt_dir: Path, mesh: Path, semantic_gt: Optional[Path], eval_info: Optional[Path]) -> dict:
    try:
        v = read_ply(mesh)
    except PlyError as exc:
        raise ConversionError(str(exc)) from None
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1)
    rgb = (np.stack([v["red"], v["green"], v["blue"]], axis=1) if "red" in v
           else np.full((len(xyz), 3), 128, np.uint8))
    raw = np.full(len(xyz), -1, np.int64)
    if semantic_gt is not None:
        try:
            raw = np.loadtxt(semantic_gt, dtype=np.int64, ndmin=1)
        except ValueError as exc:
            raise ConversionError(f"{semantic_gt}: expected one integer class id per line ({exc})") from None
        if len(raw) != len(xyz):
            raise ConversionError(f"{semantic_gt} has {len(raw)} ids but {mesh} has {len(xyz)} vertices")
    if eval_info is not None:
        names, background, label = _reduce(raw, eval_info)
    else:
        top = int(max(raw[~np.isin(raw, IGNORE_IDS)].max(initial=-1), -1))
        names = [f"replica_{i}" for i in range(top + 1)]
        background = []
        label = np.where(np.isin(raw, IGNORE_IDS) | (raw < 0), -1, raw)
    paths = write_gt(gt_dir, xyz, rgb.astype(np.uint8), np.zeros(len(xyz), np.int32), label.astype(np.int32),
                     names, background, {})
    return {"gt_points": int(len(xyz)), **{k: str(p) for k, p in paths.items()}}


def _reduce(raw: np.ndarray, eval_info: Path):
    try:
        info = yaml.safe_load(eval_info.read_text())
        names = [str(n) for n in info["class_names_reduced"]]
        lut = {int(k): int(v) for k, v in info["map_to_reduced"].items()}
        ignore = set(int(i) for i in info.get("ignore", []))
        background = [names[i] for i in info.get("background_reduced_ids", [])]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConversionError(f"{eval_info}: not an OVO eval-info file ({exc})") from None
    uniq, inv = np.unique(raw, return_inverse=True)
    label = np.array([lut.get(int(u), -1) for u in uniq], dtype=np.int64)[inv.reshape(-1)]
    label[np.isin(label, list(ignore)) | (label >= len(names))] = -1
    return names, background, label
