"""Reads the ground-truth folder (gt/points.ply, classes.json, instances.json)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camfusion_ros.core.ply import PlyError, read_ply

from .metrics import EvalError


@dataclass
class GroundTruth:
    xyz: np.ndarray                      # (N, 3) float64
    instance: np.ndarray                 # (N,) int64, 0 = none
    label: np.ndarray                    # (N,) int64, -1 = ignore
    names: list[str]
    background: list[str] = field(default_factory=list)
    instances: dict[int, str] = field(default_factory=dict)

    @property
    def background_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.names) if n in set(self.background)]

    def class_index(self) -> dict[str, int]:
        """Case/space-insensitive lookup from a class name to its index."""
        return {_key(n): i for i, n in enumerate(self.names)}


def _key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def _json(path: Path) -> object:
    if not path.is_file():
        raise EvalError(f"ground truth is missing {path.name} (expected {path})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot read {path}: {e}") from None


def load_gt(gt_dir: str | Path) -> GroundTruth:
    """Load a GT folder; one EvalError naming the file and the problem if anything is off."""
    d = Path(gt_dir)
    if not d.is_dir():
        raise EvalError(f"ground-truth folder not found: {d}")
    try:
        ply = read_ply(d / "points.ply")
    except PlyError as e:
        raise EvalError(str(e)) from None
    missing = [k for k in ("x", "y", "z", "instance", "label") if k not in ply]
    if missing:
        raise EvalError(f"{d / 'points.ply'} lacks vertex properties {missing}")
    classes = _json(d / "classes.json")
    if not isinstance(classes, dict) or not isinstance(classes.get("names"), list) or not classes["names"]:
        raise EvalError(f"{d / 'classes.json'} needs a non-empty list 'names'")
    names = [str(n) for n in classes["names"]]
    insts = _json(d / "instances.json") if (d / "instances.json").is_file() else {}
    label = ply["label"].astype(np.int64)
    if label.size and label.max() >= len(names):
        raise EvalError(f"{d / 'points.ply'} has label {int(label.max())} but classes.json names {len(names)} classes")
    return GroundTruth(
        xyz=np.stack([ply["x"], ply["y"], ply["z"]], axis=1).astype(np.float64),
        instance=ply["instance"].astype(np.int64), label=label, names=names,
        background=[str(n) for n in classes.get("background") or []],
        instances={int(k): str(v.get("class_name", "")) for k, v in insts.items()} if isinstance(insts, dict) else {},
    )
