"""camfusion-map: build a labelled instance map from a recording, offline.

Prints one JSON summary line last (frames, instances, seconds, per-stage seconds, masks proposed /
tracked / dropped per reason).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from camfusion_ros.cli.common import (add_config_args, add_pose_args, config_from_args, pose_kwargs, quiet_libraries,
                                      user_errors)
from camfusion_ros.core.frames import FrameError
from camfusion_ros.core.map_store import check_replaceable
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import exit_on_error, inspect_recording, read_frames
from camfusion_ros.core.segmentation import SEGMENTERS


def build_map(bag: str, cfg, out: str | None = None, max_frames: int | None = None,
              progress: bool = True, pose: dict | None = None) -> tuple[MappingPipeline, dict]:
    """Run the pipeline over a recording; returns the pipeline and a summary dict.

    ``pose``: read_frames' pose options (``pose_source``, ``map_frame``, ...; default: the pose topic).
    """
    if out:
        check_replaceable(Path(out).absolute())      # refuse a user's folder now, not after the whole run
    info = inspect_recording(bag)
    total = min(info["topics"].get("/camera/pose", {}).get("count", 0) or 0, max_frames or 10**9) or None
    pipe = MappingPipeline(cfg)
    pipe.check_weights()
    skipped: list[str] = []
    t0 = time.perf_counter()
    frames = 0
    for frame in tqdm(read_frames(bag, max_frames=max_frames, **(pose or {})), total=total, desc="mapping", unit="frame",
                      disable=not progress, file=sys.stderr):
        try:
            pipe.process(frame)
            frames += 1
        except FrameError as e:
            skipped.append(f"frame {frame.index}: {e}")
    t = time.perf_counter()
    pipe.fuse_pending()
    pipe.stage_seconds["fusion"] += time.perf_counter() - t
    if out:
        pipe.save(out)
    summary = {"bag": str(bag), "frames": frames, "skipped_frames": len(skipped),
               "instances": len(pipe.instances()), "seconds": round(time.perf_counter() - t0, 3),
               "stage_seconds": {k: round(v, 3) for k, v in pipe.stage_seconds.items()},
               "segmenter": cfg.segmenter.name, "segment_every": cfg.segment_every, "masks": pipe.mask_summary(),
               "pose_source": (pose or {}).get("pose_source", "topic"),
               "fusion": cfg.fusion.method, "model": pipe.model_name,
               "weights_are_random": bool(getattr(pipe._vlm, "weights_are_random", False)), "map": out}
    for s in skipped[:5]:
        print(f"warning: skipped {s}", file=sys.stderr)
    return pipe, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="camfusion-map", description=__doc__)
    p.add_argument("bag", help="rosbag2 folder (from camfusion-synth, camfusion-convert, or a robot)")
    p.add_argument("--out", required=True, help="map folder to write (points.ply, instances.safetensors, meta.json)")
    p.add_argument("--segmenter", choices=SEGMENTERS,
                   help="gt and gt_noisy (SAM-like errors made from GT; segmenter.noise.*) need the instance-image topic")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--no-progress", action="store_true")
    add_pose_args(p)
    add_config_args(p)
    args = p.parse_args(argv)
    quiet_libraries()
    with exit_on_error(*user_errors()):
        cfg = config_from_args(args, {"segmenter.name": args.segmenter} if args.segmenter else None)
        _, summary = build_map(args.bag, cfg, args.out, args.max_frames, progress=not args.no_progress,
                               pose=pose_kwargs(args))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
