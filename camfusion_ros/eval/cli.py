"""camfusion-eval: score a map (or several fusions of one mapping run) against ground truth."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from camfusion_ros.cli.common import add_pose_args, pose_kwargs
from camfusion_ros.cli_errors import report_error
from camfusion_ros.core.output_folder import OutputFolderError, claim_outputs
from camfusion_ros.core.class_lists import ClassListError, available_vocabularies, frequency_splits, load_splits, load_vocabulary
from .evaluate import EvalConfig, evaluate_map
from .gt import GroundTruth, load_gt
from .map_view import MapView, load_map_view
from .metrics import EvalError
from .report import report_names, write_report


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="camfusion-eval", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--map", type=Path, help="map directory (points.ply, instances.safetensors, meta.json)")
    src.add_argument("--bag", type=Path, help="recording to map once (then fusions are compared)")
    p.add_argument("--gt", type=Path, required=True, help="ground-truth folder (points.ply, classes.json, instances.json)")
    p.add_argument("--vocab", help="class list file or shipped name; re-labels the fused embeddings with the VLM text encoder")
    p.add_argument("--splits", help="head/common/tail splits: shipped name or YAML (default: the vocab's, else GT frequency tertiles)")
    p.add_argument("--fusion", help="comma-separated fusers to compare by re-fusing the saved views, e.g. avg,l1medoid,camfusion")
    p.add_argument("--checkpoint", type=Path, help="CAMFusion checkpoint for --fusion camfusion")
    p.add_argument("--config", type=Path, help="mapping config YAML for --bag")
    add_pose_args(p)
    p.add_argument("--device", help="torch device for the VLM / CAMFusion (default: the map's config)")
    p.add_argument("--out", type=Path, default=Path("eval_report"), help="report directory [eval_report]")
    p.add_argument("--distance", type=float, default=d.distance, help=f"label transfer radius in m [{d.distance}]")
    p.add_argument("--min-region-size", type=int, default=d.min_region_size, help=f"instance AP min points [{d.min_region_size}]")
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"(instance, class) pairs for Top-k AP [{d.top_k}]")
    return p.parse_args(argv)


def choose_splits(args: argparse.Namespace, gt: GroundTruth) -> tuple[dict, dict, str]:
    """(semantic splits, instance splits, source): explicit --splits, else a named --vocab's shipped
    splits, else GT frequency tertiles (over all classes for semantics, over non-background ones for AP)."""
    if args.splits:
        sp = load_splits(args.splits)
        return sp, sp, str(args.splits)
    if args.vocab and args.vocab in available_vocabularies():
        try:
            sp = load_splits(args.vocab)
            return sp, sp, args.vocab
        except ClassListError:
            pass
    counts = np.bincount(gt.label[gt.label >= 0], minlength=len(gt.names))
    objects = counts.copy()
    objects[gt.background_ids] = 0
    return (frequency_splits(gt.names, counts), frequency_splits(gt.names, objects),
            "ground-truth frequency tertiles")


def text_embeddings(names: list[str], meta: Optional[dict], device: Optional[str]) -> np.ndarray:
    """Class-name embeddings from the VLM the map was made with (its config in meta.json)."""
    from dataclasses import replace

    from camfusion_ros.core.config import load_config
    from camfusion_ros.core.vlm import load_vlm
    from camfusion_ros.core.vocabulary import Vocabulary
    cfg = load_config((meta or {}).get("config") or {})
    vlm_cfg = replace(cfg.vlm, device=device) if device else cfg.vlm
    return np.asarray(Vocabulary(names, load_vlm(vlm_cfg)).embeddings, dtype=np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def map_bag(bag: Path, config: Optional[Path], out: Path, device: Optional[str], pose: Optional[dict] = None) -> Path:
    """Map the recording once, as camfusion-map does, and save the map (with its per-view descriptors)."""
    from dataclasses import replace

    from camfusion_ros.core.map_recording import map_recording
    from camfusion_ros.core.config import load_config

    cfg = load_config(config)
    if device:
        cfg = replace(cfg, vlm=replace(cfg.vlm, device=device))
    map_recording(bag, cfg, out / "map", pose=pose)
    return out / "map"


def compare_fusions(view: MapView, gt: GroundTruth, fusions: list[str], vocab: list[str], text: np.ndarray,
                    cfg: EvalConfig, splits: dict, checkpoint: Optional[Path] = None,
                    device: Optional[str] = None, instance_splits: Optional[dict] = None) -> dict:
    """Re-fuse the saved per-view descriptors with each fuser and score each result."""
    from camfusion_ros.core.fusion import make_fuser
    if view.view_descriptors is None or view.view_valid is None:
        raise EvalError("the map holds no per-view descriptors (instances.safetensors: view_descriptors, view_valid)")
    results = {}
    for name in fusions:
        kwargs = {}
        if name == "camfusion":
            if not checkpoint:
                raise EvalError("--fusion camfusion needs --checkpoint")
            kwargs = {"checkpoint": str(checkpoint), **({"device": device} if device else {})}
        fused = make_fuser(name, **kwargs).fuse(view.view_descriptors.astype(np.float32), view.view_valid)
        scores = _normalize(np.asarray(fused, np.float64)) @ _normalize(text.astype(np.float64)).T
        results[name] = evaluate_map(view, gt, cfg, splits, vocab_scores=scores, vocab_names=vocab,
                                     instance_splits=instance_splits)
    return results


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    cfg = EvalConfig(distance=args.distance, min_region_size=args.min_region_size, top_k=args.top_k)
    if cfg.min_region_size < 1 or cfg.top_k < 1:
        raise EvalError("--min-region-size and --top-k must be at least 1")
    gt = load_gt(args.gt)
    splits, inst_splits, splits_src = choose_splits(args, gt)
    vocab = load_vocabulary(args.vocab) if args.vocab else None
    fusions = [f.strip() for f in args.fusion.split(",") if f.strip()] if args.fusion else []
    # Before any long work: the report (and the map of --bag) must not land on a user's files.
    claim_outputs(args.out, "camfusion-eval", report_names(fusions or ["map"]) + (["map"] if args.bag else []))
    map_dir = map_bag(args.bag, args.config, args.out, args.device, pose_kwargs(args)) if args.bag else args.map
    view = load_map_view(map_dir)
    info = {"map": str(map_dir), "ground truth": str(args.gt), "GT points": len(gt.xyz),
            "map points": len(view.xyz), "transfer distance (m)": cfg.distance,
            "min region size": cfg.min_region_size, "splits": splits_src}
    if fusions or vocab is not None:
        names = vocab or list(gt.names)
        text = text_embeddings(names, view.meta, args.device)
        info["vocabulary"] = args.vocab or "ground-truth class names"
    if fusions:
        results = compare_fusions(view, gt, fusions, names, text, cfg, splits, args.checkpoint, args.device,
                                  instance_splits=inst_splits)
    elif vocab is not None:
        if view.fused is None:
            raise EvalError("the map holds no fused embeddings to re-label (instances.safetensors: fused)")
        scores = _normalize(view.fused.astype(np.float64)) @ _normalize(text.astype(np.float64)).T
        results = {"map": evaluate_map(view, gt, cfg, splits, vocab_scores=scores, vocab_names=names,
                                        instance_splits=inst_splits)}
    else:
        info["labels"] = "meta.json per-instance labels (Top-k needs --vocab)"
        results = {"map": evaluate_map(view, gt, cfg, splits, instance_splits=inst_splits)}
    info["seconds"] = round(time.perf_counter() - t0, 2)
    files = write_report(args.out, results, gt.names, info)
    return {"results": results, "files": files}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        res = run(args)
    except (EvalError, ClassListError, OutputFolderError) as e:
        return report_error(e)
    except (ValueError, OSError, ImportError) as e:   # readable errors from the core (fusion, VLM, bag, ...)
        return report_error(f"{type(e).__name__}: {e}")
    for label, r in res["results"].items():
        s, a = r["semantic"], r["instance_top1"]
        print(f"{label}: mIoU {100 * s['mIoU']:.1f}  mAcc {100 * s['mAcc']:.1f}  "
              f"AP {100 * a['AP']:.1f}  AP50 {100 * a['AP50']:.1f}  AP25 {100 * a['AP25']:.1f}")
    print(f"report: {res['files']['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
