"""Binary PLY point clouds and meshes with arbitrary per-vertex scalar properties.

PLY is what other tools (CloudCompare, MeshLab, Open3D, the ScanNet scripts)
open, so ground truth and maps are stored as PLY. ``plyfile`` does the format;
this module only maps it to plain ``{name: array}`` dicts and turns its many
failure modes into one readable ``PlyError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from plyfile import PlyData, PlyElement

__all__ = ["PlyError", "write_ply", "read_ply"]


class PlyError(ValueError):
    """A PLY file that cannot be read or written; the message says why."""


def write_ply(path: str | Path, fields: Mapping[str, np.ndarray], faces: np.ndarray | None = None) -> Path:
    """Write per-vertex scalar fields (dtype preserved) and optional triangle/polygon faces."""
    path = Path(path)
    if not fields:
        raise PlyError("write_ply needs at least one vertex field")
    arrays = {k: np.asarray(v) for k, v in fields.items()}
    n = {a.shape for a in arrays.values()}
    if len(n) != 1 or len(next(iter(n))) != 1:
        shapes = {k: a.shape for k, a in arrays.items()}
        raise PlyError(f"vertex fields must be 1-D arrays of one length, got {shapes}")
    count = len(next(iter(arrays.values())))
    vertex = np.empty(count, dtype=[(k, a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype) for k, a in arrays.items()])
    for k, a in arrays.items():
        vertex[k] = a
    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int32)
        if faces.ndim != 2:
            raise PlyError(f"faces must be (F, n) vertex indices, got shape {faces.shape}")
        face = np.empty(len(faces), dtype=[("vertex_indices", np.int32, (faces.shape[1],))])
        face["vertex_indices"] = faces
        elements.append(PlyElement.describe(face, "face"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    PlyData(elements, text=False).write(str(tmp))
    tmp.replace(path)
    return path


def read_ply(path: str | Path, faces: bool = False) -> dict[str, np.ndarray]:
    """Vertex properties by name; with ``faces=True`` also ``"faces"`` as (F, n) int64 (ragged polygons are triangulated as fans)."""
    path = Path(path)
    if not path.is_file():
        raise PlyError(f"PLY file not found: {path}")
    check_header_fits(path)
    try:
        ply = _read(path, faces)
        if "vertex" not in ply:
            raise PlyError(f"{path} has no 'vertex' element (elements: {[e.name for e in ply.elements]})")
        vdata = ply["vertex"].data
        out = {name: np.asarray(vdata[name]).copy() for name in vdata.dtype.names}
        if faces:
            out["faces"] = _faces(ply, path)
        del ply, vdata
    except PlyError:
        raise
    except Exception as exc:  # plyfile raises many types for damaged files
        raise PlyError(f"cannot read PLY {path}: {type(exc).__name__}: {exc}") from None
    return out


_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
          "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
MAX_HEADER_BYTES = 1 << 16


def check_header_fits(path: Path) -> None:
    """Refuse a header whose element counts cannot fit in the file, before anything is allocated.

    plyfile sizes its arrays from the header's counts, so a damaged or hostile header claiming 10^9 rows would
    allocate gigabytes (object arrays for face lists are filled at once) before finding the end of the file. Each
    row needs at least its fixed binary size (a list: its count field), or two characters per value in ASCII."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return                                   # not a PLY header we can read: plyfile's own error says why
    body = size - (head.index(b"\n", end) + 1 if b"\n" in head[end:] else size)
    ascii_ = False
    need, rows, per_row, name = 0, 0, 0, ""
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["format"]:
            ascii_ = words[1:2] == ["ascii"]
        elif words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
            need += rows * per_row
            name, rows, per_row = words[1], int(words[2]), 0
        elif words[:2] == ["property", "list"] and len(words) >= 5:
            per_row += 2 if ascii_ else _SIZES.get(words[2], 1)
        elif words[:1] == ["property"] and len(words) >= 3:
            per_row += 2 if ascii_ else _SIZES.get(words[1], 1)
        if rows * per_row > body or need > body:
            raise PlyError(f"{path}: the header claims {rows} '{name}' rows (at least {rows * per_row} bytes) but "
                           f"the file holds {body} bytes after it: truncated or corrupt")
    if need + rows * per_row > body:
        raise PlyError(f"{path}: the header's elements need at least {need + rows * per_row} bytes but the file "
                       f"holds {body} after it: truncated or corrupt")


def _read(path: Path, faces: bool) -> PlyData:
    """Memory-mapped read (the copy-free fast path; plyfile checks the size first, so truncation is caught).

    Callers copy what they keep, so no mapping outlives ``read_ply``. Triangle
    meshes are tried with a known list length (mappable); other meshes fall back
    to plyfile's general reader.
    """
    if faces:
        for name in ("vertex_indices", "vertex_index"):
            try:
                return PlyData.read(str(path), known_list_len={"face": {name: 3}})
            except Exception:
                continue
    return PlyData.read(str(path))


def _faces(ply: PlyData, path: Path) -> np.ndarray:
    if "face" not in ply:
        raise PlyError(f"{path} has no 'face' element")
    fdata = ply["face"].data
    name = "vertex_indices" if "vertex_indices" in fdata.dtype.names else "vertex_index"
    polys = fdata[name]
    if len(polys) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if polys.dtype != object and polys.ndim == 2:
        arr = polys.astype(np.int64)
    else:
        lengths = {len(p) for p in polys}
        if len(lengths) == 1:
            arr = np.stack([np.asarray(p, dtype=np.int64) for p in polys])
        else:  # mixed polygons: fan-triangulate each
            tris = [(p[0], p[i], p[i + 1]) for p in polys for i in range(1, len(p) - 1)]
            return np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    return arr
