"""camfusion-fusion-benchmark on a tiny world: every method of the README's table, over seeds, one command."""
import json

import yaml

from camfusion_ros.training import fusion_benchmark as fb


def test_benchmark_trains_every_variant_per_seed_and_writes_table_plot_and_json(tmp_path, capsys):
    from test_training import TINY

    doc = json.loads(json.dumps(TINY))
    doc["data"]["test_split"] = "test"
    doc["data"]["synthetic"].update(unseen_class_fraction=0.34, n_scenes=9)
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "bench"
    assert fb.main(["--config", str(cfg), "--out", str(out), "--seeds", "0", "1", "--max-steps", "2",
                    "--variants", "deepsets", "camfusion", "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert sorted((r["method"], r["seed"]) for r in res["runs"]) == sorted(
        (m, s) for m in ("avg", "l1medoid", "deepsets", "camfusion") for s in (0, 1))
    assert all(r["metrics"]["test_top1"] <= r["metrics"]["test_top5"] for r in res["runs"])
    assert res["summary"]["camfusion"]["test_top1"]["n"] == 2
    # the two seeds are two worlds: their data differ
    assert (out / "data" / "seed0").is_dir() and (out / "data" / "seed1").is_dir()
    table = (out / "table.md").read_text()
    assert "| DeepSets (per-view MLP, mean, MLP) |" in table and "±" in table and table.count("\n") == 6
    assert (out / "benchmark.png").stat().st_size > 0
    assert json.loads(capsys.readouterr().out.strip())["out"] == str(out)
    assert fb.main(["--config", str(cfg), "--out", str(out), "--variants", "transformer9000"]) == 2
    assert "unknown variant(s) transformer9000" in capsys.readouterr().err


def test_summary_is_mean_and_std_over_seeds():
    runs = [{"method": "x", "seed": s, "metrics": {"test_top1": v}} for s, v in enumerate((0.2, 0.4))]
    s = fb.summarise(runs)["x"]["test_top1"]
    assert abs(s["mean"] - 0.3) < 1e-9 and abs(s["std"] - 0.1) < 1e-9 and s["n"] == 2
