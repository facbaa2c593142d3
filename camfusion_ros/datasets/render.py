"""Ray-cast RGB-D renderer for synthetic scenes (trimesh + Embree).

Why Embree through trimesh: it is a real, well-kept CPU ray tracer, needs no
GPU, display or OpenGL context (pyrender needs OSMesa/EGL, Open3D's wheel is
large and not in this venv), and a ray cast answers depth *and* the hit
triangle in one query, so per-pixel instance ids are exact (triangle ->
instance) rather than a colour-coded second render. Embree finds the triangle
(float32); the hit point is then recomputed in float64 on that triangle's
plane, so depth is exact to well under a millimetre.
"""
from __future__ import annotations

import numpy as np

from camfusion_ros.datasets.scene import Scene

__all__ = ["EmbreeRenderer", "MeshRaycaster", "RendererError", "intrinsics"]


class RendererError(RuntimeError):
    """The ray-casting backend is not available."""


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K with square pixels and the principal point at the image centre."""
    f = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


class EmbreeRenderer:
    def __init__(self, scene: Scene) -> None:
        try:
            from trimesh.ray.ray_pyembree import RayMeshIntersector
        except ImportError as exc:  # pragma: no cover - embreex is a declared dependency
            raise RendererError(f"Embree ray casting is unavailable (pip package 'embreex'): {exc}") from None
        self.scene = scene
        self.mesh = scene.mesh
        self._ray = RayMeshIntersector(self.mesh)
        self._normals = np.asarray(self.mesh.face_normals, dtype=np.float64)
        self._v0 = np.asarray(self.mesh.vertices, dtype=np.float64)[self.mesh.faces[:, 0]]
        light = np.array([0.3, 0.2, 1.0])
        self._light = light / np.linalg.norm(light)

    def render(self, K: np.ndarray, T_world_cam: np.ndarray, width: int, height: int):
        """(rgb uint8 (H,W,3), depth float32 (H,W) metres along the optical axis, instance int32 (H,W))."""
        cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        d_cam = np.stack([(cols.ravel() - K[0, 2]) / K[0, 0], (rows.ravel() - K[1, 2]) / K[1, 1],
                          np.ones(width * height)], axis=1)
        R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
        d = d_cam @ R.T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        origins = np.broadcast_to(o, d.shape)
        tri = np.asarray(self._ray.intersects_first(origins, d), dtype=np.int64)
        hit = tri >= 0
        n = self._normals[tri[hit]]
        dh = d[hit]
        denom = np.einsum("ij,ij->i", n, dh)
        t = np.einsum("ij,ij->i", n, self._v0[tri[hit]] - o) / np.where(np.abs(denom) > 1e-12, denom, np.nan)
        ok = np.isfinite(t) & (t > 0)
        idx = np.flatnonzero(hit)[ok]
        t, n, dh, tri_ok = t[ok], n[ok], dh[ok], tri[hit][ok]
        depth = np.zeros(width * height, np.float32)
        depth[idx] = (t * (dh @ R[:, 2])).astype(np.float32)
        inst = np.zeros(width * height, np.int32)
        inst[idx] = self.scene.face_instance[tri_ok]
        points = o + dh * t[:, None]
        albedo = self.scene.albedo(points, inst[idx]).astype(np.float64)
        shade = 0.3 + 0.45 * np.abs(np.einsum("ij,ij->i", n, dh)) + 0.25 * np.abs(n @ self._light)
        rgb = np.zeros((width * height, 3), np.uint8)
        rgb[idx] = np.clip(albedo * shade[:, None], 0, 255).astype(np.uint8)
        return rgb.reshape(height, width, 3), depth.reshape(height, width), inst.reshape(height, width)


class MeshRaycaster:
    """Depth and hit-triangle images of any triangle mesh for a pinhole camera (the converters' renderer).

    ``vertices`` (V, 3), ``faces`` (F, 3) vertex indices. ``cast`` returns depth along the optical axis (float32,
    metres, 0 = no surface) and the index of the triangle each pixel sees (int64, -1 = none); pixel (col, row)
    looks through its centre at integer coordinates (OpenCV's convention), as ``EmbreeRenderer`` does.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        try:
            import trimesh
            from trimesh.ray.ray_pyembree import RayMeshIntersector
        except ImportError as exc:  # pragma: no cover - embreex is a declared dependency
            raise RendererError(f"Embree ray casting is unavailable (pip package 'embreex'): {exc}") from None
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        self._ray = RayMeshIntersector(trimesh.Trimesh(vertices, faces, process=False, validate=False))
        v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
        n = np.cross(v1 - v0, v2 - v0)
        self._normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
        self._v0 = v0

    def cast_rays(self, origin: np.ndarray, directions: np.ndarray):
        """Distance along each unit-length ray from ``origin`` (float64, NaN = no hit) and the triangle hit (-1)."""
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        o = np.asarray(origin, dtype=np.float64).reshape(3)
        tri = np.asarray(self._ray.intersects_first(np.broadcast_to(o, d.shape), d), dtype=np.int64)
        hit = np.flatnonzero(tri >= 0)
        n = self._normals[tri[hit]]
        denom = np.einsum("ij,ij->i", n, d[hit])
        with np.errstate(divide="ignore", invalid="ignore"):   # exact hit distance on the triangle's plane
            t_hit = np.einsum("ij,ij->i", n, self._v0[tri[hit]] - o) / np.where(np.abs(denom) > 1e-12, denom, np.nan)
        ok = np.isfinite(t_hit) & (t_hit > 0)
        t = np.full(len(d), np.nan)
        t[hit[ok]] = t_hit[ok]
        face = np.full(len(d), -1, np.int64)
        face[hit[ok]] = tri[hit[ok]]
        return t, face

    def cast(self, K: np.ndarray, T_world_cam: np.ndarray, width: int, height: int):
        """(depth float32 (H, W) metres, face int64 (H, W), -1 where the ray hits nothing)."""
        cols, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        d_cam = np.stack([(cols.ravel() - K[0, 2]) / K[0, 0], (rows.ravel() - K[1, 2]) / K[1, 1],
                          np.ones(width * height)], axis=1)
        T = np.asarray(T_world_cam, dtype=np.float64)
        d = d_cam @ T[:3, :3].T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        t, face = self.cast_rays(T[:3, 3], d)
        depth = np.where(face >= 0, t * (d @ T[:3, 2]), 0.0).astype(np.float32)
        return depth.reshape(height, width), face.reshape(height, width)
