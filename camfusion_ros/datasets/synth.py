"""Synthetic posed RGB-D recordings with exact ground truth.

Python API (used by ``camfusion-synth`` and the shared test fixture
``synth_scene`` in test/conftest.py)::

    from camfusion_ros.datasets.synth import SynthConfig, generate
    out = generate(Path("/tmp/scene"), SynthConfig(seed=0))   # -> Path to out dir
    # out/bag/  rosbag2 MCAP (topics of docs/architecture.md)
    # out/gt/points.ply, out/gt/classes.json, out/gt/instances.json

Deterministic for a seed: the scene, the trajectory and the ground-truth
sampling all draw from one ``numpy.random.Generator``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import trimesh

from camfusion_ros.core.output_folder import claim_outputs
from camfusion_ros.datasets.bag_writer import DEPTH_ENCODINGS, BagWriter
from camfusion_ros.datasets.gt_writer import RECORDING_ENTRIES, write_gt
from camfusion_ros.datasets.render import EmbreeRenderer, intrinsics
from camfusion_ros.datasets.scene import BACKGROUND_CLASSES, DEFAULT_CLASSES, Scene, SceneError, build_scene

__all__ = ["SynthConfig", "SynthError", "generate", "run", "trajectory"]

START_NS = 1_700_000_000_000_000_000


class SynthError(ValueError):
    """Bad generator settings; the message says which."""


@dataclass
class SynthConfig:
    frames: int = 30
    objects: int = 6
    width: int = 320
    height: int = 240
    seed: int = 0
    classes: Optional[Sequence[str]] = None   # None = DEFAULT_CLASSES
    depth_encoding: str = "16UC1"
    compressed: bool = False                 # colour JPEG on .../compressed, depth PNG on .../compressedDepth
    fps: float = 10.0
    hfov_deg: float = 70.0
    gt_spacing_m: float = 0.012              # mean spacing of ground-truth surface samples

    def validate(self) -> "SynthConfig":
        if self.frames < 1:
            raise SynthError(f"frames must be >= 1, got {self.frames}")
        if self.width < 8 or self.height < 8:
            raise SynthError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if self.depth_encoding not in DEPTH_ENCODINGS:
            raise SynthError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {self.depth_encoding!r}")
        if self.fps <= 0 or not 10 <= self.hfov_deg <= 150 or self.gt_spacing_m <= 0:
            raise SynthError("fps and gt spacing must be positive and hfov within [10, 150] degrees")
        return self


def trajectory(scene: Scene, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One smooth orbit around the objects, with gentle height and look-at variation (camera-to-world, OpenCV axes)."""
    r_cam = scene.place_radius + 0.8
    phase = rng.uniform(0, 2 * np.pi)
    poses = []
    for i in range(frames):
        th = phase + 2 * np.pi * i / frames
        r = r_cam * (1 + 0.04 * np.sin(3 * th))
        eye = np.array([r * np.cos(th), r * np.sin(th), 1.5 + 0.15 * np.sin(2 * th + 0.5)])
        target = np.array([0.4 * np.cos(th + 2.0), 0.4 * np.sin(th + 2.0), 0.6 + 0.45 * np.sin(3 * th)])
        poses.append(look_at(eye, target))
    return poses


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    f = target - eye
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    y = np.cross(f, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, f, eye
    return T


def run(out_dir: str | Path, cfg: SynthConfig | None = None) -> dict:
    """Generate a recording; return a summary dict (frames, objects, seconds, paths)."""
    cfg = (cfg or SynthConfig()).validate()
    t0 = time.perf_counter()
    out = claim_outputs(out_dir, "camfusion-synth", RECORDING_ENTRIES)
    rng = np.random.default_rng(cfg.seed)
    try:
        scene = build_scene(cfg.objects, list(cfg.classes) if cfg.classes is not None else list(DEFAULT_CLASSES), rng)
    except SceneError as exc:
        raise SynthError(str(exc)) from None
    poses = trajectory(scene, cfg.frames, rng)
    K = intrinsics(cfg.width, cfg.height, cfg.hfov_deg)
    renderer = EmbreeRenderer(scene)
    period = int(round(1e9 / cfg.fps))
    with BagWriter(out / "bag", depth_encoding=cfg.depth_encoding, compressed=cfg.compressed) as writer:
        for i, T in enumerate(poses):
            rgb, depth, inst = renderer.render(K, T, cfg.width, cfg.height)
            writer.write_frame(START_NS + i * period, rgb, depth, K, T, inst)
    count = int(np.ceil(scene.mesh.area / cfg.gt_spacing_m ** 2))
    pts, face = trimesh.sample.sample_surface(scene.mesh, count, seed=rng)
    inst = scene.face_instance[face]
    lut = np.full(max(scene.instance_class) + 1, -1, np.int32)
    for iid, cid in scene.instance_class.items():
        lut[iid] = cid
    label = lut[inst]
    paths = write_gt(out / "gt", pts, scene.albedo(pts, inst), inst, label, scene.class_names,
                     [c for c in BACKGROUND_CLASSES], scene.instance_class)
    return {"frames": cfg.frames, "objects": cfg.objects, "num_instances": len(scene.instance_class),
            "gt_points": int(len(pts)), "seconds": round(time.perf_counter() - t0, 3), "out": str(out),
            "bag": str(out / "bag"), **{k: str(v) for k, v in paths.items()}}


def generate(out_dir: str | Path, cfg: SynthConfig | None = None) -> Path:
    """Generate a recording into ``out_dir`` (bag/ and gt/); return ``out_dir``."""
    run(out_dir, cfg)
    return Path(out_dir)
