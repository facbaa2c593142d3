"""CAMFusion checkpoints: ``model.safetensors`` + ``config.json`` in one directory.

The JSON rebuilds the model alone (``{"format": ..., "model": CamFusionConfig,
"extra": {...}}``); the weights are plain safetensors. No pickle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from camfusion_ros.core.output_folder import check_replaceable_folder, fresh_folder
from camfusion_ros.core.camfusion.model import (CamFusion, CamFusionConfig, ModelBuildError, build_camfusion,
                                               check_state_shapes)

FORMAT = "camfusion-checkpoint/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its config."""


def _dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.name in (WEIGHTS, CONFIG) else p


def save_checkpoint(path: str | os.PathLike, model: CamFusion, cfg: CamFusionConfig | None = None, extra: dict | None = None) -> Path:
    """Write the directory atomically (a crash leaves the previous checkpoint intact)."""
    out = _dir(path)
    check_replaceable(out)
    cfg = cfg or model.cfg
    model = getattr(model, "module", model)  # unwrap DDP
    umask = os.umask(0)
    os.umask(umask)
    with fresh_folder(out) as tmp:
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is a normal user file
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / CONFIG).write_text(json.dumps({"format": FORMAT, "model": cfg.to_dict(), "extra": extra or {}}, indent=2))
        os.chmod(tmp / WEIGHTS, 0o666 & ~umask)
        check_replaceable(out)                 # again: something may have appeared meanwhile
    return out


def check_replaceable(path: str | os.PathLike) -> None:
    """Raise CheckpointError unless ``path`` is absent, empty, or a checkpoint save_checkpoint wrote."""
    check_replaceable_folder(_dir(path), {WEIGHTS, CONFIG}, CONFIG, "format", "checkpoint", CheckpointError)


def read_config(path: str | os.PathLike) -> tuple[CamFusionConfig, dict]:
    d = _dir(path)
    cfg_path = d / CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"checkpoint config not found: {cfg_path}")
    try:
        doc = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint config {cfg_path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "model" not in doc:
        raise CheckpointError(f"{cfg_path} is not a CAMFusion checkpoint config (format {FORMAT})")
    try:
        cfg = CamFusionConfig.from_dict(doc["model"])
    except (ModelBuildError, TypeError) as e:
        raise CheckpointError(f"bad model config in {cfg_path}: {e}") from None
    return cfg, doc.get("extra") or {}


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CamFusion, CamFusionConfig]:
    """Rebuild the model from a checkpoint directory (or its model.safetensors / config.json)."""
    d = _dir(path)
    if not d.exists():
        raise CheckpointError(f"checkpoint not found: {d}")
    cfg, _ = read_config(d)
    w = d / WEIGHTS
    if not w.is_file():
        raise CheckpointError(f"checkpoint weights not found: {w}")
    try:
        with safe_open(str(w), framework="pt") as f:       # the header only: shapes before any allocation
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        check_state_shapes(cfg, shapes)
        state = load_file(str(w))
    except ModelBuildError as e:
        raise CheckpointError(f"{w}: {e}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt checkpoint weights {w}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    bad = [k for k, v in state.items() if not v.is_floating_point() or not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{w}: tensor(s) {', '.join(bad[:5])} are not finite floating-point weights")
    model = build_camfusion(cfg, state, strict=True)
    return model.to(device).eval(), cfg
