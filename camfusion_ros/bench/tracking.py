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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camfusion_ros.bench.timing import progress, summary
from camfusion_ros.eval.tracking import ERROR_KINDS

# ~60 proposals per keyframe: every instance split in three beside its whole, plus ten spurious blobs
TIMING_NOISE = {"split_fraction": 1.0, "split_parts": 3, "spurious_per_frame": 10.0}


@dataclass
class TrackingBenchConfig:
    sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480))
    seeds: tuple[int, ...] = (0, 1)
    frames: int = 30
    objects: int = 12
    kinds: tuple[str, ...] = tuple(ERROR_KINDS)


def _scene(root: Path, seed: int, w: int, h: int, frames: int, objects: int):
    from camfusion_ros.datasets.synth import SynthConfig, generate
    from camfusion_ros.eval.tracking import load_tracking_scene

    out = root / f"track_{objects}obj_{frames}_{w}x{h}_{seed}"
    if not (out / "gt" / "instances.json").exists():
        generate(out, SynthConfig(frames=frames, objects=objects, width=w, height=h, seed=seed))
    return load_tracking_scene(out)


def bench_tracking(cfg: TrackingBenchConfig, root: Path) -> dict:
    from camfusion_ros.core.segmentation import NoiseConfig, SegmenterConfig
    from camfusion_ros.core.tracking import TrackerConfig
    from camfusion_ros.eval.tracking import run_tracking, score_tracker, segmenter_for

    rows, timing = [], {}
    for w, h in cfg.sizes:
        for seed in cfg.seeds:
            progress(f"tracking {w}x{h} seed {seed}: rendering and scoring set-up")
            scene = _scene(root, seed, w, h, cfg.frames, cfg.objects)
            for kind in cfg.kinds:
                tr, t_seg, t_track, props = run_tracking(scene.frames, segmenter_for(kind, seed), TrackerConfig())
                s = score_tracker(tr, scene).as_dict()
                rows.append({"kind": kind, "seed": seed, "width": w, "height": h, **s,
                             "proposals_per_keyframe": float(np.mean(props)),
                             "tracking_ms_mean": 1e3 * float(np.mean(t_track))})
                progress(f"tracking {w}x{h} seed {seed} {kind}: recall {s['recall']:.2f} "
                         f"fragments {s['fragments']}/{s['object_instances']} spurious {s['spurious']}")
            noisy = SegmenterConfig(name="gt_noisy", noise=NoiseConfig(seed=seed, **TIMING_NOISE))
            _, t_seg, t_track, props = run_tracking(scene.frames, noisy, TrackerConfig())
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
