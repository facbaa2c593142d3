"""Procedural indoor scenes: a closed room plus K objects of distinct classes.

The scene is one triangle mesh with per-face instance ids, so a ray cast gives
depth and instance id in one query and the ground truth is sampled from the
very same surface the renderer sees. Appearance is a function of the world
position (base colour per class, variation per instance, a procedural
pattern), shared by the renderer and the ground-truth points.
"""
from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import trimesh

__all__ = ["DEFAULT_CLASSES", "BACKGROUND_CLASSES", "Scene", "SceneError", "build_scene"]

BACKGROUND_CLASSES = ("wall", "floor", "ceiling")
DEFAULT_CLASSES = (
    "chair", "table", "sofa", "bed", "lamp", "plant", "monitor", "bookshelf", "cabinet", "stool",
    "desk", "trash can", "refrigerator", "ottoman", "vase", "armchair", "tv stand", "nightstand",
    "box", "bench",
)


class SceneError(ValueError):
    """The requested scene cannot be built (too many objects, bad class list)."""


def _box(ext, at=(0, 0, 0)):
    m = trimesh.creation.box(extents=ext)
    m.apply_translation(np.asarray(at, float) + [0, 0, ext[2] / 2])
    return m


def _cyl(r, h, at=(0, 0, 0)):
    m = trimesh.creation.cylinder(radius=r, height=h, sections=24)
    m.apply_translation(np.asarray(at, float) + [0, 0, h / 2])
    return m


def _sphere(r, at):
    m = trimesh.creation.icosphere(subdivisions=2, radius=r)
    m.apply_translation(at)
    return m


def _legs(w, d, h, t):
    return [_box((t, t, h), (sx * (w / 2 - t), sy * (d / 2 - t), 0)) for sx in (-1, 1) for sy in (-1, 1)]


# Builders take (w, d, h) (footprint x, y and height) and return parts in local coordinates, base at z=0.
def _table(w, d, h):
    top = 0.05
    return _legs(w, d, h - top, 0.06) + [_box((w, d, top), (0, 0, h - top))]


def _chair(w, d, h):
    seat = 0.45 * h
    return _legs(w, d, seat - 0.05, 0.05) + [_box((w, d, 0.05), (0, 0, seat - 0.05)),
                                             _box((w, 0.05, h - seat), (0, -d / 2 + 0.025, seat))]


def _sofa(w, d, h):
    base = 0.45 * h
    arm = 0.15 * w
    return [_box((w, d, base)), _box((w, 0.2 * d, h - base), (0, -0.4 * d, base)),
            _box((arm, d, 0.3 * h), (-(w - arm) / 2, 0, base)), _box((arm, d, 0.3 * h), ((w - arm) / 2, 0, base))]


def _bed(w, d, h):
    return [_box((w, d, 0.3 * h)), _box((0.95 * w, 0.95 * d, 0.2 * h), (0, 0.02 * d, 0.3 * h)),
            _box((w, 0.06, h), (0, -d / 2 + 0.03, 0))]


def _lamp(w, d, h):
    r = min(w, d) / 2
    return [_cyl(0.6 * r, 0.04), _cyl(0.04, 0.8 * h, (0, 0, 0.04)), _cyl(r, 0.25 * h, (0, 0, 0.75 * h))]


def _plant(w, d, h):
    r = min(w, d) / 2
    return [_cyl(0.6 * r, 0.35 * h), _sphere(r, (0, 0, 0.35 * h + r * 0.9))]


def _vase(w, d, h):
    r = min(w, d) / 2
    return [_cyl(0.6 * r, 0.6 * h), _sphere(r, (0, 0, 0.6 * h + 0.2 * r))]


def _monitor(w, d, h):
    return [_box((0.4 * w, d, 0.03)), _box((0.06, 0.04, 0.5 * h), (0, 0, 0.03)),
            _box((w, 0.05, 0.6 * h), (0, 0.02, 0.4 * h))]


def _bookshelf(w, d, h):
    t = 0.03
    parts = [_box((w, t, h), (0, -d / 2 + t / 2, 0)), _box((t, d, h), (-w / 2 + t / 2, 0, 0)),
             _box((t, d, h), (w / 2 - t / 2, 0, 0))]
    parts += [_box((w - 2 * t, d - t, t), (0, t / 2, z)) for z in np.linspace(0, h - t, 5)]
    return parts


def _cabinet(w, d, h):
    return [_box((w, d, h)), _box((0.8 * w, 0.02, 0.04), (0, d / 2 + 0.01, 0.8 * h))]


def _cylinder(w, d, h):
    return [_cyl(min(w, d) / 2, h)]


def _stool(w, d, h):
    r = min(w, d) / 2
    return [_cyl(0.1 * r + 0.03, h - 0.05), _cyl(r, 0.05, (0, 0, h - 0.05)), _cyl(0.7 * r, 0.03)]


def _plain_box(w, d, h):
    return [_box((w, d, h))]


def _sphere_obj(w, d, h):
    r = min(w, d, h) / 2
    return [_sphere(r, (0, 0, r))]


# class -> (builder, nominal (w, d, h) in metres)
SHAPES: dict[str, tuple[Callable, tuple[float, float, float]]] = {
    "chair": (_chair, (0.5, 0.5, 0.95)), "table": (_table, (1.2, 0.8, 0.75)), "sofa": (_sofa, (1.6, 0.8, 0.85)),
    "bed": (_bed, (1.6, 1.4, 0.9)), "lamp": (_lamp, (0.4, 0.4, 1.5)), "plant": (_plant, (0.5, 0.5, 1.0)),
    "monitor": (_monitor, (0.6, 0.2, 0.5)), "bookshelf": (_bookshelf, (0.9, 0.35, 1.8)),
    "cabinet": (_cabinet, (0.8, 0.5, 0.9)), "stool": (_stool, (0.4, 0.4, 0.65)), "desk": (_table, (1.4, 0.7, 0.75)),
    "trash can": (_cylinder, (0.35, 0.35, 0.5)), "refrigerator": (_cabinet, (0.7, 0.7, 1.8)),
    "ottoman": (_cylinder, (0.6, 0.6, 0.45)), "vase": (_vase, (0.3, 0.3, 0.6)), "armchair": (_sofa, (0.85, 0.8, 0.9)),
    "tv stand": (_cabinet, (1.4, 0.45, 0.5)), "nightstand": (_cabinet, (0.45, 0.4, 0.55)),
    "box": (_plain_box, (0.5, 0.4, 0.4)), "bench": (_table, (1.3, 0.4, 0.45)),
}
_GENERIC = [(_plain_box, (0.6, 0.5, 0.6)), (_cylinder, (0.5, 0.5, 0.7)), (_sphere_obj, (0.6, 0.6, 0.6)),
            (_table, (0.9, 0.6, 0.7)), (_plant, (0.5, 0.5, 0.9))]


def shape_for(name: str):
    """Builder and size of a class; classes without a hand-made shape get a stable generic one."""
    if name in SHAPES:
        return SHAPES[name]
    return _GENERIC[zlib.crc32(name.encode()) % len(_GENERIC)]


@dataclass
class Scene:
    mesh: trimesh.Trimesh
    face_instance: np.ndarray          # (F,) int32 instance id per face, all >= 1
    class_names: list[str]             # label = index into this list
    instance_class: dict[int, int]     # instance id -> class index
    base_color: np.ndarray             # (I+1, 3) float albedo per instance id
    pattern: np.ndarray                # (I+1, 4): frequency, direction azimuth, elevation, amplitude
    room_half: float
    room_height: float
    place_radius: float
    centers: dict[int, np.ndarray] = field(default_factory=dict)  # object instance -> (x, y, z) centre

    def albedo(self, points: np.ndarray, instance: np.ndarray) -> np.ndarray:
        """Surface colour (uint8 (N, 3)) of points on given instances: base colour times a procedural pattern."""
        p = self.pattern[instance]
        f, az, el, amp = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        d = np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], axis=1)
        s = np.einsum("ij,ij->i", points, d) * f
        check = (np.floor(points * f[:, None] * 0.5).sum(axis=1) % 2) * 2 - 1
        tex = 1.0 + amp * (0.6 * np.sin(2 * np.pi * s) + 0.4 * check)
        col = self.base_color[instance] * tex[:, None]
        return np.clip(col * 255.0, 0, 255).astype(np.uint8)


def _class_color(idx: int, n: int) -> np.ndarray:
    h = (idx * 0.61803398875) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, 0.55 + 0.3 * ((idx * 7) % 3) / 2, 0.75))


def build_scene(num_objects: int, classes: Sequence[str], rng: np.random.Generator) -> Scene:
    """Room + ``num_objects`` objects of distinct classes drawn from ``classes``, placed without overlap."""
    classes = [c for c in dict.fromkeys(c.strip() for c in classes) if c and c not in BACKGROUND_CLASSES]
    if num_objects < 0:
        raise SceneError(f"number of objects must be >= 0, got {num_objects}")
    if num_objects > len(classes):
        raise SceneError(f"{num_objects} objects of distinct classes need at least {num_objects} classes, "
                         f"the class list has {len(classes)}")
    names = list(BACKGROUND_CLASSES) + classes
    chosen = [classes[i] for i in rng.choice(len(classes), size=num_objects, replace=False)]
    # Object geometry in local frames, then placement (largest footprint first).
    objs = []
    for cname in chosen:
        builder, size = shape_for(cname)
        w, d, h = (np.asarray(size) * rng.uniform(0.85, 1.15, 3)).tolist()
        yaw = rng.uniform(0, 2 * np.pi)
        local = trimesh.util.concatenate(builder(w, d, h))
        local.apply_transform(trimesh.transformations.rotation_matrix(yaw, (0, 0, 1)))
        objs.append((cname, local))
    order = sorted(range(len(objs)), key=lambda i: -np.prod(np.ptp(objs[i][1].bounds[:, :2], axis=0)))
    area = sum(np.prod(np.ptp(o.bounds[:, :2], axis=0)) for _, o in objs)
    radius = max(1.6, np.sqrt(2.2 * area / np.pi))
    placed = _place([objs[i][1] for i in order], radius, rng)
    while placed is None:
        radius *= 1.1
        placed = _place([objs[i][1] for i in order], radius, rng)
    room_half = radius + 1.5
    room_height = 2.6

    parts, face_inst = [], []
    inst_class: dict[int, int] = {}
    base = [np.zeros(3)]
    pattern = [np.zeros(4)]
    centers: dict[int, np.ndarray] = {}
    L, H = room_half, room_height
    room = [("floor", _quad([-L, -L, 0], [2 * L, 0, 0], [0, 2 * L, 0])),
            ("ceiling", _quad([-L, -L, H], [0, 2 * L, 0], [2 * L, 0, 0])),
            ("wall", _quad([-L, -L, 0], [0, 0, H], [2 * L, 0, 0])), ("wall", _quad([L, -L, 0], [0, 0, H], [0, 2 * L, 0])),
            ("wall", _quad([L, L, 0], [0, 0, H], [-2 * L, 0, 0])), ("wall", _quad([-L, L, 0], [0, 0, H], [0, -2 * L, 0]))]
    bg_color = {"floor": (0.55, 0.42, 0.3), "ceiling": (0.9, 0.9, 0.88), "wall": (0.8, 0.76, 0.68)}
    for cname, mesh in room:
        iid = len(base)
        cid = names.index(cname)
        parts.append(mesh)
        face_inst.append(np.full(len(mesh.faces), iid, np.int32))
        inst_class[iid] = cid
        base.append(np.asarray(bg_color[cname]) * rng.uniform(0.95, 1.05, 3))
        pattern.append([rng.uniform(2, 5), rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3), 0.12])
    for k, i in enumerate(order):
        cname, mesh = objs[i]
        mesh = mesh.copy()
        mesh.apply_translation([placed[k][0], placed[k][1], 0.0])
        iid = len(base)
        cid = names.index(cname)
        parts.append(mesh)
        face_inst.append(np.full(len(mesh.faces), iid, np.int32))
        inst_class[iid] = cid
        base.append(np.clip(_class_color(cid, len(names)) * rng.uniform(0.85, 1.15, 3), 0.05, 1.0))
        pattern.append([rng.uniform(4, 12), rng.uniform(0, 2 * np.pi), rng.uniform(-1.2, 1.2), rng.uniform(0.15, 0.3)])
        centers[iid] = mesh.bounds.mean(axis=0)
    mesh = trimesh.util.concatenate(parts)
    return Scene(mesh=mesh, face_instance=np.concatenate(face_inst), class_names=names, instance_class=inst_class,
                 base_color=np.asarray(base, float), pattern=np.asarray(pattern, float), room_half=L,
                 room_height=H, place_radius=radius, centers=centers)


def _quad(origin, u, v) -> trimesh.Trimesh:
    """A rectangle origin + a*u + b*v, subdivided so no triangle is huge (keeps embree's float32 hits tight)."""
    n = 8
    o, u, v = (np.asarray(x, float) for x in (origin, u, v))
    a, b = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    verts = o + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    q0, q1, q2, q3 = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([q0, q1, q2], 1), np.stack([q0, q2, q3], 1)])
    return trimesh.Trimesh(verts, faces, process=False)


def _place(meshes: list[trimesh.Trimesh], radius: float, rng: np.random.Generator, gap: float = 0.15):
    """Object centres whose footprint boxes lie inside the disc and do not overlap (None if it fails)."""
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for m in meshes:
        lo, hi = m.bounds[0, :2], m.bounds[1, :2]
        for _ in range(300):
            c = rng.uniform(-radius, radius, 2)
            blo, bhi = lo + c, hi + c
            corners = np.array([[blo[0], blo[1]], [blo[0], bhi[1]], [bhi[0], blo[1]], [bhi[0], bhi[1]]])
            if np.any(np.linalg.norm(corners, axis=1) > radius):
                continue
            if any(blo[0] < b[2] + gap and b[0] < bhi[0] + gap and blo[1] < b[3] + gap and b[1] < bhi[1] + gap
                   for b in boxes):
                continue
            boxes.append((blo[0], blo[1], bhi[0], bhi[1]))
            out.append(c)
            break
        else:
            return None
    return out
