"""Learned fusion baselines, trained with CAMFusion's data, loss and schedule (``arch`` in the training config).

They tell fusion from correction in the benchmark: ``linear`` learns a map on
the average of the views (a correction of the mean, no view weighting);
``deepsets`` embeds each view with an MLP, averages and maps the mean with a
second MLP (a permutation-invariant set function without any view-to-view
comparison). CAMFusion's margin over ``deepsets`` is what its attention between
views adds. Sizes come from the model config: ``width`` and ``mlp_hidden``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from camfusion_ros.core.camfusion.model import CamFusionConfig, build_camfusion

ARCHS = ("camfusion", "linear", "deepsets")


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


class LinearOnAverage(nn.Module):
    """normalize(W mean(views) + b), W initialised to the identity (= average pooling at step 0)."""

    def __init__(self, cfg: CamFusionConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.input_dim, cfg.input_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(cfg.input_dim))
            self.proj.bias.zero_()

    def forward(self, views: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        valid = valid.to(torch.bool)
        mean = _masked_mean(F.normalize(views.float(), dim=-1), valid)
        return F.normalize(self.proj(mean) * valid.any(1, keepdim=True), dim=-1)


class DeepSets(nn.Module):
    """normalize(rho(mean_k phi(view_k))), phi and rho two-layer GeLU MLPs of ``width`` / ``mlp_hidden``."""

    def __init__(self, cfg: CamFusionConfig):
        super().__init__()
        self.cfg = cfg
        self.phi = nn.Sequential(nn.Linear(cfg.input_dim, cfg.mlp_hidden), nn.GELU(), nn.Linear(cfg.mlp_hidden, cfg.width))
        self.rho = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, cfg.mlp_hidden), nn.GELU(),
                                 nn.Linear(cfg.mlp_hidden, cfg.input_dim))

    def forward(self, views: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        valid = valid.to(torch.bool)
        pooled = _masked_mean(self.phi(views), valid)
        return F.normalize(self.rho(pooled) * valid.any(1, keepdim=True), dim=-1)


def build_fuser_model(arch: str, cfg: CamFusionConfig) -> nn.Module:
    """The trainable fusion model ``arch`` names; all map (views (B, K, D), valid (B, K)) to unit (B, D)."""
    if arch == "camfusion":
        return build_camfusion(cfg)
    if arch == "linear":
        return LinearOnAverage(cfg)
    if arch == "deepsets":
        return DeepSets(cfg)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
