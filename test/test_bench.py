"""camfusion-bench on an even smaller setting than the quick suite: structure and finite numbers, never timings.

Real models with RANDOM weights (PE-Core-T-16-384, a small CAMFusion); no
pretrained weights exist on this machine, and speed does not depend on them.
"""
import json
import math

import pytest
import torch

from camfusion_ros.bench import cli
from camfusion_ros.bench.flops import camfusion_flops
from camfusion_ros.bench.fusion import FusionBenchConfig
from camfusion_ros.bench.suites import SuiteConfig, StageRun, check_finite, run_suite, sanitize
from camfusion_ros.bench.tracking import TrackingBenchConfig
from camfusion_ros.core.camfusion import CamFusionConfig, build_camfusion

SMALL = CamFusionConfig(input_dim=32, width=32, depth=2, heads=4, mlp_hidden=64)


def _smoke() -> SuiteConfig:
    return SuiteConfig(
        name="smoke",
        stages=[StageRun("tiny", 64, 48, frames=2, warmup_frames=1, sam2_frames=0, sam2_skip="smoke test")],
        fusion=FusionBenchConfig(model=SMALL, instances=(1, 10), views=(1, 3), min_seconds=0.01),
        memory_loop=(3, 64, 48), memory_checkpoints=(4, 8), node=None, peak_seconds=0.05,
        tracking=TrackingBenchConfig(sizes=((96, 72),), seeds=(0,), frames=3, objects=4, kinds=("exact", "default")))


@pytest.fixture(scope="module")
def result():
    return run_suite(_smoke(), torch.device("cpu"))


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_result_is_strict_json_with_machine_and_random_weights(result):
    text = json.dumps(result, allow_nan=False)
    back = json.loads(text)
    assert back["schema"] == "camfusion-bench/1" and back["weights"] == "random"
    m = back["machine"]
    for k in ("cpu_model", "cpu_cores", "torch", "device", "device_name", "date"):
        assert m[k] not in (None, "")
    assert check_finite(result) == []
    assert _num(back["peak_flops"]["fp32"]["measured_matmul_peak_flops"])


def test_stage_times_are_finite_and_every_stage_is_reported(result):
    st = result["stages"]["tiny_64x48"]
    assert st["weights"] == "random" and st["frames_timed"] == 2
    pf = st["per_frame"]
    for stage in ("sync_conversion", "segmentation_gt", "tracking", "descriptors", "fusion_camfusion"):
        assert pf[stage]["n"] == 2, stage
        assert all(_num(pf[stage][k]) and pf[stage][k] >= 0 for k in ("mean_ms", "p50_ms", "p95_ms", "p99_ms"))
    assert pf["segmentation_sam2_tiny"] == {"n": 0, "skipped": "smoke test"}
    assert "mean_ms" in pf["publishing"] or pf["publishing"]["skipped"]
    assert _num(st["fps"]) and st["fps"] > 0


def test_fusion_grid_is_complete_and_compiled_is_skipped_on_cpu(result):
    f = result["fusion"]
    assert f["weights"] == "random"
    entries = f["camfusion"]
    assert len(entries) == 2 * 2 * 2 * 2          # modes x dtypes x views x instances
    for e in entries:
        assert e["flops"] == camfusion_flops(SMALL, e["instances"], e["views"])
        if e["mode"] == "compiled":
            assert "CUDA" in e["skipped"]
        else:
            assert "skipped" not in e and "error" not in e, e
            assert _num(e["latency"]["p50_ms"]) and e["instances_per_s"] > 0
            assert 0 < e["fraction_of_peak"] and e["peak_kind"] == "measured_matmul_peak"
    assert len(f["avg_pooling"]) == 4 and all(_num(a["torch_latency"]["p50_ms"]) for a in f["avg_pooling"])


def test_memory_checkpoints_and_map_size(result):
    m = result["memory"]
    assert [c["frames"] for c in m["checkpoints"]] == [4, 8]
    for c in m["checkpoints"]:
        assert c["rss_mib"] > 0 and c["instances"] > 0 and c["max_views_per_instance"] <= 5
    assert _num(m["rss_ratio_8_over_4"]) and m["rss_ratio_8_over_4"] > 0
    assert m["map_bytes_per_instance"] > 0 and "instances.safetensors" in m["map_files_bytes"]
    # the second pass over the loop reuses cached descriptors instead of re-running the model
    assert m["descriptor_cache_hits"] > 0
    assert result["node"] == {"skipped": "not in this suite"}


def test_flop_count_matches_the_model_matmuls():
    """The analytic count equals 2*m*n*k summed over the model's Linear layers (plus the attention products)."""
    model = build_camfusion(SMALL)
    B, K = 3, 4
    linear = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            tokens = B if name.startswith("pool.q") else B * K
            if name.startswith("pool.o") or name.startswith("proj_out"):
                tokens = B
            linear += 2 * tokens * mod.in_features * mod.out_features
    attn = SMALL.depth * 2 * (4 * B * K * K * SMALL.width) + 4 * B * K * SMALL.width
    assert camfusion_flops(SMALL, B, K) == linear + attn


def test_sanitize_replaces_non_finite_values():
    r = sanitize({"a": [1.0, float("nan")], "b": {"c": float("inf")}})
    assert r == {"a": [1.0, None], "b": {"c": None}} and check_finite(r) == []


def test_cli_rejects_cuda_without_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(["--device", "cuda", "--suite", "quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "CUDA" in err and len(err.strip().splitlines()) == 1


def test_tracking_section_has_the_table_and_keyframe_times(result):
    t = result["tracking"]
    assert set(t["table"]["96x72"]) == {"exact", "default"}
    for row in t["table"]["96x72"].values():
        assert all(_num(row[k]) and 0 <= row[k] <= 1 for k in ("recall", "fragment_rate", "spurious_rate"))
    kf = t["per_keyframe_ms"]["96x72"]
    assert kf["tracking"]["n"] == 3 and _num(kf["tracking"]["mean_ms"]) and kf["proposals_mean"] > 0
    assert "tracking_96x72_exact" in result["summary"]
