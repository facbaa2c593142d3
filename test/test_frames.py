"""RGBDFrame.validate: a good frame passes, each bad one fails with a message naming the problem."""
from __future__ import annotations

import math

import numpy as np
import pytest

from camfusion_ros.core.frames import FrameError, RGBDFrame


def good(h: int = 6, w: int = 8, **kw) -> RGBDFrame:
    depth = np.full((h, w), 1.5, np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    args = dict(stamp_ns=123, rgb=np.zeros((h, w, 3), np.uint8), depth=depth,
                K=np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]), T_world_cam=np.eye(4),
                gt_instances=np.zeros((h, w), np.int32))
    args.update(kw)
    return RGBDFrame(**args)


def rotation_pose() -> np.ndarray:
    c, s = math.cos(0.3), math.sin(0.3)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [1.0, -2.0, 0.5]
    return T


def test_good_frame_validates_and_returns_itself():
    f = good(T_world_cam=rotation_pose())
    assert f.validate() is f
    assert (f.height, f.width) == (6, 8)
    assert good(gt_instances=None).validate() is not None
    assert f.frame_id == "camera" and f.index == -1 and f.extras == {}


def _bad(case: str) -> RGBDFrame:
    if case == "rgb dtype":
        return good(rgb=np.zeros((6, 8, 3), np.float32))
    if case == "rgb channels":
        return good(rgb=np.zeros((6, 8, 4), np.uint8))
    if case == "rgb not an array":
        return good(rgb=[[0, 0, 0]])
    if case == "depth dtype":
        return good(depth=np.ones((6, 8), np.float64))
    if case == "depth uint16":
        return good(depth=np.ones((6, 8), np.uint16))
    if case == "size mismatch":
        return good(rgb=np.zeros((6, 9, 3), np.uint8))
    if case == "all-NaN depth":
        return good(depth=np.full((6, 8), np.nan, np.float32))
    if case == "all-zero depth":
        return good(depth=np.zeros((6, 8), np.float32))
    if case == "zero focal":
        return good(K=np.array([[0.0, 0, 4], [0, 50.0, 3], [0, 0, 1]]))
    if case == "negative focal":
        return good(K=np.array([[50.0, 0, 4], [0, -50.0, 3], [0, 0, 1]]))
    if case == "NaN intrinsics":
        return good(K=np.array([[50.0, 0, np.nan], [0, 50.0, 3], [0, 0, 1]]))
    if case == "K shape":
        return good(K=np.eye(4))
    if case == "non-orthonormal pose":
        T = rotation_pose()
        T[:3, :3] *= 2.0
        return good(T_world_cam=T)
    if case == "reflection pose":
        return good(T_world_cam=np.diag([1.0, 1.0, -1.0, 1.0]))
    if case == "NaN pose":
        T = rotation_pose()
        T[0, 3] = np.nan
        return good(T_world_cam=T)
    if case == "pose shape":
        return good(T_world_cam=np.eye(3))
    if case == "instance image size":
        return good(gt_instances=np.zeros((6, 7), np.int32))
    raise KeyError(case)


EXPECTED = {
    "rgb dtype": r"rgb must be uint8 \(H, W, 3\).*float32",
    "rgb channels": r"rgb must be uint8 \(H, W, 3\)",
    "rgb not an array": r"rgb must be uint8",
    "depth dtype": r"depth must be float32 \(H, W\).*float64",
    "depth uint16": r"depth must be float32.*uint16",
    "size mismatch": r"rgb \(6, 9\) and depth \(6, 8\) sizes differ",
    "all-NaN depth": r"depth has no valid reading",
    "all-zero depth": r"depth has no valid reading",
    "zero focal": r"intrinsics.*positive focal",
    "negative focal": r"intrinsics.*positive focal",
    "NaN intrinsics": r"intrinsics must be a finite 3x3",
    "K shape": r"intrinsics must be a finite 3x3",
    "non-orthonormal pose": r"pose rotation is not orthonormal",
    "reflection pose": r"pose rotation is not orthonormal",
    "NaN pose": r"pose must be a finite 4x4",
    "pose shape": r"pose must be a finite 4x4",
    "instance image size": r"instance image \(6, 7\) and depth \(6, 8\) sizes differ",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_frame_is_rejected_with_a_reason(case):
    with pytest.raises(FrameError, match=EXPECTED[case]):
        _bad(case).validate()


def test_frame_error_is_a_value_error():
    assert issubclass(FrameError, ValueError)


def test_one_valid_depth_pixel_is_enough():
    depth = np.zeros((6, 8), np.float32)
    depth[5, 7] = 0.01
    assert good(depth=depth).validate() is not None
