"""Semantic segmentation metrics on ground-truth points (OVO / ScanNet conventions).

Per class IoU = tp / (tp + fp + fn), left out only when tp + fp + fn = 0, so a
class that is predicted but absent from the ground truth counts with IoU 0 and
Acc 0 (as in OVO's ``eval_utils``, which the paper's numbers use). f-IoU/f-Acc
weight classes by their ground-truth point counts. Ignored ground truth counts
nowhere; a prediction of -1 (unlabelled) is a miss for its ground-truth class.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

SPLIT_NAMES = ("head", "common", "tail")


class EvalError(ValueError):
    """Inputs to an evaluation do not fit together."""


def confusion_matrix(gt_labels: np.ndarray, pred_labels: np.ndarray, num_classes: int,
                     ignore_index: int = -1) -> np.ndarray:
    """(C, C+1) int64 counts, rows = GT class, last column = unlabelled predictions."""
    gt = np.asarray(gt_labels).reshape(-1)
    pr = np.asarray(pred_labels).reshape(-1)
    if gt.shape != pr.shape:
        raise EvalError(f"{gt.size} ground-truth labels but {pr.size} predicted labels")
    if num_classes < 1:
        raise EvalError(f"num_classes must be positive, got {num_classes}")
    if not (np.issubdtype(gt.dtype, np.integer) and np.issubdtype(pr.dtype, np.integer)) and gt.size:
        raise EvalError("labels must be integer arrays")
    gt = gt.astype(np.int64)
    pr = pr.astype(np.int64)
    keep = (gt != ignore_index) & (gt >= 0)
    bad = gt[keep] >= num_classes
    if bad.any():
        raise EvalError(f"ground-truth label {int(gt[keep][bad].max())} is outside 0..{num_classes - 1}")
    if (pr >= num_classes).any():
        raise EvalError(f"predicted label {int(pr.max())} is outside 0..{num_classes - 1} (or -1 for unlabelled)")
    gt, pr = gt[keep], pr[keep]
    pr = np.where(pr < 0, num_classes, pr)
    flat = np.bincount(gt * (num_classes + 1) + pr, minlength=num_classes * (num_classes + 1))
    return flat.reshape(num_classes, num_classes + 1)


def _split_indices(splits: Mapping[str, Sequence], class_names: Sequence[str] | None,
                   num_classes: int) -> dict[str, list[int]]:
    index = {n: i for i, n in enumerate(class_names)} if class_names is not None else {}
    out = {}
    for key in SPLIT_NAMES:
        idx = []
        for c in splits.get(key, []):
            if isinstance(c, str):
                if c in index:          # a shipped split may list classes this scene's list lacks
                    idx.append(index[c])
            elif 0 <= int(c) < num_classes:
                idx.append(int(c))
        out[key] = idx
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def semantic_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray, num_classes: int,
                     ignore_index: int = -1, class_names: Sequence[str] | None = None,
                     splits: Mapping[str, Sequence] | None = None) -> dict:
    """mIoU, mAcc, f-IoU, f-Acc (fractions in [0, 1]), per class values and head/common/tail means.

    ``splits`` maps 'head'/'common'/'tail' to class names (needs ``class_names``) or indices.
    """
    if class_names is not None and len(class_names) != num_classes:
        raise EvalError(f"{len(class_names)} class names for {num_classes} classes")
    conf = confusion_matrix(gt_labels, pred_labels, num_classes, ignore_index)
    tp = np.diag(conf[:, :num_classes]).astype(np.float64)
    gt_count = conf.sum(axis=1).astype(np.float64)            # tp + fn (fn includes unlabelled)
    pred_count = conf[:, :num_classes].sum(axis=0).astype(np.float64)  # tp + fp
    union = gt_count + pred_count - tp
    valid = union > 0
    iou = np.full(num_classes, np.nan)
    acc = np.full(num_classes, np.nan)
    iou[valid] = tp[valid] / union[valid]
    acc[valid] = tp[valid] / np.maximum(gt_count[valid], 1e-6)
    w = gt_count[valid]
    wsum = w.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    out = {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "fIoU": float((iou[valid] * w).sum() / wsum) if wsum > 0 else float("nan"),
        "fAcc": float((acc[valid] * w).sum() / wsum) if wsum > 0 else float("nan"),
        "num_points": int(conf.sum()),
        "num_unlabelled": int(conf[:, num_classes].sum()),
        "num_classes_evaluated": int(valid.sum()),
        "per_class": {
            names[c]: {"iou": float(iou[c]), "acc": float(acc[c]), "gt_points": int(gt_count[c]),
                       "pred_points": int(pred_count[c])}
            for c in range(num_classes) if valid[c]
        },
        "iou": iou,
        "acc": acc,
        "gt_counts": gt_count.astype(np.int64),
        "confusion": conf,
    }
    if splits is not None:
        for key, idx in _split_indices(splits, class_names, num_classes).items():
            ids = np.asarray(idx, dtype=np.int64)
            out[f"mIoU_{key}"] = _nanmean(iou[ids]) if ids.size else float("nan")
            out[f"mAcc_{key}"] = _nanmean(acc[ids]) if ids.size else float("nan")
    return out
