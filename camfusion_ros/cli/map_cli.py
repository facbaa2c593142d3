"""camfusion-map: build a labelled instance map from a recording, offline.

Prints one JSON summary line last (frames, instances, seconds, per-stage seconds, masks proposed /
tracked / dropped per reason).
"""
from __future__ import annotations

import argparse
import json
import sys

from camfusion_ros.cli.common import (add_config_args, add_pose_args, config_from_args, pose_kwargs, quiet_libraries,
                                      user_errors)
from camfusion_ros.core.map_recording import map_recording
from camfusion_ros.core.recording import exit_on_error
from camfusion_ros.core.segmentation import SEGMENTERS


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
        _, summary = map_recording(args.bag, cfg, args.out, args.max_frames, progress=not args.no_progress,
                                   pose=pose_kwargs(args))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
