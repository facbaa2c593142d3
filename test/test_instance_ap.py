"""Instance AP (ScanNet semantics) against hand-computed values; min_region_size lowered for tiny scenes."""
import numpy as np
import pytest

from camfusion_ros.eval.instance_ap import OVERLAPS, instance_ap, prediction_pairs, predictions_from_scores
from camfusion_ros.eval.metrics import EvalError


def scene():
    """Wall (class 0, id 1, 20 pts), chair A (class 1, id 2, 10), chair B (class 1, id 3, 10), 5 unlabelled."""
    inst = np.array([1] * 20 + [2] * 10 + [3] * 10 + [0] * 5)
    lab = np.array([0] * 20 + [1] * 20 + [-1] * 5)
    return inst, lab


def test_overlaps_are_the_official_ones():
    assert np.allclose(OVERLAPS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.25])


def test_perfect_predictions():
    inst, lab = scene()
    r = instance_ap(inst, lab, np.stack([inst == 1, inst == 2, inst == 3]),
                    [0, 1, 1], [0.5, 0.9, 0.8], 2, min_region_size=1)
    assert r["AP"] == 1.0 and r["AP50"] == 1.0 and r["AP25"] == 1.0
    assert r["per_class"]["1"]["AP"] == 1.0


def test_duplicate_prediction_of_one_instance():
    inst, lab = scene()
    m = np.stack([inst == 2, inst == 2, inst == 3])
    r = instance_ap(inst, lab, m, [1, 1, 1], [0.9, 0.8, 0.7], 2, ignore_classes=[0], min_region_size=1)
    # y (ascending score): 0.7 TP, 0.8 FP (duplicate), 0.9 TP -> PR points (2/3,1) (1/2,1/2) (1,1/2) (1,0)
    expected = 0.25 * (2 / 3 + 0.5 + 1 + 1)
    assert r["AP50"] == pytest.approx(expected)
    assert r["AP"] == pytest.approx(expected)
    # a lower-scored duplicate after full recall costs nothing
    r = instance_ap(inst, lab, m, [1, 1, 1], [0.9, 0.6, 0.7], 2, ignore_classes=[0], min_region_size=1)
    assert r["AP50"] == pytest.approx(1.0)


def test_class_without_gt_is_nan_and_left_out():
    inst, lab = scene()
    m = np.stack([inst == 2, inst == 3, inst == 2])
    r = instance_ap(inst, lab, m, [1, 1, 2], [0.9, 0.8, 0.99], 3, ignore_classes=[0], min_region_size=1)
    assert r["AP50"] == 1.0 and "2" not in r["per_class"]
    assert np.isnan(r["ap_table"][2]).all()


def test_empty_predictions():
    inst, lab = scene()
    r = instance_ap(inst, lab, np.zeros((0, len(inst)), bool), [], [], 2, min_region_size=1)
    assert r["AP"] == 0.0 and r["AP50"] == 0.0 and r["per_class"]["0"]["AP"] == 0.0
    r = instance_ap(np.zeros(5, int), np.full(5, -1), np.zeros((0, 5), bool), [], [], 2)
    assert np.isnan(r["AP"]) and r["per_class"] == {}


def test_ignored_class_points_are_void():
    inst, lab = scene()
    stray = np.zeros(len(inst), bool)
    stray[:19] = True   # 19 wall points ...
    stray[20] = True    # ... and one chair point
    m = np.stack([inst == 2, inst == 3, stray])
    r = instance_ap(inst, lab, m, [1, 1, 1], [0.9, 0.8, 0.95], 2, ignore_classes=[0], min_region_size=1)
    assert r["AP"] == 1.0 and "0" not in r["per_class"]
    # without ignoring the wall class the stray chair prediction is a top-scored false positive
    m = np.stack([inst == 2, stray])
    r = instance_ap(inst, lab, m, [1, 1], [0.9, 0.95], 2, min_region_size=1)
    # chair: GT A matched (0.9), B missed (hard FN), FP at 0.95 -> PR (1/2,1/2) (0,0) (1,0)
    assert r["per_class"]["1"]["AP50"] == pytest.approx(0.25 * 0.5 / 1)
    assert r["per_class"]["0"]["AP50"] == 0.0
    assert r["AP50"] == pytest.approx((0.125 + 0.0) / 2)


def test_prediction_on_unlabelled_points_is_ignored():
    inst, lab = scene()
    m = np.stack([inst == 2, inst == 3, inst == 0])
    r = instance_ap(inst, lab, m, [1, 1, 1], [0.5, 0.5, 0.99], 2, ignore_classes=[0], min_region_size=1)
    assert r["AP"] == 1.0


def test_min_region_size_drops_small_gt_and_predictions():
    inst, lab = scene()
    # chairs have 10 points: below 11 they are neither counted nor allowed to make false positives
    m = np.stack([inst == 2, inst == 1])
    r = instance_ap(inst, lab, m, [1, 0], [0.9, 0.9], 2, min_region_size=11)
    assert r["AP"] == 1.0 and "1" not in r["per_class"]
    assert r["num_gt_instances"] == 1


def test_partial_overlap_thresholds():
    inst, lab = scene()
    m = np.zeros((1, len(inst)), bool)
    m[0, 20:27] = True    # 7 of chair A's 10 points: IoU 0.7
    r = instance_ap(inst, lab, m, [1], [1.0], 2, ignore_classes=[0], min_region_size=1)
    row = r["ap_table"][1]
    # matched where 0.7 > threshold: 0.25, 0.50..0.65 -> recall 1/2, precision 1 -> AP 0.5
    assert row.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0, 0, 0.5])
    assert r["AP"] == pytest.approx(4 * 0.5 / 9) and r["AP25"] == 0.5


def test_splits_for_ap():
    inst, lab = scene()
    m = np.stack([inst == 1, inst == 2])
    r = instance_ap(inst, lab, m, [0, 1], [1.0, 1.0], 2, min_region_size=1,
                    class_names=["wall", "chair"], splits={"head": ["wall"], "common": ["chair"], "tail": []})
    assert r["AP_head"] == 1.0 and r["AP50_common"] == pytest.approx(0.5) and np.isnan(r["AP_tail"])


def test_top1_vs_topk():
    inst, lab = scene()
    masks = np.stack([inst == 2, inst == 3])
    scores = np.array([[0.1, 0.6, 0.3],     # chair A: right class first
                       [0.1, 0.4, 0.5]])    # chair B: right class second
    pm, pc, ps, idx = predictions_from_scores(masks, scores, "top1")
    assert pc.tolist() == [1, 2] and ps.tolist() == [0.6, 0.5] and idx.tolist() == [0, 1]
    top1 = instance_ap(inst, lab, pm, pc, ps, 3, ignore_classes=[0], min_region_size=1)
    pm, pc, ps, idx = predictions_from_scores(masks, scores, "topk", k=4)
    assert list(zip(idx.tolist(), pc.tolist())) == [(0, 1), (1, 2), (1, 1), (0, 2)]
    assert np.array_equal(pm[2], inst == 3)
    topk = instance_ap(inst, lab, pm, pc, ps, 3, ignore_classes=[0], min_region_size=1)
    assert top1["per_class"]["1"]["AP50"] == pytest.approx(0.5)
    assert topk["per_class"]["1"]["AP50"] == pytest.approx(1.0)
    assert len(predictions_from_scores(masks, scores, "topk")[1]) == 6  # k=600 caps at all pairs
    with pytest.raises(EvalError):
        predictions_from_scores(masks, scores, "top3")


def test_bad_shapes():
    inst, lab = scene()
    with pytest.raises(EvalError, match="shape"):
        instance_ap(inst, lab, np.ones((1, 3), bool), [1], [1.0], 2)
    with pytest.raises(EvalError):
        instance_ap(inst, lab[:-1], np.ones((1, len(inst)), bool), [1], [1.0], 2)


def test_mask_index_matches_expanded_masks():
    inst, lab = scene()
    masks = np.stack([inst == 2, inst == 3])
    scores = np.array([[0.1, 0.6, 0.3], [0.1, 0.4, 0.5]])
    idx, cls, sc = prediction_pairs(scores, "topk", k=5)
    a = instance_ap(inst, lab, masks, cls, sc, 3, ignore_classes=[0], min_region_size=1, mask_index=idx)
    b = instance_ap(inst, lab, masks[idx], cls, sc, 3, ignore_classes=[0], min_region_size=1)
    assert np.array_equal(a["ap_table"], b["ap_table"], equal_nan=True)
    with pytest.raises(EvalError, match="mask_index"):
        instance_ap(inst, lab, masks, cls, sc, 3, mask_index=idx + 5)
