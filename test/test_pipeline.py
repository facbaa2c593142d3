"""MappingPipeline end to end on a few synthetic frames.

The vision-language model is the real PE-Core-T-16-384 architecture from
open_clip with RANDOM weights (no pretrained weights exist on this machine):
the code path is real; descriptors and labels carry no meaning, so the tests
check structure, consistency and round trips, never label correctness.
"""
import numpy as np
import pytest

from camfusion_ros.core.config import load_config
from camfusion_ros.core.frames import FrameError
from camfusion_ros.core.fusion import make_fuser
from camfusion_ros.core.map_store import load_map
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import read_frames

VOCAB = ["chair", "table", "lamp", "plant", "wall", "floor"]
TINY = {"segmenter": {"name": "gt"}, "segment_every": 1, "vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "random", "device": "cpu"},
        "descriptor": {"tiling": False}, "vocabulary": {"names": VOCAB}, "fuse_every": 0}


@pytest.fixture(scope="module")
def frames(synth_scene):
    return list(read_frames(synth_scene / "bag", max_frames=4))


@pytest.fixture(scope="module")
def pipe(frames):
    p = MappingPipeline(load_config(TINY))
    for f in frames:
        p.process(f)
    p.fuse_pending()
    return p


def test_instances_carry_normalised_embeddings_and_geometry(pipe):
    recs = pipe.instances()
    assert len(recs) >= 5
    for r in recs:
        assert r.embedding.shape == (pipe.extractor.dim,)
        assert np.isclose(np.linalg.norm(r.embedding), 1.0, atol=1e-4)
        assert 1 <= r.num_views <= 5
        assert r.label in VOCAB and r.top_labels[0] == r.label and len(r.top_labels) == 5
        assert r.top_scores == sorted(r.top_scores, reverse=True)
        assert np.all(r.bbox_min <= r.centroid) and np.all(r.centroid <= r.bbox_max)
        assert r.first_seen_ns <= r.last_seen_ns


def test_nothing_is_dirty_after_fusion_and_new_views_mark_dirty(pipe, frames):
    assert pipe.fuse_pending() == []
    assert all(not st.dirty for st in pipe.state.values())


def test_fused_embedding_is_the_configured_fusion_of_the_stored_views(pipe):
    for iid, st in pipe.state.items():
        views = st.bank.descriptors()[None]
        expected = make_fuser("avg").fuse(views, np.ones(views.shape[:2], bool))[0]
        assert np.allclose(st.fused, expected, atol=1e-5)


def test_views_are_the_best_scored_ones_and_bounded(pipe):
    for st in pipe.state.values():
        scores = [v.score for v in st.bank.views]
        assert scores == sorted(scores, reverse=True) and len(scores) <= 5


def test_query_text_ranks_every_fused_instance(pipe):
    ranked = pipe.query_text("a lamp", top_k=0)
    assert len(ranked) == len(pipe.instances())
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert len(pipe.query_text("a lamp", top_k=2)) == 2
    assert pipe.query_text("   ") == []
    # the node encodes the text outside the map's lock and passes the embedding in: same ranking
    assert pipe.query_text("a lamp", 0, pipe.encode_query("a lamp")) == ranked


def test_label_with_another_vocabulary_leaves_the_map_labels_alone(pipe):
    before = [r.label for r in pipe.instances()]
    recs = pipe.label_with(["sofa", "bed"], top_k=2)
    assert all(r.label in ("sofa", "bed") and len(r.top_labels) == 2 for r in recs)
    assert [r.label for r in pipe.instances()] == before
    # encoded beforehand (outside the node's lock), the same vocabulary gives the same labels and scores
    again = pipe.label_with(pipe.vocabulary_for(["sofa", "bed"]), top_k=2)
    assert [(r.top_labels, r.top_scores) for r in again] == [(r.top_labels, r.top_scores) for r in recs]
    assert pipe.vocabulary_for(None) is pipe.vocabulary


def test_bad_frame_is_rejected_and_changes_nothing(pipe, frames):
    bad = frames[0]
    import dataclasses

    bad = dataclasses.replace(bad, depth=np.full_like(bad.depth, np.nan))
    n, seen = len(pipe.tracker.instances), pipe.frames_seen
    with pytest.raises(FrameError, match="no valid reading"):
        pipe.process(bad)
    assert len(pipe.tracker.instances) == n and pipe.frames_seen == seen


def test_map_round_trip_and_refusion(pipe, tmp_path):
    pipe.save(tmp_path / "map")
    snap = load_map(tmp_path / "map")
    again = MappingPipeline.from_map(tmp_path / "map", load_config(TINY))
    a, b = pipe.instances(), again.instances()
    assert [r.id for r in a] == [r.id for r in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.embedding, y.embedding)
        assert x.label == y.label and x.num_views == y.num_views
        assert np.allclose(x.centroid, y.centroid)
    assert snap.meta["weights_are_random"] is True and snap.meta["fusion"] == "avg"
    # re-fusing the stored views with another fusion changes embeddings of multi-view instances only
    again.set_fuser(make_fuser("l1medoid"))
    again.fuse_pending()
    for x, y in zip(a, again.instances()):
        if x.num_views == 1:
            assert np.allclose(x.embedding, y.embedding, atol=1e-5)
    assert any(not np.allclose(x.embedding, y.embedding) for x, y in zip(a, again.instances()) if x.num_views > 2)


@pytest.mark.parametrize("override,error,words", [
    ({"vlm": {"pretrained": "/nonexistent/pe.safetensors"}}, "WeightsNotFoundError", "/nonexistent/pe.safetensors"),
    ({"vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "meta", "cache_dir": "/nonexistent"}},
     "WeightsNotFoundError", "huggingface-cli download"),
    ({"segmenter": {"name": "sam2", "sam2_model": "tiny", "sam2_checkpoint": "/nonexistent/s.pt"}},
     "SegmenterError", "sam2.1_hiera_tiny.pt"),
    ({"fusion": {"method": "camfusion"}}, "FusionError", "fusion.checkpoint"),
    ({"fusion": {"method": "camfusion", "checkpoint": "/nonexistent/ckpt"}}, "CheckpointError", "/nonexistent/ckpt"),
])
def test_missing_weights_are_named_before_any_model_loads(override, error, words):
    cfg = load_config({**TINY, **override} if "vlm" not in override else
                      {**TINY, "vlm": {**TINY["vlm"], **override["vlm"]}})
    with pytest.raises(Exception) as e:
        MappingPipeline(cfg).check_weights()
    assert type(e.value).__name__ == error and words in str(e.value)
    assert "\n" not in str(e.value)


def test_tracker_merges_are_gated_by_descriptor_agreement():
    """The pipeline's merge gate: undecided without views, yes for agreeing descriptors, no otherwise."""
    from camfusion_ros.core.pipeline import _InstanceState
    from camfusion_ros.core.view_bank import View, ViewBank

    p = MappingPipeline(load_config(TINY))
    assert p._merge_gate(1, 2) is None

    def state(vec):
        bank = ViewBank(5)
        bank.add(View(1.0, np.asarray(vec, np.float32), 0, 0, (0, 0, 1, 1)))
        return _InstanceState(bank)

    p.state = {1: state([1, 0, 0]), 2: state([0.99, 0.141, 0]), 3: state([0, 1, 0])}
    assert p._merge_gate(1, 2) is True and p._merge_gate(1, 3) is False
    assert p._merge_gate(1, 4) is None


def test_mask_counts_add_up_per_frame(frames):
    p = MappingPipeline(load_config({**TINY, "segmenter": {"name": "gt_noisy"}}))
    for f in frames[:2]:
        p.process(f)
    m = p.mask_summary()
    assert m["proposed"] > m["tracked"] > 0 and m["dropped"]
    assert m["tracked"] + sum(m["dropped"].values()) == m["proposed"]
