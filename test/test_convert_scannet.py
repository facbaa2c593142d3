"""camfusion-convert scannet: --axis-align (poses and gt/ in one frame) and --label-map/--label-set (raw categories
through scannetv2-labels.combined.tsv to ScanNet200 / NYU40), on a tiny scene whose depth is rendered from its mesh."""
import json

import cv2
import numpy as np
import pytest
from plyfile import PlyData, PlyElement
from scipy.spatial import cKDTree

from camfusion_ros.core.class_lists import load_vocabulary
from camfusion_ros.core.geometry import backproject, transform
from camfusion_ros.core.ply import read_ply
from camfusion_ros.core.recording import read_frames
from camfusion_ros.datasets.convert_cli import main
from camfusion_ros.datasets.scannet import NYU40_CLASSES, SCANNET200_IDS
from camfusion_ros.eval.gt import load_gt
from test_convert import scannet_tree  # noqa: F401 (a fixture: the frames, intrinsics and file layout)

SCENE = "scene0000_00"
FRAMES = (0, 1, 10, 11)                      # frame 2 keeps its all -inf pose (skipped)

# A scene meta file as ScanNet ships it (key = value lines); axisAlignment rotates ~19 deg about z and shifts,
# printed with 6 decimals like the real files.
_c, _s = np.cos(np.radians(19.0)), np.sin(np.radians(19.0))
A_SRC = np.array([[_c, _s, 0, -5.384390], [-_s, _c, 0, -2.871780], [0, 0, 1, -0.064350], [0, 0, 0, 1]])
META = ("axisAlignment = " + " ".join(f"{v:.6f}" for v in A_SRC.ravel()) + " \n"
        "colorHeight = 968\ncolorWidth = 1296\ndepthHeight = 480\ndepthWidth = 640\n"
        "numColorFrames = 5\nnumDepthFrames = 5\nsceneType = Living room / Lounge\n")

# scannetv2-labels.combined.tsv: the real header (17 tab-separated columns); a few rows in its layout.
TSV_HEADER = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\teigen13class\t"
              "ModelNet40\tModelNet10\tShapeNetCore55\tsynsetoffset\twnsynsetid\twnsynsetkey\tmpcat40\tmpcat40index")
TSV_ROWS = [
    "1\twall\twall\t8277\t1\t12\twall\twall\tWall\t\t\t\t\tn04546855\twall.n.01\twall\t1",
    "2\tchair\tchair\t4646\t5\t4\tchair\tchair\tChair\tchair\tchair\tchair\t03001627\tn03001627\tchair.n.01\tchair\t3",
    "10\toffice chair\toffice chair\t595\t5\t4\tchair\tchair\tChair\tchair\tchair\tchair\t03001627\tn04373704\t"
    "swivel_chair.n.01\tchair\t3",
    "29\tkitchen cabinets\tkitchen cabinet\t310\t3\t6\tcabinet\tcabinet\tFurniture\t\t\tcabinet\t02933112\t"
    "n02933112\tcabinet.n.01\tcabinet\t7",
    # a raw category whose id is no ScanNet200 class (NYU40 still has it: otherprop)
    "1227\ttraffic cone\tcone\t1\t40\t7\totherprop\totherprop\tObjects\tcone\t\t\t\tn03088580\tcone.n.01\tobjects\t39",
]
# segGroups: raw category -> (objectId, segments); "mystery gadget" is in no tsv row
GROUPS = {"wall": (0, [100, 101, 110, 111]), "office chair": (3, [102, 112]), "kitchen cabinets": (4, [103]),
          "traffic cone": (6, [113]), "mystery gadget": (7, [120, 121])}

N = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])    # the scene: one tilted plane n.x = n.p0
P0 = np.array([1.0, 2.0, 0.3])
E1 = np.cross(N, [0.0, 1.0, 0.0])
E1 /= np.linalg.norm(E1)
E2 = np.cross(N, E1)


def _look_at(C, target):
    z = (target - C) / np.linalg.norm(target - C)
    x = np.cross(z, [0.1, 1.0, 0.0])
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = C
    return T


def _rays(K, h, w):
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)  # z = 1


def _write_ply(path, xyz, values):
    dtype = [("x", "f4"), ("y", "f4"), ("z", "f4")] + [(k, a.dtype.str) for k, a in values.items()]
    v = np.zeros(len(xyz), dtype=dtype)
    v["x"], v["y"], v["z"] = xyz.T
    for k, a in values.items():
        v[k] = a
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))


@pytest.fixture
def scene(scannet_tree):  # noqa: F811
    """The scannet_tree fixture, its depth rendered from a plane mesh (1 cm vertex grid), plus meta and tsv."""
    src = scannet_tree
    K = np.loadtxt(src / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    h, w = 24, 32
    hits = []
    for i, n in enumerate(FRAMES):
        C = P0 + (0.15 * i - 0.2) * E1 + (0.1 * (i % 2) - 0.05) * E2 + (1.0 + 0.1 * i) * N
        T = _look_at(C, P0 + 0.05 * i * E1)
        np.savetxt(src / "pose" / f"{n}.txt", T)
        d = _rays(K, h, w) @ T[:3, :3].T                       # world direction per unit camera depth
        depth = (N @ P0 - N @ C) / (d @ N)
        cv2.imwrite(str(src / "depth" / f"{n}.png"), np.round(depth * 1000).astype(np.uint16))
        hits.append(C + depth[..., None] * d)
    hits = np.concatenate(hits).reshape(-1, 3) - P0
    a, b = hits @ E1, hits @ E2
    ga, gb = np.meshgrid(np.arange(a.min() - 0.05, a.max() + 0.05, 0.01),
                         np.arange(b.min() - 0.05, b.max() + 0.05, 0.01))
    xyz = P0 + ga.reshape(-1, 1) * E1 + gb.reshape(-1, 1) * E2
    # segments: a 4x4 partition of the grid, ids 100 + 10 * row + col
    row = np.minimum((4 * (gb - gb.min()) / (np.ptp(gb) + 1e-9)).astype(int), 3).ravel()
    col = np.minimum((4 * (ga - ga.min()) / (np.ptp(ga) + 1e-9)).astype(int), 3).ravel()
    seg = 100 + 10 * row + col
    rgb = {k: np.full(len(xyz), c, np.uint8) for k, c in (("red", 10), ("green", 20), ("blue", 30))}
    _write_ply(src / f"{SCENE}_vh_clean_2.ply", xyz, {**rgb, "alpha": np.full(len(xyz), 255, np.uint8)})
    _write_ply(src / f"{SCENE}_vh_clean_2.labels.ply", xyz,
               {**rgb, "alpha": np.full(len(xyz), 255, np.uint8), "label": np.ones(len(xyz), np.uint16)})
    (src / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": seg.tolist()}))
    (src / f"{SCENE}.aggregation.json").write_text(json.dumps({"sceneId": f"scannet.{SCENE}", "segGroups": [
        {"id": oid, "objectId": oid, "segments": segs, "label": raw} for raw, (oid, segs) in GROUPS.items()]}))
    (src / f"{SCENE}.txt").write_text(META)
    (src.parent / "scannetv2-labels.combined.tsv").write_text("\n".join([TSV_HEADER, *TSV_ROWS]) + "\n")
    return src


def _convert(src, out, *extra):
    assert main(["scannet", str(src), "--out", str(out), "--no-progress", *extra]) == 0
    return read_ply(out / "gt" / "points.ply")


def _backprojected(bag, poses=None):
    """World points of every depth pixel of the bag, with its poses (or the given ones)."""
    frames = list(read_frames(bag))
    poses = poses if poses is not None else [f.T_world_cam for f in frames]
    return np.concatenate([transform(backproject(f.depth, f.K)[0], T) for f, T in zip(frames, poses)])


def _xyz(g):
    return np.stack([g["x"], g["y"], g["z"]], axis=1).astype(np.float64)


def test_axis_align_moves_poses_and_gt_together(scene, tmp_path, capsys):
    src_xyz = _xyz(read_ply(scene / f"{SCENE}_vh_clean_2.ply"))
    src_poses = [np.loadtxt(scene / "pose" / f"{n}.txt") for n in FRAMES]
    plain, aligned = tmp_path / "plain", tmp_path / "aligned"
    g_plain = _convert(scene, plain)
    g_aligned = _convert(scene, aligned, "--axis-align")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["axis_aligned"] is True and summary["frames"] == 4

    # default: the unaligned frame, untouched
    np.testing.assert_allclose(_xyz(g_plain), src_xyz, atol=1e-6)
    pts = _backprojected(plain / "bag")
    assert np.median(cKDTree(_xyz(g_plain)).query(pts)[0]) < 0.01
    # aligned: A applied to the gt points and to every pose
    A = A_SRC
    np.testing.assert_allclose(_xyz(g_aligned), transform(src_xyz, A), atol=1e-4)
    frames = list(read_frames(aligned / "bag"))
    for f, T in zip(frames, src_poses):
        np.testing.assert_allclose(f.T_world_cam, A @ T, atol=1e-5)
    tree = cKDTree(_xyz(g_aligned))
    dist = tree.query(_backprojected(aligned / "bag"))[0]
    assert np.median(dist) < 0.01 and np.percentile(dist, 95) < 0.02
    # the wrong choices fail: aligned gt with the unaligned poses, or the aligned depth on the unaligned gt
    assert np.median(tree.query(_backprojected(aligned / "bag", poses=src_poses))[0]) > 0.5
    assert np.median(cKDTree(src_xyz).query(_backprojected(aligned / "bag"))[0]) > 0.5
    # the NYU40 labels.ply path keeps working in the aligned frame
    assert json.loads((aligned / "gt" / "classes.json").read_text())["names"] == list(NYU40_CLASSES)


def test_label_map_scannet200(scene, tmp_path, capsys):
    out = tmp_path / "s200"
    g = _convert(scene, out, "--axis-align", "--label-map", str(scene.parent / "scannetv2-labels.combined.tsv"))
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["gt_labels"] == "scannet200 via scannetv2-labels.combined.tsv"
    assert summary["gt_unlabelled_instances"] == {"raw category not in scannetv2-labels.combined.tsv": 1,
                                                  "id not a scannet200 class": 1, "no vertices left": 0}
    assert "warning: left unlabelled: 1 instance(s) (raw category not in" in cap.err
    classes = json.loads((out / "gt" / "classes.json").read_text())
    names = load_vocabulary("scannet200")             # what camfusion-eval --vocab scannet200 uses
    assert classes["names"] == names and classes["background"] == ["wall", "floor", "ceiling"]
    assert names.index("office chair") == SCANNET200_IDS.index(10) and names[SCANNET200_IDS.index(41)] == "ceiling"
    inst = json.loads((out / "gt" / "instances.json").read_text())
    assert inst == {"1": {"class_id": 0, "class_name": "wall"},
                    "4": {"class_id": 9, "class_name": "office chair"},
                    "5": {"class_id": 25, "class_name": "kitchen cabinet"}}
    seg = np.asarray(json.loads((scene / f"{SCENE}_vh_clean_2.0.010000.segs.json").read_text())["segIndices"])
    expect = {100: (1, 0), 110: (1, 0), 102: (4, 9), 112: (4, 9), 103: (5, 25),
              113: (0, -1), 120: (0, -1), 130: (0, -1)}    # cone: not ScanNet200; gadget: no tsv row; 130: no group
    for s, (iid, lab) in expect.items():
        assert (g["instance"][seg == s] == iid).all() and (g["label"][seg == s] == lab).all(), s
    gt = load_gt(out / "gt")                           # the evaluation reads it as ScanNet200
    assert gt.instances == {1: "wall", 4: "office chair", 5: "kitchen cabinet"}
    assert [gt.names[i] for i in gt.background_ids] == ["wall", "floor", "ceiling"]


def test_label_map_nyu40(scene, tmp_path, capsys):
    out = tmp_path / "nyu"
    _convert(scene, out, "--label-map", str(scene.parent / "scannetv2-labels.combined.tsv"), "--label-set", "nyu40")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["gt_unlabelled_instances"]["raw category not in scannetv2-labels.combined.tsv"] == 1
    assert summary["gt_unlabelled_instances"]["nyu40id not a nyu40 class"] == 0
    assert json.loads((out / "gt" / "classes.json").read_text())["names"] == list(NYU40_CLASSES)
    inst = json.loads((out / "gt" / "instances.json").read_text())
    assert inst == {"1": {"class_id": 0, "class_name": "wall"}, "4": {"class_id": 4, "class_name": "chair"},
                    "5": {"class_id": 2, "class_name": "cabinet"}, "7": {"class_id": 39, "class_name": "otherprop"}}


def test_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["scannet", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--axis-align" in text and "axisAlignment" in text and "--label-map" in text and "nyu40" in text


@pytest.mark.parametrize("case", ["no-meta", "meta-without-alignment", "no-tsv", "not-a-tsv", "set-without-map",
                                  "no-aggregation"])
def test_missing_inputs_are_one_clear_line_and_write_nothing(case, scene, tmp_path, capsys):
    tsv = scene.parent / "scannetv2-labels.combined.tsv"
    args, named = ["--label-map", str(tsv)], None
    if case == "no-meta":
        (scene / f"{SCENE}.txt").unlink()
        args, named = ["--axis-align"], f"{SCENE}.txt"
    elif case == "meta-without-alignment":
        (scene / f"{SCENE}.txt").write_text("sceneType = Bathroom\n")
        args, named = ["--axis-align"], "axisAlignment"
    elif case == "no-tsv":
        tsv.unlink()
        named = "scannetv2-labels.combined.tsv"
    elif case == "not-a-tsv":
        tsv.write_text("name,id\nwall,1\n")
        named = "raw_category"
    elif case == "set-without-map":
        args, named = ["--label-set", "nyu40"], "label map"
    else:
        (scene / f"{SCENE}.aggregation.json").unlink()
        named = f"{SCENE}.aggregation.json"
    out = tmp_path / "e"
    with pytest.raises(SystemExit) as exc:
        main(["scannet", str(scene), "--out", str(out), "--no-progress", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], err
    assert not out.exists()                            # checked before the bag is written
