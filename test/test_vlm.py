"""core/vlm.py: loading open_clip models without a network.

No pretrained weights exist on the test machines, so the model here is the real
open_clip PE-Core-T-16-384 architecture with RANDOM weights (pretrained='random');
the tests check loading, shapes and error paths, never semantic quality.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from camfusion_ros.core.vlm import (VLMConfig, VLMError, WeightsNotFoundError, load_vlm,
                                    resolve_device)

MODEL = "PE-Core-T-16-384"


@pytest.fixture(scope="module")
def vlm():
    with pytest.warns(UserWarning, match="RANDOM weights"):  # built afresh, so it must warn
        return load_vlm(VLMConfig(model_name=MODEL, pretrained="random", device="cpu"), use_cache=False)


def test_random_model_reports_its_geometry(vlm):
    assert vlm.weights_are_random
    assert (vlm.image_size, vlm.patch_size, vlm.embed_dim) == (384, 16, 512)
    assert vlm.device.type == "cpu"
    assert vlm.cache_key.endswith("|random")


def test_models_are_cached_per_process():
    cfg = VLMConfig(model_name=MODEL, pretrained="random", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_vlm(cfg) is load_vlm(cfg) is load_vlm(MODEL, "random", "cpu")


def test_encode_text_is_normalised_float32(vlm):
    e = vlm.encode_text(["a chair", "a table", "a lamp"])
    assert e.shape == (3, 512) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(e[0], e[1])
    np.testing.assert_allclose(vlm.encode_text(["a chair"])[0], e[0], atol=1e-5)
    assert vlm.encode_text([]).shape == (0, 512)
    with pytest.raises(VLMError):
        vlm.encode_text("a chair")


def test_encode_images_is_normalised(vlm):
    f = vlm.encode_images(torch.rand(2, 3, 384, 384))
    assert f.shape == (2, 512) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)


def test_missing_weight_file_names_the_file(tmp_path):
    missing = tmp_path / "PE-Core-T-16-384.safetensors"
    with pytest.raises(WeightsNotFoundError, match="PE-Core-T-16-384.safetensors"):
        load_vlm(VLMConfig(model_name=MODEL, pretrained=str(missing), device="cpu"))


def test_tag_not_in_local_cache_says_how_to_get_it(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        load_vlm(VLMConfig(model_name=MODEL, pretrained="meta", device="cpu", cache_dir=str(tmp_path)))
    msg = str(err.value)
    assert "timm/PE-Core-T-16-384" in msg and "huggingface-cli download" in msg and "\n" not in msg


def test_unknown_tag_lists_known_tags(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="meta"):
        load_vlm(VLMConfig(model_name=MODEL, pretrained="laion2b", device="cpu", cache_dir=str(tmp_path)))


def test_local_weights_files_round_trip(vlm, tmp_path):
    from safetensors.torch import save_file
    state = {k: v.detach().clone().contiguous() for k, v in vlm.model.state_dict().items()}
    save_file(state, str(tmp_path / "weights.safetensors"))
    torch.save(state, str(tmp_path / "weights.pt"))  # read back with torch.load(weights_only=True)
    texts = ["a sofa", "a bed"]
    for name in ("weights.safetensors", "weights.pt"):
        path = tmp_path / name
        loaded = load_vlm(VLMConfig(model_name=MODEL, pretrained=str(path), device="cpu"), use_cache=False)
        assert not loaded.weights_are_random and str(path.resolve()) in loaded.cache_key
        np.testing.assert_allclose(loaded.encode_text(texts), vlm.encode_text(texts), atol=1e-5)


def test_weights_that_do_not_fit_give_one_line(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(3)}, str(path))
    with pytest.raises(VLMError) as err:
        load_vlm(VLMConfig(model_name=MODEL, pretrained=str(path), device="cpu"), use_cache=False)
    assert "wrong.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_bad_config_is_rejected():
    with pytest.raises(VLMError, match="unknown open_clip model"):
        load_vlm(VLMConfig(model_name="PE-Core-Q-99", pretrained="random"))
    with pytest.raises(VLMError, match="precision"):
        load_vlm(VLMConfig(model_name=MODEL, pretrained="random", precision="fp8"))
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda")


def test_random_weights_are_the_same_in_every_process():
    """A node and an offline run of the same random-weights config must produce the same descriptors."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('ignore'); from camfusion_ros.core.vlm import load_vlm; "
            "print(float(load_vlm('PE-Core-T-16-384', 'random', 'cpu').encode_text(['a chair'])[0][:4].sum()))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-500:]
    assert runs[0].stdout == runs[1].stdout
