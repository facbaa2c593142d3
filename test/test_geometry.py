"""Pinhole geometry against hand-computed cases (OpenCV axes: x right, y down, z forward)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from camfusion_ros.core.geometry import (backproject, invert_pose, matrix_to_quaternion, project,
                                         quaternion_to_matrix, transform, voxel_downsample)

K = np.array([[100.0, 0.0, 64.0], [0.0, 200.0, 48.0], [0.0, 0.0, 1.0]])
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # 90 deg about z


def pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def test_project_identity_pose_hand_computed():
    # u = 100 * 0.5 / 2 + 64 = 89, v = 200 * -0.25 / 2 + 48 = 23
    u, v, z = project(np.array([[0.5, -0.25, 2.0]]), K, np.eye(4))
    assert u[0] == pytest.approx(89.0)
    assert v[0] == pytest.approx(23.0)
    assert z[0] == pytest.approx(2.0)


def test_project_with_rotation_and_translation():
    # camera at (1, 2, 3), turned 90 deg about z: world = Rz90 @ (0.5, -0.25, 2) + t = (1.25, 2.5, 5)
    T = pose(RZ90, [1.0, 2.0, 3.0])
    u, v, z = project(np.array([[1.25, 2.5, 5.0]]), K, T)
    assert (u[0], v[0], z[0]) == pytest.approx((89.0, 23.0, 2.0))


def test_project_point_behind_camera_has_negative_depth():
    _, _, z = project(np.array([[0.0, 0.0, -1.0]]), K, np.eye(4))
    assert z[0] == pytest.approx(-1.0)


def test_transform_applies_rotation_then_translation():
    out = transform(np.array([[0.5, -0.25, 2.0]]), pose(RZ90, [1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out, [[1.25, 2.5, 5.0]])


def test_backproject_hand_computed_and_drops_invalid_depth():
    Ks = np.array([[2.0, 0.0, 2.0], [0.0, 4.0, 1.0], [0.0, 0.0, 1.0]])
    depth = np.zeros((4, 5), np.float32)
    depth[1, 3] = 2.0          # x = (3-2)*2/2 = 1, y = (1-1)*2/4 = 0
    depth[3, 0] = 4.0          # x = (0-2)*4/2 = -4, y = (3-1)*4/4 = 2
    depth[0, 0] = np.nan
    depth[0, 1] = np.inf
    depth[2, 2] = -1.0
    pts, rows, cols = backproject(depth, Ks)
    np.testing.assert_array_equal(rows, [1, 3])
    np.testing.assert_array_equal(cols, [3, 0])
    np.testing.assert_allclose(pts, [[1.0, 0.0, 2.0], [-4.0, 2.0, 4.0]])
    assert pts.dtype == np.float64


def test_backproject_stride_reports_full_resolution_pixels():
    Ks = np.array([[2.0, 0.0, 2.0], [0.0, 4.0, 1.0], [0.0, 0.0, 1.0]])
    depth = np.zeros((4, 5), np.float32)
    depth[1, 3] = 2.0          # odd row/col: skipped with stride 2
    depth[2, 4] = 1.0          # x = (4-2)*1/2 = 1, y = (2-1)*1/4 = 0.25
    pts, rows, cols = backproject(depth, Ks, stride=2)
    np.testing.assert_array_equal(rows, [2])
    np.testing.assert_array_equal(cols, [4])
    np.testing.assert_allclose(pts, [[1.0, 0.25, 1.0]])


def test_backproject_mask_selects_pixels():
    depth = np.ones((3, 3), np.float32)
    mask = np.zeros((3, 3), bool)
    mask[2, 1] = True
    _, rows, cols = backproject(depth, K, mask=mask)
    assert rows.tolist() == [2] and cols.tolist() == [1]


def test_backproject_all_invalid_gives_empty():
    depth = np.array([[0.0, np.nan], [np.inf, -np.inf]], np.float32)
    pts, rows, cols = backproject(depth, K)
    assert pts.shape == (0, 3) and len(rows) == 0 and len(cols) == 0


def test_round_trip_backproject_transform_project():
    h, w = 12, 16
    Ks = np.array([[20.0, 0.0, 7.5], [0.0, 22.0, 5.5], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, (h, w)).astype(np.float32)
    depth[3, 4] = 0.0
    T = pose(quaternion_to_matrix(0.1, -0.2, 0.3, math.sqrt(1 - 0.14)), [0.3, -1.0, 2.0])
    pc, rows, cols = backproject(depth, Ks)
    assert len(pc) == h * w - 1
    u, v, z = project(transform(pc, T), Ks, T)
    np.testing.assert_allclose(u, cols, atol=1e-6)
    np.testing.assert_allclose(v, rows, atol=1e-6)
    np.testing.assert_allclose(z, depth[rows, cols], rtol=1e-6)


def test_invert_pose_hand_computed():
    T = pose(RZ90, [1.0, 2.0, 3.0])
    Ti = invert_pose(T)
    # R^T = Rz(-90): (x, y, z) -> (y, -x, z); -R^T t = -(2, -1, 3)
    np.testing.assert_allclose(Ti[:3, :3], RZ90.T)
    np.testing.assert_allclose(Ti[:3, 3], [-2.0, 1.0, -3.0])
    np.testing.assert_allclose(Ti[3], [0, 0, 0, 1])
    np.testing.assert_allclose(T @ Ti, np.eye(4), atol=1e-12)


def test_voxel_downsample_keeps_first_point_per_voxel():
    pts = np.array([
        [0.1, 0.1, 0.1],     # voxel (0,0,0): kept
        [0.9, 0.5, 0.2],     # voxel (0,0,0): dropped
        [1.1, 0.0, 0.0],     # voxel (1,0,0): kept
        [-0.1, 0.0, 0.0],    # voxel (-1,0,0): kept (floor, not truncation)
        [-0.9, 0.5, 0.5],    # voxel (-1,0,0): dropped
        [-1.1, 0.0, 0.0],    # voxel (-2,0,0): kept
        [0.5, -0.5, 0.5],    # voxel (0,-1,0): kept
        [0.5, 0.5, -0.5],    # voxel (0,0,-1): kept
    ])
    extra = np.arange(len(pts)) * 10
    out, ex = voxel_downsample(pts, 1.0, extra)
    np.testing.assert_array_equal(out, pts[[0, 2, 3, 5, 6, 7]])
    np.testing.assert_array_equal(ex, [0, 20, 30, 50, 60, 70])
    np.testing.assert_array_equal(voxel_downsample(pts, 1.0), pts[[0, 2, 3, 5, 6, 7]])


def test_voxel_downsample_voxel_size_matters_and_empty_input():
    pts = np.array([[0.0, 0.0, 0.0], [0.03, 0.0, 0.0]])
    assert len(voxel_downsample(pts, 0.02)) == 2
    assert len(voxel_downsample(pts, 0.05)) == 1
    empty = np.zeros((0, 3))
    assert voxel_downsample(empty, 0.1).shape == (0, 3)
    out, ex = voxel_downsample(empty, 0.1, np.zeros(0))
    assert out.shape == (0, 3) and ex.shape == (0,)


def test_quaternion_identity_and_90_about_z():
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, 0, 1), np.eye(3))
    s = math.sqrt(0.5)
    np.testing.assert_allclose(quaternion_to_matrix(0, 0, s, s), RZ90, atol=1e-12)
    # 180 deg about x: y -> -y, z -> -z
    np.testing.assert_allclose(quaternion_to_matrix(1, 0, 0, 0), np.diag([1.0, -1.0, -1.0]))


@pytest.mark.parametrize("q", [(0, 0, 0, 2), (0, 0, 0, 0), (0.5, 0.5, 0.5, 0.6),
                               (np.nan, 0, 0, 1), (0, 0, np.inf, 1)])
def test_quaternion_rejects_non_unit_and_non_finite(q):
    with pytest.raises(ValueError, match="unit quaternion"):
        quaternion_to_matrix(*q)


def test_matrix_to_quaternion_hand_case_and_round_trip():
    s = math.sqrt(0.5)
    q = np.array(matrix_to_quaternion(RZ90))
    assert np.allclose(q, [0, 0, s, s]) or np.allclose(q, [0, 0, -s, -s])
    q0 = np.array([0.1, -0.2, 0.3, math.sqrt(1 - 0.14)])
    q1 = np.array(matrix_to_quaternion(quaternion_to_matrix(*q0)))
    assert np.allclose(q1, q0) or np.allclose(q1, -q0)


def test_pose_matrix_from_translation_and_quaternion():
    from camfusion_ros.core.geometry import pose_matrix

    s = np.sqrt(0.5)
    T = pose_matrix((1.0, 2.0, 3.0), (0.0, 0.0, s, s))          # 90 degrees about z
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="position"):
        pose_matrix((np.nan, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="unit quaternion"):
        pose_matrix((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 2.0))
