"""3D instance AP with the semantics of ScanNet's ``evaluate_semantic_instance.py``.

Single scene, per-point arrays. Kept from the official script: overlaps
0.50:0.90 step 0.05 (``np.arange(0.5, 0.95, 0.05)``) plus 0.25, strict
``overlap > threshold``; predictions and ground truth smaller than
``min_region_size`` points are dropped (small ground truth still shields the
predictions that overlap it from counting as false positives); greedy matching
in prediction order where a second match of one GT instance is a false
positive at the lower score; an unmatched prediction is a false positive only
if at most ``threshold`` of its points lie on void (unlabelled, ignored-class or
small) ground truth; the trapezoid-free precision/recall step of the script;
classes without ground truth give NaN and are left out of the means.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .metrics import SPLIT_NAMES, EvalError, _split_indices

OVERLAPS = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
TOP_K = 600


@dataclass
class _Pred:
    idx: int
    label: int
    count: int
    score: float
    void: int
    matched: list  # [(gt index, intersection)]


def _gt_instances(inst: np.ndarray, labels: np.ndarray, eval_classes: set[int]):
    """GT instances of evaluated classes: ids, class (majority label of its points), point counts."""
    ids, inverse = np.unique(inst, return_inverse=True)
    gt_ids, gt_cls, gt_cnt = [], [], []
    point_gt = np.full(len(inst), -1, dtype=np.int64)
    for k, iid in enumerate(ids):
        if iid <= 0:
            continue
        sel = inverse == k
        lab = labels[sel]
        lab = lab[lab >= 0]
        if lab.size == 0:
            continue
        cls = int(np.bincount(lab).argmax())
        if cls not in eval_classes:
            continue
        point_gt[sel] = len(gt_ids)
        gt_ids.append(int(iid))
        gt_cls.append(cls)
        gt_cnt.append(int(sel.sum()))
    return np.asarray(gt_ids, dtype=np.int64), np.asarray(gt_cls, dtype=np.int64), \
        np.asarray(gt_cnt, dtype=np.int64), point_gt


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_fn: int) -> float:
    """The official script's precision/recall curve and its step integration."""
    if y_score.size == 0:
        return 0.0
    order = np.argsort(y_score)
    y_score_sorted = y_score[order]
    cumsum = np.cumsum(y_true[order])
    _, unique_idx = np.unique(y_score_sorted, return_index=True)
    n_pr = len(unique_idx) + 1
    n_examples = len(y_score_sorted)
    n_true = cumsum[-1]
    precision = np.zeros(n_pr)
    recall = np.zeros(n_pr)
    cumsum = np.append(cumsum, 0)
    for r, i in enumerate(unique_idx):
        c = cumsum[i - 1]
        tp = n_true - c
        fp = n_examples - i - tp
        fn = c + hard_fn
        precision[r] = tp / (tp + fp)
        recall[r] = tp / (tp + fn) if tp + fn > 0 else 0.0
    precision[-1] = 1.0
    recall[-1] = 0.0
    rc = np.append(np.append(recall[0], recall), 0.0)
    steps = np.convolve(rc, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, steps))


def _ap_for_class(gts: list[int], gt_cnt: np.ndarray, preds: list[_Pred], th: float,
                  min_region_size: int, visited: dict[int, bool],
                  gt_matched_preds: dict[int, list]) -> float:
    gts_eval = [g for g in gts if gt_cnt[g] >= min_region_size]
    has_gt, has_pred = bool(gts_eval), bool(preds)
    cur_true = np.ones(len(gts_eval))
    cur_score = np.full(len(gts_eval), -np.inf)
    cur_match = np.zeros(len(gts_eval), dtype=bool)
    hard_fn = 0
    for gi, g in enumerate(gts_eval):
        found = False
        for p, inter in gt_matched_preds[g]:
            if visited[p.idx]:
                continue
            overlap = inter / (gt_cnt[g] + p.count - inter)
            if overlap > th:
                if cur_match[gi]:
                    lo = min(cur_score[gi], p.score)
                    cur_score[gi] = max(cur_score[gi], p.score)
                    cur_true = np.append(cur_true, 0)
                    cur_score = np.append(cur_score, lo)
                    cur_match = np.append(cur_match, True)
                else:
                    found = True
                    cur_match[gi] = True
                    cur_score[gi] = p.score
                    visited[p.idx] = True
        if not found:
            hard_fn += 1
    y_true = list(cur_true[cur_match])
    y_score = list(cur_score[cur_match])
    for p in preds:
        if any(inter / (gt_cnt[g] + p.count - inter) > th for g, inter in p.matched):
            continue
        ignored = p.void + sum(inter for g, inter in p.matched if gt_cnt[g] < min_region_size)
        if ignored / p.count <= th:
            y_true.append(0)
            y_score.append(p.score)
    if has_gt and has_pred:
        return _average_precision(np.asarray(y_true, float), np.asarray(y_score, float), hard_fn)
    return 0.0 if has_gt else float("nan")


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def instance_ap(gt_instance_ids: np.ndarray, gt_labels: np.ndarray, pred_masks: np.ndarray,
                pred_classes: np.ndarray, pred_scores: np.ndarray, num_classes: int,
                ignore_classes: Sequence[int] = (), min_region_size: int = 100,
                class_names: Sequence[str] | None = None,
                splits: Mapping[str, Sequence] | None = None,
                mask_index: np.ndarray | None = None) -> dict:
    """AP (mean over 0.50:0.90), AP50, AP25 overall, per class and per head/common/tail split.

    ``gt_instance_ids``: (N,) int, 0 = no instance; ``gt_labels``: (N,) int class, -1 = ignore;
    ``pred_masks``: (P, N) bool; ``pred_classes``/``pred_scores``: (P,). Values are fractions.
    With ``mask_index`` (P,), ``pred_masks`` holds distinct masks (M, N) and prediction i uses
    ``pred_masks[mask_index[i]]`` (Top-k lists repeat masks; this avoids copying them).
    """
    inst = np.asarray(gt_instance_ids).reshape(-1).astype(np.int64)
    labels = np.asarray(gt_labels).reshape(-1).astype(np.int64)
    n = len(inst)
    if len(labels) != n:
        raise EvalError(f"{n} GT instance ids but {len(labels)} GT labels")
    masks = np.asarray(pred_masks, dtype=bool)
    if masks.size == 0:
        masks = masks.reshape(0, n)
    if masks.ndim != 2 or masks.shape[1] != n:
        raise EvalError(f"prediction masks have shape {masks.shape}, expected (P, {n})")
    classes = np.asarray(pred_classes).reshape(-1).astype(np.int64)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if mask_index is None:
        which = np.arange(len(masks), dtype=np.int64)
    else:
        which = np.asarray(mask_index, dtype=np.int64).reshape(-1)
        if which.size and (which.min() < 0 or which.max() >= len(masks)):
            raise EvalError(f"mask_index refers to masks outside 0..{len(masks) - 1}")
    if not (len(classes) == len(scores) == len(which)):
        raise EvalError(f"{len(which)} masks, {len(classes)} classes, {len(scores)} scores")
    if class_names is not None and len(class_names) != num_classes:
        raise EvalError(f"{len(class_names)} class names for {num_classes} classes")
    eval_classes = [c for c in range(num_classes) if c not in set(int(i) for i in ignore_classes)]
    eval_set = set(eval_classes)

    gt_ids, gt_cls, gt_cnt, point_gt = _gt_instances(inst, labels, eval_set)
    void = point_gt < 0
    n_gt = len(gt_ids)
    by_class_gt: dict[int, list[int]] = {c: [] for c in eval_classes}
    for g, c in enumerate(gt_cls):
        by_class_gt[int(c)].append(g)
    by_class_pred: dict[int, list[_Pred]] = {c: [] for c in eval_classes}
    gt_matched_preds: dict[int, list] = {g: [] for g in range(n_gt)}
    stats: dict[int, tuple[int, np.ndarray, int]] = {}   # per distinct mask: size, GT hits, void points
    for i in range(len(which)):
        c = int(classes[i])
        if c not in eval_set:
            continue
        mi = int(which[i])
        if mi not in stats:
            m = masks[mi]
            stats[mi] = (int(m.sum()), np.bincount(point_gt[m] + 1, minlength=n_gt + 1)[1:],
                         int(np.count_nonzero(void & m)))
        count, hits, nvoid = stats[mi]
        if count < max(min_region_size, 1):
            continue
        matched = [(g, int(hits[g])) for g in by_class_gt[c] if hits[g] > 0]
        p = _Pred(i, c, count, float(scores[i]), nvoid, matched)
        for g, inter in matched:
            gt_matched_preds[g].append((p, inter))
        by_class_pred[c].append(p)

    ap = np.full((num_classes, len(OVERLAPS)), np.nan)
    for oi, th in enumerate(OVERLAPS):
        visited = {p.idx: False for c in eval_classes for p in by_class_pred[c]}
        for c in eval_classes:
            ap[c, oi] = _ap_for_class(by_class_gt[c], gt_cnt, by_class_pred[c], th,
                                      min_region_size, visited, gt_matched_preds)
    return summarize_ap(ap, eval_classes, class_names, splits,
                        num_gt=int((gt_cnt >= min_region_size).sum()))


def summarize_ap(ap: np.ndarray, eval_classes: Sequence[int], class_names: Sequence[str] | None = None,
                 splits: Mapping[str, Sequence] | None = None, num_gt: int | None = None) -> dict:
    """Means of a (C, overlaps) AP table as the official ``compute_averages`` takes them."""
    num_classes = ap.shape[0]
    o50 = np.isclose(OVERLAPS, 0.5)
    o25 = np.isclose(OVERLAPS, 0.25)
    rng = ~o25
    ev = np.asarray(list(eval_classes), dtype=np.int64)
    per_ap = ap[:, rng].mean(axis=1)
    per_50 = ap[:, o50].mean(axis=1)
    per_25 = ap[:, o25].mean(axis=1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    out = {
        "AP": _nanmean(ap[ev][:, rng]) if ev.size else float("nan"),
        "AP50": _nanmean(ap[ev][:, o50]) if ev.size else float("nan"),
        "AP25": _nanmean(ap[ev][:, o25]) if ev.size else float("nan"),
        "num_gt_instances": num_gt,
        "per_class": {names[c]: {"AP": float(per_ap[c]), "AP50": float(per_50[c]), "AP25": float(per_25[c])}
                      for c in ev if not np.isnan(per_ap[c])},
        "overlaps": [float(o) for o in OVERLAPS],
        "ap_table": ap,
    }
    if splits is not None:
        evs = set(ev.tolist())
        for key, idx in _split_indices(splits, class_names, num_classes).items():
            idx = [i for i in idx if i in evs]
            out[f"AP_{key}"] = _nanmean(per_ap[idx]) if idx else float("nan")
            out[f"AP50_{key}"] = _nanmean(per_50[idx]) if idx else float("nan")
            out[f"AP25_{key}"] = _nanmean(per_25[idx]) if idx else float("nan")
    return out


def prediction_pairs(class_scores: np.ndarray, mode: str = "top1",
                     k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance_index, class, score) of Top-1 per instance, or of the k best (instance, class) pairs overall."""
    s = np.asarray(class_scores, dtype=np.float64)
    if s.ndim != 2:
        raise EvalError(f"class scores must be (instances, classes), got shape {s.shape}")
    if mode == "top1":
        if s.shape[1] == 0:
            inst = np.zeros(0, dtype=np.int64)
            cls = np.zeros(0, dtype=np.int64)
        else:
            inst = np.arange(len(s), dtype=np.int64)
            cls = s.argmax(axis=1).astype(np.int64)
    elif mode == "topk":
        if k < 1:
            raise EvalError(f"top-k needs k >= 1, got {k}")
        flat = s.reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        inst, cls = np.divmod(order, s.shape[1]) if s.shape[1] else (order, order)
        inst, cls = inst.astype(np.int64), cls.astype(np.int64)
    else:
        raise EvalError(f"unknown prediction mode '{mode}' (top1 or topk)")
    return inst, cls, s[inst, cls] if len(inst) else np.zeros(0)


def predictions_from_scores(masks: np.ndarray, class_scores: np.ndarray, mode: str = "top1",
                            k: int = TOP_K) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prediction list from per-instance masks (M, N) and class scores (M, C), Top-1 or Top-k.

    Returns (pred_masks (P, N), pred_classes (P,), pred_scores (P,), instance_index (P,)).
    """
    masks = np.asarray(masks, dtype=bool)
    if len(np.asarray(class_scores)) != len(masks):
        raise EvalError(f"class scores for {len(np.asarray(class_scores))} instances but {len(masks)} masks")
    inst, cls, sc = prediction_pairs(class_scores, mode, k)
    return masks[inst], cls, sc, inst
