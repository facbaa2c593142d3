"""camfusion-map / camfusion-relabel on the synthetic bag, every fusion, with the real
PE-Core-T-16-384 architecture at RANDOM weights (labels are meaningless; the tests
check the runs, the summaries and that maps reload to identical arrays)."""
import json

import numpy as np
import pytest

from camfusion_ros.cli import map_cli, relabel_cli
from camfusion_ros.core.camfusion.checkpoint import save_checkpoint
from camfusion_ros.core.camfusion.model import CamFusionConfig, build_camfusion
from camfusion_ros.core.map_store import load_map
from match_utils import assert_same_centroids

pytestmark = pytest.mark.slow
COMMON = ["--segmenter", "gt", "--model", "PE-Core-T-16-384", "--pretrained", "random", "--device", "cpu",
          "--set", "descriptor.tiling=false", "--set", "vocabulary.names=[chair, table, lamp, wall, floor]",
          "--max-frames", "3", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CAMFusion checkpoint with random weights sized for PE-Core-T (512-d)."""
    cfg = CamFusionConfig(input_dim=512, width=32, depth=1, heads=2, mlp_hidden=64)
    return str(save_checkpoint(tmp_path_factory.mktemp("ckpt") / "camfusion", build_camfusion(cfg), cfg))


def run_json(main, argv, capsys):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("fusion", ["avg", "l1medoid", "cosmedoid", "camfusion"])
def test_map_runs_with_every_fusion_and_reloads_identically(fusion, synth_scene, tmp_path, checkpoint, capsys):
    out = tmp_path / "map"
    extra = ["--checkpoint", checkpoint] if fusion == "camfusion" else []
    summary = run_json(map_cli.main, [str(synth_scene / "bag"), "--out", str(out), "--fusion", fusion, *COMMON, *extra],
                       capsys)
    assert summary["frames"] == 3 and summary["instances"] >= 5 and summary["fusion"] == fusion
    assert summary["weights_are_random"] is True
    assert set(summary["stage_seconds"]) == {"segmentation", "tracking", "descriptors", "fusion"}
    a, b = load_map(out), load_map(out)
    for field in ("points", "colors", "point_instance", "ids", "fused", "view_descriptors", "view_valid"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert np.allclose(np.linalg.norm(a.fused, axis=1), 1.0, atol=1e-4)
    assert a.meta["fusion"] == fusion and len(a.meta["labels"]) == len(a.ids)
    # saving the reloaded map again reproduces the same arrays
    from camfusion_ros.core.pipeline import MappingPipeline

    again = MappingPipeline.from_map(out)
    again._vlm = None
    again.save(tmp_path / "copy")
    c = load_map(tmp_path / "copy")
    for field in ("points", "point_instance", "ids", "fused", "view_descriptors", "view_valid", "view_scores"):
        assert np.array_equal(getattr(a, field), getattr(c, field)), field


def test_relabel_refuses_the_saved_views_without_the_bag(synth_scene, tmp_path, capsys):
    out = tmp_path / "map"
    run_json(map_cli.main, [str(synth_scene / "bag"), "--out", str(out), "--fusion", "avg", *COMMON], capsys)
    s = run_json(relabel_cli.main, [str(out), "--fusion", "l1medoid", "--out", str(tmp_path / "l1")], capsys)
    assert s["fusion"] == "l1medoid" and s["vocabulary_size"] == 5
    avg, l1 = load_map(out), load_map(tmp_path / "l1")
    assert np.array_equal(avg.ids, l1.ids) and l1.meta["fusion"] == "l1medoid"
    # the L1 medoid is one of the stored views
    for b in range(len(l1.ids)):
        views = l1.view_descriptors[b][l1.view_valid[b]]
        assert np.min(np.abs(views - l1.fused[b]).sum(1)) < 1e-4


def test_relabel_never_writes_over_a_users_folder(synth_scene, tmp_path, users_files, capsys):
    out = tmp_path / "map"
    run_json(map_cli.main, [str(synth_scene / "bag"), "--out", str(out), "--fusion", "avg", *COMMON], capsys)
    home = tmp_path / "home"
    intact = users_files(home)
    with pytest.raises(SystemExit) as e:
        relabel_cli.main([str(out), "--fusion", "l1medoid", "--out", str(home)])
    assert e.value.code == 2 and "important.txt" in capsys.readouterr().err
    intact()
    assert sorted(p.name for p in home.iterdir()) == ["important.txt", "sub"]


def test_bad_inputs_give_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        map_cli.main([str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        relabel_cli.main([str(tmp_path)])
    assert e.value.code == 2 and "missing" in capsys.readouterr().err


def test_missing_weights_error_is_one_whole_line_with_the_hint(synth_scene, tmp_path, capsys):
    """The hint on how to get the file comes last in the message: it must not be cut off."""
    with pytest.raises(SystemExit) as e:
        map_cli.main([str(synth_scene / "bag"), "--out", str(tmp_path / "m"), "--model", "PE-Core-L-14-336",
                      "--pretrained", "meta", "--set", f"vlm.cache_dir={tmp_path / 'empty_hub'}", "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: PE-Core-L-14-336/meta")
    assert err[0].endswith("or pass a local weights file path as pretrained")
    assert "huggingface-cli download timm/PE-Core-L-14-336 open_clip_model.safetensors" in err[0]


def test_map_with_sam_like_masks_counts_every_dropped_mask(synth_scene, tmp_path, capsys):
    common = [a if a != "gt" else "gt_noisy" for a in COMMON]
    s = run_json(map_cli.main, [str(synth_scene / "bag"), "--out", str(tmp_path / "map"), *common,
                                "--set", "segment_every=1", "--set", "segmenter.noise.spurious_per_frame=3"], capsys)
    assert s["segmenter"] == "gt_noisy" and s["segment_every"] == 1 and s["instances"] >= 3
    m = s["masks"]
    assert m["proposed"] > m["tracked"] > 0
    assert set(m["dropped"]) >= {"nms_nested"} and sum(m["dropped"].values()) >= m["proposed"] - m["tracked"]


def test_map_with_sam2_tiny_random_weights_runs_end_to_end(synth_scene, tmp_path, capsys):
    """Real SAM2.1-T (RANDOM weights: masks are arbitrary) through post-processing, tracker and TextRegion."""
    common = [a if a != "gt" else "sam2" for a in COMMON]
    s = run_json(map_cli.main, [str(synth_scene / "bag"), "--out", str(tmp_path / "map"), *common,
                                "--set", "segment_every=1", "--set", "segmenter.sam2_model=tiny",
                                "--set", "segmenter.sam2_checkpoint=random", "--set", "segmenter.points_per_side=4",
                                "--set", "segmenter.pred_iou_thresh=0", "--set", "segmenter.stability_score_thresh=0",
                                "--set", "segmenter.min_mask_pixels=20", "--max-frames", "2"], capsys)
    assert s["segmenter"] == "sam2" and s["frames"] == 2 and s["skipped_frames"] == 0
    m = s["masks"]
    assert m["tracked"] >= 1 and s["instances"] >= 1             # random weights still give a few masks
    assert m["tracked"] + sum(m["dropped"].values()) == m["proposed"]
    assert (tmp_path / "map" / "meta.json").is_file()


def test_map_refuses_an_out_folder_holding_a_users_file_before_mapping(synth_scene, tmp_path, capsys):
    out = tmp_path / "work"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(SystemExit) as e:
        map_cli.main([str(synth_scene / "bag"), "--out", str(out), *COMMON])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "thesis.tex" in err and "mapping" not in err          # refused before the first frame
    assert (out / "thesis.tex").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def _centroids(map_dir):
    snap = load_map(map_dir)
    return {int(i): snap.points[snap.point_instance == i].mean(axis=0) for i in snap.ids
            if np.any(snap.point_instance == i)}


def test_compressed_bag_maps_to_the_same_instances_as_the_raw_bag(tmp_path, capsys):
    """A bag written with camfusion-synth --compressed (JPEG colour, compressedDepth PNG) through camfusion-map:
    the instances of the raw bag of the same scene, centroids within 5 cm."""
    from camfusion_ros.datasets import synth_cli

    maps = {}
    for name, extra in (("raw", []), ("compressed", ["--compressed"])):
        assert synth_cli.main(["--out", str(tmp_path / name), "--seed", "1", "--frames", "3", "--objects", "3",
                               "--width", "160", "--height", "120", *extra]) == 0
        capsys.readouterr()
        s = run_json(map_cli.main, [str(tmp_path / name / "bag"), "--out", str(tmp_path / f"map_{name}"),
                                    "--fusion", "avg", *COMMON], capsys)
        assert s["frames"] == 3 and s["skipped_frames"] == 0 and s["instances"] >= 3
        maps[name] = _centroids(tmp_path / f"map_{name}")
    assert (tmp_path / "compressed" / "bag").is_dir() and len(maps["raw"]) == len(maps["compressed"])
    assert_same_centroids(list(maps["compressed"].values()), list(maps["raw"].values()))


def _without_pose_topic(src, dst):
    """A copy of a bag without /camera/pose: the camera pose is then only in /tf + /tf_static, as on a robot."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer

    from camfusion_ros.core.recording import ros_typestore

    store = ros_typestore()
    with AnyReader([src], default_typestore=store) as reader, \
            Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store)
                 for c in reader.connections if c.topic != "/camera/pose"}
        for c, t, raw in reader.messages(connections=[c for c in reader.connections if c.topic in conns]):
            writer.write(conns[c.topic], t, raw)
    return dst


def test_tf_only_bag_maps_to_the_same_instances_as_the_pose_topic(tmp_path, capsys):
    """camfusion-map --pose-source tf on the bag without its pose topic: the instances of the pose-topic run,
    centroids within 5 cm."""
    from camfusion_ros.datasets import synth_cli

    assert synth_cli.main(["--out", str(tmp_path / "scene"), "--seed", "1", "--frames", "3", "--objects", "3",
                           "--width", "160", "--height", "120"]) == 0
    capsys.readouterr()
    bag = tmp_path / "scene" / "bag"
    tf_only = _without_pose_topic(bag, tmp_path / "tf_only")
    s = run_json(map_cli.main, [str(bag), "--out", str(tmp_path / "map_topic"), "--fusion", "avg", *COMMON], capsys)
    t = run_json(map_cli.main, [str(tf_only), "--out", str(tmp_path / "map_tf"), "--fusion", "avg",
                                "--pose-source", "tf", *COMMON], capsys)
    assert s["pose_source"] == "topic" and t["pose_source"] == "tf"
    assert s["frames"] == t["frames"] == 3 and t["skipped_frames"] == 0 and s["instances"] == t["instances"] >= 3
    assert_same_centroids(list(_centroids(tmp_path / "map_tf").values()), list(_centroids(tmp_path / "map_topic").values()))
    # without --pose-source tf the TF-only bag is one clear error line
    with pytest.raises(SystemExit) as e:
        map_cli.main([str(tf_only), "--out", str(tmp_path / "map_none"), *COMMON])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "missing required topic pose (/camera/pose)" in err and "/tf" in err
