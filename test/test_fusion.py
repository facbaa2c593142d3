"""Training-free fusers (avg, L1 / cosine medoid) on hand-made descriptor batches."""
from __future__ import annotations

import numpy as np
import pytest

from camfusion_ros.core.fusion import AveragePooling, FusionError, Medoid, make_fuser

E = np.eye(4, dtype=np.float32)


def batch(*rows, valid):
    return np.asarray([rows], np.float32), np.asarray([valid], bool)


def test_avg_is_normalised_mean_of_normalised_valid_views():
    # (3,4) -> (0.6,0.8); (0,2) -> (0,1); mean (0.3,0.9) -> (1,3)/sqrt(10).
    # Averaging the raw vectors would give (1,2)/sqrt(5) instead; the padding row must not count.
    views, valid = batch([3.0, 4.0], [0.0, 2.0], [100.0, -7.0], valid=[True, True, False])
    out = make_fuser("avg").fuse(views, valid)
    assert out.dtype == np.float32 and out.shape == (1, 2)
    np.testing.assert_allclose(out[0], np.array([1.0, 3.0]) / np.sqrt(10.0), rtol=1e-6)


def test_l1medoid_obvious_case():
    views, valid = batch(E[0], E[0] * 3, E[1], valid=[True, True, True])
    out = make_fuser("l1medoid").fuse(views, valid)
    np.testing.assert_allclose(out[0], E[0])


def _l1_vs_cos_case():
    """Views e1, e1, e2, e3, e4, d=(1,1,1,1) (normalised to 0.5 each) plus two invalid copies of d.

    L1 costs (||e_i - e_j||_1 = 2, ||e_i - d/2||_1 = 0.5 + 3*0.5 = 2):
      e1: 0 + 2 + 2 + 2 + 2 = 8;  e2..e4: 2*5 = 10;  d: 2*5 = 10          -> L1 medoid e1
    cosine costs (sum of 1 - dot): e1: 0 + 1 + 1 + 1 + 0.5 = 3.5;  e2: 4.5;  d: 5*0.5 = 2.5 -> cosine medoid d
    If the two invalid d rows counted, L1 would give d: 10 + 0 vs e1: 8 + 2 + 2 = 12.
    """
    d = np.ones(4, np.float32)
    return batch(E[0], E[0], E[1], E[2], E[3], d, d, d, valid=[1, 1, 1, 1, 1, 1, 0, 0])


def test_l1_and_cosine_medoids_differ_on_hand_made_case():
    views, valid = _l1_vs_cos_case()
    np.testing.assert_allclose(make_fuser("l1medoid").fuse(views, valid)[0], E[0], atol=1e-7)
    np.testing.assert_allclose(make_fuser("cosmedoid").fuse(views, valid)[0], [0.5, 0.5, 0.5, 0.5], atol=1e-7)


def test_cosmedoid_picks_view_closest_to_the_others():
    # unit vectors at 0, 40 and 90 deg: the 40 deg one has the smallest summed (1 - cos)
    a = np.deg2rad([0.0, 40.0, 90.0])
    views, valid = batch(*np.stack([np.cos(a), np.sin(a)], 1), valid=[True, True, True])
    np.testing.assert_allclose(make_fuser("cosmedoid").fuse(views, valid)[0], [np.cos(a[1]), np.sin(a[1])], rtol=1e-6)


@pytest.mark.parametrize("name", ["avg", "l1medoid", "cosmedoid"])
def test_single_valid_view_returns_that_view_normalised(name):
    views, valid = batch([9.0, 9.0, 9.0], [0.0, 3.0, 4.0], [-1.0, 5.0, 2.0], valid=[False, True, False])
    np.testing.assert_allclose(make_fuser(name).fuse(views, valid)[0], [0.0, 0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("name", ["avg", "l1medoid", "cosmedoid"])
def test_no_valid_view_gives_zero_row(name):
    views, valid = batch([1.0, 2.0], [3.0, 4.0], valid=[False, False])
    out = make_fuser(name).fuse(views, valid)
    assert out.shape == (1, 2)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("name", ["avg", "l1medoid", "cosmedoid"])
def test_mixed_batch_is_fused_per_instance_and_normalised(name):
    rng = np.random.default_rng(1)
    views = rng.normal(size=(4, 3, 8)).astype(np.float32) * rng.uniform(0.1, 10, size=(4, 3, 1)).astype(np.float32)
    valid = np.array([[1, 1, 1], [0, 0, 0], [0, 1, 0], [1, 1, 0]], bool)
    out = make_fuser(name).fuse(views, valid)
    assert out.shape == (4, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 0, 1, 1], atol=1e-5)
    np.testing.assert_allclose(out[2], views[2, 1] / np.linalg.norm(views[2, 1]), rtol=1e-5)
    # each row depends on its own instance only
    solo = make_fuser(name).fuse(views[3:4], valid[3:4])
    np.testing.assert_allclose(out[3], solo[0], rtol=1e-6)


def test_medoid_is_one_of_the_valid_views():
    rng = np.random.default_rng(2)
    views = rng.normal(size=(2, 5, 6)).astype(np.float32)
    valid = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]], bool)
    unit = views / np.linalg.norm(views, axis=2, keepdims=True)
    for name in ("l1medoid", "cosmedoid"):
        out = make_fuser(name).fuse(views, valid)
        for b in range(2):
            hits = [k for k in range(5) if np.allclose(out[b], unit[b, k], atol=1e-6)]
            assert hits and all(valid[b, k] for k in hits)


def test_make_fuser_names_and_types():
    assert isinstance(make_fuser("avg"), AveragePooling)
    assert make_fuser("avg").name == "avg"
    assert make_fuser("l1medoid").name == "l1medoid"
    assert make_fuser("cosmedoid").name == "cosmedoid"


def test_make_fuser_unknown_name_lists_choices():
    with pytest.raises(FusionError) as ei:
        make_fuser("median")
    msg = str(ei.value)
    assert "median" in msg
    for choice in ("avg", "l1medoid", "cosmedoid", "camfusion"):
        assert choice in msg
    assert issubclass(FusionError, ValueError)


def test_unknown_medoid_metric():
    with pytest.raises(FusionError, match="l2"):
        Medoid("l2")


@pytest.mark.parametrize("name", ["avg", "l1medoid", "cosmedoid"])
@pytest.mark.parametrize("views_shape,valid_shape", [((3, 4), (3,)), ((2, 3, 4), (2, 4)), ((2, 3, 4), (3, 2)),
                                                     ((2, 3, 4), (2, 3, 1))])
def test_wrong_shapes_raise_fusion_error(name, views_shape, valid_shape):
    with pytest.raises(FusionError, match="B, K, D"):
        make_fuser(name).fuse(np.ones(views_shape, np.float32), np.ones(valid_shape, bool))


def test_avg_ignores_non_finite_padding():
    views, valid = batch([3.0, 4.0], [np.nan, np.inf], valid=[True, False])
    np.testing.assert_allclose(make_fuser("avg").fuse(views, valid)[0], [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("name", ["l1medoid", "cosmedoid"])
def test_medoids_ignore_non_finite_padding(name):
    views, valid = batch([3.0, 4.0], [0.0, 1.0], [np.nan, np.inf], valid=[True, True, False])
    out = make_fuser(name).fuse(views, valid)
    assert np.isfinite(out).all()
    assert np.allclose(out[0], [0.6, 0.8]) or np.allclose(out[0], [0.0, 1.0])
