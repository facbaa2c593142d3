"""core/vocabulary.py: class text embeddings, their disk cache, classification.

No pretrained weights exist on the test machines: text embeddings come from the real
open_clip PE-Core-T-16-384 text tower with RANDOM weights (saved to temporary weight
files where a test needs two fixed, distinct models); classification is tested on
hand-made embeddings.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from camfusion_ros.core.vlm import VLMConfig, load_vlm
from camfusion_ros.core.vocabulary import (DEFAULT_TEMPLATES, Vocabulary, VocabularyConfig,
                                           VocabularyError, resolve_names)

MODEL = "PE-Core-T-16-384"
NAMES = ["chair", "table", "lamp"]


@pytest.fixture(scope="module")
def random_vlm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vlm(VLMConfig(model_name=MODEL, pretrained="random", device="cpu"))


@pytest.fixture(scope="module")
def two_models(random_vlm, tmp_path_factory):
    """Two models with fixed, different weights, loaded from local safetensors files."""
    from safetensors.torch import save_file
    d = tmp_path_factory.mktemp("weights")
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(2):
        state = {k: v.detach().clone().contiguous() for k, v in random_vlm.model.state_dict().items()}
        if i:  # the second model: every float weight perturbed
            state = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                     for k, v in state.items()}
        path = d / f"model{i}.safetensors"
        save_file(state, str(path))
        out.append(load_vlm(VLMConfig(model_name=MODEL, pretrained=str(path), device="cpu")))
    return out


def test_embeddings_are_template_means_renormalised(random_vlm, tmp_path):
    templates = ["a photo of a {}.", "a {} in a room."]
    vocab = Vocabulary(NAMES, random_vlm, templates, cache_dir=tmp_path)
    assert vocab.names == NAMES and len(vocab) == 3
    assert vocab.embeddings.shape == (3, 512) and vocab.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vocab.embeddings, axis=1), 1.0, atol=1e-5)
    feats = random_vlm.encode_text([t.format("lamp") for t in templates]).mean(0)
    np.testing.assert_allclose(vocab.embeddings[2], feats / np.linalg.norm(feats), atol=1e-5)
    assert not list(tmp_path.iterdir())  # random weights differ per process: never cached


def test_text_cache_round_trips_and_is_keyed_by_model(two_models, tmp_path, monkeypatch):
    a, b = two_models
    first = Vocabulary(NAMES, a, cache_dir=tmp_path)
    assert not first.loaded_from_cache and len(list(tmp_path.glob("*.safetensors"))) == 1

    def no_encoding(texts):
        raise AssertionError("cached embeddings must not be recomputed")

    monkeypatch.setattr(a, "encode_text", no_encoding)
    again = Vocabulary(NAMES, a, cache_dir=tmp_path)
    assert again.loaded_from_cache
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    monkeypatch.undo()

    other = Vocabulary(NAMES, b, cache_dir=tmp_path)  # same names, other weights: its own entry
    assert not other.loaded_from_cache and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not np.allclose(other.embeddings, first.embeddings)
    fewer = Vocabulary(NAMES, a, DEFAULT_TEMPLATES[:2], cache_dir=tmp_path)  # other templates too
    assert not fewer.loaded_from_cache and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_broken_cache_file_is_recomputed(two_models, tmp_path):
    a, _ = two_models
    first = Vocabulary(NAMES, a, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.safetensors")
    cache.write_bytes(b"not a safetensors file")
    again = Vocabulary(NAMES, a, cache_dir=tmp_path)
    assert not again.loaded_from_cache
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    assert Vocabulary(NAMES, a, cache_dir=tmp_path).loaded_from_cache  # rewritten


def test_classify_top_k_on_hand_made_embeddings():
    emb = np.eye(4, dtype=np.float32)[:3] * 2.0  # rows are renormalised
    vocab = Vocabulary.from_embeddings(["wall", "floor", "door"], emb)
    queries = np.array([[0.9, 0.1, 0.4, 0.0],
                        [0.0, 0.0, 3.0, 0.1],
                        [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    idx, scores = vocab.classify(queries, top_k=2)
    assert idx.shape == (3, 2) and idx.dtype == np.int64 and scores.dtype == np.float32
    assert idx[0].tolist() == [0, 2] and idx[1][0] == 2
    q0 = queries[0] / np.linalg.norm(queries[0])
    np.testing.assert_allclose(scores[0], [q0[0], q0[2]], atol=1e-6)
    np.testing.assert_allclose(scores[2], 0.0)  # a zero descriptor scores 0 everywhere
    idx, scores = vocab.classify(queries[0], top_k=10)  # k clamps to the class count
    assert idx.shape == (1, 3) and np.all(np.diff(scores[0]) <= 0)
    with pytest.raises(VocabularyError, match="top_k"):
        vocab.classify(queries, top_k=0)
    with pytest.raises(VocabularyError, match=r"\(N, 4\)"):
        vocab.classify(np.ones((2, 5)), top_k=1)


def test_bad_names_and_templates(random_vlm):
    with pytest.raises(VocabularyError, match="repeated"):
        Vocabulary(["chair", "chair"], random_vlm, cache_dir=None)
    with pytest.raises(VocabularyError, match="at least one"):
        Vocabulary([], random_vlm, cache_dir=None)
    with pytest.raises(VocabularyError, match="template"):
        Vocabulary(NAMES, random_vlm, ["a photo"], cache_dir=None)
    with pytest.raises(VocabularyError, match="embeddings must be"):
        Vocabulary.from_embeddings(NAMES, np.ones((2, 4)))


def test_resolve_names_from_inline_shipped_and_file(tmp_path):
    assert resolve_names(VocabularyConfig(names=["a", "b"])) == ["a", "b"]
    replica = resolve_names(VocabularyConfig(source="replica"))
    assert len(replica) > 10 and len(set(replica)) == len(replica)
    path = tmp_path / "mine.txt"
    path.write_text("cup\n\n# comment\nbowl\n")
    assert resolve_names(VocabularyConfig(source=str(path))) == ["cup", "bowl"]
    with pytest.raises(VocabularyError, match="no-such-list"):
        resolve_names(VocabularyConfig(source="no-such-list"))


def test_from_config_uses_all_fields(random_vlm):
    cfg = VocabularyConfig(names=["cup", "bowl"], templates=["a {}."], cache_dir=None)
    vocab = Vocabulary.from_config(cfg, random_vlm)
    np.testing.assert_allclose(vocab.embeddings, random_vlm.encode_text(["a cup.", "a bowl."]), atol=1e-5)
