"""camfusion-eval end to end on synthetic scenes: oracle maps score 100, shuffled labels near chance.

The maps here are built from the GT points (oracle) and saved with core.map_store; the
through-the-pipeline version belongs to the integration tests. No VLM is needed: labels come
from meta.json, and the fusion comparison uses hand-made text embeddings.
"""
import json

import numpy as np
import pytest

from camfusion_ros.core.map_store import MapSnapshot, save_map
from camfusion_ros.core.class_lists import frequency_splits
from camfusion_ros.eval.cli import compare_fusions, main
from camfusion_ros.eval.evaluate import EvalConfig, evaluate_map, oracle_view
from camfusion_ros.eval.gt import load_gt
from camfusion_ros.eval.map_view import load_map_view

PNGS = ("per_class_iou.png", "confusion.png", "splits.png")


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate
    return generate(tmp_path_factory.mktemp("eval") / "scene",
                    SynthConfig(seed=3, frames=2, width=64, height=48, gt_spacing_m=0.03))


def save_view(view, directory, views_per_instance=3, dim=8, descriptors=None):
    K = len(view.ids)
    rng = np.random.default_rng(0)
    desc = descriptors if descriptors is not None else rng.normal(size=(K, views_per_instance, dim))
    V = desc.shape[1]
    snap = MapSnapshot(
        points=view.xyz.astype(np.float32), colors=np.zeros((len(view.xyz), 3), np.uint8),
        point_instance=view.point_instance.astype(np.int32), ids=view.ids,
        fused=desc.mean(1).astype(np.float32), view_descriptors=desc.astype(np.float32),
        view_valid=np.ones((K, V), bool), view_scores=np.ones((K, V), np.float32),
        view_frames=np.zeros((K, V), np.int64), first_seen_ns=np.zeros(K, np.int64),
        last_seen_ns=np.zeros(K, np.int64),
        meta={"labels": [lab or "" for lab in view.labels], "label_scores": list(map(float, view.scores))})
    return save_map(directory, snap)


def test_oracle_map_scores_100_through_the_cli(synth_scene, tmp_path, capsys):
    gt = load_gt(synth_scene / "gt")
    map_dir = save_view(oracle_view(gt), tmp_path / "map")
    out = tmp_path / "report"
    assert main(["--map", str(map_dir), "--gt", str(synth_scene / "gt"), "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())["runs"]["map"]
    assert m["semantic"]["mIoU"] == 1.0 and m["semantic"]["fAcc"] == 1.0
    assert m["instance_top1"]["AP50"] == 1.0 and m["instance_top1"]["AP"] == 1.0
    assert m["instance_top1"]["AP_head"] == 1.0 and m["semantic"]["mIoU_tail"] == 1.0
    # background classes are in the semantic metrics, not in instance AP
    assert "wall" in m["semantic"]["per_class"] and "wall" not in m["instance_top1"]["per_class"]
    for png in PNGS:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "per_class_iou.png" in report and "| map | 100.0 |" in report
    assert "mIoU 100.0" in capsys.readouterr().out


def test_shuffled_labels_score_near_chance(small_scene):
    gt = load_gt(small_scene / "gt")
    counts = np.bincount(gt.label[gt.label >= 0], minlength=len(gt.names))
    splits = frequency_splits(gt.names, counts)
    cfg = EvalConfig(min_region_size=10)
    oracle = evaluate_map(oracle_view(gt), gt, cfg, splits)
    assert oracle["semantic"]["mIoU"] == 1.0 and oracle["instance_top1"]["AP50"] == 1.0
    assert oracle["semantic"]["mIoU_head"] == 1.0
    for seed in (0, 1):
        r = evaluate_map(oracle_view(gt, shuffle_seed=seed), gt, cfg, splits)
        assert r["semantic"]["mIoU"] < 0.25
        assert r["instance_top1"]["AP50"] < 0.25


def test_unknown_label_names_and_unlabelled_instances_are_misses(small_scene, tmp_path):
    gt = load_gt(small_scene / "gt")
    view = oracle_view(gt)
    view.labels = ["no-such-class"] + [None] + view.labels[2:]
    view = load_map_view(save_view(view, tmp_path / "map"))
    assert view.labels[1] is None
    r = evaluate_map(view, gt, EvalConfig(min_region_size=10))
    sem = r["semantic"]
    assert 0 < sem["mIoU"] < 1.0 and sem["num_unlabelled"] > 0
    assert r["num_labelled_instances"] == len(view.ids) - 2


def test_fusion_comparison_refuses_saved_views(small_scene, tmp_path):
    gt = load_gt(small_scene / "gt")
    view = oracle_view(gt)
    rng = np.random.default_rng(1)
    text = np.linalg.qr(rng.normal(size=(32, len(gt.names))))[0].T      # orthonormal class embeddings
    cls = [gt.names.index(n) for n in view.labels]
    desc = text[cls][:, None, :] + 0.05 * rng.normal(size=(len(cls), 4, 32))
    desc[:, 0] = rng.normal(size=(len(cls), 32))                         # one bad view per instance
    view = load_map_view(save_view(view, tmp_path / "map", descriptors=desc))
    splits = frequency_splits(gt.names, np.bincount(gt.label[gt.label >= 0], minlength=len(gt.names)))
    res = compare_fusions(view, gt, ["avg", "l1medoid"], list(gt.names), text,
                          EvalConfig(min_region_size=10), splits)
    assert set(res) == {"avg", "l1medoid"}
    for r in res.values():
        assert r["semantic"]["mIoU"] == 1.0
        assert r["instance_top1"]["AP50"] == 1.0 and r["instance_topk"]["AP50"] == 1.0
    from camfusion_ros.eval.report import write_report
    files = write_report(tmp_path / "rep", res, gt.names, {"fusions": "avg, l1medoid"})
    assert (tmp_path / "rep" / "summary.png").is_file() and "confusion_avg" in files
    assert "| l1medoid |" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize("extra,msg", [
    (["--vocab", "no-such-vocab"], "neither a file nor a shipped list"),
    (["--distance", "0"], "distance must be positive"),
    (["--fusion", "avg"], "map folder not found"),
])
def test_bad_input_one_line_error(small_scene, tmp_path, capsys, extra, msg):
    gt_dir = small_scene / "gt"
    map_dir = tmp_path / "map"
    if "--fusion" not in extra:
        save_view(oracle_view(load_gt(gt_dir)), map_dir)
    rc = main(["--map", str(map_dir), "--gt", str(gt_dir), "--out", str(tmp_path / "r")] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and msg in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_gt_folder(tmp_path, capsys):
    assert main(["--map", str(tmp_path), "--gt", str(tmp_path / "nope")]) == 2
    assert "ground-truth folder not found" in capsys.readouterr().err


def test_report_goes_beside_a_users_files_and_never_over_them(small_scene, tmp_path, users_files, capsys):
    """--out pointed at a user's folder: the report is written beside their files; a report.md of theirs is
    refused before any work and left as it was."""
    gt = load_gt(small_scene / "gt")
    map_dir = save_view(oracle_view(gt), tmp_path / "map")
    args = ["--map", str(map_dir), "--gt", str(small_scene / "gt")]
    out = tmp_path / "home"
    intact = users_files(out)
    assert main(args + ["--out", str(out)]) == 0
    intact()
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()
    assert main(args + ["--out", str(out)]) == 0                      # its own report is replaced on a rerun
    other = tmp_path / "other"
    intact = users_files(other, "report.md")
    capsys.readouterr()
    assert main(args + ["--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to write camfusion-eval output") and "report.md" in err
    intact()
    assert not (other / "metrics.json").exists()


def test_report_names_cover_every_file_written(small_scene, tmp_path):
    from camfusion_ros.core.output_folder import RECORD, written_here
    from camfusion_ros.eval.report import write_report

    gt = load_gt(small_scene / "gt")
    res = evaluate_map(oracle_view(gt), gt, EvalConfig())
    for labels in (["map"], ["avg", "camfusion"]):
        out = tmp_path / "-".join(labels)
        write_report(out, {label: res for label in labels}, gt.names)
        assert {p.name for p in out.iterdir()} - {RECORD} == set(written_here(out))
