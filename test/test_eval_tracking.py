"""eval/tracking.py: recall / fragments / spurious on hand-made maps, and the seen-surface test."""
import numpy as np

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.eval.tracking import ERROR_KINDS, score_tracking, seen_points, segmenter_for

# GT: a wall (id 1, background) and two objects (ids 2, 3) of 100 points each on a line
GT_XYZ = np.stack([np.arange(300) * 0.1, np.zeros(300), np.zeros(300)], 1)
GT_ID = np.repeat([1, 2, 3], 100)


def test_a_perfect_map_recalls_everything():
    s = score_tracking(GT_XYZ, GT_ID.astype(np.int32), GT_XYZ, GT_ID, background={1}, min_points=10)
    assert (s.recall, s.fragments, s.spurious, s.gt_objects) == (1.0, 0, 0, 2)
    assert s.object_instances == 2 and s.background_instances == 1


def test_fragments_spurious_and_small_instances():
    ids = GT_ID.copy()
    ids[100:120] = 7                       # a fragment of object 2 (its rest is still matched)
    ids[200:260] = 8                       # object 3 torn in two: 8 keeps 60 % (IoU 0.6, matched) ...
    ids[260:300] = 9                       # ... and 9 is a fragment
    ids[0] = 5                             # a one-point instance: left out, counted as small
    s = score_tracking(GT_XYZ, ids, GT_XYZ, GT_ID, background={1}, min_points=10)
    assert s.small_instances == 1 and s.recall == 1.0 and s.matched == 2
    assert s.fragments == 2 and s.spurious == 0 and s.object_instances == 4
    ids[200:245], ids[245:300] = 11, 10    # 45 / 55: the larger half still reaches IoU 0.55, the smaller not
    s = score_tracking(GT_XYZ, ids, GT_XYZ, GT_ID, background={1}, min_points=10)
    assert s.recall == 1.0 and s.fragments == 2
    ids[200:240], ids[240:270], ids[270:300] = 12, 13, 14   # in three: no piece reaches 0.5
    s = score_tracking(GT_XYZ, ids, GT_XYZ, GT_ID, background={1}, min_points=10)
    assert s.recall == 0.5 and s.spurious == 3           # object 3 unmatched: its pieces are spurious
    s = score_tracking(GT_XYZ[:200], GT_ID[:200], GT_XYZ, GT_ID, background={1}, min_points=10)
    assert s.recall == 0.5                 # object 3 absent from the map


def test_seen_points_need_the_depth_to_agree():
    K = np.array([[10.0, 0, 5], [0, 10.0, 5], [0, 0, 1]])
    f = RGBDFrame(0, np.zeros((10, 10, 3), np.uint8), np.full((10, 10), 2.0, np.float32), K, np.eye(4))
    pts = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, -2.0], [50.0, 0.0, 2.0]])
    assert seen_points(pts, [f]).tolist() == [True, False, False, False]


def test_error_kinds_build_their_segmenters():
    assert segmenter_for("exact").name == "gt"
    for kind in ERROR_KINDS:
        if kind != "exact":
            cfg = segmenter_for(kind, seed=3)
            assert cfg.name == "gt_noisy" and cfg.noise.seed == 3
    assert segmenter_for("border").noise.border_px == 2 and segmenter_for("border").noise.split_fraction == 0
