"""Tracking quality on SAM-like masks (gt_noisy) next to exact masks, and its cost per keyframe.

For every image size and scene seed: a 12-object synthetic recording; for
every error kind (``exact`` = GT masks, the ceiling; ``default`` = every
gt_noisy error at its default strength; then each error alone) the
segmenter + post-processing + tracker run over every frame and the map is
scored on the GT surfaces the camera saw (camfusion_ros/eval/tracking.py).
A separate timing run uses heavier noise so that a keyframe holds about 60
proposals, and reports post-processing and tracking milliseconds per keyframe.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camfusion_ros.bench.timing import progress, summary

ERRORS_OFF = dict(border_px=0, split_fraction=0.0, join_fraction=0.0, miss_prob=0.0, spurious_per_frame=0.0)
KINDS: dict[str, dict | None] = {
    "exact": None, "default": {},
    "border": {**ERRORS_OFF, "border_px": 2}, "split": {**ERRORS_OFF, "split_fraction": 0.5},
    "join": {**ERRORS_OFF, "join_fraction": 0.25}, "miss": {**ERRORS_OFF, "miss_prob": 0.05},
    "spurious": {**ERRORS_OFF, "spurious_per_frame": 1.0},
}
# ~60 proposals per keyframe: every instance split in three beside its whole, plus ten spurious blobs
TIMING_NOISE = {"split_fraction": 1.0, "split_parts": 3, "spurious_per_frame": 10.0}


@dataclass
class TrackingBenchConfig:
    sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480))
    seeds: tuple[int, ...] = (0, 1)
    frames: int = 30
    objects: int = 12
    kinds: tuple[str, ...] = tuple(KINDS)


def _scene(root: Path, seed: int, w: int, h: int, frames: int, objects: int):
    from camfusion_ros.core.ply import read_ply
    from camfusion_ros.core.recording import read_frames
    from camfusion_ros.datasets.synth import SynthConfig, generate
    from camfusion_ros.eval.tracking import seen_points

    out = root / f"track_{objects}obj_{frames}_{w}x{h}_{seed}"
    if not (out / "gt" / "instances.json").exists():
        generate(out, SynthConfig(frames=frames, objects=objects, width=w, height=h, seed=seed))
    frames_ = list(read_frames(out / "bag"))
    gt = read_ply(out / "gt" / "points.ply")
    xyz = np.stack([gt["x"], gt["y"], gt["z"]], 1).astype(np.float64)
    seen = seen_points(xyz, frames_)
    insts = json.loads((out / "gt" / "instances.json").read_text())
    background = {int(k) for k, v in insts.items() if v.get("class_name") in ("wall", "floor", "ceiling")}
    return frames_, xyz[seen], gt["instance"][seen].astype(np.int64), background


def _run(frames, segmenter_cfg, tracker_cfg):
    from camfusion_ros.core.segmentation import make_segmenter
    from camfusion_ros.core.tracking import InstanceTracker

    seg, tr = make_segmenter(segmenter_cfg), InstanceTracker(tracker_cfg)
    t_seg, t_track, proposals = [], [], []
    for f in frames:
        t0 = time.perf_counter()
        masks = seg.segment(f)
        t1 = time.perf_counter()
        tr.update(f, masks)
        t_track.append(time.perf_counter() - t1)
        t_seg.append(t1 - t0)
        proposals.append(masks.proposals)
    return tr, t_seg, t_track, proposals


def bench_tracking(cfg: TrackingBenchConfig, root: Path) -> dict:
    from camfusion_ros.core.segmentation import NoiseConfig, SegmenterConfig
    from camfusion_ros.core.tracking import TrackerConfig
    from camfusion_ros.eval.tracking import score_tracking

    rows, timing = [], {}
    for w, h in cfg.sizes:
        for seed in cfg.seeds:
            progress(f"tracking {w}x{h} seed {seed}: rendering and scoring set-up")
            frames, xyz, inst, bg = _scene(root, seed, w, h, cfg.frames, cfg.objects)
            for kind in cfg.kinds:
                over = KINDS[kind]
                seg = (SegmenterConfig(name="gt") if over is None else
                       SegmenterConfig(name="gt_noisy", noise=NoiseConfig(seed=seed, **over)))
                tr, t_seg, t_track, props = _run(frames, seg, TrackerConfig())
                pts, _, ids = tr.point_cloud()
                s = score_tracking(pts, ids, xyz, inst, bg).as_dict()
                rows.append({"kind": kind, "seed": seed, "width": w, "height": h, **s,
                             "proposals_per_keyframe": float(np.mean(props)),
                             "tracking_ms_mean": 1e3 * float(np.mean(t_track))})
                progress(f"tracking {w}x{h} seed {seed} {kind}: recall {s['recall']:.2f} "
                         f"fragments {s['fragments']}/{s['object_instances']} spurious {s['spurious']}")
            noisy = SegmenterConfig(name="gt_noisy", noise=NoiseConfig(seed=seed, **TIMING_NOISE))
            _, t_seg, t_track, props = _run(frames, noisy, TrackerConfig())
            timing.setdefault(f"{w}x{h}", []).append((t_seg, t_track, props))
    table = {}
    for w, h in cfg.sizes:
        for kind in cfg.kinds:
            sel = [r for r in rows if r["kind"] == kind and (r["width"], r["height"]) == (w, h)]
            table.setdefault(f"{w}x{h}", {})[kind] = {
                k: round(float(np.mean([r[k] for r in sel])), 3)
                for k in ("recall", "fragment_rate", "spurious_rate", "mean_best_iou")}
    per_keyframe = {}
    for size, runs in timing.items():
        t_seg = [t for r in runs for t in r[0]]
        t_track = [t for r in runs for t in r[1]]
        per_keyframe[size] = {"proposals_mean": float(np.mean([p for r in runs for p in r[2]])),
                              "gt_noisy_and_postprocessing": summary(t_seg), "tracking": summary(t_track)}
    return {"what_ran": __doc__.strip().splitlines()[0], "config": dataclasses.asdict(cfg),
            "tracker": dataclasses.asdict(TrackerConfig()), "table": table, "rows": rows,
            "per_keyframe_ms": per_keyframe,
            "timing_noise": TIMING_NOISE,
            "note": "gt_noisy's own mask making is part of the first timing (SAM2's time is in stages)"}
