"""core/descriptors: TextRegion, crop baselines and HOV-SG.

No pretrained weights exist on the test machines: the model is the real open_clip
PE-Core-T-16-384 with RANDOM weights, so these tests check the mechanics (shapes,
normalisation, keep flags, masked-pooling properties, blending formulas), not
whether descriptors name the right class.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camfusion_ros.core.descriptors import (DescriptorConfig, DescriptorError, hovsg_blend,
                                            make_extractor)
from camfusion_ros.core.descriptors.base import resize
from camfusion_ros.core.descriptors.crops import bbox_crop, mask_crop
from camfusion_ros.core.descriptors.textregion import remove_global_patches, tile_layout
from camfusion_ros.core.vlm import VLMConfig, load_vlm

H, W = 48, 64


@pytest.fixture(scope="module")
def vlm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vlm(VLMConfig(model_name="PE-Core-T-16-384", pretrained="random", device="cpu"))


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = np.zeros((4, H, W), bool)
    masks[0, :24, :32] = True
    masks[1, 20:, 30:] = True
    masks[2, 5:40, 40:60] = True  # masks[3] stays empty
    return rgb, masks


def check_contract(desc, keep, m, dim):
    assert desc.shape == (m, dim) and desc.dtype == np.float32
    assert keep.shape == (m,) and keep.dtype == bool
    np.testing.assert_allclose(np.linalg.norm(desc[keep], axis=1), 1.0, atol=1e-5)
    assert not desc[~keep].any()


@pytest.mark.parametrize("tiling", [False, True])
def test_textregion_contract(vlm, frame, tiling):
    rgb, masks = frame
    ex = make_extractor(DescriptorConfig(tiling=tiling, remove_global_patches=False), vlm)
    assert ex.dim == 512 and ex.model_name == "PE-Core-T-16-384"
    desc, keep = ex.extract(rgb, masks)
    check_contract(desc, keep, 4, 512)
    assert keep.tolist() == [True, True, True, False]
    assert not np.allclose(desc[0], desc[1])
    if not tiling:
        desc2, keep2 = ex.extract(rgb, masks)  # deterministic
        np.testing.assert_array_equal(keep, keep2)
        np.testing.assert_allclose(desc, desc2, atol=1e-6)


def test_textregion_global_patch_removal_only_drops(vlm, frame):
    rgb, masks = frame
    desc, keep = make_extractor(DescriptorConfig(tiling=False), vlm).extract(rgb, masks)
    check_contract(desc, keep, 4, 512)
    assert not keep[3]


def test_empty_and_bad_inputs(vlm, frame):
    rgb, masks = frame
    for method in ("textregion", "maskcrop"):
        ex = make_extractor(DescriptorConfig(method=method, tiling=False), vlm)
        desc, keep = ex.extract(rgb, np.zeros((0, H, W), bool))
        assert desc.shape == (0, 512) and keep.shape == (0,)
        with pytest.raises(DescriptorError, match="image is 48x64"):
            ex.extract(rgb, np.ones((1, H + 1, W), bool))
        with pytest.raises(DescriptorError, match="uint8"):
            ex.extract(rgb.astype(np.float32), masks)
    with pytest.raises(DescriptorError, match="unknown descriptor method"):
        make_extractor(DescriptorConfig(method="clip"), vlm)


def test_min_mask_pixels_drops_small_masks(vlm, frame):
    rgb, masks = frame
    ex = make_extractor(DescriptorConfig(tiling=False, remove_global_patches=False,
                                         min_mask_pixels=24 * 32 + 1), vlm)
    _, keep = ex.extract(rgb, masks)
    assert keep.tolist() == [False, True, False, False]  # only mask 1 (28x34 px) is large enough


def test_region_pooling_ignores_tokens_outside_the_region(vlm):
    ex = make_extractor(DescriptorConfig(tiling=False), vlm)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(24 * 24, 192, generator=g)
    weights = torch.zeros(2, 24 * 24)
    weights[0, :100] = 1.0
    weights[1, 300:310] = torch.linspace(0.1, 1.0, 10)
    other = torch.randn(24 * 24, 192, generator=g)
    region = (weights > 0).any(0)
    other[region] = tokens[region]  # same tokens inside the regions, different outside
    a, b = ex.pool_tokens(tokens, weights), ex.pool_tokens(other, weights)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # uniform attention: soft weights only select patches, they do not reweight them
    torch.testing.assert_close(ex.pool_tokens(tokens, (weights > 0).float()), a, atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[1], atol=1e-3)


def test_whole_image_region_equals_the_heads_own_pooling_under_uniform_attention(vlm, frame):
    """With the head's query zeroed its own attention is uniform, so pooling a full-image
    region must reproduce the model's own head output (value proj, out proj, MLP, final proj)."""
    rgb, _ = frame
    uniform = copy.copy(vlm)
    uniform.model = copy.deepcopy(vlm.model)
    pool = uniform.model.visual.trunk.attn_pool
    with torch.no_grad():
        pool.q.weight.zero_()
        pool.q.bias.zero_()
    cfg = DescriptorConfig(tiling=False, remove_global_patches=False, pool_mlp=True)
    ex = make_extractor(cfg, uniform)
    tokens, gh, gw = ex.patch_tokens(rgb)
    with torch.no_grad():
        trunk = uniform.model.visual.trunk
        expected = F.normalize(uniform.model.visual.head(trunk.forward_head(tokens[None])), dim=-1)[0]
    desc, keep = ex.extract(rgb, np.ones((1, H, W), bool))
    assert keep[0]
    np.testing.assert_allclose(desc[0], expected.numpy(), atol=1e-4)


def test_tile_layout_matches_the_paper_setting():
    assert tile_layout(480, 640, 336, 2016, 672) == (672, 896, 2, 2)
    assert tile_layout(240, 320, 384, 2016, 672) == (672, 896, 1, 2)
    assert tile_layout(100, 1000, 336, 2016, 672) == (202, 2016, 1, 6)


def test_global_patch_removal_on_hand_made_tokens():
    e1, e2 = torch.eye(2)
    g = F.normalize(e1 + e2, dim=0)  # a patch equally similar to both regions
    tokens = torch.stack([e1, e1, g, e2, e2, e2])
    weights = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    out = remove_global_patches(tokens, weights, threshold=0.2)
    assert out[0].tolist() == [1, 1, 0, 0, 0, 0] and out[1].tolist() == [0, 0, 0, 1, 1, 1]
    # its score is (1 + 2 * 0.707) / 3 - 0.707 = 0.098: kept at the default threshold 0.07
    assert torch.equal(remove_global_patches(tokens, weights, threshold=0.07), weights)


def test_mask_crop_blacks_out_and_pads_to_square():
    img = torch.ones(1, 3, 40, 60)
    mask = torch.zeros(40, 60, dtype=torch.bool)
    mask[10:20, 10:30] = True
    mask[10, 10] = False
    crop = mask_crop(img, mask, (10, 10, 20, 30), 20)
    assert crop.shape == (1, 3, 20, 20)
    assert crop[..., :4, :].max() == 0 and crop[..., -4:, :].max() == 0  # padding rows are black
    assert crop[..., 7:13, 2:18].min() > 0.99  # the mask keeps its pixels
    assert crop[..., 5, 0].max() < 1.0  # the pixel outside the mask went dark


def test_bbox_crop_keeps_context_and_clips_to_image():
    img = torch.arange(40 * 60, dtype=torch.float32).reshape(1, 1, 40, 60).expand(1, 3, 40, 60)
    crop = bbox_crop(img, (10, 10, 20, 30), margin=5, size=10)
    torch.testing.assert_close(crop, F.interpolate(img[..., 5:25, 5:35], size=(10, 10), mode="bilinear",
                                                   align_corners=False, antialias=True))
    clipped = bbox_crop(img, (30, 50, 40, 60), margin=50, size=8)  # the margin runs off the image
    torch.testing.assert_close(clipped, F.interpolate(img, size=(8, 8), mode="bilinear",
                                                      align_corners=False, antialias=True))


@pytest.mark.parametrize("method", ["maskcrop", "bboxcrop"])
def test_crop_methods_contract(vlm, frame, method):
    rgb, masks = frame
    # a context margin of 4 px: the default 50 px around any box of this 48 x 64 image is the whole image,
    # which would make every BBox Crop the same picture
    desc, keep = make_extractor(DescriptorConfig(method=method, bbox_margin_px=4), vlm).extract(rgb, masks[[0, 3, 2]])
    check_contract(desc, keep, 3, 512)
    assert keep.tolist() == [True, False, True]
    assert not np.allclose(desc[0], desc[2])


def test_hovsg_with_one_mask_is_the_whole_image_embedding(vlm, frame):
    """The softmax over one mask gives it weight 1: HOV-SG returns the whole-image embedding,
    while the fixed-weight variant (w = 0.1) stays mostly local."""
    rgb, masks = frame
    one = masks[[3, 2]]  # an empty mask and one real one
    desc, keep = make_extractor(DescriptorConfig(method="hovsg"), vlm).extract(rgb, one)
    check_contract(desc, keep, 2, 512)
    assert keep.tolist() == [False, True]
    whole = vlm.encode_images(resize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255, 384, 384))
    np.testing.assert_allclose(desc[1], whole[0], atol=1e-4)
    fixed, keep = make_extractor(DescriptorConfig(method="hovsg_fixed"), vlm).extract(rgb, one)
    check_contract(fixed, keep, 2, 512)
    assert float(fixed[1] @ whole[0]) < float(desc[1] @ whole[0])


def test_hovsg_blend_formula_on_hand_made_vectors():
    g = np.array([1.0, 0.0, 0.0])
    mask = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    bbox = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    local = 0.4418 * mask + 0.5582 * bbox
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    cos = local @ g  # [0, 0.4418 / |local_1|]
    w = np.exp(cos) / np.exp(cos).sum()
    expected = w[:, None] * g + (1 - w[:, None]) * local
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(hovsg_blend(g, mask, bbox), expected, atol=1e-6)
    assert w[1] > w[0]  # the mask closer to the whole image leans more on it
    fixed = 0.1 * g + 0.9 * local
    fixed /= np.linalg.norm(fixed, axis=1, keepdims=True)
    np.testing.assert_allclose(hovsg_blend(g, mask, bbox, fixed_global_weight=0.1), fixed, atol=1e-6)
    # a lone mask takes all the softmax weight: its descriptor is the whole image's
    np.testing.assert_allclose(hovsg_blend(g, mask[:1], bbox[:1])[0], g, atol=1e-6)


def test_textregion_rejects_towers_without_an_attention_pool_head():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = load_vlm(VLMConfig(model_name="ViT-S-32", pretrained="random", device="cpu"))
    with pytest.raises(DescriptorError, match="attention-pool"):
        make_extractor(DescriptorConfig(), clip)
