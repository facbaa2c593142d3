"""Scores one map against a ground-truth folder: semantic metrics and instance AP (Top-1 / Top-k)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from .gt import GroundTruth, _key
from .instance_ap import TOP_K, instance_ap, prediction_pairs
from .map_view import MapView
from .metrics import EvalError, semantic_metrics
from .transfer import nearest_within


@dataclass
class EvalConfig:
    distance: float = 0.05          # m, map point to GT point label transfer radius
    min_region_size: int = 100      # points, as ScanNet's benchmark
    top_k: int = TOP_K              # (instance, class) pairs kept for Top-k AP, as OV-3DIS


def _point_rows(view: MapView) -> np.ndarray:
    """Row in ``view.ids`` of each map point's instance, -1 where none or unknown."""
    ids = np.asarray(view.ids, dtype=np.int64)
    rows = np.full(len(view.point_instance), -1, dtype=np.int64)
    if len(ids) == 0:
        return rows
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], view.point_instance)
    pos = np.clip(pos, 0, len(ids) - 1)
    hit = ids[order][pos] == view.point_instance
    rows[hit] = order[pos[hit]]
    return rows


def names_to_gt(names: Sequence[Optional[str]], gt: GroundTruth) -> np.ndarray:
    """GT class index per name; -1 for None, -2 for a name the GT does not know (always wrong)."""
    index = gt.class_index()
    return np.asarray([-1 if n is None else index.get(_key(n), -2) for n in names], dtype=np.int64)


def evaluate_map(view: MapView, gt: GroundTruth, cfg: EvalConfig = EvalConfig(),
                 splits: Optional[Mapping[str, Sequence]] = None,
                 vocab_scores: Optional[np.ndarray] = None,
                 vocab_names: Optional[Sequence[str]] = None,
                 instance_splits: Optional[Mapping[str, Sequence]] = None) -> dict:
    """Semantic metrics on GT points and instance AP of the map's instances.

    Without ``vocab_scores`` the instance labels/scores from meta.json are used (Top-1 only);
    with them (K, V) over ``vocab_names``, labels are their argmax and Top-k is computed too.
    ``instance_splits`` (default ``splits``) groups the AP classes into head/common/tail.
    """
    C = len(gt.names)
    rows = _point_rows(view)
    K = len(view.ids)
    if vocab_scores is not None:
        vs = np.asarray(vocab_scores, dtype=np.float64)
        if vocab_names is None or vs.shape != (K, len(vocab_names)):
            raise EvalError(f"vocabulary scores of shape {vs.shape} do not fit {K} instances")
        col_gt = names_to_gt(vocab_names, gt)
        best = vs.argmax(axis=1) if vs.shape[1] else np.zeros(K, np.int64)
        inst_cls = col_gt[best] if vs.shape[1] else np.full(K, -1)
        inst_score = vs[np.arange(K), best] if vs.shape[1] else np.zeros(K)
    else:
        inst_cls = names_to_gt(view.labels, gt)
        inst_score = np.asarray(view.scores, dtype=np.float64)

    # one nearest-neighbour match of GT points to map points that belong to an instance
    labelled = rows >= 0
    near = nearest_within(view.xyz[labelled], gt.xyz, cfg.distance)
    gt_row = np.full(len(gt.xyz), -1, dtype=np.int64)
    gt_row[near >= 0] = rows[labelled][near[near >= 0]]
    valid = gt_row >= 0

    # semantic: names unknown to the GT (-2) and unlabelled instances (-1) are misses for the GT class
    pred = np.full(len(gt.xyz), -1, dtype=np.int64)
    pred[valid] = np.maximum(inst_cls[gt_row[valid]], -1)
    sem = semantic_metrics(gt.label, pred, C, class_names=gt.names, splits=splits)
    sem["coverage"] = float(valid.mean()) if len(valid) else 0.0

    # instances: each map instance becomes a mask over GT points
    masks = np.zeros((K, len(gt.xyz)), dtype=bool)
    masks[gt_row[valid], np.nonzero(valid)[0]] = True
    common = dict(num_classes=C, ignore_classes=gt.background_ids, min_region_size=cfg.min_region_size,
                  class_names=gt.names, splits=instance_splits if instance_splits is not None else splits)
    keep = inst_cls >= 0
    top1 = instance_ap(gt.instance, gt.label, masks, inst_cls[keep], inst_score[keep],
                       mask_index=np.nonzero(keep)[0], **common)
    out = {"semantic": sem, "instance_top1": top1, "instance_topk": None,
           "num_map_instances": K, "num_labelled_instances": int(keep.sum())}
    if vocab_scores is not None and vs.shape[1]:
        inst, col, sc = prediction_pairs(vs, "topk", cfg.top_k)
        cls = col_gt[col]
        ok = cls >= 0
        out["instance_topk"] = instance_ap(gt.instance, gt.label, masks, cls[ok], sc[ok],
                                           mask_index=inst[ok], **common)
    return out


def oracle_view(gt: GroundTruth, shuffle_seed: Optional[int] = None, stride: int = 1) -> MapView:
    """A map made from the GT itself (labels = GT labels), or with labels shuffled among instances.

    The yardstick for the metrics: the oracle must score 100, a shuffled one near chance.
    """
    sel = np.arange(0, len(gt.xyz), max(stride, 1))
    inst = gt.instance[sel]
    ids = np.unique(inst[inst > 0])
    labels = []
    for i in ids:
        lab = gt.label[sel][inst == i]
        lab = lab[lab >= 0]
        labels.append(gt.names[int(np.bincount(lab).argmax())] if lab.size else None)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        labels = [gt.names[int(c)] for c in rng.integers(0, len(gt.names), len(ids))]
    return MapView(xyz=gt.xyz[sel], point_instance=np.where(inst > 0, inst, -1), ids=ids.astype(np.int64),
                   labels=labels, scores=np.ones(len(ids)))
