"""Per-frame time of each pipeline stage on a synthetic recording, for one model preset.

The pipeline runs on ground-truth masks so the downstream stages see real
objects (random SAM2 weights give meaningless masks); SAM2's own time is
measured on the same frames beside it. Fusion runs after every frame
(``fuse_every=1``) with CAMFusion (random weights), and publishing builds the
node's ROS messages from the result when the node's conversions import.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from camfusion_ros.bench.timing import progress, summary
from camfusion_ros.core.config import load_config
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import read_frames

VOCAB = ["chair", "table", "sofa", "lamp", "plant", "wall", "floor", "cabinet"]


@dataclass
class ModelPreset:
    name: str
    vlm: str
    sam2: str
    tiling: bool


PRESETS = {
    "tiny": ModelPreset("tiny", "PE-Core-T-16-384", "tiny", tiling=False),
    "paper": ModelPreset("paper", "PE-Core-L-14-336", "large", tiling=True),
}


def preset_config(p: ModelPreset, device: str, camfusion_checkpoint: str = "") -> dict:
    cfg = {"segmenter": {"name": "gt"}, "segment_every": 1,
           "vlm": {"model_name": p.vlm, "pretrained": "random", "device": device},
           "descriptor": {"tiling": p.tiling},
           "vocabulary": {"names": VOCAB, "cache_dir": "", "templates": ["a photo of a {}."]},
           "fuse_every": 1}
    if camfusion_checkpoint:
        cfg["fusion"] = {"method": "camfusion", "checkpoint": camfusion_checkpoint, "device": device}
    return cfg


def _publisher():
    """A function building the node's messages for one publication, or (None, reason)."""
    try:
        import numpy as np
        from std_msgs.msg import Header

        from camfusion_ros.msg import InstanceArray
        from camfusion_ros.nodes.conversions import cloud_to_msg, instance_to_msg
    except Exception as exc:  # no ROS on this machine (e.g. the GPU host)
        return None, f"ROS message packages not importable ({type(exc).__name__}: {exc})"
    try:
        from camfusion_ros.nodes.markers import MarkerBuilder
        markers = MarkerBuilder()
    except Exception:
        markers = None

    def publish(pipe: MappingPipeline) -> None:
        records = pipe.instances()
        header = Header(frame_id="map")
        InstanceArray(header=header, instances=[instance_to_msg(r, pipe.model_name, pipe.cfg.fusion.method)
                                                for r in records])
        if markers is not None:
            markers.build(records, header, [])
        pts, cols, inst = pipe.tracker.point_cloud()
        index = {n: i for i, n in enumerate(pipe.vocabulary.names)}
        lab = {r.id: index.get(r.label, -1) for r in records}
        label = np.array([lab.get(int(i), -1) for i in inst], np.int32)
        cloud_to_msg(pts, cols, inst, label, header)
    return publish, "InstanceArray + MarkerArray + PointCloud2 built with camfusion_ros.nodes conversions (not sent)"


def _camfusion_checkpoint(dim: int, folder: Path) -> str:
    from camfusion_ros.core.camfusion import CamFusionConfig, build_camfusion
    from camfusion_ros.core.camfusion.checkpoint import save_checkpoint

    cfg = CamFusionConfig(input_dim=dim, width=dim, depth=8, heads=8, mlp_hidden=4 * dim)
    return str(save_checkpoint(folder / f"camfusion_{dim}", build_camfusion(cfg), cfg))


def bench_stages(preset: ModelPreset, bag: Path, frames: int, device: str, warmup_frames: int = 1,
                 sam2_frames: Optional[int] = None, size: tuple[int, int] = (0, 0), sam2_skip: str = "",
                 sam2_warmup: Optional[int] = None) -> dict:
    """Seconds per frame of every stage, over ``frames`` frames after ``warmup_frames`` untimed ones."""
    from camfusion_ros.core.segmentation import SegmenterConfig, make_segmenter
    from camfusion_ros.core.vlm import VLMConfig, load_vlm

    t_start = time.perf_counter()
    out: dict = {"preset": preset.name, "vlm": preset.vlm, "sam2": f"sam2.1_hiera_{preset.sam2}",
                 "weights": "random", "descriptor_tiling": preset.tiling, "image_size": list(size),
                 "frames_timed": 0, "warmup_frames": warmup_frames, "masks": "ground truth (SAM2 timed beside it)"}
    # sync + conversion: decoding synchronised frames from the bag
    it = read_frames(bag, max_frames=warmup_frames + frames)
    decoded, t_read = [], []
    while True:
        t0 = time.perf_counter()
        f = next(it, None)
        if f is None:
            break
        t_read.append(time.perf_counter() - t0)
        decoded.append(f)
    times: dict[str, list[float]] = {"sync_conversion": t_read[warmup_frames:]}
    t0 = time.perf_counter()
    vlm = load_vlm(VLMConfig(model_name=preset.vlm, pretrained="random", device=device))
    out["load_seconds"] = {"vlm": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _camfusion_checkpoint(vlm.embed_dim, Path(tmp))
        pipe = MappingPipeline(load_config(preset_config(preset, device, ckpt)), vlm=vlm)
        pipe.vocabulary  # text embeddings once, as the node does at start-up
        publish, pub_note = _publisher()
        out["publishing_note"] = pub_note
        for s in ("segmentation_gt", "tracking", "descriptors", "fusion_camfusion", "publishing"):
            times[s] = []
        for i, f in enumerate(decoded):
            st = pipe.process(f)
            tp = time.perf_counter()
            if publish is not None:
                publish(pipe)
            tp = time.perf_counter() - tp
            if i < warmup_frames:
                continue
            times["segmentation_gt"].append(st["segmentation"])
            times["tracking"].append(st["tracking"])
            times["descriptors"].append(st["descriptors"])
            times["fusion_camfusion"].append(st["fusion"])
            if publish is not None:
                times["publishing"].append(tp)
            progress(f"stages {preset.name} frame {i + 1}/{len(decoded)}: "
                     + ", ".join(f"{k}={v:.3f}s" for k, v in st.items()))
        out["instances_at_end"] = len(pipe.instances())
        out["fusion_note"] = f"CAMFusion width {vlm.embed_dim}, depth 8, random weights, all changed instances every frame"
        del pipe
    # SAM2 on the same frames
    sam_key = f"segmentation_sam2_{preset.sam2}"
    if sam2_frames == 0:
        out["sam2_masks_per_frame"] = []
    else:
        t0 = time.perf_counter()
        seg = make_segmenter(SegmenterConfig(name="sam2", sam2_model=preset.sam2, sam2_checkpoint="random",
                                             device=device))
        out["load_seconds"]["sam2"] = time.perf_counter() - t0
        sw = warmup_frames if sam2_warmup is None else sam2_warmup
        n_sam = len(decoded) if sam2_frames is None else min(len(decoded), sw + sam2_frames)
        t_sam, masks = [], []
        for i, f in enumerate(decoded[:n_sam]):
            t0 = time.perf_counter()
            m = seg.segment(f)
            if device == "cuda":
                import torch
                torch.cuda.synchronize()
            if i >= sw:
                t_sam.append(time.perf_counter() - t0)
                masks.append(int(len(m)))
            progress(f"stages {preset.name} sam2.1 {preset.sam2} frame {i + 1}/{n_sam}: {time.perf_counter() - t0:.2f}s")
        times[sam_key] = t_sam
        out["sam2_masks_per_frame"] = masks
        out["sam2_warmup_frames"] = sw
        out["sam2_note"] = ("SAM2 automatic mask generator (points_per_side 16) with RANDOM weights: its time "
                            "includes the post-processing of whatever masks random weights yield")
    out["frames_timed"] = len(decoded) - warmup_frames
    out["per_frame"] = {k: summary(v) for k, v in times.items()}
    if warmup_frames == 0:
        out["sync_note"] = "no warm-up frame: the first sync_conversion time includes opening the bag"
    if publish is None:
        out["per_frame"]["publishing"] = {"n": 0, "skipped": pub_note}
    if sam2_frames == 0:
        out["per_frame"][sam_key] = {"n": 0, "skipped": sam2_skip or "SAM2 not timed in this suite"}
    critical = ["sync_conversion", sam_key, "tracking", "descriptors", "fusion_camfusion",
                "publishing"]
    total = sum(out["per_frame"][k].get("mean_ms", 0.0) for k in critical)
    with_sam = "mean_ms" in out["per_frame"].get(sam_key, {})
    out["total_mean_ms"] = total
    out["total_includes"] = [k for k in critical if "mean_ms" in out["per_frame"].get(k, {})]
    out["fps"] = 1e3 / total if total > 0 else None
    out["fps_note"] = "sum of the stage means" + ("" if with_sam else " WITHOUT SAM2 (not timed here)")
    out["seconds"] = time.perf_counter() - t_start
    return out
