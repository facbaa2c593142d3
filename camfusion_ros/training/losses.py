"""CAMFusion's losses (paper Eq. 7-9): sigmoid contrastive class loss + multiview loss.

Both use SigLIP's form ``-log sigmoid(z_ij (t x_i.y_j + b))`` with one learned
temperature ``t = exp(t')`` and bias ``b`` (SigLIP init: t' = log 10, b = -10),
shared by both terms as in the paper. ``z_ij = +1`` for positives: the same
instance, or, with the class mask, the same semantic class.

Scale of the multiview term: ``Lc`` sums each instance's B pairs and averages
over instances. Read literally, ``Lmv`` averages over all |B| x |U| pairs, i.e.
it is |U| times smaller per pair than ``Lc`` (0.1 % of its gradient at batch
512): the self-supervised term is then effectively off. ``multiview_norm:
views`` (the default) normalises like ``Lc``: each instance's sum over the
unseen views, averaged over the instance's own number of valid unseen views
and over instances (``sum / |U|``); ``paper`` keeps the literal ``sum / (|B||U|)``.

Under DDP both losses contrast against the *global* batch: every rank's
targets (text embeddings, unseen views, class ids) are all-gathered, and each
rank scores its own fused rows against all of them. The model's outputs only
ever sit on the row side (the columns are data), so no gradient has to cross
the gather; each rank's rows are averaged over its own slice, so DDP's gradient
averaging yields exactly the single-process gradient of the global loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

MULTIVIEW_NORMS = ("views", "paper")


@dataclass
class LossConfig:
    class_mask_class_loss: bool = True
    class_mask_multiview_loss: bool = True
    multiview_weight: float = 1.0  # 0 turns the multiview loss off (the "class loss only" ablation)
    multiview_norm: str = "views"  # "views": sum / |U| (Lc's scale); "paper": the literal sum / (|B||U|)
    init_log_temperature: float = math.log(10.0)
    init_bias: float = -10.0

    def __post_init__(self) -> None:
        if self.multiview_norm not in MULTIVIEW_NORMS:
            raise ValueError(f"multiview_norm must be one of {MULTIVIEW_NORMS}, got {self.multiview_norm!r}")
        if self.multiview_weight < 0:
            raise ValueError(f"multiview_weight must be >= 0, got {self.multiview_weight}")


def sigmoid_pair_loss(logits: torch.Tensor, positive: torch.Tensor, col_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over (i, j) of -log sigmoid(z_ij * logits_ij), z = +1 where ``positive``, skipping invalid columns."""
    z = positive.to(logits.dtype) * 2.0 - 1.0
    terms = -F.logsigmoid(z * logits)
    if col_valid is not None:
        terms = terms * col_valid.to(terms.dtype)[None, :]
    return terms.sum()


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """The rank-ordered concatenation of every rank's ``x`` (same shape on every rank); ``x`` itself outside DDP.

    For targets only: no gradient flows back through it."""
    _, world = _world()
    if world == 1:
        return x
    flag = x.dtype == torch.bool  # gloo gathers no bools
    x = x.to(torch.uint8) if flag else x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    out = torch.cat(parts, 0)
    return out.bool() if flag else out


class CamFusionLoss(nn.Module):
    """L = Lc + w * Lmv over the global batch; holds the learned temperature and bias."""

    def __init__(self, cfg: LossConfig | None = None):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.log_temperature = nn.Parameter(torch.tensor(float(self.cfg.init_log_temperature)))
        self.bias = nn.Parameter(torch.tensor(float(self.cfg.init_bias)))

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def class_loss(self, fused: torch.Tensor, text: torch.Tensor, class_ids: torch.Tensor, row0: int = 0) -> torch.Tensor:
        """Lc = -1/|B| sum_ij log sigmoid(z_ij (t Fmv_i.y_j + b)); y_j = text embedding of instance j's class.

        ``fused`` may be a slice of the batch (rows ``row0 ..``) against all of its columns (``text``,
        ``class_ids``); the sum is then over the slice's rows, divided by the slice's size."""
        rows = torch.arange(fused.shape[0], device=fused.device) + row0
        logits = self.temperature * fused @ text.T + self.bias
        pos = rows[:, None] == torch.arange(text.shape[0], device=fused.device)[None, :]
        if self.cfg.class_mask_class_loss:
            pos = pos | (class_ids[rows][:, None] == class_ids[None, :])
        return sigmoid_pair_loss(logits, pos) / fused.shape[0]

    def multiview_loss(
        self, fused: torch.Tensor, unseen: torch.Tensor, unseen_valid: torch.Tensor, class_ids: torch.Tensor,
        row0: int = 0,
    ) -> torch.Tensor:
        """Lmv: each instance's fused embedding against every unseen view U of the batch (padding excluded).

        Positives are unseen views of the same instance (or, with the class mask, of the same class).
        ``unseen (B, M, D)``, ``unseen_valid (B, M)`` and ``class_ids (B,)`` cover the whole batch;
        ``fused`` its rows ``row0 ..``. Normalised by ``multiview_norm`` (module docstring)."""
        b, m, d = unseen.shape
        u = unseen.reshape(b * m, d)
        u_valid = unseen_valid.reshape(b * m)
        owner = torch.arange(b, device=fused.device).repeat_interleave(m)
        rows = torch.arange(fused.shape[0], device=fused.device) + row0
        logits = self.temperature * fused @ u.T + self.bias
        pos = owner[None, :] == rows[:, None]
        if self.cfg.class_mask_multiview_loss:
            pos = pos | (class_ids[rows][:, None] == class_ids[owner][None, :])
        n_u = u_valid.sum().clamp(min=1)
        total = sigmoid_pair_loss(logits, pos, u_valid)
        # Per row: "views" divides by the mean number of unseen views per instance, "paper" by all of |U|.
        per_row = n_u / b if self.cfg.multiview_norm == "views" else n_u
        return total / (fused.shape[0] * per_row)

    def forward(
        self,
        fused: torch.Tensor,
        text: torch.Tensor,
        class_ids: torch.Tensor,
        unseen: torch.Tensor | None = None,
        unseen_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses of this rank's rows against the global batch (the whole batch outside DDP).

        Under DDP each rank's value is its rows' average, so the ranks' mean is the global loss and DDP's
        gradient averaging gives the single-process gradient of the global loss."""
        rank, _ = _world()
        fused = fused.float()
        row0 = rank * fused.shape[0]
        class_all = gather_batch(class_ids)
        text_all = gather_batch(text.float())
        lc = self.class_loss(fused, text_all, class_all, row0)
        out = {"loss_class": lc}
        total = lc
        if unseen is not None and self.cfg.multiview_weight > 0:
            unseen_all = gather_batch(F.normalize(unseen.float(), dim=-1))
            valid_all = gather_batch(unseen_valid)
            lmv = self.multiview_loss(fused, unseen_all, valid_all, class_all, row0)
            out["loss_multiview"] = lmv
            total = total + self.cfg.multiview_weight * lmv
        out["loss"] = total
        return out
