"""Semantic metrics, label transfer and shipped class lists against hand-computed values."""
import numpy as np
import pytest

from camfusion_ros.core.class_lists import (ClassListError, available_vocabularies, frequency_splits,
                                            load_splits, load_vocabulary)
from camfusion_ros.eval.metrics import EvalError, confusion_matrix, semantic_metrics
from camfusion_ros.eval.transfer import transfer_labels


def test_hand_computed_with_ignore_and_unlabelled():
    gt = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1])
    pr = np.array([0, 0, 0, 1, 1, 1, -1, 2, 0])
    m = semantic_metrics(gt, pr, 3, class_names=["a", "b", "c"])
    # class a: tp 3 fn 1 fp 0; class b: tp 2, fn 1 (unlabelled), fp 1; class c: nothing (ignored GT only)
    assert m["iou"][0] == pytest.approx(3 / 4) and m["acc"][0] == pytest.approx(3 / 4)
    assert m["iou"][1] == pytest.approx(2 / 4) and m["acc"][1] == pytest.approx(2 / 3)
    assert np.isnan(m["iou"][2]) and "c" not in m["per_class"]
    assert m["mIoU"] == pytest.approx(0.625)
    assert m["mAcc"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["fIoU"] == pytest.approx((4 * 0.75 + 3 * 0.5) / 7)
    assert m["fAcc"] == pytest.approx(5 / 7)
    assert m["num_points"] == 7 and m["num_unlabelled"] == 1


def test_predicted_but_absent_class_counts_zero():
    m = semantic_metrics(np.array([0, 0]), np.array([0, 2]), 3)
    assert m["iou"][2] == 0.0 and m["acc"][2] == 0.0
    assert m["mIoU"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["mAcc"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["fIoU"] == pytest.approx(0.5)  # zero GT weight for the absent class


def test_all_unlabelled_predictions_score_zero():
    m = semantic_metrics(np.array([0, 1, 1]), np.full(3, -1), 2)
    assert m["mIoU"] == 0.0 and m["fAcc"] == 0.0


def test_perfect_and_splits_by_name():
    gt = np.array([0, 1, 2, 3, 3])
    names = ["wall", "chair", "cup", "lamp"]
    splits = {"head": ["wall", "chair"], "common": ["cup", "not-in-scene"], "tail": ["lamp"]}
    pr = np.array([0, 1, 1, 3, 3])
    m = semantic_metrics(gt, pr, 4, class_names=names, splits=splits)
    assert m["mIoU_head"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["mIoU_common"] == pytest.approx(0.0)
    assert m["mIoU_tail"] == pytest.approx(1.0)
    assert semantic_metrics(gt, gt, 4)["mIoU"] == 1.0


def test_confusion_matrix_unlabelled_column():
    c = confusion_matrix(np.array([0, 1, 1]), np.array([1, -1, 1]), 2)
    assert c.tolist() == [[0, 1, 0], [0, 1, 1]]


@pytest.mark.parametrize("gt,pr,msg", [
    ([0, 1], [0], "ground-truth labels"),
    ([0, 5], [0, 0], "outside"),
    ([0, 1], [0, 7], "outside"),
])
def test_bad_input_raises(gt, pr, msg):
    with pytest.raises(EvalError, match=msg):
        semantic_metrics(np.array(gt), np.array(pr), 2)


def test_transfer_nearest_within_distance_skips_unlabelled_map_points():
    map_xyz = np.array([[0, 0, 0], [1, 0, 0], [0.02, 0, 0]], float)
    map_lab = np.array([3, 4, -1])
    gt_xyz = np.array([[0.03, 0, 0], [0.98, 0, 0], [5, 5, 5]], float)
    out = transfer_labels(map_xyz, map_lab, gt_xyz, max_distance=0.05)
    assert out.tolist() == [3, 4, -1]
    assert transfer_labels(np.zeros((0, 3)), np.zeros(0, int), gt_xyz).tolist() == [-1, -1, -1]
    with pytest.raises(EvalError):
        transfer_labels(map_xyz, map_lab, gt_xyz, max_distance=0)


def test_shipped_class_lists_and_splits():
    assert {"replica", "scannet20", "scannet200"} <= set(available_vocabularies())
    for name, n in [("replica", 51), ("scannet20", 21), ("scannet200", 200)]:
        names = load_vocabulary(name)
        sp = load_splits(name)
        assert len(names) == n
        assert sorted(sp["head"] + sp["common"] + sp["tail"]) == sorted(names)
        assert set(sp["background"]) <= set(names)
    rep = load_splits("replica")
    assert rep["head"][:3] == ["wall", "ceiling", "floor"] and len(rep["tail"]) == 17
    s200 = load_splits("scannet200")
    assert (len(s200["head"]), len(s200["common"]), len(s200["tail"])) == (66, 68, 66)
    assert "wall" in s200["head"] and "luggage" in s200["tail"]


def test_vocabulary_from_file_and_errors(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("chair\n\n# comment\ntable\n")
    assert load_vocabulary(f) == ["chair", "table"]
    f.write_text("a\na\n")
    with pytest.raises(ClassListError, match="repeats"):
        load_vocabulary(f)
    with pytest.raises(ClassListError, match="neither a file nor a shipped list"):
        load_vocabulary("no-such-vocab")
    with pytest.raises(ClassListError):
        load_splits("no-such-vocab")


def test_frequency_splits():
    sp = frequency_splits(["a", "b", "c", "d", "e", "f"], [5, 0, 9, 1, 3, 7])
    assert sp["head"] == ["c", "f"] and sp["common"] == ["a"] and sp["tail"] == ["e", "d"]
