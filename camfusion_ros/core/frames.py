"""The one frame type every stage of the pipeline consumes.

Conventions (shared by the bag reader, the ROS conversions, the dataset
converters and the tracker):
- ``rgb``: uint8 (H, W, 3), RGB order.
- ``depth``: float32 (H, W), metres along the optical axis; 0 or non-finite = no reading.
- ``K``: float64 (3, 3) pinhole intrinsics of the depth/colour image (they are registered).
- ``T_world_cam``: float64 (4, 4) camera-to-world, OpenCV camera axes (x right, y down, z forward).
- ``gt_instances``: optional int32 (H, W) ground-truth instance ids, 0 = no instance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


class FrameError(ValueError):
    """A frame that cannot be used; the message says what is wrong with it."""


@dataclass
class RGBDFrame:
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    gt_instances: Optional[np.ndarray] = None
    frame_id: str = "camera"
    index: int = -1
    extras: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.depth.shape[0])

    @property
    def width(self) -> int:
        return int(self.depth.shape[1])

    def validate(self) -> "RGBDFrame":
        """Raise FrameError with a readable reason; return self when usable."""
        validate_frame(self)
        return self


def validate_frame(frame: RGBDFrame) -> None:
    rgb, depth = frame.rgb, frame.depth
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FrameError(f"rgb must be uint8 (H, W, 3), got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype != np.float32:
        raise FrameError(f"depth must be float32 (H, W) metres, got {getattr(depth, 'dtype', type(depth))} {getattr(depth, 'shape', '')}")
    if rgb.shape[:2] != depth.shape:
        raise FrameError(f"rgb {rgb.shape[:2]} and depth {depth.shape} sizes differ")
    if depth.size == 0:
        raise FrameError("empty image")
    K = np.asarray(frame.K)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise FrameError(f"intrinsics must be a finite 3x3 with positive focal lengths, got {K.tolist()}")
    T = np.asarray(frame.T_world_cam)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise FrameError("pose must be a finite 4x4 camera-to-world matrix")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise FrameError("pose rotation is not orthonormal (a non-unit quaternion?)")
    if frame.gt_instances is not None and frame.gt_instances.shape != depth.shape:
        raise FrameError(f"instance image {frame.gt_instances.shape} and depth {depth.shape} sizes differ")
    if not np.any(np.isfinite(depth) & (depth > 0)):
        raise FrameError("depth has no valid reading (all zero / NaN / inf)")
