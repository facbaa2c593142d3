"""Training batches: instances by inverse class frequency, views split into inputs and unseen targets.

Paper: each batch samples instances with replacement weighted by the inverse
frequency of their class; per instance 10 random views, 5 as input and 5 as
unseen targets. An instance with fewer views than that splits the views it has
proportionally (at least one input; with a single view the target is that view,
i.e. sampled with replacement) and pads the rest with a false mask.

Augmented copies of one frame (same ``view_source``) are one view here: each
sample draws one of a frame's copies at random and drops the others, so a
frame never sits on both the input and the target side (else the multiview
loss would reward reconstructing an input).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camfusion_ros.training.shards import DescriptorSet


@dataclass
class SamplerConfig:
    n_input: int = 5
    n_target: int = 5
    class_balanced: bool = True


@dataclass
class Batch:
    views: np.ndarray  # float32 (B, n_input, D)
    views_valid: np.ndarray  # bool (B, n_input)
    unseen: np.ndarray  # float32 (B, n_target, D)
    unseen_valid: np.ndarray  # bool (B, n_target)
    class_ids: np.ndarray  # int64 (B,)


def instance_weights(class_ids: np.ndarray, balanced: bool = True) -> np.ndarray:
    """Probabilities proportional to 1 / (count of the instance's class)."""
    if not balanced:
        return np.full(len(class_ids), 1.0 / len(class_ids))
    _, inv, counts = np.unique(class_ids, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


class InstanceSampler:
    def __init__(self, data: DescriptorSet, cfg: SamplerConfig | None = None):
        self.data = data
        self.cfg = cfg or SamplerConfig()
        usable = data.view_valid.any(1)
        if not usable.any():
            raise ValueError("no instance has a valid view")
        self.index = np.flatnonzero(usable)
        self.p = instance_weights(data.class_ids[self.index], self.cfg.class_balanced)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        idx = self.index[rng.choice(len(self.index), size=batch_size, replace=True, p=self.p)]
        valid = one_copy_per_source(self.data.view_valid[idx], self.data.view_source[idx], rng)
        n_in, n_tg = self.cfg.n_input, self.cfg.n_target
        total = n_in + n_tg
        # A random permutation of each instance's valid views, valid ones first.
        keys = np.where(valid, rng.random(valid.shape), 2.0)
        order = np.argsort(keys, axis=1)
        n = valid.sum(1)
        k_in = np.where(n >= total, n_in, np.maximum(1, np.round(n * n_in / total).astype(int)))
        k_in = np.minimum(k_in, n)
        k_tg = np.minimum(n - k_in, n_tg)
        cols_in = np.arange(n_in)[None, :]
        cols_tg = np.arange(n_tg)[None, :]
        in_valid = cols_in < k_in[:, None]
        tg_valid = cols_tg < k_tg[:, None]
        in_pos = np.minimum(cols_in, np.maximum(k_in - 1, 0)[:, None])
        tg_pos = np.minimum(k_in[:, None] + cols_tg, order.shape[1] - 1)
        # One view only: its target is the input view itself.
        single = k_tg == 0
        tg_pos[single] = 0
        tg_valid[single, 0] = True
        rows = np.arange(batch_size)[:, None]
        desc = self.data.descriptors[idx]
        views = desc[rows, order[rows, in_pos]].astype(np.float32)
        unseen = desc[rows, order[rows, tg_pos]].astype(np.float32)
        views[~in_valid] = 0.0
        unseen[~tg_valid] = 0.0
        return Batch(views, in_valid, unseen, tg_valid, self.data.class_ids[idx])


def one_view_per_source(valid: np.ndarray, source: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``valid`` keeping, per row and source frame, the valid view with the largest ``key`` (keys distinct per row)."""
    k = np.where(valid, key, -np.inf)
    same = (source[:, :, None] == source[:, None, :]) & valid[:, None, :]
    best = np.where(same, k[:, None, :], -np.inf).max(-1)
    return valid & (k >= best)


def one_copy_per_source(valid: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``valid`` keeping, per row and source frame, one valid view drawn at random."""
    return one_view_per_source(valid, source, rng.random(valid.shape))


def best_views(data: DescriptorSet, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` views with the highest visibility per instance (the paper's evaluation input), one per frame."""
    first = -np.arange(data.view_valid.shape[1], dtype=np.float64)     # a frame's first view wins
    keep = one_view_per_source(data.view_valid, data.view_source, np.broadcast_to(first, data.view_valid.shape))
    score = np.where(keep, data.visibility, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(data))[:, None]
    views = data.descriptors[rows, order].astype(np.float32)
    valid = np.isfinite(score[rows, order])
    views[~valid] = 0.0
    return views, valid
