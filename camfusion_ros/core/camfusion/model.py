"""The CAMFusion multiview transformer (paper Sec. 3.2).

Each view's embedding attends to itself (self-attention), then to a memory made
of the *other* views' embeddings from the previous block (cross-attention),
then goes through an MLP; everything pre-LayerNorm and residual. A learned
latent query pools the final per-view embeddings into one descriptor.

Instances have a variable number of views: ``valid (B, K)`` masks padding. A
query with no key to attend to (one view -> empty memory; no view at all)
gets a zero attention output instead of NaN, so such instances still work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SELF_ATTN_SPANS = ("view", "all")


class ModelBuildError(ValueError):
    """A config or state dict that does not describe a CAMFusion model."""


@dataclass
class CamFusionConfig:
    input_dim: int = 1024
    width: int = 1024
    depth: int = 8
    heads: int = 8
    mlp_hidden: int = 4096
    dropout: float = 0.0
    # What a view's self-attention spans. "view": the view attends to itself only
    # (the paper: E_i "alternates between attending to itself and attending to its
    # memory"); "all": all views of the instance. Cross-attention always spans the others.
    self_attn_span: str = "view"

    def __post_init__(self) -> None:
        for name in ("input_dim", "width", "depth", "heads", "mlp_hidden"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ModelBuildError(f"CamFusionConfig.{name} must be a positive int, got {v!r}")
        if self.width % self.heads:
            raise ModelBuildError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelBuildError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.self_attn_span not in SELF_ATTN_SPANS:
            raise ModelBuildError(f"self_attn_span must be one of {SELF_ATTN_SPANS}, got {self.self_attn_span!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CamFusionConfig":
        if not isinstance(d, dict):
            raise ModelBuildError(f"model config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelBuildError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)


class Attention(nn.Module):
    """Multi-head attention with a boolean ``allow (B, Q, K)`` mask; rows that allow nothing output 0."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, allow: torch.Tensor) -> torch.Tensor:
        b, nq, w = xq.shape
        nk = xkv.shape[1]
        h = self.heads
        q = self.q(xq).view(b, nq, h, w // h).transpose(1, 2)
        k = self.k(xkv).view(b, nk, h, w // h).transpose(1, 2)
        v = self.v(xkv).view(b, nk, h, w // h).transpose(1, 2)
        any_key = allow.any(-1, keepdim=True)  # (B, Q, 1)
        # Rows with no allowed key attend to everything (finite) and are zeroed below.
        mask = (allow | ~any_key).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, nq, w)
        return self.o(out) * any_key.to(out.dtype)


class MultiviewBlock(nn.Module):
    def __init__(self, cfg: CamFusionConfig):
        super().__init__()
        w = cfg.width
        self.norm_self = nn.LayerNorm(w)
        self.self_attn = Attention(w, cfg.heads, cfg.dropout)
        self.norm_query = nn.LayerNorm(w)
        self.norm_memory = nn.LayerNorm(w)
        self.cross_attn = Attention(w, cfg.heads, cfg.dropout)
        self.norm_mlp = nn.LayerNorm(w)
        self.mlp = nn.Sequential(
            nn.Linear(w, cfg.mlp_hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.mlp_hidden, w)
        )

    def forward(self, e: torch.Tensor, self_allow: torch.Tensor, memory_allow: torch.Tensor) -> torch.Tensor:
        memory = self.norm_memory(e)  # M_i: the other views' embeddings from the previous block
        y = self.norm_self(e)
        x = e + self.self_attn(y, y, self_allow)
        x = x + self.cross_attn(self.norm_query(x), memory, memory_allow)
        return x + self.mlp(self.norm_mlp(x))


class CamFusion(nn.Module):
    """F (B, K, input_dim) + valid (B, K) -> Fmv (B, input_dim), L2-normalised (zero row if no valid view)."""

    def __init__(self, cfg: CamFusionConfig):
        super().__init__()
        self.cfg = cfg
        self.proj_in = nn.Linear(cfg.input_dim, cfg.width)
        self.blocks = nn.ModuleList(MultiviewBlock(cfg) for _ in range(cfg.depth))
        self.latent = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.norm_pool = nn.LayerNorm(cfg.width)
        self.pool = Attention(cfg.width, cfg.heads, cfg.dropout)
        # The fused descriptor lives in the text space (input_dim); the paper has width == input_dim.
        self.proj_out = nn.Linear(cfg.width, cfg.input_dim) if cfg.width != cfg.input_dim else nn.Identity()

    def forward(self, views: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if views.ndim != 3 or views.shape[-1] != self.cfg.input_dim or valid.shape != views.shape[:2]:
            raise ValueError(
                f"expected views (B, K, {self.cfg.input_dim}) and valid (B, K); got {tuple(views.shape)} and {tuple(valid.shape)}"
            )
        valid = valid.to(torch.bool)
        k = views.shape[1]
        eye = torch.eye(k, dtype=torch.bool, device=views.device)
        pair = valid[:, :, None] & valid[:, None, :]
        self_allow = pair & eye if self.cfg.self_attn_span == "view" else pair
        memory_allow = pair & ~eye
        e = self.proj_in(views)
        for block in self.blocks:
            e = block(e, self_allow, memory_allow)
        latent = self.latent.expand(views.shape[0], 1, -1).to(e.dtype)
        fused = self.pool(latent, self.norm_pool(e), valid[:, None, :])[:, 0]
        fused = self.proj_out(fused).float() * valid.any(1, keepdim=True)
        return F.normalize(fused, dim=-1)  # an instance without views stays a zero row


def check_state_shapes(cfg: CamFusionConfig, shapes: Mapping[str, Sequence[int]], strict: bool = True) -> None:
    """Raise ModelBuildError unless the tensors named in ``shapes`` fit the model ``cfg`` describes.

    The model is built on the meta device (no memory), so a config claiming a huge model is refused before
    anything is allocated."""
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in CamFusion(cfg).state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing key(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected key(s) {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise ModelBuildError("state dict does not match the model config: " + "; ".join(parts))
    for name, shape in shapes.items():
        if name in own and tuple(own[name]) != tuple(shape):
            raise ModelBuildError(
                f"wrong shape for {name}: checkpoint has {tuple(shape)}, config expects {tuple(own[name])}")


def build_camfusion(cfg: CamFusionConfig, state_dict: dict | None = None, strict: bool = True) -> CamFusion:
    """The one way to make a model: fresh, or from a state dict that must match exactly when ``strict``."""
    if state_dict is not None:
        check_state_shapes(cfg, {k: tuple(v.shape) for k, v in state_dict.items()}, strict)
    model = CamFusion(cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=strict)
    return model
