"""``camfusion-eval-fusion``: top-1/top-5 of CAMFusion vs average pooling and L1 medoid on held-out instances."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from camfusion_ros.cli_errors import report_error
from camfusion_ros.core.camfusion.checkpoint import CheckpointError
from camfusion_ros.core.fusion import FusionError, make_fuser
from camfusion_ros.training.sampler import best_views
from camfusion_ros.training.shards import TEXT_FILE, ShardError, find_text_embeddings, load_split, read_text_embeddings
from camfusion_ros.training.train import topk_accuracy


def evaluate(checkpoint: str, data: str | Path, views: int = 5, device: str | None = None,
             fusers: tuple[str, ...] = ("camfusion", "avg", "l1medoid")) -> dict:
    """Each fuser on the ``views`` best-visibility views per instance, classified against all class texts."""
    d = Path(data)
    if d.is_dir() and not any(p.name != TEXT_FILE for p in d.glob("*.safetensors")) and (d / "test").is_dir():
        d = d / "test"
    names, text = read_text_embeddings(find_text_embeddings(d))
    ds = load_split(d, names)
    v, valid = best_views(ds, views)
    res: dict = {"data": str(d), "instances": len(ds), "classes": len(names), "views": views}
    for name in fusers:
        kw = {"checkpoint": checkpoint, "device": device} if name == "camfusion" else {}
        fused = make_fuser(name, **kw).fuse(v, valid)
        res[name] = topk_accuracy(fused, text, ds.class_ids)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="camfusion-eval-fusion", description=__doc__)
    ap.add_argument("--checkpoint", required=True, help="CAMFusion checkpoint directory (e.g. RUNDIR/final)")
    ap.add_argument("--data", required=True, help="a split directory of shards, or a data root (uses its test split)")
    ap.add_argument("--views", type=int, default=5, help="best-visibility views per instance")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    try:
        res = evaluate(args.checkpoint, args.data, args.views, args.device)
    except (CheckpointError, ShardError, FusionError) as e:
        return report_error(e)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
