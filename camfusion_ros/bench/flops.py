"""Analytic FLOP count of one CAMFusion forward pass, from the model config and the batch shape.

Counted: every matmul as 2*m*n*k FLOPs (the projections, the per-block
self-/cross-attention and MLP linears, the attention score and value products
over the padded K x K view matrix as the dense kernel computes it, and the
latent-query pooling). Not counted: LayerNorm, softmax, GELU, bias adds and
the final normalisation (elementwise, < 1 % at these widths).

For B instances with K views each, input D, width W, depth L, MLP hidden H:
  proj_in            2 B K D W
  per block          self-attn 8 B K W^2 + 4 B K^2 W
                     cross-attn 8 B K W^2 + 4 B K^2 W
                     MLP 4 B K W H
  pooling            q 2 B W^2 + k,v 4 B K W^2 + scores/values 4 B K W + out 2 B W^2
  proj_out           2 B W D   (only when W != D)
"""
from __future__ import annotations

from camfusion_ros.core.camfusion import CamFusionConfig


def camfusion_flops(cfg: CamFusionConfig, instances: int, views: int) -> int:
    """FLOPs of one forward pass over (instances, views) descriptors (see the module docstring)."""
    B, K, D, W, L, H = instances, views, cfg.input_dim, cfg.width, cfg.depth, cfg.mlp_hidden
    proj_in = 2 * B * K * D * W
    attn = 8 * B * K * W * W + 4 * B * K * K * W
    block = 2 * attn + 4 * B * K * W * H
    pool = 2 * B * W * W + 4 * B * K * W * W + 4 * B * K * W + 2 * B * W * W
    proj_out = 2 * B * W * D if W != D else 0
    return int(proj_in + L * block + pool + proj_out)


def avg_pool_flops(instances: int, views: int, dim: int) -> int:
    """Masked mean + L2 normalisation: about one multiply-add per input element plus 3 per output."""
    return int(2 * instances * views * dim + 3 * instances * dim)
