"""Descriptor shards: one safetensors file per scene, precomputed once for training.

Tensors: ``class_ids`` int64 (N,), ``descriptors`` float32|float16 (N, V, D),
``view_valid`` uint8 (N, V), ``visibility`` float32 (N, V), optional ``view_source`` int64 (N, V): the
source image (frame index) of each view, so augmented copies of one frame are known as such (absent: every view
is its own source). Metadata:
``class_names`` (JSON list; class_ids index into it), ``model`` (descriptor
model name), ``format``. A data directory holds ``<split>/*.safetensors`` and
``text_embeddings.safetensors`` (``embeddings`` float32 (C, D) + ``class_names``).
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

FORMAT = "camfusion-shard/1"
TEXT_FILE = "text_embeddings.safetensors"


class ShardError(ValueError):
    """A shard or data directory that cannot be read as CAMFusion training data."""


@dataclass
class DescriptorSet:
    """Instances of one split, views padded to a common V."""

    class_ids: np.ndarray  # int64 (N,), index into class_names
    descriptors: np.ndarray  # float16/32 (N, V, D)
    view_valid: np.ndarray  # bool (N, V)
    visibility: np.ndarray  # float32 (N, V)
    class_names: list[str]
    model: str
    view_source: np.ndarray | None = None  # int64 (N, V): the frame a view was cut from; None = all distinct

    def __post_init__(self) -> None:
        if self.view_source is None:
            n, v = self.view_valid.shape
            self.view_source = np.broadcast_to(np.arange(v, dtype=np.int64), (n, v)).copy()

    def __len__(self) -> int:
        return len(self.class_ids)

    @property
    def dim(self) -> int:
        return int(self.descriptors.shape[2])


def _atomic_save(tensors: dict, path: Path, metadata: dict) -> None:
    """Write ``path.<unique>.tmp`` beside it, then rename: readers (and other processes writing the same name)
    never see a half-written file; the tmp name is unique per call, so concurrent writers never share one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))  # umask permissions
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_shard(
    path: str | os.PathLike,
    class_ids: np.ndarray,
    descriptors: np.ndarray,
    view_valid: np.ndarray,
    visibility: np.ndarray,
    class_names: list[str],
    model: str,
    view_source: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """``metadata``: extra string entries stored beside format/class_names/model (which it may not replace)."""
    class_ids = np.asarray(class_ids, np.int64)
    descriptors = np.asarray(descriptors)
    if descriptors.dtype not in (np.float16, np.float32):
        descriptors = descriptors.astype(np.float32)
    n = len(class_ids)
    if descriptors.ndim != 3 or descriptors.shape[0] != n:
        raise ShardError(f"descriptors must be (N={n}, V, D), got {descriptors.shape}")
    view_valid = np.asarray(view_valid, bool)
    visibility = np.asarray(visibility, np.float32)
    if view_valid.shape != descriptors.shape[:2] or visibility.shape != descriptors.shape[:2]:
        raise ShardError(f"view_valid/visibility must be {descriptors.shape[:2]}, got {view_valid.shape}/{visibility.shape}")
    if n and (class_ids.min() < 0 or class_ids.max() >= len(class_names)):
        raise ShardError(f"class_ids outside [0, {len(class_names)})")
    tensors = {
        "class_ids": class_ids,
        "descriptors": np.ascontiguousarray(descriptors),
        "view_valid": view_valid.astype(np.uint8),
        "visibility": visibility,
    }
    if view_source is not None:
        view_source = np.asarray(view_source, np.int64)
        if view_source.shape != descriptors.shape[:2]:
            raise ShardError(f"view_source must be {descriptors.shape[:2]}, got {view_source.shape}")
        tensors["view_source"] = np.ascontiguousarray(view_source)
    extra = {str(k): str(v) for k, v in (metadata or {}).items()}
    if {"format", "class_names", "model"} & set(extra):
        raise ShardError("shard metadata may not replace format, class_names or model")
    path = Path(path)
    _atomic_save(
        tensors,
        path,
        {**extra, "format": FORMAT, "class_names": json.dumps(list(class_names)), "model": str(model)},
    )
    return path


def read_shard_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A shard's metadata (format, class_names, model and any extra entries) without reading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise ShardError(f"cannot read shard {path}: {e}") from None


def read_shard(path: str | os.PathLike) -> DescriptorSet:
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ShardError(f"{path} is not a descriptor shard (format {FORMAT})")
            keys = set(f.keys())
            need = {"class_ids", "descriptors", "view_valid", "visibility"}
            if need - keys:
                raise ShardError(f"{path} lacks tensor(s) {', '.join(sorted(need - keys))}")
            t = {k: f.get_tensor(k) for k in need | ({"view_source"} & keys)}
        names = json.loads(meta["class_names"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ShardError(f"corrupt shard {path}: {e}") from None
    d = t["descriptors"]
    if d.ndim != 3 or t["view_valid"].shape != d.shape[:2] or t["class_ids"].shape != d.shape[:1] \
            or t["visibility"].shape != d.shape[:2]:
        raise ShardError(f"inconsistent tensor shapes in {path}")
    if d.dtype.kind != "f" or t["class_ids"].dtype.kind not in "iu" or t["visibility"].dtype.kind != "f":
        raise ShardError(f"wrong dtypes in {path}: descriptors {d.dtype}, class_ids {t['class_ids'].dtype}, "
                         f"visibility {t['visibility'].dtype}")
    src = t.get("view_source")
    if src is not None and (src.shape != d.shape[:2] or src.dtype.kind not in "iu"):
        raise ShardError(f"view_source in {path} must be integers of shape {d.shape[:2]}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ShardError(f"corrupt shard {path}: class_names is not a list of strings")
    if len(t["class_ids"]) and (t["class_ids"].min() < 0 or t["class_ids"].max() >= len(names)):
        raise ShardError(f"class ids in {path} fall outside its {len(names)} class names")
    if not np.isfinite(d[t["view_valid"].astype(bool)]).all() or not np.isfinite(t["visibility"]).all():
        raise ShardError(f"{path}: descriptors or visibilities hold NaN or infinite values")
    return DescriptorSet(
        t["class_ids"].astype(np.int64), d, t["view_valid"].astype(bool), t["visibility"].astype(np.float32),
        list(names), meta.get("model", ""), None if src is None else src.astype(np.int64),
    )


def shard_paths(split_dir: str | os.PathLike) -> list[Path]:
    d = Path(split_dir)
    if not d.is_dir():
        raise ShardError(f"data directory not found: {d}")
    paths = sorted(p for p in d.glob("*.safetensors") if p.name != TEXT_FILE)
    if not paths:
        raise ShardError(f"no descriptor shards (*.safetensors) in {d}")
    return paths


def load_split(split_dir: str | os.PathLike, class_names: list[str] | None = None) -> DescriptorSet:
    """All shards of a split, class ids remapped onto ``class_names`` (default: the union, in order seen)."""
    shards = [read_shard(p) for p in shard_paths(split_dir)]
    names = list(class_names) if class_names is not None else []
    index = {n: i for i, n in enumerate(names)}
    if class_names is None:
        for s in shards:
            for n in s.class_names:
                index.setdefault(n, len(index))
        names = list(index)
    dims = {s.dim for s in shards if len(s)}
    if len(dims) > 1:
        raise ShardError(f"shards in {split_dir} mix descriptor dims {sorted(dims)}")
    v = max(s.descriptors.shape[1] for s in shards)
    dim = dims.pop() if dims else shards[0].dim
    dtype = np.result_type(*[s.descriptors.dtype for s in shards])
    cls, desc, valid, vis, src = [], [], [], [], []
    for s in shards:
        try:
            remap = np.array([index[n] for n in s.class_names], np.int64)
        except KeyError as e:
            raise ShardError(f"class {e.args[0]!r} of a shard in {split_dir} is not in the vocabulary") from None
        pad = v - s.descriptors.shape[1]
        cls.append(remap[s.class_ids] if len(s) else s.class_ids)
        desc.append(np.pad(s.descriptors.astype(dtype), ((0, 0), (0, pad), (0, 0))))
        valid.append(np.pad(s.view_valid, ((0, 0), (0, pad))))
        vis.append(np.pad(s.visibility, ((0, 0), (0, pad))))
        src.append(np.pad(s.view_source, ((0, 0), (0, pad)), constant_values=-1))
    return DescriptorSet(
        np.concatenate(cls), np.concatenate(desc).reshape(-1, v, dim), np.concatenate(valid), np.concatenate(vis),
        names, shards[0].model, np.concatenate(src),
    )


def write_text_embeddings(path: str | os.PathLike, class_names: list[str], embeddings: np.ndarray, model: str) -> Path:
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(class_names):
        raise ShardError(f"text embeddings must be ({len(class_names)}, D), got {emb.shape}")
    path = Path(path)
    _atomic_save({"embeddings": emb}, path, {"format": FORMAT, "class_names": json.dumps(list(class_names)), "model": model})
    return path


def read_text_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"text embeddings not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            emb = f.get_tensor("embeddings").astype(np.float32)
        names = json.loads(meta["class_names"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ShardError(f"corrupt text embeddings {path}: {e}") from None
    if emb.ndim != 2 or not isinstance(names, list) or emb.shape[0] != len(names):
        raise ShardError(f"text embeddings in {path} do not match their class names")
    if not np.isfinite(emb).all():
        raise ShardError(f"text embeddings in {path} hold NaN or infinite values")
    return names, emb


def find_text_embeddings(split_dir: str | os.PathLike) -> Path:
    """``text_embeddings.safetensors`` in the split directory or its parent (the data root)."""
    d = Path(split_dir)
    for cand in (d / TEXT_FILE, d.parent / TEXT_FILE):
        if cand.is_file():
            return cand
    raise ShardError(f"no {TEXT_FILE} in {d} or {d.parent}")
