"""Mask filtering, ground-truth masks, SAM2 checkpoint resolution and one real SAM2.1 run."""
from __future__ import annotations

import numpy as np
import pytest

from camfusion_ros.core.frames import RGBDFrame
from camfusion_ros.core.segmentation import (SAM2_URL, GTSegmenter, SegmenterConfig, SegmenterError,
                                             filter_masks, make_segmenter, resolve_sam2_checkpoint)


def masks_with_areas(areas, h=10, w=10):
    m = np.zeros((len(areas), h, w), bool)
    for i, a in enumerate(areas):
        m[i].flat[:a] = True
    return m


def frame(h=6, w=8, gt=None) -> RGBDFrame:
    K = np.array([[10.0, 0, w / 2], [0, 10.0, h / 2], [0, 0, 1]])
    return RGBDFrame(stamp_ns=1, rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32),
                     K=K, T_world_cam=np.eye(4), gt_instances=gt)


def test_filter_masks_min_pixels_and_largest_first():
    m = masks_with_areas([5, 50, 20, 50, 1])
    out = filter_masks(m, min_pixels=10, max_masks=10)
    assert out.dtype == bool
    assert out.reshape(len(out), -1).sum(1).tolist() == [50, 50, 20]
    np.testing.assert_array_equal(out, m[[1, 3, 2]])            # ties keep their input order


def test_filter_masks_max_masks_keeps_largest():
    m = masks_with_areas([30, 70, 10, 90, 50])
    out = filter_masks(m, min_pixels=1, max_masks=2)
    np.testing.assert_array_equal(out, m[[3, 1]])


def test_filter_masks_min_pixels_is_inclusive_and_casts_to_bool():
    m = masks_with_areas([10, 9]).astype(np.uint8)
    out = filter_masks(m, min_pixels=10, max_masks=5)
    assert out.dtype == bool and out.shape == (1, 10, 10) and out.sum() == 10


def test_filter_masks_empty():
    out = filter_masks(np.zeros((0, 4, 5), bool), 1, 3)
    assert out.shape == (0, 4, 5) and out.dtype == bool
    assert filter_masks(masks_with_areas([3, 4]), 100, 3).shape == (0, 10, 10)


def test_gt_segmenter_one_mask_per_id_zero_ignored():
    ids = np.zeros((6, 8), np.int32)
    ids[0:3, 0:4] = 3          # 12 px
    ids[5, 4:8] = 7            # 4 px
    ids[4, 0] = 12             # 1 px
    seg = make_segmenter(SegmenterConfig(name="gt", min_mask_pixels=1, max_masks=10))
    assert isinstance(seg, GTSegmenter)
    out = seg.segment(frame(gt=ids))
    assert out.shape == (3, 6, 8) and out.dtype == bool
    np.testing.assert_array_equal(out[0], ids == 3)
    np.testing.assert_array_equal(out[1], ids == 7)
    np.testing.assert_array_equal(out[2], ids == 12)
    assert not (out.any(0) & (ids == 0)).any()


def test_gt_segmenter_applies_filter():
    ids = np.zeros((6, 8), np.int32)
    ids[0:3, 0:4] = 3
    ids[5, 4:8] = 7
    out = GTSegmenter(SegmenterConfig(name="gt", min_mask_pixels=5)).segment(frame(gt=ids))
    assert out.shape == (1, 6, 8)
    np.testing.assert_array_equal(out[0], ids == 3)


def test_gt_segmenter_all_background():
    out = GTSegmenter(SegmenterConfig(name="gt")).segment(frame(gt=np.zeros((6, 8), np.int32)))
    assert out.shape == (0, 6, 8)


def test_gt_segmenter_without_gt_image():
    with pytest.raises(SegmenterError, match="gt"):
        GTSegmenter(SegmenterConfig(name="gt")).segment(frame())


def test_make_segmenter_unknown_name():
    with pytest.raises(SegmenterError, match="'mask_rcnn'"):
        make_segmenter(SegmenterConfig(name="mask_rcnn"))


def test_resolve_missing_checkpoint_names_file_and_url(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(SegmenterError) as ei:
        resolve_sam2_checkpoint(SegmenterConfig(sam2_model="tiny", sam2_checkpoint=str(missing)))
    msg = str(ei.value)
    assert str(missing) in msg
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in msg
    assert SAM2_URL.format("sam2.1_hiera_tiny.pt") in msg


def test_resolve_default_path_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SegmenterError, match="sam2.1_hiera_large.pt"):
        resolve_sam2_checkpoint(SegmenterConfig(sam2_model="large", sam2_checkpoint=""))
    target = tmp_path / ".cache/camfusion_ros/sam2/sam2.1_hiera_large.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_sam2_checkpoint(SegmenterConfig(sam2_model="large")) == str(target)


def test_resolve_existing_file_and_random(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    assert resolve_sam2_checkpoint(SegmenterConfig(sam2_model="small", sam2_checkpoint=str(f))) == str(f)
    assert resolve_sam2_checkpoint(SegmenterConfig(sam2_model="tiny", sam2_checkpoint="random")) is None


def test_resolve_unknown_model():
    with pytest.raises(SegmenterError) as ei:
        resolve_sam2_checkpoint(SegmenterConfig(sam2_model="huge", sam2_checkpoint="random"))
    assert "huge" in str(ei.value) and "tiny" in str(ei.value) and "large" in str(ei.value)


@pytest.mark.slow
def test_sam2_tiny_random_weights_runs_end_to_end():
    """Real SAM2.1 tiny (sam2's own model and SAM2AutomaticMaskGenerator) with RANDOM weights.

    No pretrained weights exist on this machine, so the masks are meaningless; this only checks
    that the segmenter builds the real model and returns masks in the contract's form.
    """
    import torch

    torch.manual_seed(0)
    cfg = SegmenterConfig(name="sam2", sam2_model="tiny", sam2_checkpoint="random", points_per_side=4,
                          device="cpu", pred_iou_thresh=0.0, stability_score_thresh=0.0,
                          min_mask_pixels=1, max_masks=3)
    seg = make_segmenter(cfg)
    assert seg.weights_are_random is True
    rng = np.random.default_rng(0)
    h, w = 96, 128
    f = RGBDFrame(stamp_ns=1, rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                  depth=np.ones((h, w), np.float32), K=np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]]),
                  T_world_cam=np.eye(4)).validate()
    out = seg.segment(f)
    assert isinstance(out, np.ndarray) and out.dtype == bool
    assert out.ndim == 3 and out.shape[1:] == (h, w)
    assert out.shape[0] <= cfg.max_masks
    if len(out) > 1:
        areas = out.reshape(len(out), -1).sum(1)
        assert (np.diff(areas) <= 0).all() and (areas >= 1).all()
