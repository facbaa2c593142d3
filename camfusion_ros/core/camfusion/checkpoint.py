"""CAMFusion checkpoints: ``model.safetensors`` + ``config.json`` in one directory.

The JSON rebuilds the model alone (``{"format": ..., "model": CamFusionConfig,
"extra": {...}}``); the weights are plain safetensors. No pickle.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from camfusion_ros.core.camfusion.model import CamFusion, CamFusionConfig, ModelBuildError, build_camfusion

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
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = cfg or model.cfg
    model = getattr(model, "module", model)  # unwrap DDP
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is a normal user file
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    (tmp / CONFIG).write_text(json.dumps({"format": FORMAT, "model": cfg.to_dict(), "extra": extra or {}}, indent=2))
    os.chmod(tmp / WEIGHTS, 0o666 & ~umask)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            _rmtree(old)
        os.replace(out, old)
        os.replace(tmp, out)
        _rmtree(old)
    else:
        os.replace(tmp, out)
    return out


def _rmtree(p: Path) -> None:
    for f in p.iterdir():
        f.unlink()
    p.rmdir()


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
        state = load_file(str(w))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt checkpoint weights {w}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        model = build_camfusion(cfg, state, strict=True)
    except ModelBuildError as e:
        raise CheckpointError(f"{w}: {e}") from None
    return model.to(device).eval(), cfg
