"""Tiny ScanNet++ release trees in the real on-disk format, for the converter tests.

``build_release(root, scene_ids)`` writes ``root/splits``, ``root/metadata/semantic_benchmark`` and one scene per
id under ``root/data/<id>/`` with the release's file names and containers (names as in the toolkit's
common/scene_release.py):

- ``scans/``: ``mesh_aligned_0.05.ply`` (binary PLY, vertex x y z red green blue, triangle faces),
  ``mesh_aligned_0.05_mask.txt`` (anonymised vertex ids), ``segments.json`` (identity ``segIndices``, as the
  current release), ``segments_anno.json`` (segGroups with id, objectId, label, segments, obb).
- ``dslr/``: fisheye ``resized_images/DSC*.JPG`` (OPENCV_FISHEYE, nonzero k1..k4), ``resized_anon_masks/*.png``
  (255 keep / 0 anonymised), ``colmap/{cameras,images,points3D}.txt`` (images.txt world-to-camera),
  ``nerfstudio/transforms.json`` (nerfstudio axes, ``is_bad``, ``mask_path``, ``test_frames``),
  ``train_test_lists.json``.
- ``iphone/``: ``rgb.mkv`` and ``rgb_mask.mkv`` (FFV1 in Matroska, decode order = frame number), ``depth.bin``
  (per frame: 4-byte little-endian length + LZ4 block of 256x192 uint16 mm), ``pose_intrinsic_imu.json``
  (``aligned_pose`` camera-to-world in the mesh frame; ``pose`` in a different, ARKit-like world),
  ``colmap/`` (OPENCV camera, a subset of frames).

Sizes are reduced (DSLR 240x160 instead of 1752x1168, video 320x240 instead of 1920x1440; depth keeps its real
256x192). The scene: a 4 x 3 x 2.5 m room (two wall instances, floor, ceiling), a bed whose top carries a pillow
(group listed before the bed) and a blanket (listed after it) -- both subsets of the bed group, so neither file
order rule but only "smallest group wins" labels them -- an office chair and books (remapped for top100), a power
socket (mapped to None), an exit sign painted on a wall (absent from map_benchmark.csv, overlapping the wall), an
unannotated box, and an anonymised poster region on a wall (in the mesh mask and in the image masks). One
DSLR image is flagged ``is_bad``; one DSLR image and one iPhone frame carry an extra anonymised image region
(a 3D box, ``BLUR_BOX``) that the mesh mask does not have.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import lz4.block
import numpy as np

from camfusion_ros.core.ply import write_ply
from camfusion_ros.datasets.render import MeshRaycaster

DSLR_W, DSLR_H = 240, 160
DSLR_PARAMS = (104.0, 105.0, 119.2, 80.6, 0.035, -0.012, 0.004, -0.0008)   # fx fy cx cy k1 k2 k3 k4
VIDEO_W, VIDEO_H = 320, 240
IPHONE_K = np.array([[250.0, 0, 159.5], [0, 251.0, 119.5], [0, 0, 1]])
DEPTH_W, DEPTH_H = 256, 192
BLUR_BOX = (np.array([2.15, 0.1, 0.3]), np.array([2.65, 1.7, 0.7]))   # on the blanket: masked in one image/frame

TOP100 = ["wall", "floor", "ceiling", "bed", "blanket", "pillow", "chair", "book", "table", "door"]
TOP100_INSTANCE = ["bed", "blanket", "pillow", "chair", "book", "table", "door"]
MAP_BENCHMARK = [("wall", 500, "", ""), ("floor", 400, "", ""), ("ceiling", 300, "", ""), ("bed", 50, "", ""),
                 ("blanket", 40, "", ""), ("pillow", 80, "", ""), ("office chair", 60, "chair", "chair"),
                 ("books", 70, "book", "book"), ("power socket", 90, "None", "None"), ("table", 30, "", ""),
                 ("shelf", 20, "", "")]   # "exit sign" is deliberately absent
TO_TOP100 = {"wall": "wall", "floor": "floor", "ceiling": "ceiling", "bed": "bed", "blanket": "blanket",
             "pillow": "pillow", "office chair": "chair", "books": "book"}          # anything else: ignored

COLOURS = {None: (128, 128, 128), "wall": (200, 200, 60), "floor": (60, 60, 200), "ceiling": (230, 230, 230),
           "bed": (200, 40, 40), "pillow": (40, 200, 40), "blanket": (40, 200, 200), "office chair": (200, 40, 200),
           "books": (250, 140, 20), "power socket": (20, 20, 20), "exit sign": (120, 250, 120),
           "anonymised": (90, 50, 20)}


@dataclass
class Scene:
    root: Path
    scene_id: str
    vertices: np.ndarray
    faces: np.ndarray
    raw_label: list                      # per vertex: expected raw label (smallest group) or None
    object_id: np.ndarray                # per vertex: expected objectId (raw vocabulary), 0 = none
    anonymised: np.ndarray               # per vertex
    top100_object: np.ndarray            # per vertex: expected objectId under top100, 0 = none
    dslr_poses: dict = field(default_factory=dict)     # image name -> camera-to-world (kept images only)
    dslr_bad: list = field(default_factory=list)
    iphone_poses: dict = field(default_factory=dict)   # frame number -> aligned camera-to-world
    iphone_depth_mm: dict = field(default_factory=dict)
    object_raw_label: dict = field(default_factory=dict)   # objectId -> raw label

    @property
    def scene_dir(self) -> Path:
        return self.root / "data" / self.scene_id

    def face_label(self, vocabulary: str = "raw") -> list:
        """Expected class name per triangle (its first vertex; anonymised triangles: None)."""
        anon_face = self.anonymised[self.faces].any(axis=1)
        out = []
        for f, a in zip(self.faces[:, 0], anon_face):
            if a:
                out.append(None)
            elif vocabulary == "raw":
                out.append(self.raw_label[f])
            else:
                oid = int(self.top100_object[f])
                out.append(TO_TOP100[self.object_raw_label[oid]] if oid else None)
        return out


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    f = target - eye
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, np.cross(f, x), f, eye
    return T


class _Mesh:
    def __init__(self) -> None:
        self.v, self.f, self.tags = [], [], []

    def rect(self, origin, u, v, step=0.1, tag=None) -> np.ndarray:
        """A grid of triangles spanning origin + [0,1]u + [0,1]v; returns its vertex ids."""
        origin, u, v = (np.asarray(a, float) for a in (origin, u, v))
        nu = max(1, int(round(np.linalg.norm(u) / step)))
        nv = max(1, int(round(np.linalg.norm(v) / step)))
        base = sum(len(a) for a in self.v)
        a, b = np.meshgrid(np.arange(nu + 1) / nu, np.arange(nv + 1) / nv, indexing="ij")
        pts = origin + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
        idx = lambda i, j: base + i * (nv + 1) + j  # noqa: E731
        tris = []
        for i in range(nu):
            for j in range(nv):
                tris += [(idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i, j + 1))]
        self.v.append(pts)
        self.f.append(np.array(tris))
        return np.arange(base, base + len(pts))

    def box(self, lo, hi, step=0.1) -> dict:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        dx, dy, dz = np.diag(hi - lo)
        return {"bottom": self.rect(lo, dx, dy, step), "top": self.rect(lo + dz, dx, dy, step),
                "front": self.rect(lo, dx, dz, step), "back": self.rect(lo + dy, dx, dz, step),
                "left": self.rect(lo, dy, dz, step), "right": self.rect(lo + dx, dy, dz, step)}

    def arrays(self):
        return np.concatenate(self.v), np.concatenate(self.f)


def _geometry():
    m = _Mesh()
    floor = m.rect([0, 0, 0], [4, 0, 0], [0, 3, 0])
    ceiling = m.rect([0, 0, 2.5], [4, 0, 0], [0, 3, 0], step=0.2)
    wall_y0 = m.rect([0, 0, 0], [4, 0, 0], [0, 0, 2.5])
    wall_x0 = m.rect([0, 0, 0], [0, 3, 0], [0, 0, 2.5])
    wall_y3 = m.rect([0, 3, 0], [4, 0, 0], [0, 0, 2.5])
    wall_x4 = m.rect([4, 0, 0], [0, 3, 0], [0, 0, 2.5])
    bed = m.box([1.0, 0.2, 0.0], [3.0, 1.6, 0.5])
    chair = m.box([3.2, 2.1, 0.0], [3.7, 2.7, 0.9])
    books = m.box([0.2, 2.4, 0.0], [0.7, 2.9, 0.3], step=0.05)
    socket = m.box([3.0, 0.0, 0.3], [3.25, 0.06, 0.45], step=0.05)
    unannotated = m.box([2.4, 2.5, 0.0], [3.0, 2.95, 0.4])
    V, F = m.arrays()
    bed_all = np.concatenate(list(bed.values()))
    top = bed["top"]
    pillow = top[V[top, 0] <= 1.4 + 1e-9]
    blanket = top[V[top, 0] >= 2.0 - 1e-9]
    wy3 = V[wall_y3]
    exit_sign = wall_y3[(wy3[:, 0] >= 1.5 - 1e-9) & (wy3[:, 0] <= 2.1 + 1e-9) & (wy3[:, 2] >= 1.9 - 1e-9)
                        & (wy3[:, 2] <= 2.2 + 1e-9)]
    wx4 = V[wall_x4]
    poster = wall_x4[(wx4[:, 1] >= 1.0 - 1e-9) & (wx4[:, 1] <= 2.0 + 1e-9) & (wx4[:, 2] >= 1.0 - 1e-9)
                     & (wx4[:, 2] <= 1.8 + 1e-9)]
    # segGroups in file order: (objectId, label, vertex ids)
    groups = [(1, "wall", np.concatenate([wall_y0, wall_x0])), (2, "wall", np.concatenate([wall_y3, wall_x4])),
              (3, "floor", floor), (4, "ceiling", ceiling), (5, "pillow", pillow), (6, "bed", bed_all),
              (7, "blanket", blanket), (8, "office chair", np.concatenate(list(chair.values()))),
              (9, "books", np.concatenate(list(books.values()))),
              (10, "power socket", np.concatenate(list(socket.values()))), (11, "exit sign", exit_sign)]
    del unannotated
    return V, F, groups, poster


def _expected(n: int, groups, keep) -> np.ndarray:
    """Smallest kept group per vertex (ties: earlier group), written out plainly (no shared code with the converter)."""
    best = np.zeros(n, np.int64)
    size = np.full(n, np.inf)
    for oid, label, ids in groups:
        if not keep(label):
            continue
        members = np.unique(ids)
        for i in members:
            if len(members) < size[i]:
                best[i], size[i] = oid, len(members)
    return best


def _world_rays_colour(caster, colours_per_face, K, T, w, h, dirs=None):
    """Flat per-triangle colours and hit points seen by a pinhole camera (or given camera-frame ray dirs)."""
    if dirs is None:
        depth, face = caster.cast(K, T, w, h)
        cols, rows = np.meshgrid(np.arange(w), np.arange(h))
        cam = np.stack([(cols - K[0, 2]) / K[0, 0] * depth, (rows - K[1, 2]) / K[1, 1] * depth, depth], -1)
    else:
        depth, face = _cast_dirs(caster, dirs, T)
        cam = dirs * depth[..., None]
    pts = cam @ T[:3, :3].T + T[:3, 3]
    img = np.where(face[..., None] >= 0, colours_per_face[np.maximum(face, 0)], 0).astype(np.uint8)
    return img, face, pts, depth


def _cast_dirs(caster, dirs, T):
    """Ray cast along camera-frame directions (x, y, 1): depth along z and triangle ids."""
    h, w = dirs.shape[:2]
    d = dirs.reshape(-1, 3) @ T[:3, :3].T
    norm = np.linalg.norm(dirs.reshape(-1, 3), axis=1)
    t, face = caster.cast_rays(T[:3, 3], d / norm[:, None])
    depth = np.where(face >= 0, t / norm, 0.0)           # the ray (x, y, 1) reaches depth z = t / |(x, y, 1)|
    return depth.reshape(h, w), face.reshape(h, w)


def fisheye_dirs(w=DSLR_W, h=DSLR_H, params=DSLR_PARAMS) -> np.ndarray:
    """Camera-frame ray (x, y, 1) of every pixel of the OPENCV_FISHEYE image."""
    fx, fy, cx, cy, *k = params
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([cols, rows], -1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    und = cv2.fisheye.undistortPoints(pix, K, np.array(k, float), criteria=crit).reshape(h, w, 2)
    return np.concatenate([und, np.ones((h, w, 1))], -1)


def _in_box(pts, box) -> np.ndarray:
    lo, hi = box
    return np.all((pts >= lo) & (pts <= hi), axis=-1)


def _quat_wxyz(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return q if q[0] >= 0 else -q


def _colmap_images_txt(entries) -> str:
    """entries: (image id, camera-to-world, name); COLMAP stores world-to-camera."""
    out = ["# Image list with two lines of data per image:",
           "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)",
           f"# Number of images: {len(entries)}, mean observations per image: 1"]
    for k, (iid, T, name) in enumerate(entries):
        R = T[:3, :3].T
        t = -R @ T[:3, 3]
        q = _quat_wxyz(R)
        out.append(f"{iid} " + " ".join(f"{x:.12f}" for x in (*q, *t)) + f" 1 {name}")
        out.append("12.5 33.25 -1 40.0 41.5 7" if k == 0 else "")       # 2D points (often empty)
    return "\n".join(out) + "\n"


def _nerfstudio(T: np.ndarray) -> list:
    """The toolkit's colmap -> nerfstudio conversion (OpenGL camera axes, swapped world): never the mesh frame."""
    c2w = T.copy()
    c2w[0:3, 1:3] *= -1
    c2w = c2w[np.array([1, 0, 2, 3]), :]
    c2w[2, :] *= -1
    return c2w.tolist()


def _write_video(path: Path, frames, fps=60.0) -> None:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert vw.isOpened(), "OpenCV cannot write FFV1/Matroska here"
    for f in frames:
        vw.write(np.ascontiguousarray(f))
    vw.release()


def build_scene(root: Path, scene_id: str) -> Scene:
    V, F, groups, poster = _geometry()
    n = len(V)
    anonymised = np.zeros(n, bool)
    anonymised[poster] = True
    raw_obj = _expected(n, groups, lambda lab: True)
    top_obj = _expected(n, groups, lambda lab: lab in TO_TOP100)
    raw_obj[anonymised] = 0
    top_obj[anonymised] = 0
    label_of = {oid: lab for oid, lab, _ in groups}
    raw_label = [label_of[o] if o else None for o in raw_obj]
    scene = Scene(root, scene_id, V, F, raw_label, raw_obj, anonymised, top_obj, object_raw_label=label_of)
    d = scene.scene_dir
    scans = d / "scans"
    scans.mkdir(parents=True)
    vcol = np.array([COLOURS["anonymised"] if a else COLOURS[lab] for lab, a in zip(raw_label, anonymised)], np.uint8)
    write_ply(scans / "mesh_aligned_0.05.ply", {"x": V[:, 0].astype(np.float32), "y": V[:, 1].astype(np.float32),
                                                "z": V[:, 2].astype(np.float32), "red": vcol[:, 0],
                                                "green": vcol[:, 1], "blue": vcol[:, 2]}, faces=F)
    (scans / "mesh_aligned_0.05_mask.txt").write_text("\n".join(str(i) for i in poster) + "\n")
    (scans / "segments.json").write_text(json.dumps({"sceneId": scene_id, "segIndices": list(range(n))}))
    seg_groups = []
    for oid, label, ids in groups:
        p = V[ids]
        c, ext = (p.max(0) + p.min(0)) / 2, p.max(0) - p.min(0)
        seg_groups.append({"id": oid, "objectId": oid, "label": label, "segments": [int(i) for i in ids],
                           "obb": {"centroid": c.tolist(), "axesLengths": ext.tolist(),
                                   "normalizedAxes": np.eye(3).ravel().tolist()}})
    (scans / "segments_anno.json").write_text(json.dumps({"sceneId": f"scannetpp_{scene_id}", "segGroups": seg_groups}))

    caster = MeshRaycaster(V, F)
    face_colour = vcol[F[:, 0]]
    _dslr(scene, caster, face_colour)
    _iphone(scene, caster, face_colour)
    return scene


def _dslr(scene: Scene, caster, face_colour) -> None:
    d = scene.scene_dir / "dslr"
    for sub in ("resized_images", "resized_anon_masks", "colmap", "nerfstudio"):
        (d / sub).mkdir(parents=True)
    views = [("DSC00001.JPG", [0.4, 0.4, 1.7], [2.0, 0.9, 0.4]), ("DSC00002.JPG", [3.7, 0.3, 1.6], [1.8, 1.2, 0.5]),
             ("DSC00003.JPG", [2.0, 1.5, 2.2], [2.0, 1.4, 0.0]), ("DSC00004.JPG", [2.0, 0.5, 1.4], [1.8, 3.0, 1.9]),
             ("DSC00005.JPG", [2.0, 2.7, 1.5], [3.9, 1.5, 1.3])]
    bad, test = {"DSC00003.JPG"}, {"DSC00005.JPG"}
    dirs = fisheye_dirs()
    anon_face = scene.anonymised[scene.faces].any(axis=1)
    entries, frames, test_frames = [], [], []
    for k, (name, eye, target) in enumerate(views):
        T = look_at(eye, target)
        img, face, pts, _ = _world_rays_colour(caster, face_colour, None, T, DSLR_W, DSLR_H, dirs)
        anon = (face >= 0) & anon_face[np.maximum(face, 0)]
        if k == 0:
            anon |= (face >= 0) & _in_box(pts, BLUR_BOX)
        mask = np.where(cv2.dilate(anon.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, 0, 255).astype(np.uint8)
        cv2.imwrite(str(d / "resized_images" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(d / "resized_anon_masks" / name.replace(".JPG", ".png")), mask)
        entries.append((k + 1, T, name))
        fr = {"file_path": name, "transform_matrix": _nerfstudio(T), "mask_path": name.replace(".JPG", ".png"),
              "is_bad": name in bad}
        (test_frames if name in test else frames).append(fr)
        if name in bad:
            scene.dslr_bad.append(name)
        else:
            scene.dslr_poses[name] = T
    fx, fy, cx, cy, k1, k2, k3, k4 = DSLR_PARAMS
    (d / "colmap" / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n1 OPENCV_FISHEYE {DSLR_W} {DSLR_H} {fx} {fy} {cx} {cy} {k1} {k2} {k3} {k4}\n")
    # COLMAP lists images by id, not by name: write them out of name order
    (d / "colmap" / "images.txt").write_text(_colmap_images_txt(entries[2:] + entries[:2]))
    (d / "colmap" / "points3D.txt").write_text(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
        "# Number of points: 1, mean track length: 1\n7 1.0 1.0 0.5 200 40 40 0.5 1 1\n")
    (d / "nerfstudio" / "transforms.json").write_text(json.dumps({
        "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": DSLR_W, "h": DSLR_H, "k1": k1, "k2": k2, "k3": k3, "k4": k4,
        "camera_model": "OPENCV_FISHEYE", "frames": frames, "test_frames": test_frames}, indent=4))
    (d / "train_test_lists.json").write_text(json.dumps({"train": [f["file_path"] for f in frames],
                                                         "test": [f["file_path"] for f in test_frames]}))


ARKIT_TO_MESH = np.array([[np.cos(1.2), -np.sin(1.2), 0, 2.5], [np.sin(1.2), np.cos(1.2), 0, -3.0], [0, 0, 1, 1.0],
                          [0, 0, 0, 1]])    # aligned_pose = ARKIT_TO_MESH @ pose


def _iphone(scene: Scene, caster, face_colour, n_frames: int = 6) -> None:
    d = scene.scene_dir / "iphone"
    (d / "colmap").mkdir(parents=True)
    s = DEPTH_W / VIDEO_W
    Kd = IPHONE_K.copy()
    Kd[:2, :2] *= s
    Kd[:2, 2] = (IPHONE_K[:2, 2] + 0.5) * s - 0.5
    anon_face = scene.anonymised[scene.faces].any(axis=1)
    rgb_frames, mask_frames, records, meta = [], [], [], {}
    for i in range(n_frames):
        th = 0.25 * i
        T = look_at([0.5 + 0.15 * i, 0.4 + 0.05 * i, 1.6], [2.0 + np.cos(th), 1.0 + 0.5 * np.sin(th), 0.4 + 0.1 * i])
        img, face, pts, _ = _world_rays_colour(caster, face_colour, IPHONE_K, T, VIDEO_W, VIDEO_H)
        anon = (face >= 0) & anon_face[np.maximum(face, 0)]
        if i == 2:
            anon |= (face >= 0) & _in_box(pts, BLUR_BOX)
        mask = np.where(cv2.dilate(anon.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, 0, 255).astype(np.uint8)
        depth, _ = caster.cast(Kd, T, DEPTH_W, DEPTH_H)
        mm = np.clip(np.rint(depth * 1000), 0, 65535).astype(np.uint16)
        rgb_frames.append(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        mask_frames.append(cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR))
        records.append(lz4.block.compress(mm.astype("<u2").tobytes(), store_size=False))
        scene.iphone_poses[i] = T
        scene.iphone_depth_mm[i] = mm
        meta[f"frame_{i:06d}"] = {
            "timestamp": 1000.0 + i / 60.0, "intrinsic": IPHONE_K.tolist(),
            "pose": (np.linalg.inv(ARKIT_TO_MESH) @ T).tolist(), "aligned_pose": T.tolist(),
            "imu": {"rotate_rate": [0.01, -0.02, 0.0], "acceleration": [0.0, 0.0, 0.0], "gravity": [0.0, -9.81, 0.0]}}
    _write_video(d / "rgb.mkv", rgb_frames)
    _write_video(d / "rgb_mask.mkv", mask_frames)
    with open(d / "depth.bin", "wb") as f:
        for r in records:
            f.write(struct.pack("<I", len(r)) + r)
    (d / "pose_intrinsic_imu.json").write_text(json.dumps(meta, indent=1))
    (d / "colmap" / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        f"# Number of cameras: 1\n1 OPENCV {VIDEO_W} {VIDEO_H} 250.0 251.0 159.5 119.5 0.0 0.0 0.0 0.0\n")
    (d / "colmap" / "images.txt").write_text(
        _colmap_images_txt([(k + 1, scene.iphone_poses[i], f"frame_{i:06d}.jpg") for k, i in enumerate((0, 3))]))
    (d / "colmap" / "points3D.txt").write_text("# 3D point list with one line of data per point:\n")


def build_release(root: Path, scene_ids=("0a1b2c3d4e",), split: str = "nvs_sem_train") -> dict[str, Scene]:
    """A release root with ``scene_ids`` (the first is built, the others are copies of it) and a split file."""
    import shutil

    (root / "splits").mkdir(parents=True)
    (root / "splits" / f"{split}.txt").write_text("\n".join(scene_ids) + "\n")
    bench = root / "metadata" / "semantic_benchmark"
    bench.mkdir(parents=True)
    (bench / "top100.txt").write_text("\n".join(TOP100) + "\n")
    (bench / "top100_instance.txt").write_text("\n".join(TOP100_INSTANCE) + "\n")
    (bench / "map_benchmark.csv").write_text("class,count,semantic_map_to,instance_map_to\n" + "".join(
        f"{c},{n},{s},{i}\n" for c, n, s, i in MAP_BENCHMARK))
    (root / "metadata" / "semantic_classes.txt").write_text("\n".join(TOP100) + "\n")
    (root / "metadata" / "instance_classes.txt").write_text("\n".join(TOP100_INSTANCE) + "\n")
    first = build_scene(root, scene_ids[0])
    scenes = {scene_ids[0]: first}
    for sid in scene_ids[1:]:
        shutil.copytree(first.scene_dir, root / "data" / sid)
        scenes[sid] = Scene(**{**first.__dict__, "scene_id": sid})
    return scenes
