"""Settings of the live mapping node that no other live test covers, end to end through real processes.

One node run (its own process, loopback DDS on a test-unique domain) carries every setting at once, since none
interferes with another:
- the default ``input_qos`` (``sensor_data``, best effort: the key is left out of the params file) fed by a
  best-effort "camera driver" process;
- ``pose_type: Odometry`` (nav_msgs/Odometry on the pose topic);
- ``fusion.method: camfusion`` with ``fusion.checkpoint`` (a tiny CAMFusion with RANDOM weights);
- ``publish_cloud: false``;
- ``/diagnostics`` and ``QueryLabels`` with a caller's vocabulary, read by separate client processes.
The reference is the offline pipeline on the same recording with its PoseStamped poses and the same checkpoint;
the node's fused embeddings are checked against the checkpoint run on the views of the map the node saved.

Models: GT masks and PE-Core-T-16-384 with RANDOM weights (no pretrained weights on this machine), so labels are
meaningless; geometry, fusion plumbing, QoS, counters and services are what these tests check.
"""
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mapping_node_utils import TINY, VOCAB, accounted, client, start_node, wait_status, write_params
from rostest_utils import ros_env, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]

PEER = "test/ros_peers/settings_peer.py"
FRAMES = 6
STREAMS = ["color", "depth", "camera_info", "pose", "instances"]
TERMS = ["bookshelf", "monitor", "plant", "bed"]        # a caller's vocabulary, disjoint from the node's VOCAB
TOP_K = 3

REFERENCE = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from camfusion_ros.core.config import load_config
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import read_frames
p = MappingPipeline(load_config(json.loads(sys.argv[2])))
for f in read_frames(sys.argv[1]):          # poses from the bag's PoseStamped topic
    p.process(f)
p.fuse_pending()
print(json.dumps([{"id": r.id, "centroid": r.centroid.tolist(), "num_points": r.num_points} for r in p.instances()]))
"""


def descriptor_dim(model_name: str) -> int:
    """The descriptor (and so CAMFusion input) width: the VLM's joint embedding width."""
    import open_clip

    return int(open_clip.get_model_config(model_name)["embed_dim"])


def tiny_checkpoint(path, dim: int):
    import torch

    from camfusion_ros.core.camfusion import CamFusionConfig, build_camfusion
    from camfusion_ros.core.camfusion.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = CamFusionConfig(input_dim=dim, width=32, depth=1, heads=4, mlp_hidden=64)
    return save_checkpoint(path, build_camfusion(cfg).eval(), cfg)


def peer(env: dict, *args: str, timeout: float) -> dict:
    """Run a settings_peer.py command in its own process (group; it dies with this one) and return its JSON line."""
    proc = start([PEER, *args], env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop(proc)
        raise AssertionError(f"peer {args[0]} timed out after {timeout} s: {err[-2000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"peer {args[0]} failed rc={proc.returncode}: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def wait_settled(env: dict, node, timeout: float) -> dict:
    """All frames processed and the last fusion published: two statuses 1 s apart agree."""
    deadline = time.monotonic() + timeout
    prev = None
    while time.monotonic() < deadline:
        s = wait_status(env, node, lambda s: s["frames_processed"] == FRAMES and s["pending"] == 0
                        and s["instances"] > 0, max(1.0, deadline - time.monotonic()), f"{FRAMES} frames mapped")
        if prev is not None and (s["last_fusion_unix_ns"], s["instance_ids"]) == (prev["last_fusion_unix_ns"],
                                                                                  prev["instance_ids"]):
            return s
        prev = s
        time.sleep(1.0)
    raise AssertionError(f"the node's map never settled; last status {prev}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The one live run: every result the tests below check."""
    from camfusion_ros.datasets.synth import SynthConfig, generate

    tmp = tmp_path_factory.mktemp("node_settings")
    env = ros_env()
    bag = generate(tmp / "scene", SynthConfig(seed=2, frames=FRAMES, width=96, height=72, objects=3)) / "bag"
    dim = descriptor_dim(TINY["vlm"]["model_name"])
    ck = tiny_checkpoint(tmp / "camfusion_ck", dim)
    fusion = {"device": "cpu", "method": "camfusion", "checkpoint": str(ck)}
    # Merges decided by the tracker's geometric evidence alone: the semantic gate compares fused embeddings,
    # which the node refreshes on its fusion timer and the offline reference only at the end, so with the gate
    # on a merge can happen online and not offline (CI saw centroids 0.4-0.7 m apart). The gate has its own tests.
    tracker = {"merge_min_cosine": -1.0}
    params = write_params(tmp / "params.yaml", pose_type="Odometry", publish_cloud=False, fusion=fusion,
                          tracker=tracker, map_root=str(tmp / "maps"))
    doc = yaml.safe_load(params.read_text())
    del doc["/**/mapping_node"]["ros__parameters"]["input_qos"]       # the node's own default: sensor_data
    params.write_text(yaml.safe_dump(doc))

    ref_cfg = {**TINY, "fusion": fusion, "tracker": tracker}
    reference = start(["-c", REFERENCE, str(bag), json.dumps(ref_cfg)], env)
    node = start_node(env, params)
    stop_file = tmp / "stop_listening"
    listener = None
    t0 = time.monotonic()
    try:
        wait_status(env, node, lambda s: s["ready"], 180, "the node to load its models")
        listener = start([PEER, "listen", str(stop_file), "400"], env)
        for line in listener.stderr:           # subscribed (the outputs are latched; /diagnostics is periodic)
            if line.startswith("listening"):
                break
        published = peer(env, "publish", str(bag), timeout=300)
        wait_settled(env, node, 240)
        services = peer(env, "services", "saved", str(TOP_K), *TERMS, timeout=120)
        final = client(env, "status", "15")
        time.sleep(1.5)                         # > 2 status periods: /diagnostics has shown the final counters
        stop_file.touch()
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err[-2000:]
        heard = json.loads(out.strip().splitlines()[-1])
        alive = node.poll() is None
        ref_out, ref_err = reference.communicate(timeout=300)
        assert reference.returncode == 0, ref_err[-2000:]
        print(f"live settings run: {time.monotonic() - t0:.1f} s, resent {published['resent']}")
        return {"published": published, "final": final, "services": services, "heard": heard, "alive": alive,
                "reference": json.loads(ref_out.strip().splitlines()[-1]), "dim": dim, "checkpoint": ck,
                "saved": tmp / "maps" / "saved", "log": Path(node.log_path).read_text()}
    finally:
        if listener is not None:
            stop(listener)
        stop(node)
        stop(reference)


def test_default_sensor_data_qos_takes_a_best_effort_camera_and_maps_every_frame(run):
    """input_qos left at its default (sensor_data): the node's subscriptions are best effort, so a best-effort camera
    driver (which a reliable subscription would not match at all) delivers every message and every frame is mapped;
    each frame was confirmed on ~/get_status before the next was sent. PE-Core weights are RANDOM."""
    pub, s = run["published"], run["final"]
    assert run["alive"], run["log"]
    assert pub["frames"] == FRAMES
    for k in STREAMS:
        subs = pub["subscriptions"][k]
        assert [x["reliability"] for x in subs] == ["BEST_EFFORT"], (k, subs)
    assert s["received_per_topic"] == pub["sent"] and s["received"] == sum(pub["sent"].values())
    assert pub["sent"]["color"] == FRAMES or pub["resent"] > 0
    assert s["frames_processed"] == FRAMES and s["processed"] == FRAMES * len(STREAMS)
    assert s["pending"] == 0 and s["queue"] == 0 and accounted(s), s
    if pub["resent"] == 0:           # a re-sent sample that was only late would be a duplicate (counted, dropped)
        assert s["dropped"] == {"pose": 1}, s["dropped"]          # the one NaN-quaternion Odometry
    else:
        assert s["dropped"]["pose"] == 1, s["dropped"]


def test_diagnostics_carry_the_status_counters(run):
    """/diagnostics (diagnostic_msgs/DiagnosticArray), read by a separate process: the node's entry has its name,
    level OK and the same counters as ~/get_status (received, processed, dropped.<reason>, masks.*), after a run with
    one counted drop. PE-Core weights are RANDOM."""
    d, s = run["heard"]["last_diagnostics"], run["final"]
    assert run["heard"]["diagnostics_msgs"] >= 2
    assert d["name"] == "/mapping_node: mapping" and d["hardware_id"] == "camfusion_ros"
    assert d["level"] == 0 and d["message"] == "mapping"
    v = d["values"]
    assert v["ready"] == "True" and v["error"] == ""
    for key in ("received", "processed", "pending", "frames_processed", "frames_matched", "instances", "frames_seen"):
        assert v[key] == str(s[key]), (key, v[key], s[key])
    assert v["received"] == str(sum(run["published"]["sent"].values())) and v["frames_processed"] == str(FRAMES)
    assert {k: int(x) for k, x in v.items() if k.startswith("dropped.")} == {f"dropped.{k}": n
                                                                             for k, n in s["dropped"].items()}
    assert v["dropped.pose"] == "1"
    m = s["masks"]
    assert int(v["masks.proposed"]) == m["proposed"] > 0 and int(v["masks.tracked"]) == m["tracked"] > 0
    assert {k[len("masks_dropped."):]: int(x) for k, x in v.items() if k.startswith("masks_dropped.")} == m["dropped"]


def test_odometry_poses_map_like_the_posestamped_reference(run):
    """pose_type Odometry: the same recording sent with nav_msgs/Odometry poses gives the instances the offline
    pipeline builds from its PoseStamped topic: every instance of >= 100 points (ScanNet's minimum region) has a
    counterpart within 5 cm, both ways. Merges follow geometric evidence alone in this run (the fixture turns the
    semantic gate off: it reads embeddings the node refreshes on a timer, and CI once saw an online merge the
    offline run did not make); small-fragment counts may still differ by one. PE-Core weights are RANDOM."""
    pub, live = run["published"], run["heard"]["last_instances"]
    assert all(x["type"] == "nav_msgs/msg/Odometry" for x in pub["subscriptions"]["pose"])
    from camfusion_ros.core.map_store import load_map

    assert load_map(run["saved"]).meta["config"]["tracker"]["merge_min_cosine"] == -1.0   # the node took the setting
    assert live["frame_id"] == "map"
    assert sorted(i["id"] for i in live["instances"]) == sorted(run["final"]["instance_ids"])
    got = np.array([i["centroid"] for i in live["instances"] if i["num_points"] >= 100])
    want = np.array([r["centroid"] for r in run["reference"] if r["num_points"] >= 100])
    assert len(got) >= 3 and abs(len(got) - len(want)) <= 1, (len(got), len(want))
    dist = np.linalg.norm(got[:, None] - want[None], axis=2)
    assert np.all(dist.min(axis=1) < 0.05) and np.all(dist.min(axis=0) < 0.05), dist.min(axis=1)


def test_camfusion_checkpoint_fuses_the_published_instances(run):
    """fusion.method camfusion + fusion.checkpoint (a tiny CAMFusion with RANDOM weights; PE-Core weights are RANDOM
    too): every published instance says fusion_method camfusion, and its embedding is the checkpoint's output on the
    instance's views as the node saved them (cosine > 0.999), not their average (|cosine| < 0.5)."""
    from camfusion_ros.core.camfusion.fuser import CamFusionFuser
    from camfusion_ros.core.fusion import make_fuser
    from camfusion_ros.core.map_store import load_map

    live = {i["id"]: i for i in run["heard"]["last_instances"]["instances"]}
    assert "fusion=camfusion" in run["log"], run["log"][-2000:]
    assert {i["fusion_method"] for i in live.values()} == {"camfusion"}
    assert {i["embedding_model"] for i in live.values()} == {"PE-Core-T-16-384/random"}
    assert run["services"]["save"] == [True, str(run["saved"])]
    snap = load_map(run["saved"])
    assert snap.meta["fusion"] == "camfusion"
    rows = [snap.ids.tolist().index(i) for i in sorted(live)]       # every published instance is in the saved map
    views, valid = snap.view_descriptors[rows], snap.view_valid[rows]
    assert views.shape[2] == run["dim"] and valid.any(axis=1).all()
    want = CamFusionFuser(str(run["checkpoint"]), device="cpu").fuse(views, valid)
    avg = make_fuser("avg").fuse(views, valid)
    for k, iid in enumerate(sorted(live)):
        e = np.array(live[iid]["embedding"])
        assert len(e) == run["dim"] and math.isclose(np.linalg.norm(e), 1.0, abs_tol=1e-4)
        assert live[iid]["num_views"] == int(valid[k].sum())
        assert float(e @ want[k]) > 0.999, (iid, float(e @ want[k]))
        assert abs(float(e @ avg[k])) < 0.5, (iid, float(e @ avg[k]))


def test_query_labels_with_a_callers_vocabulary_leaves_the_maps_labels_alone(run):
    """QueryLabels with request.vocabulary set: every instance comes back labelled from that vocabulary only
    (top_k of its terms); the node's own labels are unchanged: the map saved right after that query holds the labels
    ~/instances published before it, and QueryLabels with the node's vocabulary answers the same before and after.
    PE-Core weights are RANDOM (which term wins is arbitrary)."""
    assert not set(TERMS) & set(VOCAB)
    q = run["services"]
    before, callers, after = q["own_before"], q["callers"], q["own_after"]
    ids = sorted(run["final"]["instance_ids"])
    for r in (before, callers, after):
        assert r["success"], r["message"]
        assert sorted(i["id"] for i in r["instances"]) == ids and r["message"] == f"{len(ids)} instances"
    for i in callers["instances"]:
        assert len(i["top_labels"]) == TOP_K and set(i["top_labels"]) <= set(TERMS), i
        assert i["label"] == i["top_labels"][0]            # label_threshold -1: always labelled
        assert i["top_scores"] == sorted(i["top_scores"], reverse=True)
    for i in before["instances"]:
        assert len(i["top_labels"]) == TOP_K and set(i["top_labels"]) <= set(VOCAB) and i["label"] in VOCAB, i
    assert before == after
    # the labels the map holds, saved right after the caller's query, are those it published before it
    from camfusion_ros.core.map_store import load_map

    assert run["services"]["save"] == [True, str(run["saved"])]
    snap = load_map(run["saved"])
    published = {i["id"]: i["label"] for i in run["heard"]["last_instances"]["instances"]}
    stored = dict(zip(snap.ids.tolist(), snap.labels))
    assert published == {i: stored[i] for i in published} and set(published.values()) <= set(VOCAB)
    assert snap.meta["vocabulary"] == VOCAB
    assert published == {i["id"]: i["label"] for i in after["instances"]}


def test_publish_cloud_false_publishes_instances_and_markers_but_no_cloud(run):
    """publish_cloud false: a listener process subscribed (transient local, like RViz) for the whole run gets
    ~/instances and ~/markers, one box per instance, and not a single ~/cloud message. PE-Core weights are RANDOM."""
    h = run["heard"]
    assert h["stopped"], "the listener timed out instead of listening through the run"
    assert h["instance_msgs"] >= 1 and h["marker_msgs"] >= 1
    assert h["last_boxes"] == sorted(run["final"]["instance_ids"])
    assert h["cloud_msgs"] == 0, h["cloud_publishers"]
