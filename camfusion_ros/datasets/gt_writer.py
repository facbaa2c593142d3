"""Writes the ground-truth folder (gt/points.ply, classes.json, instances.json).

One writer for the synthetic scenes and the converters, so evaluation reads a
single format (docs/architecture.md, "Ground truth folder").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from camfusion_ros.core.ply import write_ply

__all__ = ["RECORDING_ENTRIES", "write_gt"]

RECORDING_ENTRIES = ("bag", "gt")   # what synth and the converters write in their --out folder


def write_gt(gt_dir: str | Path, xyz: np.ndarray, rgb: np.ndarray, instance: np.ndarray, label: np.ndarray,
             class_names: Sequence[str], background: Sequence[str],
             instances: Mapping[int, int]) -> dict[str, Path]:
    """``instances`` maps instance id -> class index (into ``class_names``)."""
    gt = Path(gt_dir)
    gt.mkdir(parents=True, exist_ok=True)
    xyz = np.asarray(xyz, dtype=np.float32)
    rgb = np.asarray(rgb, dtype=np.uint8)
    ply = write_ply(gt / "points.ply", {
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2],
        "instance": np.asarray(instance, dtype=np.int32), "label": np.asarray(label, dtype=np.int32),
    })
    names = list(class_names)
    missing = [b for b in background if b not in names]
    if missing:
        raise ValueError(f"background classes {missing} are not in the class list")
    classes = gt / "classes.json"
    classes.write_text(json.dumps({"names": names, "background": list(background)}, indent=1))
    inst = gt / "instances.json"
    inst.write_text(json.dumps({str(int(i)): {"class_id": int(c), "class_name": names[int(c)]}
                                for i, c in sorted(instances.items())}, indent=1))
    return {"points": ply, "classes": classes, "instances": inst}
