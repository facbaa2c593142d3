"""camfusion-precompute on a real synthetic rosbag2 recording with ground-truth masks.

The VLM is open_clip's PE-Core-T-16-384 with RANDOM weights (no pretrained weights
on this machine): the code path is real, the descriptor values are meaningless.
"""
import json

import numpy as np
import pytest

from camfusion_ros.datasets.synth import SynthConfig, run
from camfusion_ros.training.precompute import AugmentConfig, augment, main
from camfusion_ros.training.shards import find_text_embeddings, load_split, read_shard, read_text_embeddings

ARGS = ["--model", "PE-Core-T-16-384", "--pretrained", "random", "--device", "cpu", "--no-tiling", "--min-pixels", "20"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "scene0"
    run(out, SynthConfig(frames=3, objects=3, width=96, height=72, seed=1))
    return out


def test_augment_crops_image_and_masks_alike_and_changes_colour():
    rng = np.random.default_rng(0)
    rgb = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 25:, 40:] = True
    a, m = augment(rgb, masks, rng, AugmentConfig(crop_min_scale=0.5))
    assert a.dtype == np.uint8 and a.shape[:2] == m.shape[1:] and m.shape[0] == 2
    assert a.shape[0] <= 40 and a.shape[1] <= 60
    assert not np.array_equal(a, rgb[: a.shape[0], : a.shape[1]])


def test_precompute_writes_a_shard_and_text_embeddings(recording, tmp_path, capsys):
    out = tmp_path / "data"
    assert main([str(recording), "--out", str(out), "--augment-copies", "1", *ARGS]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["instances"] > 0
    shard = read_shard(out / "train" / "scene0.safetensors")
    gt = json.loads((recording / "gt" / "instances.json").read_text())
    classes = json.loads((recording / "gt" / "classes.json").read_text())["names"]
    assert shard.class_names == classes
    assert set(shard.class_ids.tolist()) <= {v["class_id"] for v in gt.values()}
    n_views = shard.view_valid.sum(1)
    assert n_views.max() > 3  # 3 frames x (original + 1 augmented copy) > one view per frame
    d = shard.descriptors[shard.view_valid]
    assert np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-3)
    assert ((shard.visibility > 0) == shard.view_valid).all()
    names, emb = read_text_embeddings(find_text_embeddings(out / "train"))
    assert names == classes and emb.shape == (len(classes), shard.dim)
    assert len(load_split(out / "train", names)) == len(shard.class_ids)


def test_precompute_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_shards_go_beside_a_users_files_and_never_over_them(recording, tmp_path, users_files, capsys):
    out = tmp_path / "home"
    intact = users_files(out)
    assert main([str(recording), "--out", str(out), "--max-frames", "1", *ARGS]) == 0
    intact()
    assert (out / "train" / "scene0.safetensors").is_file()
    other = tmp_path / "other"
    intact = users_files(other, "train/scene0.safetensors")
    capsys.readouterr()
    assert main([str(recording), "--out", str(other), "--max-frames", "1", *ARGS]) == 2
    assert "train already exists there and was not written" in capsys.readouterr().err
    intact()
