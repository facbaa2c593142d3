"""Visibility score and the best-K view bank."""
from __future__ import annotations

import numpy as np
import pytest

from camfusion_ros.core.view_bank import View, ViewBank, ViewBankConfig, mask_bbox, visibility_score


def view(score: float, i: int = 0) -> View:
    d = np.zeros(4, np.float32)
    d[i % 4] = 1.0
    return View(score=score, descriptor=d, stamp_ns=1000 + i, frame_index=i, bbox=(0, 0, 1, 1))


def test_config_defaults():
    cfg = ViewBankConfig()
    assert cfg.max_views == 5 and cfg.border_margin == 10


def test_visibility_score_hand_computed():
    h, w, m = 40, 50, 5
    mask = np.zeros((h, w), bool)
    mask[0:10, 10:30] = True                     # area 200 -> area fraction 200 / 2000 = 0.1
    depth = np.full((h, w), 2.0, np.float32)
    depth[0:2, 10:30] = np.nan                   # 40 invalid
    depth[2, 10:20] = 0.0                        # 10 invalid -> valid fraction 150 / 200 = 0.75
    depth[20:, :] = 0.0                          # outside the mask: irrelevant
    # rows 0..4 lie within the 5-px border; rows 5..9 (5 x 20 = 100 px) inside -> 0.5
    assert visibility_score(mask, depth, m) == pytest.approx(0.1 * 0.75 * 0.5)


def test_visibility_score_uncut_fully_measured_is_area_fraction():
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:25] = True
    depth = np.ones((30, 40), np.float32)
    assert visibility_score(mask, depth, 10) == pytest.approx(150 / 1200)


def test_visibility_score_zero_cases():
    depth = np.ones((30, 40), np.float32)
    assert visibility_score(np.zeros((30, 40), bool), depth, 5) == 0.0
    mask = np.zeros((30, 40), bool)
    mask[0:3, :] = True                          # entirely within the border margin
    assert visibility_score(mask, depth, 5) == 0.0
    mask = np.zeros((30, 40), bool)
    mask[10:20, 10:20] = True
    assert visibility_score(mask, np.zeros((30, 40), np.float32), 5) == 0.0   # no valid depth
    small = np.ones((10, 10), bool)
    assert visibility_score(small, np.ones((10, 10), np.float32), 5) == 0.0   # image within 2*margin


def test_mask_bbox():
    mask = np.zeros((8, 10), bool)
    mask[2, 3] = True
    mask[5, 7] = True
    assert mask_bbox(mask) == (3, 2, 8, 6)       # x0, y0, x1 (exclusive), y1 (exclusive)
    assert mask_bbox(np.zeros((8, 10), bool)) == (0, 0, 0, 0)
    assert mask_bbox(np.ones((8, 10), bool)) == (0, 0, 10, 8)


def test_bank_keeps_best_k_sorted():
    bank = ViewBank(max_views=3)
    assert bank.descriptors().shape == (0, 0) and len(bank) == 0
    for i, s in enumerate([0.2, 0.5, 0.1]):
        assert bank.add(view(s, i)) is True
    assert [v.score for v in bank.views] == [0.5, 0.2, 0.1]
    d = bank.descriptors()
    assert d.shape == (3, 4) and d.dtype == np.float32
    np.testing.assert_array_equal(d.argmax(1), [1, 0, 2])


def test_bank_replaces_worst_and_rejects_worse_when_full():
    bank = ViewBank(max_views=3)
    for i, s in enumerate([0.2, 0.5, 0.1]):
        bank.add(view(s, i))
    assert bank.accepts(0.05) is False
    assert bank.accepts(0.1) is False            # must beat the worst, not tie it
    assert bank.add(view(0.05, 3)) is False
    assert [v.score for v in bank.views] == [0.5, 0.2, 0.1]
    assert bank.accepts(0.3) is True
    assert bank.add(view(0.3, 3)) is True
    assert [v.score for v in bank.views] == [0.5, 0.3, 0.2]
    assert [v.frame_index for v in bank.views] == [1, 3, 0]


def test_bank_accepts_anything_while_not_full():
    bank = ViewBank(max_views=2)
    assert bank.accepts(0.0) is True
    bank.add(view(0.4, 0))
    assert bank.accepts(0.01) is True


def test_bank_add_with_equal_score_does_not_crash():
    # a still camera sees the same fully visible object twice -> identical visibility scores
    bank = ViewBank(max_views=3)
    assert bank.add(view(0.5, 0)) is True
    assert bank.add(view(0.5, 1)) is True
    assert len(bank) == 2


def test_merge_keeps_best_k_of_both():
    a = ViewBank(max_views=3)
    b = ViewBank(max_views=3)
    for i, s in enumerate([0.9, 0.4, 0.1]):
        a.add(view(s, i))
    for i, s in enumerate([0.5, 0.3]):
        b.add(view(s, 10 + i))
    assert a.merge(b) is True
    assert [v.score for v in a.views] == [0.9, 0.5, 0.4]
    assert [v.frame_index for v in a.views] == [0, 10, 1]


def test_merge_with_worse_views_changes_nothing():
    a = ViewBank(max_views=2)
    a.add(view(0.9, 0))
    a.add(view(0.8, 1))
    b = ViewBank(max_views=2)
    b.add(view(0.1, 2))
    before = list(a.views)
    assert a.merge(b) is False
    assert all(x is y for x, y in zip(a.views, before))


def test_merge_into_empty_bank():
    a = ViewBank(max_views=2)
    b = ViewBank(max_views=3)
    for i, s in enumerate([0.3, 0.6, 0.2]):
        b.add(view(s, i))
    assert a.merge(b) is True
    assert [v.score for v in a.views] == [0.6, 0.3]
