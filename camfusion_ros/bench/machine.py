"""What ran the benchmark, and how fast its matmuls can go (the denominator of every FLOP/s fraction)."""
from __future__ import annotations

import datetime
import os
import platform
import time

import torch

# Vendor dense peak (no sparsity), FLOP/s, for the GPUs this project is run on.
KNOWN_PEAKS = {
    "H100": {"bf16": 989e12, "fp32": 67e12},   # H100 SXM5 (dense bf16 tensor core, fp32 non-tensor)
    "H200": {"bf16": 989e12, "fp32": 67e12},   # same GH100 die as H100 SXM
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict:
    """Everything a reader needs to compare two result files."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": cpu_model(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(device_name=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, gpu_count=torch.cuda.device_count())
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] | None = None,
                         seconds: float = 0.5) -> float:
    """Best FLOP/s of one square matmul over a few sizes (fastest repetition): this device's practical peak."""
    sizes = sizes or ((2048, 4096, 8192) if device.type == "cuda" else (512, 1024, 2048))
    best = 0.0
    with torch.inference_mode():
        for n in sizes:
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            a @ b                                   # warm-up (kernel selection)
            sync(device)
            t_end = time.perf_counter() + seconds / len(sizes)
            fastest = float("inf")
            for rep in range(1000):
                t0 = time.perf_counter()
                a @ b
                sync(device)
                fastest = min(fastest, time.perf_counter() - t0)
                if rep >= 1 and time.perf_counter() > t_end:
                    break
            best = max(best, 2.0 * n**3 / fastest)
    return best


def table_peak(device: torch.device, dtype_name: str) -> float | None:
    """The vendor dense peak for a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in KNOWN_PEAKS.items():
        if key in name:
            return peaks.get(dtype_name)
    return None


def peaks(device: torch.device, seconds: float = 0.5) -> dict:
    """Measured matmul peak per dtype, plus the vendor table value where the GPU is known."""
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        entry = {"measured_matmul_peak_flops": measured_matmul_peak(device, dt, seconds=seconds)}
        tp = table_peak(device, name)
        if tp is not None:
            entry["table_peak_flops"] = tp
        out[name] = entry
    return out
