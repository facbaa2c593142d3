"""``camfusion-fusion-benchmark``: can the benchmark tell fusion from correction? The README's table, one command.

Every learned method trains with the same synthetic data, loss and schedule
(``training/configs/fusion_benchmark.yaml``); only ``arch`` or one loss/model
setting changes per variant. Each seed regenerates the world (data seed = training
seed) and trains every variant; results are top-1/top-5 on held-out scenes, and
top-1 on the instances of classes never seen in training, as mean +- std over
seeds. Writes ``OUT/results.json`` (every run), ``OUT/table.md`` and
``OUT/benchmark.png``; run folders and data under ``OUT/runs`` and ``OUT/data``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from camfusion_ros.cli_errors import report_error

# name -> (label in the table, overrides of the base config as dotted keys)
VARIANTS: dict[str, tuple[str, dict]] = {
    "linear": ("linear map on the average", {"arch": "linear"}),
    "deepsets": ("DeepSets (per-view MLP, mean, MLP)", {"arch": "deepsets"}),
    "camfusion_class": ("CAMFusion, class loss only", {"loss.multiview_weight": 0.0}),
    "camfusion": ("CAMFusion, class + multiview loss", {}),
    "camfusion_mv_quarter": ("CAMFusion, class + multiview loss at weight 0.25", {"loss.multiview_weight": 0.25}),
    "camfusion_mv_paper": ("CAMFusion, multiview loss normalised as printed (sum / (B x U))",
                           {"loss.multiview_norm": "paper"}),
    "camfusion_span_all": ("CAMFusion, self-attention over all views", {"model.self_attn_span": "all"}),
    "camfusion_span_view": ("CAMFusion, self-attention on the view alone", {"model.self_attn_span": "view"}),
}
UNLEARNED = {"avg": "average pooling", "l1medoid": "L1 medoid"}
OUT_FILES = ("results.json", "table.md", "benchmark.png", "runs", "data")


def _override(cfg, dotted: dict):
    cfg = copy.deepcopy(cfg)
    for key, value in dotted.items():
        obj = cfg
        *path, last = key.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, value)
    return cfg


def _unlearned(cfg, root: Path) -> dict[str, dict]:
    """Average pooling and L1 medoid on the test split (and its unseen classes), same best views as training."""
    from camfusion_ros.core.fusion import make_fuser
    from camfusion_ros.training.sampler import best_views
    from camfusion_ros.training.shards import find_text_embeddings, load_split, read_text_embeddings
    from camfusion_ros.training.train import topk_accuracy, unseen_class_subset

    names, text = read_text_embeddings(find_text_embeddings(root / cfg.data.train_split))
    test = load_split(root / cfg.data.test_split, names)
    out: dict[str, dict] = {}
    for name in UNLEARNED:
        res = {}
        for prefix, data in (("test", test), ("test_unseen_classes", unseen_class_subset(root, test))):
            if data is None:
                continue
            v, m = best_views(data, cfg.eval_views)
            acc = topk_accuracy(make_fuser(name).fuse(v, m), text, data.class_ids)
            res.update({f"{prefix}_top1": acc["top1"], f"{prefix}_top5": acc["top5"]})
        out[name] = res
    return out


def summarise(runs: list[dict]) -> dict[str, dict]:
    """method -> metric -> {mean, std, n} over seeds."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for k, v in r["metrics"].items():
            if k.startswith("test") and isinstance(v, (int, float)):
                by.setdefault(r["method"], {}).setdefault(k, []).append(float(v))
    return {m: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for k, v in ks.items()}
            for m, ks in by.items()}


def table(summary: dict, order: list[str]) -> str:
    def cell(m, k):
        s = summary.get(m, {}).get(k)
        return "-" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"

    labels = {**UNLEARNED, **{k: v[0] for k, v in VARIANTS.items()}}
    lines = ["| fusion | top-1 | top-5 | top-1, classes unseen in training |", "|---|---|---|---|"]
    for m in order:
        if m in summary:
            lines.append(f"| {labels[m]} | {cell(m, 'test_top1')} | {cell(m, 'test_top5')} | "
                         f"{cell(m, 'test_unseen_classes_top1')} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, order: list[str], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [m for m in order if m in summary]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(ms)), 4))
    x = np.arange(len(ms))
    for off, key, lab in ((-0.2, "test_top1", "top-1"), (0.2, "test_unseen_classes_top1", "top-1, unseen classes")):
        mean = [100 * summary[m].get(key, {"mean": np.nan})["mean"] for m in ms]
        std = [100 * summary[m].get(key, {"std": 0.0})["std"] for m in ms]
        ax.bar(x + off, mean, 0.4, yerr=std, capsize=3, label=lab)
    ax.set_xticks(x, ms, rotation=30, ha="right")
    ax.set_ylabel("% of held-out instances"), ax.set_title("fusion benchmark (mean ± std over seeds)"), ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def run_benchmark(config: str | Path, out: str | Path, seeds: list[int], variants: list[str],
                  max_steps: int | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from camfusion_ros.core.output_folder import claim_outputs
    from camfusion_ros.training.config import ConfigError, load_config
    from camfusion_ros.training.synthetic import ensure_synthetic
    from camfusion_ros.training.train import train

    base = load_config(config)
    if base.data.synthetic is None or not base.data.test_split:
        raise ConfigError(f"{config}: the benchmark needs data.synthetic and data.test_split")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if max_steps is not None:
        base.max_steps = max_steps
        base.lr_period = min(base.lr_period, max_steps)
        base.val_every = base.checkpoint_every = max_steps
    out = claim_outputs(out, "camfusion-fusion-benchmark", OUT_FILES)
    runs: list[dict] = []
    bar = tqdm(total=len(seeds) * len(variants), disable=not progress, desc="fusion benchmark", dynamic_ncols=True)
    for seed in seeds:
        cfg = _override(base, {"seed": seed, "data.synthetic.seed": seed, "data.root": str(out / "data" / f"seed{seed}")})
        ensure_synthetic(cfg.data.root, cfg.data.synthetic)
        for name, metrics in _unlearned(cfg, Path(cfg.data.root)).items():
            runs.append({"method": name, "seed": seed, "metrics": metrics})
        for name in variants:
            bar.set_postfix(seed=seed, method=name)
            t0 = time.time()
            res = train(_override(cfg, VARIANTS[name][1]), out / "runs" / f"{name}_seed{seed}", progress=False)
            runs.append({"method": name, "seed": seed, "metrics": res, "seconds": round(time.time() - t0, 1)})
            bar.update(1)
    bar.close()
    order = list(UNLEARNED) + list(variants)
    summary = summarise(runs)
    doc = {"config": str(config), "seeds": seeds, "max_steps": base.max_steps, "summary": summary, "runs": runs}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    (out / "table.md").write_text(table(summary, order))
    plot(summary, order, out / "benchmark.png")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="camfusion-fusion-benchmark", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="training/configs/fusion_benchmark.yaml")
    ap.add_argument("--out", type=Path, default=Path("out/fusion_benchmark"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["linear", "deepsets", "camfusion_class", "camfusion",
                                                      "camfusion_mv_quarter", "camfusion_mv_paper",
                                                      "camfusion_span_all"],
                    help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--max-steps", type=int, help="override the config's steps (a quick look)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from camfusion_ros.core.camfusion.checkpoint import CheckpointError
    from camfusion_ros.core.output_folder import OutputFolderError
    from camfusion_ros.training.config import ConfigError
    from camfusion_ros.training.shards import ShardError

    try:
        if args.max_steps is not None and args.max_steps <= 0:
            raise ConfigError("--max-steps must be positive")
        doc = run_benchmark(args.config, args.out, args.seeds, args.variants, args.max_steps, not args.no_progress)
    except (ConfigError, ShardError, CheckpointError, OutputFolderError) as e:
        return report_error(e)
    print(json.dumps({"out": str(args.out), "summary": doc["summary"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
