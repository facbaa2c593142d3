"""Class vocabularies: text embeddings per class name, cached on disk, and classification.

A class's embedding is the mean over prompt templates of the normalised text
features, renormalised (as OVO and TextRegion do). Embeddings are cached as
safetensors keyed by (model, weights, templates, names); models with random
weights are never cached (each process draws different weights).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .vlm import VisionLanguageModel

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a {} in a scene.",
    "a photo of a {} in a room.",
    "there is a {} in the scene.",
    "a cropped photo of a {}.",
)
CACHE_FORMAT = 1


class VocabularyError(ValueError):
    """Bad class names, templates, or embeddings of the wrong shape."""


@dataclass
class VocabularyConfig:
    source: str = "scannet200"  # shipped list name (scannet200 | scannet20 | replica) or a .txt path
    names: Optional[list[str]] = None  # inline class names; override source when given
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    cache_dir: Optional[str] = "~/.cache/camfusion_ros/text"  # None or "": no disk cache
    batch_size: int = 256  # prompts per text-encoder batch


def resolve_names(cfg: VocabularyConfig) -> list[str]:
    """Class names from the inline list or the shipped list / file cfg.source names."""
    if cfg.names:
        return list(cfg.names)
    from camfusion_ros.core.class_lists import ClassListError, load_vocabulary

    try:
        return load_vocabulary(cfg.source)
    except ClassListError as e:
        raise VocabularyError(str(e)) from None


def _check(names: Sequence[str], templates: Sequence[str]) -> tuple[list[str], list[str]]:
    names = [str(n).strip() for n in names]
    if not names or any(not n for n in names):
        raise VocabularyError("a vocabulary needs at least one class and no empty names")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise VocabularyError(f"repeated class names: {', '.join(dup)}")
    templates = list(templates)
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise VocabularyError(f"each prompt template needs exactly one '{{}}'; bad: {bad or 'none given'}")
    return names, templates


class Vocabulary:
    """Class names and their text embeddings (C, D) for one model."""

    def __init__(self, names: Sequence[str], vlm: VisionLanguageModel,
                 templates: Sequence[str] = DEFAULT_TEMPLATES,
                 cache_dir: Optional[Union[str, os.PathLike]] = "~/.cache/camfusion_ros/text",
                 batch_size: int = 256):
        self.names, self.templates = _check(names, templates)
        self.model_key = vlm.cache_key
        self.loaded_from_cache = False
        path = None
        if cache_dir not in (None, "") and not vlm.weights_are_random:
            path = Path(os.path.expanduser(str(cache_dir))) / f"{self._digest()}.safetensors"
            emb = self._read_cache(path)
            if emb is not None:
                self.embeddings = emb
                self.loaded_from_cache = True
                return
        self.embeddings = self._encode(vlm, batch_size)
        if path is not None:
            self._write_cache(path)

    @classmethod
    def from_config(cls, cfg: VocabularyConfig, vlm: VisionLanguageModel) -> "Vocabulary":
        return cls(resolve_names(cfg), vlm, cfg.templates, cfg.cache_dir, cfg.batch_size)

    @classmethod
    def from_embeddings(cls, names: Sequence[str], embeddings: np.ndarray, model_key: str = "") -> "Vocabulary":
        """A vocabulary from stored embeddings (C, D), e.g. read back from a map; rows renormalised."""
        self = cls.__new__(cls)
        self.names, self.templates = _check(names, DEFAULT_TEMPLATES)[0], []
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(self.names):
            raise VocabularyError(f"embeddings must be ({len(self.names)}, D); got {emb.shape}")
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embeddings = (emb / np.where(n > 0, n, 1.0)).astype(np.float32)
        self.model_key, self.loaded_from_cache = model_key, False
        return self

    def __len__(self) -> int:
        return len(self.names)

    def _digest(self) -> str:
        key = json.dumps({"format": CACHE_FORMAT, "model": self.model_key,
                          "templates": self.templates, "names": self.names}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def _encode(self, vlm: VisionLanguageModel, batch_size: int) -> np.ndarray:
        prompts = [t.format(n) for n in self.names for t in self.templates]
        feats = np.concatenate([vlm.encode_text(prompts[i:i + batch_size])
                                for i in range(0, len(prompts), max(batch_size, 1))])
        feats = feats.reshape(len(self.names), len(self.templates), -1).mean(1)
        return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32)

    def _read_cache(self, path: Path) -> Optional[np.ndarray]:
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings")
            if (json.loads(meta.get("names", "null")) != self.names
                    or json.loads(meta.get("templates", "null")) != self.templates
                    or meta.get("model") != self.model_key or emb.shape[0] != len(self.names)):
                log.warning("text cache %s does not match this vocabulary; recomputing", path)
                return None
            return emb.astype(np.float32)
        except Exception as e:  # noqa: BLE001 - a broken cache is recomputed, never fatal
            log.warning("unreadable text cache %s (%s); recomputing", path, e)
            return None

    def _write_cache(self, path: Path) -> None:
        from safetensors.numpy import save_file

        meta = {"model": self.model_key, "names": json.dumps(self.names),
                "templates": json.dumps(self.templates), "format": str(CACHE_FORMAT)}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"embeddings": np.ascontiguousarray(self.embeddings)}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("could not write text cache %s (%s); continuing without it", path, e)

    def classify(self, emb: np.ndarray, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(idx int64 (N,k), cosine scores float32 (N,k)), best first; k = min(top_k, C)."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[1] != self.embeddings.shape[1]:
            raise VocabularyError(f"embeddings must be (N, {self.embeddings.shape[1]}); got {emb.shape}")
        if top_k < 1:
            raise VocabularyError(f"top_k must be >= 1, got {top_k}")
        k = min(int(top_k), len(self.names))
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        sims = (emb / np.where(n > 0, n, 1.0)) @ self.embeddings.T  # (N, C)
        idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return idx.astype(np.int64), np.take_along_axis(sims, idx, axis=1).astype(np.float32)
