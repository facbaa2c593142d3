"""Fusion throughput (fused instances per second) vs number of instances and views.

CAMFusion (random weights: speed does not depend on them) in fp32 and, on CUDA,
bf16, eager and ``torch.compile``; average pooling for reference. A setting whose
projected time exceeds ``max_seconds`` is skipped and reported as skipped.
Run: ``python -m camfusion_ros.training.bench_fusion [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from camfusion_ros.core.camfusion.model import CamFusionConfig, build_camfusion
from camfusion_ros.core.fusion import make_fuser


def _timeit(fn, min_repeats: int = 2, min_seconds: float = 0.5) -> float:
    """Seconds per call (median of repeats after one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < min_seconds and len(times) < 20):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def fusion_throughput(
    instances: tuple[int, ...] = (1, 10, 100, 1000, 10000),
    views: tuple[int, ...] = (5, 10),
    cfg: CamFusionConfig | None = None,
    device: str | None = None,
    max_seconds: float = 60.0,
    batch_size: int = 4096,
) -> dict:
    """Instances/s per (method, precision, mode, views, instances); settings projected over ``max_seconds`` are skipped."""
    cfg = cfg or CamFusionConfig()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = build_camfusion(cfg).to(dev).eval()
    variants = [("fp32", "eager")]
    if cuda:
        variants += [("bf16", "eager"), ("fp32", "compiled"), ("bf16", "compiled")]
    res: dict = {
        "device": torch.cuda.get_device_name(dev) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "model": cfg.to_dict(), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "weights": "random (throughput does not depend on them)", "max_seconds": max_seconds, "results": [],
    }
    rng = np.random.default_rng(0)
    avg = make_fuser("avg")
    for k in views:
        for prec, mode in variants:
            net = torch.compile(model, dynamic=False) if mode == "compiled" else model
            rate = None  # instances/s at the previous size, to project the next one
            for n in instances:
                row = {"method": "camfusion", "precision": prec, "mode": mode, "views": k, "instances": n}
                if rate is not None and n / rate * 3 > max_seconds:  # warm-up + 2 repeats
                    row["skipped"] = f"projected {n / rate * 3:.0f} s > {max_seconds:.0f} s"
                    res["results"].append(row)
                    continue
                x = torch.from_numpy(rng.normal(size=(n, k, cfg.input_dim)).astype(np.float32)).to(dev)
                m = torch.ones(n, k, dtype=torch.bool, device=dev)

                def run():
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and prec == "bf16"):
                        for s in range(0, n, batch_size):
                            out = net(x[s : s + batch_size], m[s : s + batch_size])
                    if cuda:
                        torch.cuda.synchronize()
                    return out

                sec = _timeit(run)
                rate = n / sec
                row.update(seconds=sec, instances_per_s=rate)
                res["results"].append(row)
        for n in instances:
            xv = rng.normal(size=(n, k, cfg.input_dim)).astype(np.float32)
            mv = np.ones((n, k), bool)
            sec = _timeit(lambda: avg.fuse(xv, mv))
            res["results"].append({"method": "avg", "precision": "fp32", "mode": "numpy", "views": k, "instances": n,
                                   "seconds": sec, "instances_per_s": n / sec})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model, few sizes (a smoke run)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--views", type=int, nargs="+", default=[5, 10])
    args = ap.parse_args(argv)
    if args.quick:
        res = fusion_throughput((1, 100), (5,), CamFusionConfig(input_dim=32, width=32, depth=1, heads=4, mlp_hidden=64),
                                args.device, args.max_seconds)
    else:
        res = fusion_throughput(views=tuple(args.views), device=args.device, max_seconds=args.max_seconds)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
