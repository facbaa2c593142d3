"""datasets/synth.py + camfusion-synth: real rosbag2 output, exact geometry, visible instances, determinism."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from scipy.spatial import cKDTree

from camfusion_ros.core.geometry import backproject, transform
from camfusion_ros.core.ply import read_ply
from camfusion_ros.core.recording import read_frames
from camfusion_ros.datasets.scene import BACKGROUND_CLASSES, DEFAULT_CLASSES, build_scene
from camfusion_ros.datasets.synth import SynthConfig, SynthError, generate, run

TOPICS = {
    "/camera/color/image_raw": "sensor_msgs/msg/Image",
    "/camera/depth/image_raw": "sensor_msgs/msg/Image",
    "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera/pose": "geometry_msgs/msg/PoseStamped",
    "/camera/instances/image_raw": "sensor_msgs/msg/Image",
}
TF_TOPICS = {"/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"}   # checked in test_recording


def _synth_cmd():
    exe = shutil.which("camfusion-synth")
    return [exe] if exe else [sys.executable, "-m", "camfusion_ros.datasets.synth_cli"]


def _gt_points(scene_dir):
    g = read_ply(scene_dir / "gt" / "points.ply")
    return g, np.stack([g["x"], g["y"], g["z"]], axis=1).astype(np.float64)


def test_cli_bag_read_with_plain_rosbags(tmp_path):
    out = tmp_path / "s1"
    res = subprocess.run(_synth_cmd() + ["--out", str(out), "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 30 and summary["objects"] == 6
    with AnyReader([out / "bag"]) as reader:  # plain rosbags, not our reader
        topics = {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
        assert {t: v for t, v in topics.items() if t not in TF_TOPICS} == {t: (ty, 30) for t, ty in TOPICS.items()}
        assert {t: topics[t][0] for t in TF_TOPICS} == TF_TOPICS
        stamps: dict[int, set] = {}
        encodings = {}
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic in TOPICS]):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            stamps.setdefault(stamp, set()).add(conn.topic)
            frame_id = msg.header.frame_id
            assert frame_id == ("map" if conn.topic == "/camera/pose" else "camera_color_optical_frame")
            if conn.msgtype == "sensor_msgs/msg/Image":
                encodings.setdefault(conn.topic, set()).add(msg.encoding)
                assert (msg.height, msg.width) == (240, 320)
    assert len(stamps) == 30 and all(v == set(TOPICS) for v in stamps.values())  # one stamp per frame, all topics
    dt = np.diff(sorted(stamps))
    assert np.all(dt == 100_000_000)  # 10 Hz
    assert encodings == {"/camera/color/image_raw": {"rgb8"}, "/camera/depth/image_raw": {"16UC1"},
                         "/camera/instances/image_raw": {"32SC1"}}
    for name in ("points.ply", "classes.json", "instances.json"):
        assert (out / "gt" / name).is_file()


def test_cli_compressed_writes_image_transport_topics(tmp_path):
    """--compressed: colour JPEG on .../compressed, compressedDepth PNG (12-byte header) on .../compressedDepth."""
    out = tmp_path / "c"
    res = subprocess.run(_synth_cmd() + ["--out", str(out), "--seed", "1", "--frames", "2", "--objects", "2",
                                         "--width", "32", "--height", "24", "--compressed"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    comp = "sensor_msgs/msg/CompressedImage"
    expected = dict(TOPICS)
    del expected["/camera/color/image_raw"], expected["/camera/depth/image_raw"]
    expected.update({"/camera/color/image_raw/compressed": comp, "/camera/depth/image_raw/compressedDepth": comp})
    with AnyReader([out / "bag"]) as reader:
        got = {n: (i.msgtype, i.msgcount) for n, i in reader.topics.items() if n not in TF_TOPICS}
        assert got == {t: (ty, 2) for t, ty in expected.items()}
        for conn, _, raw in reader.messages():
            if conn.msgtype != comp:
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            assert msg.header.frame_id == "camera_color_optical_frame"
            data = msg.data.tobytes()
            if conn.topic.endswith("/compressed"):
                assert msg.format == "rgb8; jpeg compressed bgr8" and data[:3] == b"\xff\xd8\xff"
            else:
                assert msg.format == "16UC1; compressedDepth png" and data[12:16] == b"\x89PNG"
    frames = list(read_frames(out / "bag"))
    assert len(frames) == 2 and frames[0].rgb.shape == (24, 32, 3) and np.all(frames[0].depth > 0)


def test_depth_reprojects_onto_gt_surface(synth_scene):
    _, pts = _gt_points(synth_scene)
    tree = cKDTree(pts)
    world = []
    for f in read_frames(synth_scene / "bag"):
        assert np.all(f.depth > 0)  # closed room: every pixel has depth
        p, _, _ = backproject(f.depth, f.K, stride=2)
        world.append(transform(p, f.T_world_cam))
    dist, _ = tree.query(np.concatenate(world))
    assert np.median(dist) < 0.01
    assert np.percentile(dist, 99) < 0.03


def test_instance_image_matches_gt_points(synth_scene):
    g, pts = _gt_points(synth_scene)
    tree = cKDTree(pts)
    agree = total = 0
    for f in list(read_frames(synth_scene / "bag"))[::6]:
        p, r, c = backproject(f.depth, f.K, stride=3)
        dist, idx = tree.query(transform(p, f.T_world_cam))
        near = dist < 0.02
        agree += int(np.sum(g["instance"][idx[near]] == f.gt_instances[r[near], c[near]]))
        total += int(near.sum())
    assert agree / total > 0.97


def test_every_instance_visible_in_three_frames(synth_scene):
    instances = json.loads((synth_scene / "gt" / "instances.json").read_text())
    seen = {int(i): 0 for i in instances}
    for f in read_frames(synth_scene / "bag"):
        ids, counts = np.unique(f.gt_instances, return_counts=True)
        for i, n in zip(ids, counts):
            if n >= 50:
                seen[int(i)] += 1
    assert 0 not in seen
    assert all(v >= 3 for v in seen.values()), seen


def test_gt_files_format(synth_scene):
    g, _ = _gt_points(synth_scene)
    classes = json.loads((synth_scene / "gt" / "classes.json").read_text())
    instances = json.loads((synth_scene / "gt" / "instances.json").read_text())
    assert set(classes["background"]) == set(BACKGROUND_CLASSES) <= set(classes["names"])
    assert g["x"].dtype == np.float32 and g["red"].dtype == np.uint8
    assert g["instance"].dtype == np.int32 and g["label"].dtype == np.int32
    assert g["instance"].min() >= 1 and g["label"].min() >= 0  # every surface has an instance and a label
    assert set(np.unique(g["instance"]).tolist()) == {int(i) for i in instances}
    for iid, info in instances.items():
        labels = np.unique(g["label"][g["instance"] == int(iid)])
        assert labels.tolist() == [info["class_id"]]
        assert classes["names"][info["class_id"]] == info["class_name"]
    objects = [v["class_name"] for v in instances.values() if v["class_name"] not in BACKGROUND_CLASSES]
    assert len(objects) == 6 and len(set(objects)) == 6  # distinct classes
    assert sum(v["class_name"] == "wall" for v in instances.values()) == 4
    assert len(np.unique(np.stack([g["red"], g["green"], g["blue"]], 1)[g["instance"] == 7], axis=0)) > 20  # textured


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_objects_do_not_interpenetrate(seed):
    scene = build_scene(8, DEFAULT_CLASSES, np.random.default_rng(seed))
    boxes = []
    for iid in scene.centers:
        v = scene.mesh.vertices[np.unique(scene.mesh.faces[scene.face_instance == iid])]
        boxes.append((v[:, :2].min(0), v[:, :2].max(0)))
        assert v[:, 2].min() >= -1e-9 and v[:, 2].max() < scene.room_height
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (alo, ahi), (blo, bhi) = boxes[i], boxes[j]
            assert np.any(ahi < blo) or np.any(bhi < alo), (i, j)  # footprints separated on some axis
    names = [scene.class_names[scene.instance_class[i]] for i in scene.centers]
    assert len(set(names)) == 8


def test_determinism_and_depth_encodings(tmp_path):
    small = dict(frames=4, objects=3, width=64, height=48, gt_spacing_m=0.05)
    a, b = generate(tmp_path / "a", SynthConfig(seed=5, **small)), generate(tmp_path / "b", SynthConfig(seed=5, **small))
    c = generate(tmp_path / "c", SynthConfig(seed=6, **small))
    d = generate(tmp_path / "d", SynthConfig(seed=5, depth_encoding="32FC1", **small))
    fa, fb, fc, fd = (list(read_frames(x / "bag")) for x in (a, b, c, d))
    assert len(fa) == 4
    for x, y in zip(fa, fb):
        for k in ("stamp_ns", "rgb", "depth", "K", "T_world_cam", "gt_instances"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
    assert (a / "gt" / "points.ply").read_bytes() == (b / "gt" / "points.ply").read_bytes()
    assert not np.array_equal(fa[0].rgb, fc[0].rgb)
    for x, y in zip(fa, fd):  # 16UC1 is the 32FC1 metres rounded to millimetres
        np.testing.assert_array_equal(x.rgb, y.rgb)
        assert np.abs(x.depth - y.depth).max() <= 0.0005 + 1e-6
        assert not np.array_equal(x.depth, y.depth)


def test_custom_classes_and_errors(tmp_path, capsys):
    from camfusion_ros.datasets.synth_cli import main

    classes = tmp_path / "classes.txt"
    classes.write_text("# my classes\ncoffee machine\nchair\n\nguitar\n")
    summary = run(tmp_path / "c", SynthConfig(frames=3, objects=3, width=48, height=32, classes=["coffee machine", "chair", "guitar"]))
    names = json.loads((tmp_path / "c" / "gt" / "classes.json").read_text())["names"]
    assert names == ["wall", "floor", "ceiling", "coffee machine", "chair", "guitar"] and summary["frames"] == 3
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "d"), "--classes", str(classes), "--objects", "4", "--frames", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "4 objects" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "c"), "--frames", "2"])  # existing bag is never overwritten
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "e"), "--classes", str(tmp_path / "nope.txt")])
    assert "class file not found" in capsys.readouterr().err
    with pytest.raises(SynthError):
        SynthConfig(frames=0).validate()


def test_out_folder_with_a_users_files_gets_the_recording_beside_them(tmp_path, users_files, capsys):
    from camfusion_ros.datasets.synth_cli import main

    out = tmp_path / "home"
    intact = users_files(out)
    main(["--out", str(out), "--frames", "2", "--objects", "2", "--width", "32", "--height", "24"])
    intact()
    assert (out / "bag").is_dir() and (out / "gt" / "points.ply").is_file()
    other = tmp_path / "other"
    intact = users_files(other, "gt/classes.json")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(other), "--frames", "2", "--objects", "2", "--width", "32", "--height", "24"])
    assert exc.value.code == 2 and "gt already exists there and was not written" in capsys.readouterr().err
    intact()
    assert not (other / "bag").exists()
