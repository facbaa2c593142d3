"""camfusion-convert scannetpp on tiny release trees in ScanNet++'s real format (test/scannetpp_fixture.py).

What is checked against the fixture's own ground truth (never against the converter's code): written poses,
depth that lands on the source mesh, the undistorted colour agreeing with the rendered instance image, per-pixel
and per-vertex classes (smallest overlapping group wins, top100 remap/ignore rules), anonymised regions, bad
frames, split runs with a broken scene, one-line errors -- and that a wrong pose convention fails these checks.
"""
import json
import shutil
import struct
import zlib

import cv2
import lz4.block
import numpy as np
import pytest
import trimesh

from camfusion_ros.core.geometry import backproject, transform
from camfusion_ros.core.ply import read_ply
from camfusion_ros.core.recording import inspect_recording, read_frames
from camfusion_ros.datasets import scannetpp
from camfusion_ros.datasets.convert_cli import main
from camfusion_ros.datasets.converter import ConvertConfig
from scannetpp_fixture import (BLUR_BOX, COLOURS, DSLR_H, DSLR_PARAMS, DSLR_W, IPHONE_K, TO_TOP100, TOP100,
                               VIDEO_W, build_release)

IDS = ("0a1b2c3d4e", "1b2c3d4e5f", "2c3d4e5f60")
SID = IDS[0]
RAW_NAMES = sorted({"wall", "floor", "ceiling", "pillow", "bed", "blanket", "office chair", "books", "power socket",
                    "exit sign"})


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannetpp") / "root"
    scenes = build_release(root, IDS)
    return root, scenes[SID]


@pytest.fixture
def root_copy(release, tmp_path):
    root, _ = release
    dst = tmp_path / "root"
    shutil.copytree(root, dst)
    return dst


class _Surface:
    """Exact closest triangle of points (trimesh's closest_point needs rtree, which is not installed): the 12
    triangles with the nearest centroids are candidates (triangles here are <= 0.14 m across)."""

    def __init__(self, scene) -> None:
        from scipy.spatial import cKDTree

        self.tris = scene.vertices[scene.faces]
        self.tree = cKDTree(self.tris.mean(axis=1))

    def closest(self, pts):
        _, cand = self.tree.query(pts, k=12)
        q = np.repeat(pts, 12, axis=0)
        c = trimesh.triangles.closest_point(self.tris[cand.ravel()], q)
        d = np.linalg.norm(c - q, axis=1).reshape(-1, 12)
        best = d.argmin(axis=1)
        return d[np.arange(len(pts)), best], cand[np.arange(len(pts)), best]


@pytest.fixture(scope="module")
def mesh(release):
    return _Surface(release[1])


def _convert(root, out, *extra):
    return main(["scannetpp", str(root), "--scene", SID, "--out", str(out), "--no-progress", *extra])


def _classes(out):
    inst = json.loads((out / "gt" / "instances.json").read_text())
    return {int(k): v["class_name"] for k, v in inst.items()}


def _pixels(frame, stride=2):
    """World points of the valid depth pixels (subsampled) with their rows and columns."""
    pts, rows, cols = backproject(frame.depth, frame.K, stride=stride)
    return transform(pts, frame.T_world_cam), rows, cols


def _mesh_check(frames, classes, mesh, scene, vocabulary, blur_frame):
    """(median distance of the back-projected depth to the mesh, per-pixel class agreement, class fractions
    of the bag, class fractions expected from the annotation at the same points)."""
    face_label = scene.face_label(vocabulary)
    dist, agree, got, want = [], [], [], []
    for i, f in enumerate(frames):
        pts, rows, cols = _pixels(f)
        if len(pts) == 0:
            dist.append(np.full(1, np.inf))
            continue
        d, tri = mesh.closest(pts)
        dist.append(d)
        exp = [face_label[t] for t in tri]
        if i == blur_frame:      # the extra anonymised image region (a 3D box): no label there
            inside = np.all((pts >= BLUR_BOX[0]) & (pts <= BLUR_BOX[1]), axis=1)
            exp = [None if m else e for e, m in zip(exp, inside)]
        lab = [classes.get(int(k)) for k in f.gt_instances[rows, cols]]
        agree += [a == b for a, b in zip(lab, exp)]
        got += lab
        want += exp
    frac = lambda labels: {k: labels.count(k) / len(labels) for k in set(labels)}  # noqa: E731
    return float(np.median(np.concatenate(dist))), float(np.mean(agree)), frac(got), frac(want)


def _read(out):
    return list(read_frames(out / "bag")), _classes(out)


def _colour_agreement(frames, classes):
    """Fraction of pixels with an instance whose colour is its class's flat colour in the fixture images
    (raw vocabulary: class name = raw label)."""
    ok = []
    for f in frames:
        inst = f.gt_instances
        rows, cols = np.nonzero(inst > 0)
        want = np.array([COLOURS[classes[int(i)]] for i in inst[rows, cols]], float).reshape(-1, 3)
        ok.append(np.abs(f.rgb[rows, cols].astype(float) - want).max(axis=1) < 40)
    ok = np.concatenate(ok)
    return float(ok.mean()) if len(ok) else 0.0


def _toolkit_K(w_out=DSLR_W):
    fx, fy, cx, cy, *k = DSLR_PARAMS
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    new = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(K, np.array(k), (DSLR_W, DSLR_H), np.eye(3),
                                                                 balance=0.0)
    new[0, 2], new[1, 2] = DSLR_W / 2, DSLR_H / 2          # dslr/undistort.py
    s = w_out / DSLR_W
    return np.array([[new[0, 0] * s, 0, (new[0, 2] + 0.5) * s - 0.5], [0, new[1, 1] * s, (new[1, 2] + 0.5) * s - 0.5],
                     [0, 0, 1]])


def test_dslr_raw_labels(release, mesh, tmp_path, capsys):
    root, scene = release
    out = tmp_path / "dslr"
    assert _convert(root, out) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 4 and summary["bad_frames"] == 1 and (summary["width"], summary["height"]) == (240, 160)
    topics = inspect_recording(out / "bag")["topics"]
    assert topics["/camera/instances/image_raw"]["count"] == 4
    frames, classes = _read(out)
    names = sorted(scene.dslr_poses)                        # DSC00003 (is_bad) is not there; DSC00005 (test) is
    assert names == ["DSC00001.JPG", "DSC00002.JPG", "DSC00004.JPG", "DSC00005.JPG"]
    for f, name in zip(frames, names):
        f.validate()
        np.testing.assert_allclose(f.T_world_cam, scene.dslr_poses[name], atol=1e-6)   # colmap inverted
        np.testing.assert_allclose(f.K, _toolkit_K(), atol=1e-9)
    med, agree, got, want = _mesh_check(frames, classes, mesh, scene, "raw", blur_frame=0)
    assert med < 0.015
    assert agree > 0.95, agree
    for k in set(got) | set(want):
        assert abs(got.get(k, 0) - want.get(k, 0)) < 0.02, (k, got.get(k), want.get(k))
    assert want.get("pillow", 0) > 0.01 and want.get("blanket", 0) > 0.02 and want.get("exit sign", 0) > 0.002
    assert _colour_agreement(frames, classes) > 0.9         # the undistorted photo and the rendered instances line up
    # the extra anonymised image region of DSC00001 carries no instance although the mesh says blanket/bed there
    pts, rows, cols = _pixels(frames[0], stride=1)
    inner = np.all((pts >= BLUR_BOX[0] + 0.03) & (pts <= BLUR_BOX[1] - 0.03), axis=1)
    assert inner.sum() > 50 and np.all(frames[0].gt_instances[rows[inner], cols[inner]] == 0)
    # per vertex: smallest group wins (pillow before bed, blanket after it), anonymised and unannotated: -1 / 0
    g = read_ply(out / "gt" / "points.ply")
    cls = json.loads((out / "gt" / "classes.json").read_text())
    assert cls == {"names": RAW_NAMES, "background": ["wall", "floor", "ceiling"]}
    want_label = np.array([RAW_NAMES.index(lab) if lab else -1 for lab in scene.raw_label])
    np.testing.assert_array_equal(g["label"], want_label)
    np.testing.assert_array_equal(g["instance"], scene.object_id)
    assert np.all(g["label"][scene.anonymised] == -1) and np.all(g["instance"][scene.anonymised] == 0)
    assert {"pillow", "blanket", "bed", "exit sign"} <= {scene.raw_label[i] for i in range(len(g["label"]))}
    assert _classes(out) == {oid: scene.object_raw_label[oid] for oid in range(1, 12)}


def test_dslr_without_inverting_colmap_fails_the_checks(release, mesh, tmp_path, monkeypatch):
    root, scene = release

    correct = scannetpp.colmap_camera_to_world

    def world_to_camera_as_is(qvec, tvec):            # the classic mistake: images.txt's pose taken as camera-to-world
        return np.linalg.inv(correct(qvec, tvec))

    monkeypatch.setattr(scannetpp, "colmap_camera_to_world", world_to_camera_as_is)
    out = tmp_path / "wrong"
    scannetpp.convert_scannetpp(root, SID, out, ConvertConfig(progress=False))
    frames, classes = _read(out)
    assert _colour_agreement(frames, classes) < 0.5                # the photo no longer matches what the pose sees
    assert not np.allclose(frames[0].T_world_cam, scene.dslr_poses["DSC00001.JPG"], atol=1e-3)


def test_iphone_top100(release, mesh, tmp_path, capsys):
    root, scene = release
    out = tmp_path / "iphone"
    assert _convert(root, out, "--stream", "iphone", "--vocabulary", "top100") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 6 and (summary["width"], summary["height"]) == (256, 192)
    frames, classes = _read(out)
    assert [round((f.stamp_ns - frames[0].stamp_ns) * 60 / 1e9) for f in frames] == list(range(6))   # 60 fps
    s = 256 / VIDEO_W
    K = np.array([[IPHONE_K[0, 0] * s, 0, (IPHONE_K[0, 2] + 0.5) * s - 0.5],
                  [0, IPHONE_K[1, 1] * s, (IPHONE_K[1, 2] + 0.5) * s - 0.5], [0, 0, 1]])
    for i, f in enumerate(frames):
        f.validate()
        np.testing.assert_allclose(f.T_world_cam, scene.iphone_poses[i], atol=1e-6)      # aligned_pose
        np.testing.assert_array_equal(np.rint(f.depth * 1000), scene.iphone_depth_mm[i])  # depth.bin, exactly
        np.testing.assert_allclose(f.K, K, atol=1e-9)
    med, agree, got, want = _mesh_check(frames, classes, mesh, scene, "top100", blur_frame=2)
    assert med < 0.015
    assert agree > 0.95, agree
    for k in set(got) | set(want):
        assert abs(got.get(k, 0) - want.get(k, 0)) < 0.02, (k, got.get(k), want.get(k))
    pts, rows, cols = _pixels(frames[2], stride=1)
    inner = np.all((pts >= BLUR_BOX[0] + 0.03) & (pts <= BLUR_BOX[1] - 0.03), axis=1)
    assert inner.sum() > 50 and np.all(frames[2].gt_instances[rows[inner], cols[inner]] == 0)   # rgb_mask.mkv
    g = read_ply(out / "gt" / "points.ply")
    cls = json.loads((out / "gt" / "classes.json").read_text())
    assert cls == {"names": TOP100, "background": ["wall", "floor", "ceiling"]}
    want_label = np.array([TOP100.index(TO_TOP100[scene.object_raw_label[o]]) if o else -1
                           for o in scene.top100_object])
    np.testing.assert_array_equal(g["label"], want_label)
    np.testing.assert_array_equal(g["instance"], scene.top100_object)
    raw = np.array([lab or "" for lab in scene.raw_label])
    assert np.all(g["label"][raw == "exit sign"] == TOP100.index("wall"))      # not in the csv: the wall wins
    assert np.all(g["label"][raw == "power socket"] == -1) and np.all(g["instance"][raw == "power socket"] == 0)
    assert np.all(g["label"][raw == "office chair"] == TOP100.index("chair"))  # remapped
    assert np.all(g["label"][raw == "books"] == TOP100.index("book"))
    assert _classes(out)[8] == "chair" and 10 not in _classes(out) and 11 not in _classes(out)


def test_iphone_raw_pose_instead_of_aligned_pose_fails_the_checks(release, mesh, tmp_path, monkeypatch):
    root, scene = release
    monkeypatch.setattr(scannetpp, "IPHONE_POSE_KEY", "pose")
    out = tmp_path / "wrong"
    scannetpp.convert_scannetpp(root, SID, out, ConvertConfig(progress=False), stream="iphone", max_width=None)
    frames, classes = _read(out)
    med, agree, _, _ = _mesh_check(frames[:2], classes, mesh, scene, "raw", blur_frame=-1)
    assert med > 0.05 and agree < 0.5             # far outside the 1.5 cm the right convention meets


def test_iphone_wider_output_upsamples_depth(release, mesh, tmp_path, capsys):
    root, scene = release
    out = tmp_path / "wide"
    assert _convert(root, out, "--stream", "iphone", "--max-width", "512", "--stride", "3") == 0
    frames, classes = _read(out)
    assert len(frames) == 2 and frames[1].stamp_ns - frames[0].stamp_ns == 50_000_000     # frames 0 and 3, 60 fps
    for f, i in zip(frames, (0, 3)):
        assert f.depth.shape == (384, 512) and f.rgb.shape == (384, 512, 3)
        np.testing.assert_array_equal(np.rint(f.depth[::2, ::2] * 1000), scene.iphone_depth_mm[i])  # nearest, x2
    med, agree, _, _ = _mesh_check(frames, classes, mesh, scene, "raw", blur_frame=-1)
    assert med < 0.015 and agree > 0.95


def test_split_with_a_broken_scene_converts_the_others(root_copy, tmp_path, capsys):
    (root_copy / "data" / IDS[1] / "scans" / "segments_anno.json").unlink()
    (root_copy / "data" / IDS[2] / "dslr" / "resized_images" / "DSC00005.JPG").unlink()   # a withheld test image
    out = tmp_path / "split"
    rc = main(["scannetpp", str(root_copy), "--split", "nvs_sem_train", "--out", str(out), "--max-frames", "1",
               "--max-width", "120", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert sorted(summary["scenes"]) == [IDS[0], IDS[2]] and list(summary["failed"]) == [IDS[1]]
    assert "segments_anno.json" in summary["failed"][IDS[1]]
    assert summary["scenes"][IDS[2]]["withheld_frames"] == 1 and summary["scenes"][IDS[0]]["withheld_frames"] == 0
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and IDS[1] in errors[0]
    assert "missing file" in errors[0] and "segments_anno.json" in errors[0]
    for sid in (IDS[0], IDS[2]):
        f = next(iter(read_frames(out / sid / "bag")))
        assert f.rgb.shape == (80, 120, 3) and f.gt_instances.shape == (80, 120)
        np.testing.assert_allclose(f.K, _toolkit_K(120), atol=1e-9)     # --max-width: K follows the resize
    assert not (out / IDS[1] / "bag").exists()
    # every scene broken: nonzero exit
    for sid in IDS:
        (root_copy / "data" / sid / "scans" / "segments.json").unlink()
    assert main(["scannetpp", str(root_copy), "--split", "nvs_sem_train", "--out", str(tmp_path / "s2"),
                 "--no-progress"]) == 2
    assert len([ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]) == 3


@pytest.mark.parametrize("case,path,extra", [
    ("images.txt", "dslr/colmap/images.txt", []),
    ("mesh_aligned_0.05.ply", "scans/mesh_aligned_0.05.ply", []),
    ("DSC00002.png", "dslr/resized_anon_masks/DSC00002.png", []),
    ("depth.bin", "iphone/depth.bin", ["--stream", "iphone"]),
    ("rgb_mask.mkv", "iphone/rgb_mask.mkv", ["--stream", "iphone"]),
    ("map_benchmark.csv", "../../metadata/semantic_benchmark/map_benchmark.csv", ["--vocabulary", "top100"]),
])
def test_missing_files_are_one_line_errors(root_copy, tmp_path, capsys, case, path, extra):
    (root_copy / "data" / SID / path).resolve().unlink()
    with pytest.raises(SystemExit) as exc:
        _convert(root_copy, tmp_path / "o", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: missing file: ") and case in err[0]
    assert not (tmp_path / "o").exists()                     # checked before anything is written


def test_other_errors(release, tmp_path, capsys, users_files):
    root, _ = release
    for argv, words in ((["--scene", "ffffffffff"], "scene folder not found"),
                        (["--split", "nope"], "nope.txt"), (["--scene", SID, "--stride", "0"], "--stride")):
        with pytest.raises(SystemExit) as exc:
            main(["scannetpp", str(root), *argv, "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and words in err[0]
    other = tmp_path / "users"
    intact = users_files(other, "bag/metadata.yaml")          # a user's folder: refused, untouched
    with pytest.raises(SystemExit):
        _convert(root, other, "--max-frames", "1")
    assert "bag already exists there" in capsys.readouterr().err
    intact()


def test_resolve_groups_smallest_wins_through_seg_indices():
    seg = np.array([7, 7, 3, 3, 3, 9, 9, 5])                    # an old-style over-segmentation
    groups = [[3, 9], [3, 9, 7, 5], [9], [5, 42], [7]]          # sizes 5, 8, 2, 1 (42 absent), 2
    np.testing.assert_array_equal(scannetpp.resolve_groups(seg, groups), [4, 4, 0, 0, 0, 2, 2, 3])
    np.testing.assert_array_equal(scannetpp.resolve_groups(seg, [[3], [3]]), [-1, -1, 0, 0, 0, -1, -1, -1])  # tie
    np.testing.assert_array_equal(scannetpp.resolve_groups(np.arange(4), [[0, 1, 2], [1, 2]]), [0, 1, 1, -1])


def test_depth_bin_formats(tmp_path):
    rng = np.random.default_rng(0)
    mm = [rng.integers(0, 6000, (192, 256)).astype(np.uint16) for _ in range(3)]
    lz = tmp_path / "lz4.bin"
    lz.write_bytes(b"".join(struct.pack("<I", len(r)) + r for r in
                            (lz4.block.compress(m.tobytes(), store_size=False) for m in mm)))
    deflate = lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(6, zlib.DEFLATED, -15))  # noqa: E731
    per_frame = tmp_path / "zlib.bin"
    per_frame.write_bytes(b"".join(struct.pack("<I", len(r)) + r for r in
                                   (deflate((m / 1000.0).astype("<f4").tobytes()) for m in mm)))
    stream = tmp_path / "old.bin"
    stream.write_bytes(deflate(b"".join((m / 1000.0).astype("<f4").tobytes() for m in mm)))
    for path in (lz, per_frame, stream):
        d = scannetpp.DepthBin(path)
        assert len(d) == 3
        for i in (0, 2, 1):
            assert np.abs(d.frame(i).astype(int) - mm[i]).max() <= 1, path.name
        assert d.frame(3) is None


def test_a_converted_scene_feeds_camfusion_precompute(release, tmp_path, capsys):
    """The paper's data path end to end on the fixture: ScanNet++ -> recording -> descriptor shard with the
    scene's annotated instances and their free-form labels (PE-Core-T with RANDOM weights, no tiling: the
    descriptor values are meaningless, the plumbing is real)."""
    from camfusion_ros.training.precompute import main as precompute
    from camfusion_ros.training.shards import read_shard, read_text_embeddings

    root, _ = release
    recs = tmp_path / "recs"
    assert _convert(root, recs / SID, "--stream", "iphone", "--max-frames", "3") == 0
    classes = _classes(recs / SID)
    assert precompute(["--recordings-root", str(recs), "--out", str(tmp_path / "desc"), "--split", "train",
                       "--model", "PE-Core-T-16-384", "--pretrained", "random", "--device", "cpu", "--no-tiling",
                       "--min-pixels", "20"]) == 0
    shard = read_shard(tmp_path / "desc" / "train" / f"{SID}.safetensors")
    assert len(shard) >= 3 and shard.view_valid.any(1).all()
    assert {shard.class_names[c] for c in shard.class_ids} <= set(classes.values())
    manifest = json.loads((tmp_path / "desc" / "train" / "manifest.json").read_text())
    names, _ = read_text_embeddings(tmp_path / "desc" / "text_embeddings.safetensors")
    assert set(shard.class_names) <= set(names) and manifest["scenes"][0]["scene"] == SID
