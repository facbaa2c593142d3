"""camfusion-convert replica|scannet on small trees in the datasets' real on-disk layouts."""
import json

import cv2
import numpy as np
import pytest
import yaml
from plyfile import PlyData, PlyElement

from camfusion_ros.core.ply import read_ply
from camfusion_ros.core.recording import inspect_recording, read_frames
from camfusion_ros.datasets.convert_cli import main
from camfusion_ros.datasets.scannet import NYU40_CLASSES


def _pose(i):
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [0.1 * i, -0.05 * i, 0.2 * i]).as_matrix()
    T[:3, 3] = [0.5 * i, -0.2 * i, 1.0 + 0.1 * i]
    return T


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)


def _mesh_ply(path, n_vert, extra=(), colours=None, values=None):
    rng = np.random.default_rng(1)
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")] + list(extra)
    v = np.zeros(n_vert, dtype=dtype)
    for k in ("x", "y", "z"):
        v[k] = rng.random(n_vert)
    for k in ("red", "green", "blue"):
        v[k] = colours if colours is not None else rng.integers(0, 256, n_vert)
    for k, a in (values or {}).items():
        v[k] = a
    quads = np.array([[i, i + 1, i + 2, i + 3] for i in range(0, n_vert - 3, 4)], dtype=np.int32)
    faces = np.empty(len(quads), dtype=[("vertex_indices", "i4", (4,))])
    faces["vertex_indices"] = quads
    PlyData([PlyElement.describe(v, "vertex"), PlyElement.describe(faces, "face")]).write(str(path))
    return v


@pytest.fixture
def replica_tree(tmp_path):
    root = tmp_path / "Replica"
    scene = root / "room0"
    (scene / "results").mkdir(parents=True)
    (root / "cam_params.json").write_text(json.dumps({"camera": {"w": 40, "h": 30, "fx": 30.0, "fy": 31.0,
                                                                  "cx": 19.5, "cy": 14.5, "scale": 6553.5}}))
    rows = []
    for i in range(5):
        cv2.imwrite(str(scene / "results" / f"frame{i:06d}.jpg"), _image(30, 40, i))
        depth_m = 1.0 + 0.1 * i + np.linspace(0, 1, 40)[None, :] * np.ones((30, 1))
        cv2.imwrite(str(scene / "results" / f"depth{i:06d}.png"), np.round(depth_m * 6553.5).astype(np.uint16))
        rows.append(" ".join(f"{x:.10f}" for x in _pose(i).ravel()))
    (scene / "traj.txt").write_text("\n".join(rows) + "\n")
    _mesh_ply(root / "room0_mesh.ply", 40)
    (root / "semantic_gt").mkdir()
    raw = np.array([93, 31, 40, -1, 256, 12] * 6 + [93, 93, 31, 999])
    (root / "semantic_gt" / "room0.txt").write_text("\n".join(map(str, raw)))
    info = {"class_names_reduced": ["wall", "ceiling", "floor", "chair", "other"], "ignore": [4],
            "map_to_reduced": {93: 0, 31: 1, 40: 2, 12: 3, -1: 4, 256: 4}, "background_reduced_ids": [0, 2, 1]}
    (tmp_path / "eval_info.yaml").write_text(yaml.safe_dump(info))
    return scene


def test_replica(replica_tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["replica", str(replica_tree), "--out", str(out), "--eval-info", str(tmp_path / "eval_info.yaml")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 5 and summary["gt_points"] == 40
    info = inspect_recording(out / "bag")
    assert {t: v["count"] for t, v in info["topics"].items()} == {
        "/camera/color/image_raw": 5, "/camera/depth/image_raw": 5, "/camera/color/camera_info": 5, "/camera/pose": 5,
        "/tf": 14, "/tf_static": 2}     # /tf: odom->base_link 2 per frame, map->odom every other frame + 1 at the end
    frames = list(read_frames(out / "bag"))
    by_tf = list(read_frames(out / "bag", pose_source="tf"))          # the converters write /tf too, at 30 Hz stamps
    np.testing.assert_allclose([f.T_world_cam for f in by_tf], [f.T_world_cam for f in frames], atol=1e-9)
    for i, f in enumerate(frames):
        f.validate()
        src = replica_tree / "results"
        np.testing.assert_array_equal(f.rgb, cv2.cvtColor(cv2.imread(str(src / f"frame{i:06d}.jpg")), cv2.COLOR_BGR2RGB))
        png = cv2.imread(str(src / f"depth{i:06d}.png"), cv2.IMREAD_UNCHANGED) / 6553.5
        assert np.abs(f.depth - png).max() <= 0.0005 + 1e-6  # millimetre quantisation only
        np.testing.assert_allclose(f.K, [[30, 0, 19.5], [0, 31, 14.5], [0, 0, 1]])
        np.testing.assert_allclose(f.T_world_cam, _pose(i), atol=1e-6)
    assert [(f.stamp_ns - frames[0].stamp_ns) * 30 / 1e9 for f in frames] == pytest.approx([0, 1, 2, 3, 4], abs=1e-6)
    g = read_ply(out / "gt" / "points.ply")
    classes = json.loads((out / "gt" / "classes.json").read_text())
    assert classes["names"] == ["wall", "ceiling", "floor", "chair", "other"]
    assert classes["background"] == ["wall", "floor", "ceiling"]
    assert g["label"][:6].tolist() == [0, 1, 2, -1, -1, 3] and g["label"][-1] == -1  # ignore and unknown ids -> -1
    assert np.all(g["instance"] == 0) and json.loads((out / "gt" / "instances.json").read_text()) == {}
    np.testing.assert_array_equal(g["x"], PlyData.read(str(replica_tree.parent / "room0_mesh.ply"))["vertex"]["x"])


def test_replica_stride_max_frames_and_defaults(replica_tree, tmp_path, capsys):
    (replica_tree.parent / "cam_params.json").unlink()
    out = tmp_path / "o2"
    assert main(["replica", str(replica_tree), "--out", str(out), "--stride", "2", "--max-frames", "2", "--fps", "10"]) == 0
    frames = list(read_frames(out / "bag"))
    assert len(frames) == 2 and frames[1].stamp_ns - frames[0].stamp_ns == 200_000_000  # frames 0 and 2
    np.testing.assert_allclose(frames[0].K, [[600, 0, 599.5], [0, 600, 339.5], [0, 0, 1]])  # NICE-SLAM defaults
    np.testing.assert_allclose(frames[1].T_world_cam, _pose(2), atol=1e-6)
    # by default the classes are OVO's 51 evaluated Replica classes (the shipped eval-info file)
    names = json.loads((out / "gt" / "classes.json").read_text())["names"]
    assert len(names) == 51 and "wall" in names and "chair" in names
    raw = tmp_path / "raw"
    assert main(["replica", str(replica_tree), "--out", str(raw), "--max-frames", "1", "--eval-info", "none"]) == 0
    names = json.loads((raw / "gt" / "classes.json").read_text())["names"]  # raw Replica ids
    assert len(names) == 1000 and names[93] == "replica_93"
    assert read_ply(raw / "gt" / "points.ply")["label"][:6].tolist() == [93, 31, 40, -1, -1, 12]


def test_replica_compressed_writes_image_transport_topics(replica_tree, tmp_path, capsys):
    raw, comp = tmp_path / "raw", tmp_path / "comp"
    for out, extra in ((raw, []), (comp, ["--compressed"])):
        assert main(["replica", str(replica_tree), "--out", str(out), "--max-frames", "3", "--eval-info", "none",
                     *extra]) == 0
    topics = inspect_recording(comp / "bag")["topics"]
    assert topics["/camera/color/image_raw/compressed"] == {"type": "sensor_msgs/msg/CompressedImage", "count": 3}
    assert topics["/camera/depth/image_raw/compressedDepth"] == {"type": "sensor_msgs/msg/CompressedImage", "count": 3}
    want, got = list(read_frames(raw / "bag")), list(read_frames(comp / "bag"))
    assert len(got) == len(want) == 3
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g.depth, w.depth)                 # compressedDepth PNG: exact millimetres
        assert np.abs(g.rgb.astype(int) - w.rgb).mean() < 4             # JPEG, quality 95
        np.testing.assert_allclose(g.T_world_cam, w.T_world_cam)


@pytest.fixture
def scannet_tree(tmp_path):
    scene = tmp_path / "scans" / "scene0000_00"
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    Kd = np.array([[28.0, 0, 15.5, 0], [0, 29.0, 11.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    Kc = np.array([[58.0, 0, 31.5, 0], [0, 58.0, 23.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", Kd)
    np.savetxt(scene / "intrinsic" / "intrinsic_color.txt", Kc)
    np.savetxt(scene / "intrinsic" / "extrinsic_depth.txt", np.eye(4))
    np.savetxt(scene / "intrinsic" / "extrinsic_color.txt", np.eye(4))
    for n in (0, 1, 2, 10, 11):  # not zero-padded: numeric order is 0 1 2 10 11
        cv2.imwrite(str(scene / "color" / f"{n}.jpg"), _image(48, 64, n))
        cv2.imwrite(str(scene / "depth" / f"{n}.png"), np.full((24, 32), 1500 + n, np.uint16))
        T = np.full((4, 4), -np.inf) if n == 2 else _pose(n)
        np.savetxt(scene / "pose" / f"{n}.txt", T)
    nv = 40
    labels = np.array([1] * 8 + [2] * 8 + [5] * 10 + [7] * 4 + [0] * 10, np.uint16)  # wall floor chair table none
    _mesh_ply(scene / "scene0000_00_vh_clean_2.labels.ply", nv,
              extra=[("alpha", "u1"), ("label", "u2")], colours=np.full(nv, 7), values={"label": labels})
    _mesh_ply(scene / "scene0000_00_vh_clean_2.ply", nv, extra=[("alpha", "u1")])
    seg = np.repeat([105, 7, 300, 41, 12], 8)  # segment ids are not 0..K-1
    (scene / "scene0000_00_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": seg.tolist()}))
    (scene / "scene0000_00.aggregation.json").write_text(json.dumps({"segGroups": [
        {"objectId": 0, "label": "wall", "segments": [105]},
        {"objectId": 4, "label": "chair", "segments": [300, 41]},   # vertices 16..31: 10 chair + 4 table + 2 floor
        {"objectId": 5, "label": "unlabelled thing", "segments": [12]},  # no NYU40 label: no instance
    ]}))
    return scene


def test_scannet(scannet_tree, tmp_path, capsys):
    out = tmp_path / "sn"
    assert main(["scannet", str(scannet_tree), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 frame(s) with invalid (non-finite) poses" in captured.err
    frames = list(read_frames(out / "bag"))
    assert len(frames) == 4
    order = [0, 1, 10, 11]
    assert [round((f.stamp_ns - frames[0].stamp_ns) * 30 / 1e9) for f in frames] == order
    for n, f in zip(order, frames):
        f.validate()
        assert f.rgb.shape == (24, 32, 3)  # colour resized to the depth size
        exp = cv2.resize(cv2.cvtColor(cv2.imread(str(scannet_tree / "color" / f"{n}.jpg")), cv2.COLOR_BGR2RGB), (32, 24),
                         interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(f.rgb, exp)
        np.testing.assert_allclose(f.depth, (1500 + n) / 1000.0, atol=1e-6)
        np.testing.assert_allclose(f.K, [[28, 0, 15.5], [0, 29, 11.5], [0, 0, 1]])  # intrinsic_depth
        np.testing.assert_allclose(f.T_world_cam, _pose(n), atol=1e-6)
    g = read_ply(out / "gt" / "points.ply")
    src = PlyData.read(str(scannet_tree / "scene0000_00_vh_clean_2.ply"))["vertex"]
    np.testing.assert_array_equal(g["red"], src["red"])  # real colours, not the label colours
    names = json.loads((out / "gt" / "classes.json").read_text())["names"]
    assert names == list(NYU40_CLASSES)
    assert g["label"][:26].tolist() == [0] * 8 + [1] * 8 + [4] * 10 and np.all(g["label"][30:] == -1)
    assert g["instance"][:8].tolist() == [1] * 8 and np.all(g["instance"][16:32] == 5) and np.all(g["instance"][32:] == 0)
    inst = json.loads((out / "gt" / "instances.json").read_text())
    assert inst == {"1": {"class_id": 0, "class_name": "wall"}, "5": {"class_id": 4, "class_name": "chair"}}


def test_scannet_max_frames_without_gt(scannet_tree, tmp_path, capsys):
    for f in scannet_tree.glob("scene0000_00*"):
        f.unlink()
    out = tmp_path / "sn2"
    assert main(["scannet", str(scannet_tree), "--out", str(out), "--max-frames", "2", "--depth-encoding", "32FC1"]) == 0
    assert len(list(read_frames(out / "bag"))) == 2 and not (out / "gt").exists()


@pytest.mark.parametrize("case", ["missing", "not-a-scene", "bad-pose", "existing-out"])
def test_errors_are_one_line(case, scannet_tree, tmp_path, capsys):
    src = scannet_tree
    out = tmp_path / "e"
    if case == "missing":
        src = tmp_path / "nope"
    elif case == "not-a-scene":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "bad-pose":
        (scannet_tree / "pose" / "1.txt").write_text("1 2 3\n")
    else:
        (out / "bag").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        main(["scannet", str(src), "--out", str(out), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_out_folder_with_a_users_files_gets_the_recording_beside_them(replica_tree, tmp_path, users_files, capsys):
    out = tmp_path / "home"
    intact = users_files(out)
    assert main(["replica", str(replica_tree), "--out", str(out), "--max-frames", "1", "--eval-info", "none"]) == 0
    intact()
    assert (out / "bag").is_dir()
    other = tmp_path / "other"
    intact = users_files(other, "bag/metadata.yaml")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["replica", str(replica_tree), "--out", str(other), "--max-frames", "1", "--eval-info", "none"])
    assert exc.value.code == 2 and "bag already exists there" in capsys.readouterr().err
    intact()
