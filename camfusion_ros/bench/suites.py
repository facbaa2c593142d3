"""What each suite measures (quick: a CPU in minutes; full: a GPU machine) and the runner of one suite."""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from camfusion_ros.bench import machine
from camfusion_ros.bench.fusion import FusionBenchConfig
from camfusion_ros.bench.tracking import TrackingBenchConfig
from camfusion_ros.bench.timing import progress

SCHEMA = "camfusion-bench/1"


@dataclass
class StageRun:
    preset: str                       # tiny | paper
    width: int
    height: int
    frames: int                       # timed frames
    warmup_frames: int = 1
    sam2_frames: Optional[int] = None  # None: as many as frames; 0: SAM2 not timed
    sam2_skip: str = ""               # why SAM2 is not timed (when sam2_frames == 0)
    sam2_warmup: Optional[int] = None  # None: warmup_frames
    cpu_skip: str = ""                # non-empty: skipped on CPU with this reason


@dataclass
class SuiteConfig:
    name: str
    stages: list[StageRun] = field(default_factory=list)
    fusion: Optional[FusionBenchConfig] = field(default_factory=FusionBenchConfig)
    fusion_cpu: Optional[FusionBenchConfig] = None     # used instead of ``fusion`` on CPU when set
    memory_loop: tuple[int, int, int] = (30, 160, 120)  # frames, width, height of the looped recording
    memory_checkpoints: tuple[int, ...] = (100, 1000, 5000)
    node: Optional[tuple[int, int, int]] = (20, 160, 120)  # frames, width, height of the replayed recording
    node_rates: tuple[float, ...] = (1.0, 2.0, 5.0)
    peak_seconds: float = 0.5
    tracking: Optional[TrackingBenchConfig] = field(default_factory=TrackingBenchConfig)


SAM2_SLOW = ("SAM2.1-L automatic masks on CPU take well over 60 s per frame (SAM2.1-T alone takes ~100 s on the "
             "2-core CI machine): measured in the full suite on GPU")


def quick() -> SuiteConfig:
    return SuiteConfig(
        name="quick",
        stages=[StageRun("tiny", 320, 240, frames=3, sam2_frames=1, sam2_warmup=0),
                StageRun("paper", 320, 240, frames=1, warmup_frames=0, sam2_frames=0, sam2_skip=SAM2_SLOW)],
        fusion=FusionBenchConfig(max_call_s=5.0, budget_s=400.0, min_seconds=0.3),
        fusion_cpu=FusionBenchConfig(max_call_s=2.0, budget_s=100.0, min_seconds=0.2),
    )


def full() -> SuiteConfig:
    """Sized for one call on the GPU machine (< 10 min, no ROS there); on a CPU it takes hours."""
    return SuiteConfig(
        name="full",
        stages=[StageRun("tiny", 640, 480, frames=6, warmup_frames=1),
                StageRun("paper", 640, 480, frames=3, warmup_frames=1)],
        fusion=FusionBenchConfig(max_call_s=20.0, budget_s=180.0, min_seconds=0.2),
        fusion_cpu=FusionBenchConfig(max_call_s=20.0, budget_s=600.0, min_seconds=0.3),
        memory_loop=(30, 160, 120),
        node=(50, 320, 240),
        tracking=None,          # CPU-only and ~15 min: measured by the quick suite
    )


SUITES = {"quick": quick, "full": full}


def _recording(root: Path, frames: int, width: int, height: int, seed: int = 0) -> Path:
    out = root / f"synth_{frames}_{width}x{height}_{seed}"
    if not (out / "bag").exists():
        from camfusion_ros.datasets.synth import SynthConfig, generate  # the renderer: only where data is made

        generate(out, SynthConfig(frames=frames, objects=6, width=width, height=height, seed=seed))
    return out / "bag"


def _guard(section: str, fn):
    """Run one section; an exception becomes an ``error`` entry instead of ending the suite."""
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as exc:
        progress(f"{section} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "seconds": time.perf_counter() - t0}


def prepare_recordings(suite: SuiteConfig, data: Path) -> list[Path]:
    """Write every recording the suite reads (the same names run_suite looks for)."""
    data.mkdir(parents=True, exist_ok=True)
    out = [_recording(data, r.warmup_frames + r.frames, r.width, r.height) for r in suite.stages]
    if suite.memory_checkpoints:
        out.append(_recording(data, *suite.memory_loop, seed=1))
    if suite.node is not None:
        out.append(_recording(data, *suite.node, seed=2))
    return out


def run_suite(suite: SuiteConfig, device: torch.device, data: Optional[Path] = None) -> dict:
    """Every section of the suite on ``device``; the result is plain JSON-able data."""
    from camfusion_ros.bench.fusion import bench_fusion
    from camfusion_ros.bench.memory import bench_memory_isolated
    from camfusion_ros.bench.node_e2e import bench_node
    from camfusion_ros.bench.stages import PRESETS, bench_stages

    t0 = time.perf_counter()
    dev = device.type
    result: dict = {"schema": SCHEMA, "suite": suite.name, "weights": "random",
                    "weights_note": "no pretrained weights on the benchmark machines; speed does not depend on them",
                    "machine": machine.machine_info(device)}
    progress("measuring matmul peak")
    result["peak_flops"] = _guard("peak", lambda: machine.peaks(device, suite.peak_seconds))
    with tempfile.TemporaryDirectory(prefix="camfusion-bench-") as tmp:
        root = Path(data) if data is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        stages = {}
        for run in suite.stages:
            key = f"{run.preset}_{run.width}x{run.height}"
            if dev == "cpu" and run.cpu_skip:
                stages[key] = {"skipped": run.cpu_skip}
                continue
            progress(f"stages {key}")
            stages[key] = _guard(key, lambda run=run: bench_stages(
                PRESETS[run.preset], _recording(root, run.warmup_frames + run.frames, run.width, run.height),
                run.frames, dev, run.warmup_frames, run.sam2_frames, (run.width, run.height), run.sam2_skip,
                run.sam2_warmup))
        result["stages"] = stages
        fcfg = suite.fusion_cpu if dev == "cpu" and suite.fusion_cpu is not None else suite.fusion
        if fcfg is not None:
            progress("fusion scaling")
            result["fusion"] = _guard("fusion", lambda: bench_fusion(fcfg, device, result["peak_flops"]))
        else:
            result["fusion"] = {"skipped": "not in this suite"}
        if suite.tracking is not None:
            from camfusion_ros.bench.tracking import bench_tracking

            progress("tracking on exact and SAM-like masks")
            result["tracking"] = _guard("tracking", lambda: bench_tracking(suite.tracking, root))
        else:
            result["tracking"] = {"skipped": "not in this suite"}
        if suite.memory_checkpoints:
            progress("memory over a long run")
            n, w, h = suite.memory_loop
            result["memory"] = _guard("memory", lambda: bench_memory_isolated(_recording(root, n, w, h, seed=1),
                                                                    suite.memory_checkpoints, dev))
        else:
            result["memory"] = {"skipped": "not in this suite"}
        if suite.node is not None:
            progress("live node on a replayed bag")
            n, w, h = suite.node
            result["node"] = _guard("node", lambda: bench_node(_recording(root, n, w, h, seed=2), suite.node_rates,
                                                               dev))
        else:
            result["node"] = {"skipped": "not in this suite"}
    result["seconds"] = time.perf_counter() - t0
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["summary"] = summarise(result)
    return result


def summarise(r: dict) -> dict:
    """The handful of figures a reader wants first (mean ms per stage, fusion of 1000 instances, memory ratio)."""
    s: dict = {}
    for key, st in r.get("stages", {}).items():
        pf = st.get("per_frame") or {}
        s[f"stages_{key}_mean_ms"] = {k: round(v["mean_ms"], 2) for k, v in pf.items() if "mean_ms" in v}
    for e in (r.get("fusion") or {}).get("camfusion", []):
        if e["instances"] == 1000 and e["views"] == 10 and "latency" in e:
            s[f"fusion_1000x10_{e['mode']}_{e['dtype']}_ms"] = round(e["latency"]["p50_ms"], 2)
    for size, kinds in ((r.get("tracking") or {}).get("table") or {}).items():
        for kind in ("exact", "default"):
            if kind in kinds:
                s[f"tracking_{size}_{kind}"] = kinds[kind]
    for size, t in ((r.get("tracking") or {}).get("per_keyframe_ms") or {}).items():
        s[f"tracking_{size}_per_keyframe_ms"] = {"proposals": round(t["proposals_mean"], 1),
                                                 "postprocessing": round(t["gt_noisy_and_postprocessing"]["mean_ms"], 1),
                                                 "tracking": round(t["tracking"]["mean_ms"], 1)}
    mem = r.get("memory") or {}
    for k, v in mem.items():
        if k.startswith("rss_ratio") and v is not None:
            s[k] = round(v, 3)
    if "map_bytes_per_instance" in mem:
        s["map_bytes_per_instance"] = round(mem["map_bytes_per_instance"])
    for run in (r.get("node") or {}).get("runs", []):
        s[f"node_{run.get('rate')}x"] = {k: run.get(k) for k in ("fps_processed", "dropped_frames_equivalent")}
        for key in ("latency_ms", "staleness_ms"):
            if key in run:
                s[f"node_{run.get('rate')}x"][f"{key[:-3]}_p50_ms"] = round(run[key]["p50"], 1)
    return s


def sanitize(obj):
    """The result with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def check_finite(obj, path: str = "") -> list[str]:
    """Paths of every non-finite float in a result (NaN/inf would make invalid JSON)."""
    bad = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad += check_finite(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            bad += check_finite(v, f"{path}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        bad.append(path)
    return bad
