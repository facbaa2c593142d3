"""CAMFusion model, strict builder, checkpoints and the camfusion fuser (tiny configs, random weights)."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from camfusion_ros.core.camfusion import CamFusionConfig, ModelBuildError, build_camfusion
from camfusion_ros.core.camfusion.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from camfusion_ros.core.fusion import FusionError, make_fuser

CFG = CamFusionConfig(input_dim=16, width=32, depth=2, heads=4, mlp_hidden=64)


def _model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return build_camfusion(cfg).eval()


def _batch(b=4, k=5, d=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(b, k, d, generator=g)
    valid = torch.ones(b, k, dtype=torch.bool)
    return views, valid


def test_output_is_normalised_and_zero_without_views():
    m = _model()
    views, valid = _batch()
    valid[1, 1:] = False  # one view: empty memory
    valid[2] = False  # no view
    out = m(views, valid)
    assert out.shape == (4, 16)
    assert torch.isfinite(out).all()
    norms = out.norm(dim=-1)
    assert torch.allclose(norms[[0, 1, 3]], torch.ones(3), atol=1e-5)
    assert norms[2] == 0


def test_single_view_and_empty_instances_have_finite_gradients():
    m = _model().train()
    views, valid = _batch()
    valid[0, 1:] = False
    valid[3] = False
    m(views, valid)[:3].sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_padded_views_do_not_change_the_output():
    m = _model()
    views, valid = _batch(k=3)
    padded = torch.cat([views, 100 * torch.randn(4, 2, 16)], 1)
    pvalid = torch.cat([valid, torch.zeros(4, 2, dtype=torch.bool)], 1)
    assert torch.allclose(m(views, valid), m(padded, pvalid), atol=1e-5)


def test_view_order_does_not_matter_but_view_content_does():
    m = _model()
    views, valid = _batch()
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = m(views, valid)
    assert torch.allclose(out, m(views[:, perm], valid[:, perm]), atol=1e-5)
    changed = views.clone()
    changed[:, 2] = torch.randn(4, 16)
    assert not torch.allclose(out, m(changed, valid), atol=1e-3)


def test_other_views_reach_each_view_through_cross_attention():
    # With self-attention spanning the view only, views interact only via the memory of
    # the *other* views: an instance's output must still depend on every view.
    m = _model(CamFusionConfig(input_dim=16, width=32, depth=1, heads=4, mlp_hidden=64, self_attn_span="view"))
    views, valid = _batch(b=1, k=2)
    a = m(views, valid)
    views2 = views.clone()
    views2[0, 1] += 1.0
    assert not torch.allclose(a, m(views2, valid), atol=1e-4)
    all_span = _model(CamFusionConfig(input_dim=16, width=32, depth=1, heads=4, mlp_hidden=64, self_attn_span="all"))
    assert not torch.allclose(a, all_span(views, valid), atol=1e-4)


def test_paper_size_config_defaults():
    cfg = CamFusionConfig()
    assert (cfg.input_dim, cfg.width, cfg.depth, cfg.heads, cfg.mlp_hidden) == (1024, 1024, 8, 8, 4096)


def test_bad_config_is_refused():
    with pytest.raises(ModelBuildError, match="divisible"):
        CamFusionConfig(width=30, heads=4)
    with pytest.raises(ModelBuildError, match="unknown model config keys: wdth"):
        CamFusionConfig.from_dict({"wdth": 3})


def test_strict_builder_names_missing_unexpected_and_misshaped_keys():
    sd = _model().state_dict()
    missing = dict(sd)
    missing.pop("blocks.0.mlp.0.weight")
    with pytest.raises(ModelBuildError, match=r"missing key\(s\) blocks\.0\.mlp\.0\.weight"):
        build_camfusion(CFG, missing)
    extra = dict(sd, foo=torch.zeros(1))
    with pytest.raises(ModelBuildError, match=r"unexpected key\(s\) foo"):
        build_camfusion(CFG, extra)
    wrong = dict(sd, latent=torch.zeros(1, 1, 8))
    with pytest.raises(ModelBuildError, match=r"wrong shape for latent"):
        build_camfusion(CFG, wrong)
    assert torch.equal(build_camfusion(CFG, sd).state_dict()["latent"], sd["latent"])


def test_checkpoint_reloads_to_bit_identical_outputs(tmp_path):
    m = _model()
    save_checkpoint(tmp_path / "ck", m, CFG, extra={"step": 3})
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    doc = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert doc["model"]["width"] == 32 and doc["extra"]["step"] == 3
    m2, cfg2 = load_checkpoint(tmp_path / "ck")
    assert cfg2 == CFG
    views, valid = _batch()
    valid[0, 2:] = False
    with torch.no_grad():
        assert torch.equal(m(views, valid), m2(views, valid))
    # Saving again over it replaces it atomically.
    save_checkpoint(tmp_path / "ck", _model(seed=5), CFG)
    m3, _ = load_checkpoint(tmp_path / "ck" / "model.safetensors")
    with torch.no_grad():
        assert not torch.equal(m(views, valid), m3(views, valid))


def test_checkpoint_errors_are_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    ck = save_checkpoint(tmp_path / "ck", _model(), CFG)
    w = ck / "model.safetensors"
    sd = load_file(str(w))
    sd.pop("proj_in.bias")
    save_file(sd, str(w))
    with pytest.raises(CheckpointError, match=r"missing key\(s\) proj_in\.bias") as e:
        load_checkpoint(ck)
    assert "\n" not in str(e.value)
    # Wrong shape: the config says width 64 but the weights are width 32.
    ck = save_checkpoint(tmp_path / "ck2", _model(), CFG)
    doc = json.loads((ck / "config.json").read_text())
    doc["model"]["mlp_hidden"] = 128
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"wrong shape for blocks\.0\.mlp\.0\.bias"):
        load_checkpoint(ck)
    (ck / "model.safetensors").write_bytes(b"\x00garbage")
    doc["model"]["mlp_hidden"] = 64
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="corrupt checkpoint weights"):
        load_checkpoint(ck)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint config"):
        load_checkpoint(ck)
    (ck / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config not found"):
        load_checkpoint(ck)


def test_camfusion_fuser_matches_the_model_and_batches(tmp_path):
    m = _model()
    ck = save_checkpoint(tmp_path / "ck", m, CFG)
    rng = np.random.default_rng(0)
    views = rng.normal(size=(7, 4, 16)).astype(np.float32)
    valid = rng.random((7, 4)) < 0.7
    valid[0] = False
    valid[1] = [True, False, False, False]
    fuser = make_fuser("camfusion", checkpoint=str(ck), device="cpu")
    assert fuser.name == "camfusion"
    out = fuser.fuse(views, valid)
    assert out.shape == (7, 16) and out.dtype == np.float32
    assert np.all(out[0] == 0)
    assert np.allclose(np.linalg.norm(out[1:], axis=1), 1, atol=1e-5)
    unit = views / np.linalg.norm(views, axis=-1, keepdims=True)
    with torch.no_grad():
        ref = m(torch.from_numpy(unit), torch.from_numpy(valid)).numpy()
    assert np.allclose(out, ref, atol=1e-5)
    small = make_fuser("camfusion", checkpoint=str(ck), device="cpu", batch_size=2)
    assert np.allclose(small.fuse(views, valid), out, atol=1e-5)
    with pytest.raises(FusionError, match="16-d"):
        fuser.fuse(np.zeros((2, 3, 8), np.float32), np.ones((2, 3), bool))
    with pytest.raises(CheckpointError):
        make_fuser("camfusion", checkpoint=str(tmp_path / "missing"))


def test_a_checkpoint_claiming_a_huge_model_or_holding_nans_is_refused(tmp_path, peak_rss_growth_mib):
    ck = save_checkpoint(tmp_path / "ck", _model(), CFG)
    doc = json.loads((ck / "config.json").read_text())
    doc["model"].update(width=65536, mlp_hidden=262144, depth=64)       # ~2 TB of weights if it were built
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="does not match the model config: missing key"):
        load_checkpoint(ck)
    doc["model"]["depth"] = CFG.depth                                    # same keys, huge shapes
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_checkpoint(ck)
    assert peak_rss_growth_mib() < 100
    ck = save_checkpoint(tmp_path / "ck2", _model(), CFG)
    sd = load_file(str(ck / "model.safetensors"))
    sd["proj_in.bias"][0] = float("nan")
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"proj_in\.bias are not finite"):
        load_checkpoint(ck)
