"""Memory over a long run: RSS and GPU memory after N frames, and the map's size on disk per instance.

A short synthetic recording is looped (each pass with slightly perturbed
poses and fresh stamps) through the real pipeline: GT masks, the real tracker
and view bank, the real PE-Core-T TextRegion extractor (random weights) and
average fusion. Descriptors of an (image, mask) pair already seen are served
from a cache, so thousands of frames fit in minutes on a CPU; the cache holds
at most one row per distinct mask of the loop and is part of the RSS measured.
"""
from __future__ import annotations

import gc
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from camfusion_ros.bench.timing import progress
from camfusion_ros.core.config import load_config
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import read_frames


class CachedExtractor:
    """The real extractor, called once per distinct (image, mask); later calls reuse its rows."""

    def __init__(self, inner):
        self.inner = inner
        self.dim, self.model_name = inner.dim, inner.model_name
        self.cache: dict[bytes, tuple[np.ndarray, bool]] = {}
        self.calls = self.hits = 0

    def extract(self, rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = hashlib.blake2b(rgb.tobytes(), digest_size=16).digest()
        keys = [h + hashlib.blake2b(np.packbits(m).tobytes(), digest_size=16).digest() for m in masks]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            self.calls += 1
            d, keep = self.inner.extract(rgb, masks[todo])
            for i, di, ki in zip(todo, d, keep):
                self.cache[keys[i]] = (di.copy(), bool(ki))
        self.hits += len(keys) - len(todo)
        desc = np.stack([self.cache[k][0] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
        return desc, np.array([self.cache[k][1] for k in keys], bool)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _gpu(device: str) -> dict | None:
    if device != "cuda":
        return None
    import torch

    return {"allocated_mib": torch.cuda.memory_allocated() / 2**20,
            "reserved_mib": torch.cuda.memory_reserved() / 2**20,
            "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20}


def _perturbed(frame, rng: np.random.Generator, stamp_ns: int, index: int, sigma_m: float):
    T = frame.T_world_cam.copy()
    T[:3, 3] += rng.normal(0.0, sigma_m, 3)
    return type(frame)(stamp_ns=stamp_ns, rgb=frame.rgb, depth=frame.depth, K=frame.K, T_world_cam=T,
                       gt_instances=frame.gt_instances, frame_id=frame.frame_id, index=index)


def bench_memory(bag: Path, checkpoints: tuple[int, ...], device: str, pose_sigma_m: float = 0.003,
                 seed: int = 0) -> dict:
    """RSS / GPU memory / map state after each checkpoint frame count; map bytes per instance at the end."""
    base = list(read_frames(bag))
    cfg = load_config({"segmenter": {"name": "gt"}, "segment_every": 1,
                       "vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "random", "device": device},
                       "descriptor": {"tiling": False}, "fuse_every": 10,
                       "vocabulary": {"names": ["chair", "table", "lamp", "wall", "floor"], "cache_dir": "",
                                      "templates": ["a photo of a {}."]},
                       "fusion": {"method": "avg"}})
    pipe = MappingPipeline(cfg)
    pipe._extractor = CachedExtractor(pipe.extractor)
    pipe.vocabulary
    rng = np.random.default_rng(seed)
    period = 100_000_000
    gc.collect()
    rss0 = _rss()
    points: list[dict] = []
    n_total = max(checkpoints)
    t0 = time.perf_counter()
    t_frames = 0.0
    stamp0 = base[0].stamp_ns
    for n in range(1, n_total + 1):
        f = base[(n - 1) % len(base)]
        fr = _perturbed(f, rng, stamp0 + n * period, n - 1, pose_sigma_m if n > len(base) else 0.0)
        ts = time.perf_counter()
        pipe.process(fr)
        t_frames += time.perf_counter() - ts
        if n in checkpoints:
            gc.collect()
            banks = [len(st.bank) for st in pipe.state.values()]
            pts = len(pipe.tracker.keys)
            points.append({"frames": n, "rss_mib": _rss() / 2**20, "gpu": _gpu(device),
                           "instances": len(pipe.tracker.instances), "map_points": int(pts),
                           "views_stored": int(sum(banks)), "max_views_per_instance": max(banks, default=0),
                           "mean_frame_ms": 1e3 * t_frames / n, "elapsed_s": time.perf_counter() - t0})
            progress(f"memory after {n} frames: RSS {points[-1]['rss_mib']:.0f} MiB, "
                     f"{points[-1]['instances']} instances, {pts} points")
        elif n % 500 == 0:
            progress(f"memory run frame {n}/{n_total} ({time.perf_counter() - t0:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        d = pipe.save(Path(tmp) / "map")
        files = {p.name: p.stat().st_size for p in Path(d).iterdir() if p.is_file()}
    n_inst = max(1, len(pipe.tracker.instances))
    by = {p["frames"]: p["rss_mib"] for p in points}
    hi, lo = max(checkpoints), sorted(checkpoints)[-2] if len(checkpoints) > 1 else None
    ex = pipe.extractor
    return {
        "what_ran": ("looped synthetic recording through MappingPipeline: GT masks, tracker, view bank (K=%d), "
                     "TextRegion on PE-Core-T-16-384 (random weights, descriptors cached per distinct image+mask), "
                     "avg fusion every 10 frames; poses perturbed by N(0, %.1f mm) per pass after the first"
                     % (cfg.views.max_views, pose_sigma_m * 1e3)),
        "loop_frames": len(base), "image_size": [int(base[0].width), int(base[0].height)],
        "rss_before_mib": rss0 / 2**20, "checkpoints": points,
        f"rss_ratio_{hi}_over_{lo}": (by[hi] / by[lo]) if lo else None,
        "extractor_calls": ex.calls, "descriptor_cache_hits": ex.hits, "descriptor_cache_rows": len(ex.cache),
        "map_files_bytes": files, "map_instances": len(pipe.tracker.instances),
        "map_bytes_per_instance": sum(files.values()) / n_inst,
        "map_bytes_per_instance_excluding_points": sum(v for k, v in files.items() if k != "points.ply") / n_inst,
        "seconds": time.perf_counter() - t0,
    }


def bench_memory_isolated(bag: Path, checkpoints: tuple[int, ...], device: str, timeout_s: float = 900) -> dict:
    """bench_memory in a fresh interpreter, so the RSS is this run's alone (not the models of earlier sections)."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        r = subprocess.run([sys.executable, "-m", "camfusion_ros.bench.memory", str(bag), str(out), device,
                            *map(str, checkpoints)], timeout=timeout_s, stdout=subprocess.DEVNULL)
        if r.returncode != 0 or not out.exists():
            return {"error": f"memory run failed (rc={r.returncode}); see its stderr above"}
        res = json.loads(out.read_text())
    res["process"] = "a fresh Python process (RSS holds only this run's models and map)"
    return res


if __name__ == "__main__":
    import json
    import sys

    _bag, _out, _dev, *_cps = sys.argv[1:]
    Path(_out).write_text(json.dumps(bench_memory(Path(_bag), tuple(int(c) for c in _cps), _dev)))
