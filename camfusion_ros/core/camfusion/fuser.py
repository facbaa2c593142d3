"""The ``camfusion`` fuser: CAMFusion behind the pipeline's Fuser interface.

All pending instances go through in batches of ``batch_size``; on CUDA under
bf16 autocast, on CPU in fp32.
"""
from __future__ import annotations

import numpy as np
import torch

from camfusion_ros.core.camfusion.checkpoint import load_checkpoint
from camfusion_ros.core.fusion_batch import FusionError, check_batch, normalize


class CamFusionFuser:
    name = "camfusion"

    def __init__(self, checkpoint: str, device: str | None = None, batch_size: int = 4096):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.cfg = load_checkpoint(checkpoint, self.device)
        self.batch_size = int(batch_size)
        if self.batch_size <= 0:
            raise FusionError(f"batch_size must be positive, got {batch_size}")

    @property
    def dim(self) -> int:
        return self.cfg.input_dim

    @torch.inference_mode()
    def fuse(self, views: np.ndarray, valid: np.ndarray) -> np.ndarray:
        views, valid = check_batch(views, valid)
        if views.shape[2] != self.cfg.input_dim:
            raise FusionError(f"camfusion model takes {self.cfg.input_dim}-d descriptors, got {views.shape[2]}")
        out = np.zeros((views.shape[0], views.shape[2]), np.float32)
        if views.shape[0] == 0 or views.shape[1] == 0:
            return out
        views = normalize(views)
        cuda = self.device.type == "cuda"
        for s in range(0, len(views), self.batch_size):
            v = torch.from_numpy(views[s : s + self.batch_size]).to(self.device, non_blocking=True)
            m = torch.from_numpy(valid[s : s + self.batch_size]).to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                f = self.model(v, m)
            out[s : s + len(v)] = f.float().cpu().numpy()
        out[~valid.any(1)] = 0.0
        return out
