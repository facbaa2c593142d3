"""Pinhole projection, back-projection and voxel downsampling (OpenCV camera axes)."""
from __future__ import annotations

import numpy as np


def backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None, stride: int = 1):
    """Camera-frame points of valid depth pixels.

    Returns (points (N, 3) float64, pixel rows (N,), pixel cols (N,)).
    """
    d = depth[::stride, ::stride]
    rows, cols = np.nonzero(np.isfinite(d) & (d > 0) & (mask[::stride, ::stride] if mask is not None else True))
    z = d[rows, cols].astype(np.float64)
    rows = rows * stride
    cols = cols * stride
    x = (cols - K[0, 2]) * z / K[0, 0]
    y = (rows - K[1, 2]) * z / K[1, 1]
    return np.stack([x, y, z], axis=1), rows, cols


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


def project(points_world: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray):
    """Project world points into the camera.

    Returns (u (N,) float, v (N,) float, z (N,) camera depth). Points behind the
    camera get z <= 0; callers filter on z and the image bounds.
    """
    T_cam_world = invert_pose(T_world_cam)
    pc = transform(points_world, T_cam_world)
    z = pc[:, 2]
    safe = np.where(np.abs(z) > 1e-9, z, 1e-9)
    u = K[0, 0] * pc[:, 0] / safe + K[0, 2]
    v = K[1, 1] * pc[:, 1] / safe + K[1, 2]
    return u, v, z


def invert_pose(T: np.ndarray) -> np.ndarray:
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """Integer voxel coordinates packed into one int64 per point (±2^20 voxels per axis)."""
    q = np.floor(points / voxel).astype(np.int64) + (1 << 20)
    return (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]


def voxel_downsample(points: np.ndarray, voxel: float, *extra: np.ndarray):
    """Keep one point per voxel (the first); extra per-point arrays are filtered alike."""
    if len(points) == 0:
        return (points, *extra) if extra else points
    _, idx = np.unique(voxel_keys(points, voxel), return_index=True)
    idx.sort()
    if extra:
        return (points[idx], *(e[idx] for e in extra))
    return points[idx]


def quaternion_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Rotation matrix of a unit quaternion; raises ValueError for a non-unit or non-finite one."""
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.all(np.isfinite(q)) or abs(n - 1.0) > 1e-3:
        raise ValueError(f"quaternion {q.tolist()} is not a finite unit quaternion (norm {n:.4f})")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def pose_matrix(position: tuple[float, float, float], quaternion: tuple[float, float, float, float]) -> np.ndarray:
    """4x4 from a translation and an (x, y, z, w) quaternion; ValueError if either is unusable."""
    t = np.asarray(position, dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"position {t.tolist()} is not finite")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(*quaternion)
    T[:3, 3] = t
    return T


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """(qx, qy, qz, qw) of a rotation matrix (scipy does the numerics)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return float(x), float(y), float(z), float(w)
