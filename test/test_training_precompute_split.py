"""camfusion-precompute over a split: ranks under torchrun (CPU, gloo, loopback), restarts after a kill, failed
scenes, and the source frame of every view (augmented copies never pass for other frames).

Four tiny synthetic recordings (3 frames, 96x72) and open_clip's PE-Core-T-16-384 with RANDOM weights without
tiling (no pretrained weights here): the code path is real, the descriptor values are meaningless.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from camfusion_ros.core.output_folder import claim_outputs
from camfusion_ros.datasets.synth import SynthConfig, run
from camfusion_ros.training.precompute import main
from camfusion_ros.training.precompute_scene import _BestViews, locate_recording, precompute_recording
from camfusion_ros.training.precompute_split import Scene, assign, find_scenes, finished_shard, settings_json
from camfusion_ros.training.shards import TEXT_FILE, read_shard, read_text_embeddings, write_shard

ARGS = ["--model", "PE-Core-T-16-384", "--pretrained", "random", "--device", "cpu", "--no-tiling",
        "--min-pixels", "20", "--augment-copies", "1"]
SCENES = [f"scene{i}" for i in range(4)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A recordings root with four small recordings, one per subfolder."""
    out = tmp_path_factory.mktemp("recs")
    for i, name in enumerate(SCENES):
        run(out / name, SynthConfig(frames=3, objects=3, width=96, height=72, seed=i + 1, gt_spacing_m=0.05))
    return out


def _one_process(argv):
    """main() in this process on one thread (as each torchrun worker runs), so descriptors can be compared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(root, tmp_path_factory):
    """The split computed by one process: the result every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "data"
    assert _one_process(["--recordings-root", str(root), "--out", str(out), *ARGS]) == 0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(root, out, log, nproc=2) -> subprocess.Popen:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "camfusion_ros.training.precompute", "--recordings-root", str(root), "--out", str(out), *ARGS]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(p: subprocess.Popen, log: Path) -> str:
    try:
        p.wait(timeout=180)
    finally:
        if p.poll() is None:
            _kill(p)
    return log.read_text()


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (each in its own session), by pid: nothing gets to clean up."""
    procs = psutil.Process(p.pid).children(recursive=True) + [psutil.Process(p.pid)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    p.wait(timeout=30)


def _assert_same_split(out, ref):
    for name in SCENES:
        a, b = read_shard(out / "train" / f"{name}.safetensors"), read_shard(ref / "train" / f"{name}.safetensors")
        assert a.class_names == b.class_names and np.array_equal(a.class_ids, b.class_ids), name
        assert np.array_equal(a.view_valid, b.view_valid) and np.array_equal(a.view_source, b.view_source), name
        np.testing.assert_allclose(a.descriptors, b.descriptors, rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(a.visibility, b.visibility, rtol=0, atol=1e-6, err_msg=name)
    names, emb = read_text_embeddings(out / TEXT_FILE)
    ref_names, ref_emb = read_text_embeddings(ref / TEXT_FILE)
    assert names == ref_names
    np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-6)
    m, r = (json.loads((d / "train" / "manifest.json").read_text()) for d in (out, ref))
    assert m["class_names"] == r["class_names"] == names and m["settings"] == r["settings"]
    assert [s["scene"] for s in m["scenes"]] == SCENES and m["failed"] == []
    assert {k: v for k, v in m["totals"].items() if k not in ("written", "skipped")} == \
        {k: v for k, v in r["totals"].items() if k not in ("written", "skipped")}
    assert not list((out / "train").glob(".*.tmp")), "half-written temporaries left behind"
    return m


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(root, reference, tmp_path):
    out = tmp_path / "data"
    log = tmp_path / "log"
    text = _finish(_torchrun(root, out, log), log)
    assert "exitcode" not in text and "Traceback" not in text, text[-3000:]
    m = _assert_same_split(out, reference)
    assert m["world_size"] == 2 and m["totals"]["written"] == 4
    assert sorted((s["scene"], s["rank"]) for s in m["scenes"]) == \
        [("scene0", 0), ("scene1", 1), ("scene2", 0), ("scene3", 1)]   # sorted names, round-robin
    assert "[rank 1/2] 2/2 scene3" in text


@pytest.mark.slow
def test_a_killed_run_restarts_where_it_stopped(root, reference, tmp_path, capsys):
    out = tmp_path / "data"
    p = _torchrun(root, out, tmp_path / "log1")
    deadline = time.monotonic() + 150
    while not list((out / "train").glob("scene*.safetensors")):
        assert p.poll() is None, (tmp_path / "log1").read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.02)
    _kill(p)
    done = {q.name: (q.stat().st_ino, q.stat().st_mtime_ns) for q in (out / "train").glob("scene*.safetensors")}
    assert 1 <= len(done) < 4, done
    assert not (out / "train" / "manifest.json").exists()
    capsys.readouterr()
    # restarted as one process: another world size is fine, finished shards are skipped wherever they were made
    assert _one_process(["--recordings-root", str(root), "--out", str(out), *ARGS]) == 0
    text = capsys.readouterr().err
    m = _assert_same_split(out, reference)
    for name, stamp in done.items():   # finished shards were kept as they were, not rewritten
        q = out / "train" / name
        assert (q.stat().st_ino, q.stat().st_mtime_ns) == stamp, name
    status = {s["scene"]: s["status"] for s in m["scenes"]}
    assert status == {n: "skipped" if f"{n}.safetensors" in done else "written" for n in SCENES}
    assert text.count("finished before (") == len(done)


def _broken(root, tmp_path):
    """scene0/scene1 good; 'corrupt' with a damaged bag; 'nogt' without its instances.json."""
    recs = [root / "scene0", root / "scene1"]
    for name in ("corrupt", "nogt"):
        d = tmp_path / name
        shutil.copytree(root / "scene2" / "bag", d / "bag")
        (d / "gt").mkdir()
        for f in ("classes.json", "instances.json"):
            shutil.copy(root / "scene2" / "gt" / f, d / "gt" / f)
        recs.append(d)
    mcap = next((tmp_path / "corrupt" / "bag").glob("*.mcap"))
    b = bytearray(mcap.read_bytes())
    b[len(b) // 3: len(b) // 3 + 2000] = b"\xff" * 2000
    mcap.write_bytes(bytes(b))
    (tmp_path / "nogt" / "gt" / "instances.json").unlink()
    return recs


def test_failed_scenes_are_reported_and_the_others_written(root, reference, tmp_path, capsys):
    out = tmp_path / "data"
    recs = _broken(root, tmp_path / "recs")
    # an earlier run's shards: one of a scene that now fails (other settings), one of a scene not in this run
    claim_outputs(out, "camfusion-precompute", ["train"])
    claim_outputs(out / "train", "camfusion-precompute", ["corrupt.safetensors", "old.safetensors"])
    for name in ("corrupt", "old"):
        write_shard(out / "train" / f"{name}.safetensors", [0], np.ones((1, 1, 512), np.float32), [[True]], [[1.0]],
                    ["x"], "m", metadata={"precompute": settings_json({"seed": 7})})
    assert _one_process([*map(str, recs), "--out", str(out), *ARGS]) == 1
    err = capsys.readouterr().err
    assert "also holds 1 shard(s) of scenes not in this run (old.safetensors)" in err
    assert "(its old shard, made with other settings, was removed)" in err
    lines = [ln for ln in err.splitlines() if "failed" in ln]
    assert any(ln.startswith("camfusion-precompute [rank 0/1]") and "corrupt: failed: cannot read recording" in ln
               for ln in lines), err
    assert any("nogt: failed: ground truth incomplete" in ln for ln in lines), err
    assert "2 of 4 scenes failed (corrupt, nogt)" in lines[-1]
    m = json.loads((out / "train" / "manifest.json").read_text())
    assert [f["scene"] for f in m["failed"]] == ["corrupt", "nogt"] and all(f["error"] for f in m["failed"])
    assert [s["scene"] for s in m["scenes"]] == ["scene0", "scene1"]
    for name in ("scene0", "scene1"):
        a, b = read_shard(out / "train" / f"{name}.safetensors"), read_shard(reference / "train" / f"{name}.safetensors")
        np.testing.assert_allclose(a.descriptors, b.descriptors, rtol=0, atol=1e-6)
    assert not (out / "train" / "corrupt.safetensors").exists()
    assert read_text_embeddings(out / TEXT_FILE)[0] == m["class_names"]


class _FrameSpy:
    """A stand-in extractor (no model) whose descriptor row says which frame an image came from and whether it was an
    augmented copy: originals are recognised by their pixels, copies by the frame ``augment`` was last given."""
    dim = 8
    model_name = "stub"

    def __init__(self, frames, monkeypatch):
        import camfusion_ros.training.precompute_scene as ps

        self.frames, self.pending, real = frames, None, ps.augment

        def spy(rgb, masks, rng, cfg):
            self.pending = self.index(rgb)
            return real(rgb, masks, rng, cfg)
        monkeypatch.setattr(ps, "augment", spy)

    def index(self, rgb):
        return next((i for i, f in enumerate(self.frames) if f.shape == rgb.shape and np.array_equal(f, rgb)), None)

    def extract(self, rgb, masks):
        i = self.index(rgb)
        d = np.zeros((len(masks), self.dim), np.float32)
        d[:, 0], d[:, 1] = (i, 0) if i is not None else (self.pending, 1)
        return d, np.ones(len(masks), bool)


def test_augmented_copies_share_their_frames_source(root, monkeypatch):
    from camfusion_ros.core.recording import read_frames

    bag, gt = locate_recording(root / "scene0")
    spy = _FrameSpy([f.rgb for f in read_frames(bag)], monkeypatch)
    res = precompute_recording(bag, gt, spy, augment_copies=2, max_views=100, min_pixels=20, seed=[0, 1])
    valid, src, d = res["view_valid"], res["view_source"], res["descriptors"]
    assert (src[~valid] == -1).all()
    frame, is_copy = d[..., 0].astype(int), d[..., 1] == 1
    assert is_copy[valid].any() and (~is_copy[valid]).any()
    # every view's source is the frame it was cut from, for the original and each augmented copy alike
    assert np.array_equal(src[valid], frame[valid])
    for r in range(len(src)):   # an instance seen in several frames: one source per frame, copies included
        assert len(set(src[r][valid[r]].tolist())) == len(set(frame[r][valid[r]].tolist()))
    assert any(len(set(src[r][valid[r]].tolist())) > 1 for r in range(len(src)))
    assert np.bincount(src[valid]).max() > 1


def test_shards_record_view_sources(reference):
    s = read_shard(reference / "train" / "scene0.safetensors")
    for row_src, row_valid in zip(s.view_source, s.view_valid):
        frames, counts = np.unique(row_src[row_valid], return_counts=True)
        assert counts.max() <= 2 and set(frames.tolist()) <= {0, 1, 2}   # original + 1 copy per frame


def test_best_views_keep_the_most_visible_in_a_stable_order():
    rng = np.random.default_rng(0)
    vis = rng.integers(0, 4, 50).astype(float)   # many ties
    b = _BestViews(7)
    for i, v in enumerate(vis):
        b.add(v, np.array([i], np.float32), i)
    expect = sorted(range(50), key=lambda i: -vis[i])[:7]
    assert [int(d[0]) for _, _, d in b.best_first()] == expect


def test_scenes_from_a_root_a_list_and_paths(root, tmp_path):
    lst = tmp_path / "split.txt"
    lst.write_text("# val\nscene3\n\nscene1  # the second\n")
    assert [s.name for s in find_scenes([], root, lst)] == ["scene1", "scene3"]
    assert [s.name for s in find_scenes([], root, None)] == SCENES
    assert [(s.name, s.path) for s in find_scenes([root / "scene2" / "bag"])] == [("scene2", root / "scene2" / "bag")]
    lst.write_text(f"{root / 'scene2'}\n")
    assert [(s.name, s.path) for s in find_scenes([root / "scene0"], None, lst)] == \
        [("scene0", root / "scene0"), ("scene2", root / "scene2")]
    with pytest.raises(ValueError, match="share the scene name 'scene0'"):
        find_scenes([root / "scene0" / "bag"], root, None)
    lst.write_text("scene1\nnope\n")
    with pytest.raises(ValueError, match="not found: .*nope"):
        find_scenes([], root, lst)
    scenes = [Scene(n, Path(n)) for n in ["d", "a", "c", "b", "e"]]
    assert [[s.name for s in assign(scenes, r, 2)] for r in range(2)] == [["a", "c", "e"], ["b", "d"]]


def test_a_missing_scene_stops_before_any_work(root, tmp_path, capsys):
    lst = tmp_path / "split.txt"
    lst.write_text("scene0\nscene9\n")
    assert main(["--recordings-root", str(root), "--scene-list", str(lst), "--out", str(tmp_path / "o"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: recording not found: ") and "scene9" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_finished_means_readable_and_made_with_the_same_settings(tmp_path):
    p = tmp_path / "s.safetensors"
    a, b = settings_json({"seed": 0}), settings_json({"seed": 1})
    assert finished_shard(p, a) == (None, "")
    write_shard(p, [0], np.ones((1, 2, 4), np.float32), np.ones((1, 2), bool), np.ones((1, 2)), ["x"], "m",
                view_source=[[0, 0]], metadata={"precompute": a})
    shard, why = finished_shard(p, a)
    assert shard is not None and why == "" and shard.view_source.tolist() == [[0, 0]]
    assert finished_shard(p, b) == (None, "made with other settings")
    p.write_bytes(p.read_bytes()[:-10])
    shard, why = finished_shard(p, a)
    assert shard is None and why
