"""Run the mapping pipeline over a whole recording: the one loop every offline tool uses.

`camfusion-map`, `camfusion-eval --bag` and anything else that maps a recording offline call ``map_recording``, so
weight checks, a refused output folder, progress, bad-frame accounting and the summary are the same everywhere.
(The benchmark times its own per-stage loops; the live node feeds the same pipeline frame by frame.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from camfusion_ros.core.config import MappingConfig
from camfusion_ros.core.frames import FrameError
from camfusion_ros.core.map_store import check_replaceable
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import inspect_recording, read_frames


def map_recording(bag: str | Path, cfg: MappingConfig, out: str | Path | None = None, max_frames: int | None = None,
                  progress: bool = True, pose: dict | None = None) -> tuple[MappingPipeline, dict]:
    """Map ``bag`` with ``cfg``; save to ``out`` if given; return the pipeline and a JSON-ready summary.

    ``pose``: read_frames' pose options (``pose_source``, ``map_frame``, ...; default: the pose topic). A frame the
    pipeline refuses (FrameError) is skipped and counted; a folder holding a user's files is refused before the run.
    """
    if out:
        check_replaceable(Path(out).absolute())
    info = inspect_recording(bag)
    counts = [t.get("count", 0) for name, t in info["topics"].items() if name.endswith(("image_raw", "/compressed"))]
    total = min(max(counts, default=0) or 10**9, max_frames or 10**9)
    pipe = MappingPipeline(cfg)
    pipe.check_weights()
    skipped: list[str] = []
    t0 = time.perf_counter()
    frames = 0
    for frame in tqdm(read_frames(bag, max_frames=max_frames, **(pose or {})),
                      total=None if total == 10**9 else total, desc="mapping", unit="frame", disable=not progress,
                      file=sys.stderr):
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
               "weights_are_random": bool(getattr(pipe._vlm, "weights_are_random", False)),
               "map": str(out) if out else None}
    for s in skipped[:5]:
        print(f"warning: skipped {s}", file=sys.stderr)
    return pipe, summary
