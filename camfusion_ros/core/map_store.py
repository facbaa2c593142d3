"""A map as a folder of standard files other tools open.

- ``points.ply``: x y z red green blue instance (int32, -1 = none) — opens in
  any point-cloud viewer;
- ``instances.safetensors``: ids, fused embeddings, and every instance's
  per-view descriptors with their validity, scores and frame indices, so a map
  can be re-fused and re-labelled later without the recording;
- ``meta.json``: model, fusion, vocabulary, labels, config.
Writes go to a temporary sibling folder that replaces the target in one
rename, so a crash mid-save never leaves a half-written map. Only an empty
folder or a map this module wrote (its three files, nothing else) is ever
replaced: a folder holding anything else is refused, never deleted. No pickle.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from camfusion_ros.core.output_folder import check_replaceable_folder, fresh_folder
from camfusion_ros.core.ply import PlyError, read_ply, write_ply

FORMAT_VERSION = 1
ARRAYS = ("ids", "fused", "view_descriptors", "view_valid", "view_scores", "view_frames",
          "first_seen_ns", "last_seen_ns")


class MapFileError(ValueError):
    """A map folder that cannot be read or written; the message says which file and why."""


@dataclass
class MapSnapshot:
    points: np.ndarray                 # (P, 3) float32
    colors: np.ndarray                 # (P, 3) uint8
    point_instance: np.ndarray         # (P,) int32, -1 = none
    ids: np.ndarray                    # (N,) int64
    fused: np.ndarray                  # (N, D) float32 (zero rows: not fused yet)
    view_descriptors: np.ndarray       # (N, K, D) float32
    view_valid: np.ndarray             # (N, K) bool
    view_scores: np.ndarray            # (N, K) float32
    view_frames: np.ndarray            # (N, K) int64 frame index of each view (-1 = none)
    first_seen_ns: np.ndarray          # (N,) int64
    last_seen_ns: np.ndarray           # (N,) int64
    meta: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.meta.get("labels", [""] * len(self.ids)))

    @property
    def label_scores(self) -> np.ndarray:
        return np.asarray(self.meta.get("label_scores", [0.0] * len(self.ids)), dtype=np.float32)


MAP_FILES = frozenset({"points.ply", "instances.safetensors", "meta.json"})


def check_replaceable(target: Path) -> None:
    """Raise MapFileError unless ``target`` is absent, an empty folder, or a map save_map wrote."""
    check_replaceable_folder(target, MAP_FILES, "meta.json", "format_version", "map", MapFileError)


def save_map(directory: str | os.PathLike, snap: MapSnapshot) -> Path:
    """Write the map atomically (temp folder + rename); never replaces a folder holding a user's files."""
    target = Path(directory).absolute()
    check_replaceable(target)
    with fresh_folder(target) as tmp:
        write_ply(tmp / "points.ply", {
            "x": snap.points[:, 0].astype(np.float32), "y": snap.points[:, 1].astype(np.float32),
            "z": snap.points[:, 2].astype(np.float32), "red": snap.colors[:, 0].astype(np.uint8),
            "green": snap.colors[:, 1].astype(np.uint8), "blue": snap.colors[:, 2].astype(np.uint8),
            "instance": snap.point_instance.astype(np.int32)})
        arrays = {
            "ids": snap.ids.astype(np.int64), "fused": snap.fused.astype(np.float32),
            "view_descriptors": snap.view_descriptors.astype(np.float32),
            "view_valid": snap.view_valid.astype(np.uint8), "view_scores": snap.view_scores.astype(np.float32),
            "view_frames": snap.view_frames.astype(np.int64),
            "first_seen_ns": snap.first_seen_ns.astype(np.int64), "last_seen_ns": snap.last_seen_ns.astype(np.int64)}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / "instances.safetensors"),
                  metadata={"format_version": str(FORMAT_VERSION)})
        meta = dict(snap.meta, format_version=FORMAT_VERSION)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        check_replaceable(target)                       # again: something may have appeared meanwhile
    return target


def load_map(directory: str | os.PathLike) -> MapSnapshot:
    d = Path(directory)
    if not d.is_dir():
        raise MapFileError(f"map folder not found: {d}")
    for name in ("points.ply", "instances.safetensors", "meta.json"):
        if not (d / name).is_file():
            raise MapFileError(f"map {d} is missing {name} (was it written by save_map / camfusion-map?)")
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MapFileError(f"{d / 'meta.json'} is not valid JSON: {e}") from None
    try:
        arr = load_file(str(d / "instances.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise MapFileError(f"{d / 'instances.safetensors'} is corrupt: {e}") from None
    missing = [k for k in ARRAYS if k not in arr]
    if missing:
        raise MapFileError(f"{d / 'instances.safetensors'} lacks {', '.join(missing)}")
    try:
        ply = read_ply(d / "points.ply")
    except PlyError as e:
        raise MapFileError(str(e)) from None
    for k in ("x", "y", "z", "red", "green", "blue", "instance"):
        if k not in ply:
            raise MapFileError(f"{d / 'points.ply'} lacks the vertex property {k!r}")
    if not isinstance(meta, dict):
        raise MapFileError(f"{d / 'meta.json'} must hold a JSON object")
    _check_arrays(arr, d / "instances.safetensors")
    xyz = np.stack([ply["x"], ply["y"], ply["z"]], 1)
    if not np.isfinite(xyz).all():
        raise MapFileError(f"{d / 'points.ply'}: point coordinates are not all finite")
    return MapSnapshot(
        points=np.stack([ply["x"], ply["y"], ply["z"]], 1).astype(np.float32),
        colors=np.stack([ply["red"], ply["green"], ply["blue"]], 1).astype(np.uint8),
        point_instance=ply["instance"].astype(np.int32),
        ids=arr["ids"], fused=arr["fused"], view_descriptors=arr["view_descriptors"],
        view_valid=arr["view_valid"].astype(bool), view_scores=arr["view_scores"], view_frames=arr["view_frames"],
        first_seen_ns=arr["first_seen_ns"], last_seen_ns=arr["last_seen_ns"], meta=meta)


# name -> (dtype kinds accepted, number of dimensions); the shapes must agree on N instances, K views, D dims.
_LAYOUT = {"ids": ("iu", 1), "fused": ("f", 2), "view_descriptors": ("f", 3), "view_valid": ("biu", 2),
           "view_scores": ("f", 2), "view_frames": ("iu", 2), "first_seen_ns": ("iu", 1), "last_seen_ns": ("iu", 1)}


def _check_arrays(arr: dict[str, np.ndarray], path: Path) -> None:
    """Wrong dtypes, disagreeing shapes and NaN embeddings are refused here, not deep inside fusion or a query."""
    for k, (kinds, ndim) in _LAYOUT.items():
        if arr[k].dtype.kind not in kinds or arr[k].ndim != ndim:
            raise MapFileError(f"{path}: {k} is {arr[k].dtype}{list(arr[k].shape)}, expected a {ndim}-D array "
                               f"of kind {kinds!r}")
    n, k_views, dim = arr["view_descriptors"].shape
    if any(len(arr[k]) != n for k in ARRAYS) or arr["fused"].shape[1] != dim or any(
            arr[k].shape[1] != k_views for k in ("view_valid", "view_scores", "view_frames")):
        raise MapFileError(f"{path}: arrays disagree on the number of instances, views or dimensions")
    valid = arr["view_valid"].astype(bool)
    if not np.isfinite(arr["fused"]).all() or not np.isfinite(arr["view_descriptors"][valid]).all():
        raise MapFileError(f"{path}: embeddings hold NaN or infinite values")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
