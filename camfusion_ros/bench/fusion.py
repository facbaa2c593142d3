"""CAMFusion latency and throughput vs instances and views, next to average pooling.

Random weights (speed does not depend on them). Every entry says what ran or
why it was skipped: compiled modes need CUDA; on a slow device a call that
would take longer than the suite's cap (predicted from the FLOP count and the
rate already achieved) is skipped rather than run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from camfusion_ros.bench.flops import avg_pool_flops, camfusion_flops
from camfusion_ros.bench.machine import sync
from camfusion_ros.bench.timing import progress, repeat, summary
from camfusion_ros.core.camfusion import CamFusionConfig, build_camfusion
from camfusion_ros.core.fusion import make_fuser

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class FusionBenchConfig:
    model: CamFusionConfig = field(default_factory=CamFusionConfig)   # the paper-size model
    instances: tuple[int, ...] = (1, 10, 100, 1000, 10000)
    views: tuple[int, ...] = (1, 5, 10)
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    modes: tuple[str, ...] = ("eager", "compiled")                   # compiled: torch.compile + CUDA graphs
    max_call_s: float = 20.0          # skip a point whose single call is predicted to take longer
    budget_s: float = 300.0           # skip whatever is left once the section has run this long
    min_seconds: float = 0.3          # timing window per point
    batch_size: int = 4096            # as the pipeline's CamFusionFuser


def _inputs(B: int, K: int, D: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(B, K, D, generator=g), dim=-1)
    return v.to(device), torch.ones(B, K, dtype=torch.bool, device=device)


def _forward(model, views, valid, dtype: torch.dtype, device: torch.device, batch: int):
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return [model(views[s:s + batch], valid[s:s + batch]) for s in range(0, len(views), batch)]


def _compiled(model):
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    return torch.compile(model, mode="reduce-overhead", dynamic=True)


def bench_fusion(cfg: FusionBenchConfig, device: torch.device, peaks: dict) -> dict:
    """Every (mode, dtype, views, instances) point: latency, instances/s, FLOP/s and its fraction of peak."""
    t_section = time.perf_counter()
    model = build_camfusion(cfg.model).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    D = cfg.model.input_dim
    entries, rate = [], {}                  # rate: best achieved FLOP/s per (mode, dtype), for predictions
    compiled = {}
    avg = make_fuser("avg")
    for mode in cfg.modes:
        for dname in cfg.dtypes:
            dtype = DTYPES[dname]
            peak = peaks.get(dname, {})
            peak_flops = peak.get("table_peak_flops") or peak.get("measured_matmul_peak_flops")
            peak_kind = "table_peak" if peak.get("table_peak_flops") else "measured_matmul_peak"
            for K in cfg.views:
                for B in cfg.instances:
                    e = {"mode": mode, "dtype": dname, "instances": B, "views": K,
                         "flops": camfusion_flops(cfg.model, B, K)}
                    entries.append(e)
                    if mode == "compiled" and device.type != "cuda":
                        e["skipped"] = "torch.compile / CUDA graphs are measured on CUDA only"
                        continue
                    elapsed = time.perf_counter() - t_section
                    if elapsed > cfg.budget_s:
                        e["skipped"] = f"fusion section time budget ({cfg.budget_s:.0f} s) used up"
                        continue
                    measured = peaks.get(dname, {}).get("measured_matmul_peak_flops") or 1e10
                    guess = max(rate.get((mode, dname), 0.0), 0.5 * measured)
                    predicted = e["flops"] / guess
                    if predicted > cfg.max_call_s:
                        e["skipped"] = (f"predicted {predicted:.1f} s per call > cap {cfg.max_call_s:g} s on "
                                        f"{device.type} (FLOP count / max(best rate so far, half the measured peak))")
                        continue
                    try:
                        if mode == "compiled" and dname not in compiled:
                            compiled[dname] = _compiled(model)
                            e["compile_note"] = "first call of this dtype includes compilation in warm-up"
                        m = compiled[dname] if mode == "compiled" else model
                        views, valid = _inputs(B, K, D, device)
                        t0 = time.perf_counter()
                        times = repeat(lambda: _forward(m, views, valid, dtype, device, cfg.batch_size),
                                       lambda: sync(device), min_seconds=cfg.min_seconds,
                                       min_reps=3 if predicted < 1 else 1, warmup=2 if mode == "compiled" else 1)
                        if mode == "compiled":
                            e["warmup_and_timing_s"] = time.perf_counter() - t0
                    except Exception as exc:  # one failing point (e.g. out of memory) must not end the suite
                        e["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    s = summary(times)
                    lat = s["p50_ms"] / 1e3
                    e.update(latency=s, instances_per_s=B / lat, flops_per_s=e["flops"] / lat,
                             peak_flops=peak_flops, peak_kind=peak_kind,
                             fraction_of_peak=(e["flops"] / lat) / peak_flops if peak_flops else None)
                    rate[(mode, dname)] = max(rate.get((mode, dname), 0.0), e["flops_per_s"])
                    progress(f"fusion {mode} {dname} K={K} B={B}: {s['p50_ms']:.2f} ms "
                             f"({e['fraction_of_peak'] or 0:.1%} of {peak_kind})")
    avg_entries = []
    for K in cfg.views:
        for B in cfg.instances:
            v, m = _inputs(B, K, D, device)
            a = {"instances": B, "views": K, "flops": avg_pool_flops(B, K, D)}
            tt = repeat(lambda: torch.nn.functional.normalize((v * m[..., None]).sum(1) / m.sum(1, keepdim=True), dim=-1),
                        lambda: sync(device), min_seconds=0.05, min_reps=3)
            a["torch_latency"] = summary(tt)
            vn, mn = v.float().cpu().numpy(), m.cpu().numpy()
            tn = repeat(lambda: avg.fuse(vn, mn), min_seconds=0.05, min_reps=2, max_reps=20)
            a["numpy_fuser_latency"] = summary(tn)
            a["note"] = "torch: masked mean + normalise on the device; numpy: the pipeline's 'avg' fuser on CPU"
            avg_entries.append(a)
    progress(f"fusion section {time.perf_counter() - t_section:.0f} s")
    return {"model": cfg.model.to_dict(), "parameters": int(n_params), "weights": "random",
            "flop_formula": ("proj_in 2BKDW + depth*(self-attn 8BKW^2+4BK^2W + cross-attn 8BKW^2+4BK^2W + MLP 4BKWH) "
                             "+ pooling 2BW^2+4BKW^2+4BKW+2BW^2 (+ proj_out 2BWD if W!=D); "
                             "B instances, K views, D input dim, W width, H MLP hidden"),
            "latency_is": "p50 of one call fusing all B instances (batches of %d), inputs already on the device"
                          % cfg.batch_size,
            "bf16": "torch.autocast bfloat16 (as CamFusionFuser on CUDA)",
            "fraction_of_peak_note": ("achieved FLOP/s / peak; above 1 means the peak under-estimates this path "
                                      "(e.g. bf16 on a CPU without bf16 units, or a shared, loaded machine)"),
            "max_call_s": cfg.max_call_s, "budget_s": cfg.budget_s, "device": str(device),
            "camfusion": entries, "avg_pooling": avg_entries}
