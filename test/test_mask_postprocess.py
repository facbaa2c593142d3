"""Mask post-processing: OVO's mask NMS, the ranked non-overlapping label map, counted drops."""
import numpy as np

from camfusion_ros.core.mask_postprocess import DROP_REASONS, MaskProposals, from_partition, mask_nms, postprocess
from camfusion_ros.core.segmentation import SegmenterConfig


def box(y0, y1, x0, x1, h=40, w=40):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def cfg(**kw):
    return SegmenterConfig(**{"min_mask_pixels": 1, **kw})


def test_duplicate_of_a_better_mask_goes():
    a, b = box(0, 20, 0, 20), box(0, 20, 0, 19)               # IoU 0.95
    kept, reason = mask_nms(np.stack([a, b]), np.array([0.9, 0.8]), 0.8, 0.5)
    assert kept.tolist() == [0] and reason.tolist() == [0, 1]
    kept, reason = mask_nms(np.stack([a, b]), np.array([0.7, 0.8]), 0.8, 0.5)
    assert kept.tolist() == [1] and reason.tolist() == [1, 0]


def test_small_part_nested_in_a_whole_goes_whichever_scored_better():
    whole, part = box(0, 20, 0, 20), box(0, 8, 0, 8)          # part: 16 % of the whole
    for scores in ([0.9, 0.8], [0.8, 0.9]):
        kept, reason = mask_nms(np.stack([whole, part]), np.array(scores), 0.8, 0.5)
        assert kept.tolist() == [0] and reason.tolist() == [0, 2]
    kept, _ = mask_nms(np.stack([whole, part]), np.array([0.9, 0.8]), 0.8, 0.0)   # inner test off
    assert sorted(kept.tolist()) == [0, 1]


def test_large_part_is_not_nested_and_ranking_decides():
    whole, half = box(0, 20, 0, 20), box(0, 20, 0, 12)       # 60 % of the whole: OVO keeps both
    fm = postprocess(MaskProposals(np.stack([whole, half]), np.array([0.8, 0.9])), cfg())
    assert len(fm) == 2
    np.testing.assert_array_equal(fm.masks[0], half)            # the better mask paints first
    np.testing.assert_array_equal(fm.masks[1], whole & ~half)   # the whole keeps what is left
    assert (fm.masks.sum(0) <= 1).all()
    np.testing.assert_array_equal(fm.label_map[whole], np.where(half[whole], 0, 1))
    assert (fm.label_map[~whole] == -1).all()


def test_every_drop_is_counted_under_its_reason():
    masks = np.stack([box(0, 20, 0, 20), box(0, 20, 0, 19), box(0, 4, 0, 4), box(30, 31, 30, 31),
                      box(0, 20, 10, 30), box(25, 40, 25, 40), box(30, 40, 0, 10)])
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.1, 0.6])
    fm = postprocess(MaskProposals(masks, scores), cfg(min_mask_pixels=2, min_score=0.2, max_masks=2))
    assert fm.proposals == 7
    assert set(fm.dropped) <= set(DROP_REASONS)
    assert fm.dropped == {"low_score": 1, "small": 1, "nms_duplicate": 1, "nms_nested": 1, "cap": 1}
    assert len(fm) + sum(fm.dropped.values()) == fm.proposals


def test_leftover_under_min_pixels_is_dropped():
    a, b = box(0, 20, 0, 20), box(0, 20, 0, 21)               # b adds one column of 20 px
    fm = postprocess(MaskProposals(np.stack([a, b]), np.array([0.9, 0.5])),
                     cfg(min_mask_pixels=30, nms_iou_thresh=0.99))
    assert len(fm) == 1 and fm.dropped == {"overlap_leftover": 1}


def test_empty_and_partition():
    fm = postprocess(MaskProposals.empty(5, 6), cfg())
    assert fm.masks.shape == (0, 5, 6) and (fm.label_map == -1).all() and fm.proposals == 0
    ids = np.zeros((5, 6), np.int32)
    ids[:2] = 4
    ids[3:, :3] = 9
    fm = from_partition(ids, min_pixels=1, max_masks=10)
    assert fm.proposals == 2 and len(fm) == 2
    np.testing.assert_array_equal(fm.masks[0], ids == 4)        # largest first
    np.testing.assert_array_equal(fm.label_map, np.select([ids == 4, ids == 9], [0, 1], -1))
