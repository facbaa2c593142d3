"""Writes metrics.json, report.md and PNG plots for one or several evaluated maps."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from camfusion_ros.core.output_folder import claim_outputs  # noqa: E402

SEM_KEYS = ("mIoU", "mAcc", "fIoU", "fAcc")
AP_KEYS = ("AP", "AP50", "AP25")
SPLITS = ("head", "common", "tail")
CONFUSION_CLASSES = 15


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if not isinstance(v, np.ndarray) or k == "confusion"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else round(float(x), 6)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _summary_row(res: dict) -> dict:
    sem, t1, tk = res["semantic"], res["instance_top1"], res.get("instance_topk")
    row = {k: sem.get(k) for k in SEM_KEYS}
    row.update({f"{k} top1": t1.get(k) for k in AP_KEYS})
    row.update({f"{k} topk": (tk or {}).get(k, float("nan")) for k in AP_KEYS})
    return row


def _frequency_order(sem: dict) -> np.ndarray:
    counts = np.asarray(sem["gt_counts"])
    present = np.nonzero(~np.isnan(sem["iou"]))[0]
    return present[np.argsort(-counts[present], kind="stable")]


def plot_per_class(results: Mapping[str, dict], names: list[str], path: Path) -> Path:
    """IoU per class (sorted by GT frequency), one bar group per evaluated map."""
    first = next(iter(results.values()))["semantic"]
    order = _frequency_order(first)
    n, m = len(order), len(results)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * n * max(1, m / 2) + 2), 4.5))
    width = 0.8 / max(m, 1)
    for j, (label, res) in enumerate(results.items()):
        iou = np.nan_to_num(np.asarray(res["semantic"]["iou"])[order]) * 100
        ax.bar(np.arange(n) + (j - (m - 1) / 2) * width, iou, width, label=label)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([names[i] for i in order], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Per-class IoU (classes sorted by ground-truth frequency)")
    if m > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(sem: dict, names: list[str], path: Path, top: int = CONFUSION_CLASSES) -> Path:
    """Row-normalised confusion of the most frequent GT classes (+ an 'unlabelled' column)."""
    conf = np.asarray(sem["confusion"], dtype=np.float64)
    counts = conf.sum(axis=1)
    cls = np.argsort(-counts, kind="stable")[:top]
    cls = cls[counts[cls] > 0]
    shown = conf[np.ix_(cls, cls)]
    other = conf[cls, :-1].sum(axis=1) - shown.sum(axis=1)          # predicted as a class not shown
    sub = np.column_stack([shown, other, conf[cls, -1]])
    sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
    k = len(cls)
    fig, ax = plt.subplots(figsize=(2.5 + 0.5 * (k + 2), 2 + 0.45 * k))
    im = ax.imshow(sub * 100, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(k + 2))
    ax.set_xticklabels([names[i] for i in cls] + ["(other)", "(unlabelled)"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels([names[i] for i in cls], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Confusion (% of GT points), {k} most frequent classes")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_splits(results: Mapping[str, dict], path: Path) -> Path:
    """mIoU and Top-1 AP by head / common / tail, one bar group per map."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    m = len(results)
    width = 0.8 / max(m, 1)
    for ax, (title, src, key) in zip(axes, [("mIoU", "semantic", "mIoU"), ("AP (Top-1)", "instance_top1", "AP")]):
        for j, (label, res) in enumerate(results.items()):
            vals = np.asarray([res[src].get(f"{key}_{s}", float("nan")) for s in SPLITS], dtype=float)
            x = np.arange(3) + (j - (m - 1) / 2) * width
            ax.bar(x, np.nan_to_num(vals) * 100, width, label=label)
            for xi in x[np.isnan(vals)]:
                ax.text(xi, 2, "n/a", ha="center", fontsize=8)
        ax.set_xticks(range(3))
        ax.set_xticklabels(SPLITS)
        ax.set_ylim(0, 100)
        ax.set_title(f"{title} by class frequency")
        ax.set_ylabel("%")
    if m > 1:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(results: Mapping[str, dict], path: Path) -> Path:
    """Headline metrics side by side (the fusion comparison)."""
    keys = list(SEM_KEYS) + ["AP top1", "AP50 top1", "AP25 top1"]
    fig, ax = plt.subplots(figsize=(9, 4))
    m = len(results)
    width = 0.8 / max(m, 1)
    for j, (label, res) in enumerate(results.items()):
        row = _summary_row(res)
        ax.bar(np.arange(len(keys)) + (j - (m - 1) / 2) * width,
               [100 * (row[k] if row[k] is not None and not math.isnan(row[k]) else 0) for k in keys],
               width, label=label)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title("Fusion comparison")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_names(labels: list[str]) -> list[str]:
    """The files write_report puts in its folder for these run labels (claimed before anything is written)."""
    confusion = ["confusion.png"] if len(labels) == 1 else [f"confusion_{label}.png" for label in labels]
    return ["per_class_iou.png", "splits.png", *confusion, *(["summary.png"] if len(labels) > 1 else []),
            "metrics.json", "report.md"]


def write_report(out_dir: str | Path, results: Mapping[str, dict], names: list[str],
                 info: Mapping[str, object] | None = None) -> dict[str, Path]:
    """metrics.json + report.md + PNGs; ``results`` maps a run label (e.g. a fusion) to ``evaluate_map`` output."""
    if not results:
        raise ValueError("no results to report")
    out = claim_outputs(out_dir, "camfusion-eval", report_names(list(results)))
    files: dict[str, Path] = {}
    files["per_class_iou"] = plot_per_class(results, names, out / "per_class_iou.png")
    files["splits"] = plot_splits(results, out / "splits.png")
    for label, res in results.items():
        suffix = "" if len(results) == 1 else f"_{label}"
        files[f"confusion{suffix}"] = plot_confusion(res["semantic"], names, out / f"confusion{suffix}.png")
    if len(results) > 1:
        files["summary"] = plot_summary(results, out / "summary.png")

    metrics = {"info": dict(info or {}), "runs": _jsonable(dict(results))}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
    files["metrics"] = out / "metrics.json"

    lines = ["# Evaluation report", ""]
    for k, v in (info or {}).items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "All values in %. Semantic metrics include background classes; instance AP excludes them "
              "(ScanNet benchmark semantics, AP = mean over IoU 0.50:0.90).", "",
              "| run | " + " | ".join(_summary_row(next(iter(results.values()))).keys()) + " |",
              "|---" * (1 + len(_summary_row(next(iter(results.values()))))) + "|"]
    for label, res in results.items():
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in _summary_row(res).values()) + " |")
    lines += ["", "## Head / common / tail", "", "| run | " + " | ".join(
        f"mIoU {s}" for s in SPLITS) + " | " + " | ".join(f"AP {s}" for s in SPLITS) + " |",
        "|---" * 7 + "|"]
    for label, res in results.items():
        vals = [res["semantic"].get(f"mIoU_{s}") for s in SPLITS] + \
               [res["instance_top1"].get(f"AP_{s}") for s in SPLITS]
        lines.append(f"| {label} | " + " | ".join(_pct(v) for v in vals) + " |")
    lines += ["", "## Plots", ""]
    lines += [f"![{k}]({p.name})" for k, p in files.items() if p.suffix == ".png"]
    for label, res in results.items():
        sem, t1 = res["semantic"], res["instance_top1"]
        lines += ["", f"## Per class — {label}", "",
                  f"Coverage (GT points given a label): {_pct(sem.get('coverage'))} · map instances: "
                  f"{res.get('num_map_instances')} (labelled {res.get('num_labelled_instances')})", "",
                  "| class | GT points | IoU | Acc | AP | AP50 | AP25 |", "|---|---|---|---|---|---|---|"]
        for i in _frequency_order(sem):
            n = names[i]
            pc, ap = sem["per_class"].get(n, {}), t1["per_class"].get(n, {})
            lines.append(f"| {n} | {pc.get('gt_points', 0)} | {_pct(pc.get('iou'))} | {_pct(pc.get('acc'))} | "
                         f"{_pct(ap.get('AP'))} | {_pct(ap.get('AP50'))} | {_pct(ap.get('AP25'))} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    files["report"] = out / "report.md"
    return files
