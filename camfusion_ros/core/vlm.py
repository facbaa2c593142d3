"""The vision-language model: one open_clip model, loaded without a network.

Weights come from the local Hugging Face cache (an open_clip tag such as
``meta``), from a local file, or are ``random`` (same architecture, random
init: for tests and for machines without weights; flagged on the object).
A missing tag or file raises ``WeightsNotFoundError`` naming what is missing
and how to get it; nothing here ever starts a download.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class VLMError(ValueError):
    """Unknown model name, bad precision/device, or weights that do not fit."""


class WeightsNotFoundError(VLMError, FileNotFoundError):
    """The requested pretrained tag or weight file is not on this machine."""


@dataclass
class VLMConfig:
    model_name: str = "PE-Core-L-14-336"
    pretrained: str = "meta"  # open_clip tag, local weights file, or "random"
    device: Optional[str] = None  # None: cuda if available, else cpu
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast on CUDA; CPU always runs fp32)
    cache_dir: Optional[str] = None  # Hugging Face hub cache; None: the hub's default


class VisionLanguageModel:
    """An open_clip model plus its tokenizer and the facts extractors need."""

    def __init__(self, model: torch.nn.Module, tokenizer, cfg: VLMConfig, device: torch.device,
                 weights_are_random: bool, weights_source: str, mean: tuple, std: tuple,
                 embed_dim: int):
        self.model = model
        self._embed_dim = int(embed_dim)
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = device
        self.weights_are_random = weights_are_random
        self.weights_source = weights_source
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    @property
    def model_name(self) -> str:
        return self.cfg.model_name

    @property
    def pretrained(self) -> str:
        return self.cfg.pretrained

    @property
    def cache_key(self) -> str:
        """Identifies the weights, for caches of anything computed with them."""
        tag = "random" if self.weights_are_random else self.weights_source
        return f"{self.cfg.model_name}|{tag}"

    @property
    def image_size(self) -> int:
        size = getattr(self.model.visual, "image_size", None)
        if isinstance(size, (tuple, list)):
            if size[0] != size[1]:
                raise VLMError(f"{self.model_name}: non-square input {tuple(size)} is not supported")
            size = size[0]
        if size is None:
            raise VLMError(f"{self.model_name}: the image tower does not report its input size")
        return int(size)

    @property
    def patch_size(self) -> int:
        visual = self.model.visual
        trunk = getattr(visual, "trunk", None)
        if trunk is not None and hasattr(trunk, "patch_embed"):
            ps = trunk.patch_embed.patch_size
        else:
            ps = getattr(visual, "patch_size", None)
        if ps is None:
            raise VLMError(f"{self.model_name}: the image tower has no patch size (not a ViT)")
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def autocast(self) -> contextlib.AbstractContextManager:
        """Reduced precision only where it helps (CUDA); CPU stays fp32."""
        dtype = PRECISIONS[self.cfg.precision]
        if self.device.type == "cuda" and dtype != torch.float32:
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def normalize_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) float in [0,1] -> the model's input normalisation."""
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise VLMError("encode_text takes a list of strings")
        if len(texts) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            feats = self.model.encode_text(tokens)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """(B,3,S,S) float in [0,1] at the model's input size -> (B,D) normalised."""
        outs = []
        for i in range(0, pixels.shape[0], batch_size):
            x = self.normalize_pixels(pixels[i:i + batch_size].to(self.device, torch.float32))
            with self.autocast():
                f = self.model.encode_image(x)
            outs.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
        if not outs:
            return np.zeros((0, self.embed_dim), np.float32)
        return torch.cat(outs).numpy().astype(np.float32)


def resolve_device(device: Optional[str]) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise VLMError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VLMError(f"device {device!r} requested but CUDA is not available")
    return dev


def _looks_like_path(pretrained: str) -> bool:
    return (os.sep in pretrained or pretrained.startswith(("~", "."))
            or pretrained.lower().endswith(WEIGHT_SUFFIXES))


def _cached_tag_file(model_name: str, tag: str, cache_dir: Optional[str]) -> str:
    """The tag's weight file in the local hub cache, or WeightsNotFoundError."""
    import open_clip
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsNotFoundError(
            f"{model_name}: unknown pretrained tag {tag!r} (known tags: {tags or 'none'}; "
            "or pass a local weights file path, or 'random')")
    if tag_cfg.get("file"):
        path = tag_cfg["file"]
        if os.path.isfile(path):
            return path
        raise WeightsNotFoundError(f"{model_name}/{tag}: weights file {path} not found")
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        raise WeightsNotFoundError(
            f"{model_name}/{tag}: weights come from a URL ({tag_cfg.get('url', '?')}); "
            "download it and pass the local file path as pretrained")
    if hub.endswith("/"):  # open_clip's convention: repo id only, default file name
        repo_id, filename = hub.rstrip("/"), HF_WEIGHTS_NAME
    else:
        repo_id, filename = os.path.split(hub)
    candidates = [filename]
    if filename == HF_WEIGHTS_NAME:
        candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
        try_to_load_from_cache = None
    if try_to_load_from_cache is not None:
        for name in candidates:
            hit = try_to_load_from_cache(repo_id=repo_id, filename=name, cache_dir=cache_dir or None)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    raise WeightsNotFoundError(
        f"{model_name}/{tag}: {candidates[0]} of hf-hub repo {repo_id} is not in the local cache; "
        f"get it with `huggingface-cli download {repo_id} {candidates[0]}` on a networked machine "
        "(copy the cache over), or pass a local weights file path as pretrained")


def resolve_weights(cfg: VLMConfig) -> tuple[Optional[str], str]:
    """(weights file or None for random, cache-key source); WeightsNotFoundError before any model is built.

    Cheap, so a node or a CLI can check its weights at start-up and stop with one line.
    """
    pretrained = cfg.pretrained or "random"
    if pretrained == "random":
        return None, "random"
    if _looks_like_path(pretrained) or os.path.isfile(os.path.expanduser(pretrained)):
        weights_file = os.path.expanduser(pretrained)
        if not os.path.isfile(weights_file):
            raise WeightsNotFoundError(
                f"{cfg.model_name}: weights file {weights_file} not found (pass an existing "
                f".safetensors/.pt/.bin path, an open_clip tag such as 'meta', or 'random')")
        if not weights_file.lower().endswith(WEIGHT_SUFFIXES):
            raise VLMError(f"weights file {weights_file}: expected one of {WEIGHT_SUFFIXES}")
        st = os.stat(weights_file)  # size and mtime: a replaced file is not the same weights
        return weights_file, f"{Path(weights_file).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return _cached_tag_file(cfg.model_name, pretrained, cfg.cache_dir), pretrained


_CACHE: dict[tuple, VisionLanguageModel] = {}
_LOCK = threading.Lock()


def load_vlm(cfg: Union[VLMConfig, str, None] = None, pretrained: Optional[str] = None,
             device: Optional[str] = None, *, use_cache: bool = True) -> VisionLanguageModel:
    """Builds (or returns the process's cached) model; never downloads.

    Takes a VLMConfig, or a model name with optional pretrained/device
    (``load_vlm("PE-Core-T-16-384", "random", "cpu")``).
    """
    import open_clip

    if isinstance(cfg, str):
        cfg = VLMConfig(model_name=cfg, device=device,
                        **({"pretrained": pretrained} if pretrained is not None else {}))
    elif pretrained is not None or device is not None:
        raise VLMError("pass pretrained/device inside the VLMConfig, or a model name instead of a config")
    cfg = cfg or VLMConfig()
    if cfg.precision not in PRECISIONS:
        raise VLMError(f"unknown precision {cfg.precision!r}; use one of {sorted(PRECISIONS)}")
    if cfg.model_name not in open_clip.list_models():
        pe = [m for m in open_clip.list_models() if m.startswith("PE-Core")]
        raise VLMError(f"unknown open_clip model {cfg.model_name!r} (PE-Core models: {pe})")
    device = resolve_device(cfg.device)
    key = (cfg.model_name, cfg.pretrained, str(device), cfg.precision, cfg.cache_dir)
    with _LOCK:
        if use_cache and key in _CACHE:
            return _CACHE[key]

        weights_file, source = resolve_weights(cfg)

        import torch

        with torch.random.fork_rng(devices=[]):   # random weights are the same in every process (seed 0),
            torch.manual_seed(0)                   # so a node and an offline run of the same config agree
            model = open_clip.create_model(cfg.model_name, pretrained=None, device="cpu")
        if weights_file is not None:
            try:
                # safetensors via safetensors; anything else via torch.load(weights_only=True)
                open_clip.load_checkpoint(model, weights_file, strict=True, weights_only=True)
            except Exception as e:  # noqa: BLE001 - one readable line for any bad file
                raise VLMError(f"{cfg.model_name}: could not load weights from {weights_file}: "
                               f"{str(e).splitlines()[0][:300]}") from None
        else:
            warnings.warn(f"{cfg.model_name}: RANDOM weights (pretrained='random'); "
                          "descriptors and labels are meaningless", stacklevel=2)
        model = model.to(device).eval()
        mean, std = _preprocess_stats(cfg.model_name, pretrained, model)
        vlm = VisionLanguageModel(model, open_clip.get_tokenizer(cfg.model_name), cfg, device,
                                  weights_are_random=weights_file is None, weights_source=source,
                                  mean=mean, std=std,
                                  embed_dim=open_clip.get_model_config(cfg.model_name)["embed_dim"])
        if use_cache:
            _CACHE[key] = vlm
        return vlm


def _preprocess_stats(model_name: str, tag: str, model: torch.nn.Module) -> tuple[tuple, tuple]:
    """Pixel mean/std of the tag (or the model's first known tag), else the model's own."""
    import open_clip

    tags = [tag] + list(open_clip.list_pretrained_tags_by_model(model_name))
    for t in tags:
        c = open_clip.get_pretrained_cfg(model_name, t) if t else {}
        if c and c.get("mean") and c.get("std"):
            return tuple(c["mean"]), tuple(c["std"])
    pc = getattr(model.visual, "preprocess_cfg", {}) or {}
    return (tuple(pc.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            tuple(pc.get("std", open_clip.OPENAI_DATASET_STD)))

