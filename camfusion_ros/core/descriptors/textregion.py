"""TextRegion descriptors: region pooling through the model's own attention-pool head.

Per frame, all masks at once (method of avaxiao/TextRegion, PE path):
1. patch tokens entering the attention-pool head, from the whole image and,
   with tiling, from model-sized tiles of an upscaled copy (tile tokens plus
   0.5 x the whole-image tokens upsampled to the tiled grid);
2. masks -> patch grid by bilinear downsampling, clamped to [0, 1];
3. global-patch removal: patches more similar to the regions they lie
   outside than to those they lie in (score < threshold) leave every mask;
4. the head attends with its learned query to a uniform key (the mean
   token's), a key-padding mask keeping the region's patches: the mean of the
   value-projected region tokens, then the head's output projection and the
   model's final projection, L2-normalised. No training involved.

Works with open_clip towers that wrap a timm ViT with an ``AttentionPoolLatent``
head (``global_pool='map'``: PE-Core, SigLIP); others raise DescriptorError.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..vlm import VisionLanguageModel
from .base import (DescriptorConfig, DescriptorError, big_enough, check_inputs, empty_result,
                   resize, to_tensor)


def tile_layout(h: int, w: int, crop: int, max_long: int, max_short: int) -> tuple[int, int, int, int]:
    """(rescaled H, rescaled W, tiles down, tiles across), as mmcv.imrescale + TextRegion."""
    scale = min(max_long / max(h, w), max_short / min(h, w))
    hs, ws = max(int(h * scale + 0.5), 1), max(int(w * scale + 0.5), 1)
    return hs, ws, max(hs // crop, 1), max(ws // crop, 1)


def remove_global_patches(tokens: torch.Tensor, weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero, in every mask, the patches whose in-region minus out-of-region similarity < threshold.

    tokens (N,C), weights (M,N) with every row non-empty; returns new weights.
    """
    f = F.normalize(tokens.float(), dim=-1)
    sim = f @ f.T  # (N, N)
    inside = (weights > 0).float()  # (M, N)
    to_region = (sim @ inside.T) / inside.sum(1)  # (N, M): mean similarity of each patch to each region
    belong = (to_region * inside.T).sum(1) / (inside.sum(0) + 1e-9)
    outside = (to_region * (1 - inside).T).sum(1) / ((1 - inside).sum(0) + 1e-9)
    out = weights.clone()
    out[:, (belong - outside) < threshold] = 0
    return out


class TextRegionExtractor:
    """DescriptorExtractor for method ``textregion``."""

    def __init__(self, cfg: DescriptorConfig, vlm: VisionLanguageModel):
        cfg.validate()
        self.cfg = cfg
        self.vlm = vlm
        visual = vlm.model.visual
        self.trunk = getattr(visual, "trunk", None)
        pool = getattr(self.trunk, "attn_pool", None)
        if pool is None or not all(hasattr(pool, a) for a in ("latent", "q", "kv", "proj", "num_heads")):
            raise DescriptorError(
                f"{vlm.model_name}: TextRegion needs an open_clip timm tower with an attention-pool "
                "head (timm AttentionPoolLatent, e.g. PE-Core or SigLIP); use maskcrop/bboxcrop/hovsg")
        if getattr(pool, "pos_embed", None) is not None:
            raise DescriptorError(f"{vlm.model_name}: attention-pool heads with their own position "
                                  "embedding cannot pool tiled grids")
        self.pool = pool
        self.head = visual.head
        self.crop = vlm.image_size
        self.grid = self.crop // vlm.patch_size
        self.dim = vlm.embed_dim
        self.model_name = vlm.model_name

    # -- stage 1: tokens ---------------------------------------------------
    @torch.inference_mode()
    def patch_tokens(self, rgb: np.ndarray) -> tuple[torch.Tensor, int, int]:
        """(tokens (gh*gw, C) float32, gh, gw): the tokens entering the attention-pool head."""
        s = self.crop
        img = to_tensor(rgb, self.vlm.device)
        h, w = img.shape[-2:]
        inputs = [resize(img, s, s)]
        nh = nw = 1
        if self.cfg.tiling:
            hs, ws, nh, nw = tile_layout(h, w, s, self.cfg.max_long_side, self.cfg.max_short_side)
            big = resize(img, hs, ws)
            th, tw = math.ceil(hs / nh), math.ceil(ws / nw)
            for i in range(nh):
                for j in range(nw):
                    y2, x2 = min(i * th + th, hs), min(j * tw + tw, ws)
                    y1, x1 = max(y2 - th, 0), max(x2 - tw, 0)
                    inputs.append(resize(big[..., y1:y2, x1:x2], s, s))
        x = self.vlm.normalize_pixels(torch.cat(inputs))
        with self.vlm.autocast():
            feats = self.trunk.forward_features(x)  # one forward pass for the frame and its tiles
        feats = feats[:, self.trunk.num_prefix_tokens:].float()
        b, n, c = feats.shape
        if n != self.grid * self.grid:
            raise DescriptorError(f"{self.model_name}: expected {self.grid}x{self.grid} patch tokens, got {n}")
        grids = feats.transpose(1, 2).reshape(b, c, self.grid, self.grid)
        if not self.cfg.tiling:
            return grids[0].reshape(c, -1).T.contiguous(), self.grid, self.grid
        gh, gw = nh * self.grid, nw * self.grid
        full = F.interpolate(grids[:1], size=(gh, gw), mode="bilinear", align_corners=False)
        full = full * self.cfg.global_token_weight
        k = 1
        for i in range(nh):
            for j in range(nw):
                full[..., i * self.grid:(i + 1) * self.grid, j * self.grid:(j + 1) * self.grid] += grids[k]
                k += 1
        return full[0].reshape(c, -1).T.contiguous(), gh, gw

    # -- stage 2: masks ----------------------------------------------------
    @torch.inference_mode()
    def mask_weights(self, masks: np.ndarray, gh: int, gw: int) -> torch.Tensor:
        """Soft per-patch weights (M, gh*gw) in [0,1] by bilinear downsampling (no antialias, as TextRegion)."""
        out = []
        for i in range(0, masks.shape[0], self.cfg.batch_size):
            m = torch.from_numpy(masks[i:i + self.cfg.batch_size]).to(self.vlm.device).float()[None]
            low = F.interpolate(m, size=(gh, gw), mode="bilinear", align_corners=False)[0]
            out.append(low.clamp_(0, 1).reshape(low.shape[0], -1))
        return torch.cat(out)

    # -- stage 4: pooling --------------------------------------------------
    @torch.inference_mode()
    def pool_tokens(self, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Region embeddings (M, D) L2-normalised from tokens (N,C) and weights (M,N), rows non-empty."""
        p = self.pool
        x = tokens[None].to(self.vlm.device)  # (1, N, C)
        n, c = x.shape[1:]
        heads, hd = p.num_heads, c // p.num_heads
        latent_len = p.latent.shape[1]
        with self.vlm.autocast():
            q = p.q(p.latent).reshape(1, latent_len, heads, hd).transpose(1, 2)  # (1,H,L,hd)
            kv = p.kv(x).reshape(1, n, 2, heads, hd).permute(2, 0, 3, 1, 4)
            v = kv[1][0].float()  # (H, N, hd)
            k_mean = p.kv(x.mean(1, keepdim=True)).reshape(1, 1, 2, heads, hd)[:, :, 0].transpose(1, 2)
            q, k_mean = p.q_norm(q).float(), p.k_norm(k_mean).float()  # (1,H,L,hd), (1,H,1,hd)
        # every key is the mean token's key, so attention is uniform over the unmasked patches
        score = (q @ k_mean.transpose(-2, -1)) * (hd ** -0.5)  # (1, H, L, 1)
        outs = []
        for i in range(0, weights.shape[0], self.cfg.batch_size):
            keep_key = weights[i:i + self.cfg.batch_size] > 0  # key-padding mask (m, N)
            logits = score.expand(keep_key.shape[0], heads, latent_len, n)
            logits = logits.masked_fill(~keep_key[:, None, None, :], float("-inf"))
            attn = logits.softmax(-1)  # (m, H, L, N)
            o = torch.einsum("mhln,hnd->mhld", attn, v)
            o = o.transpose(1, 2).reshape(-1, latent_len, c)
            with self.vlm.autocast():
                o = p.proj_drop(p.proj(o))
                if self.cfg.pool_mlp and getattr(p, "mlp", None) is not None:
                    o = o + p.mlp(p.norm(o))
                o = o.mean(1) if getattr(p, "pool", "token") == "avg" else o[:, 0]
                o = self.trunk.head(self.trunk.head_drop(self.trunk.fc_norm(o)))
                o = self.head(o)
            outs.append(F.normalize(o.float(), dim=-1))
        return torch.cat(outs)

    def extract(self, rgb: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb, masks = check_inputs(rgb, masks)
        desc, keep = empty_result(masks.shape[0], self.dim)
        idx = np.flatnonzero(big_enough(masks, self.cfg.min_mask_pixels))
        if idx.size == 0:
            return desc, keep
        tokens, gh, gw = self.patch_tokens(rgb)
        weights = self.mask_weights(masks[idx], gh, gw)
        alive = (weights.sum(1) > 0).cpu().numpy()
        idx, weights = idx[alive], weights[torch.from_numpy(alive).to(weights.device)]
        if idx.size and self.cfg.remove_global_patches:
            weights = remove_global_patches(tokens, weights, self.cfg.global_patch_threshold)
            alive = (weights.sum(1) > 0).cpu().numpy()
            idx, weights = idx[alive], weights[torch.from_numpy(alive).to(weights.device)]
        if idx.size:
            desc[idx] = self.pool_tokens(tokens, weights).cpu().numpy()
            keep[idx] = True
        return desc, keep
