"""CAMFusion's losses (paper Eq. 7-9): sigmoid contrastive class loss + multiview loss.

Both use SigLIP's form ``-log sigmoid(z_ij (t x_i.y_j + b))`` with one learned
temperature ``t = exp(t')`` and bias ``b`` (SigLIP init: t' = log 10, b = -10),
shared by both terms as in the paper. ``z_ij = +1`` for positives: the same
instance, or, with the class mask, the same semantic class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossConfig:
    class_mask_class_loss: bool = True
    class_mask_multiview_loss: bool = True
    multiview_weight: float = 1.0  # 0 turns the multiview loss off (the "class loss only" ablation)
    init_log_temperature: float = math.log(10.0)
    init_bias: float = -10.0


def sigmoid_pair_loss(logits: torch.Tensor, positive: torch.Tensor, col_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over (i, j) of -log sigmoid(z_ij * logits_ij), z = +1 where ``positive``, skipping invalid columns."""
    z = positive.to(logits.dtype) * 2.0 - 1.0
    terms = -F.logsigmoid(z * logits)
    if col_valid is not None:
        terms = terms * col_valid.to(terms.dtype)[None, :]
    return terms.sum()


class CamFusionLoss(nn.Module):
    """L = Lc + w * Lmv; holds the learned temperature and bias."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.log_temperature = nn.Parameter(torch.tensor(float(self.cfg.init_log_temperature)))
        self.bias = nn.Parameter(torch.tensor(float(self.cfg.init_bias)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def class_loss(self, fused: torch.Tensor, text: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Lc = -1/|B| sum_ij log sigmoid(z_ij (t Fmv_i.y_j + b)); y_j = text embedding of instance j's class."""
        b = fused.shape[0]
        logits = self.temperature * fused @ text.T + self.bias
        pos = torch.eye(b, dtype=torch.bool, device=fused.device)
        if self.cfg.class_mask_class_loss:
            pos = pos | (class_ids[:, None] == class_ids[None, :])
        return sigmoid_pair_loss(logits, pos) / b

    def multiview_loss(
        self, fused: torch.Tensor, unseen: torch.Tensor, unseen_valid: torch.Tensor, class_ids: torch.Tensor
    ) -> torch.Tensor:
        """Lmv = -1/(|B||U|) sum_i sum_{j in U} log sigmoid(z_ij (t Fmv_i.F_j + b)).

        ``unseen (B, M, D)`` are each instance's unseen-view descriptors; U is all of
        them in the batch (padding excluded); positives are unseen views of the same
        instance (or, with the class mask, of the same class).
        """
        b, m, d = unseen.shape
        u = unseen.reshape(b * m, d)
        u_valid = unseen_valid.reshape(b * m)
        owner = torch.arange(b, device=fused.device).repeat_interleave(m)
        logits = self.temperature * fused @ u.T + self.bias
        pos = owner[None, :] == torch.arange(b, device=fused.device)[:, None]
        if self.cfg.class_mask_multiview_loss:
            pos = pos | (class_ids[:, None] == class_ids[owner][None, :])
        n_u = u_valid.sum().clamp(min=1)
        return sigmoid_pair_loss(logits, pos, u_valid) / (b * n_u)

    def forward(
        self,
        fused: torch.Tensor,
        text: torch.Tensor,
        class_ids: torch.Tensor,
        unseen: torch.Tensor | None = None,
        unseen_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        fused = fused.float()
        lc = self.class_loss(fused, text.float(), class_ids)
        out = {"loss_class": lc}
        total = lc
        if unseen is not None and self.cfg.multiview_weight > 0:
            lmv = self.multiview_loss(fused, F.normalize(unseen.float(), dim=-1), unseen_valid, class_ids)
            out["loss_multiview"] = lmv
            total = total + self.cfg.multiview_weight * lmv
        out["loss"] = total
        return out
