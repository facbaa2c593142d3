"""The mapping node: its parameters, and an end-to-end run over DDS against the offline pipeline.

Models: GT masks and PE-Core-T with RANDOM weights (no pretrained weights exist
on this machine), so labels are meaningless; geometry and the service plumbing
are what these tests check.
"""
import json
import subprocess
import time

import pytest
import yaml

from mapping_node_utils import VOCAB, accounted, client, live_run, node_log, start_node, wait_status, write_params
from rostest_utils import REPO, python, ros_env, start, stop
from match_utils import assert_same_centroids

FRAMES = 8


@pytest.fixture
def ros_context(monkeypatch):
    """An rclpy context of its own for an in-process node: loopback DDS, a test-unique domain."""
    import rclpy

    monkeypatch.setenv("ROS_DOMAIN_ID", ros_env()["ROS_DOMAIN_ID"])
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def wait_ready(node, timeout: float = 120.0) -> None:
    """The worker loads the models first; a node shut down before that leaves a loading thread behind."""
    deadline = time.monotonic() + timeout
    while not node.ready and time.monotonic() < deadline:
        time.sleep(0.1)


def test_config_yaml_mirrors_the_dataclass_defaults():
    from camfusion_ros.nodes.mapping_node import node_parameter_defaults

    doc = yaml.safe_load((REPO / "config" / "mapping.yaml").read_text())
    params = doc["/**/mapping_node"]["ros__parameters"]

    def flat(d, pre=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{pre}{k}.") if isinstance(v, dict) else {pre + k: v})
        return out

    expected = {k: ("" if v is None else v) for k, v in node_parameter_defaults().items()}
    assert flat(params) == expected


def test_node_declares_described_parameters_and_rejects_bad_ones(ros_context):
    from rclpy.parameter import Parameter

    from camfusion_ros.core.config import ConfigError
    from camfusion_ros.nodes.mapping_node import MappingNode

    ctx = ros_context
    small = [Parameter("segmenter.name", value="gt"), Parameter("vlm.pretrained", value="random"),
             Parameter("vlm.model_name", value="PE-Core-T-16-384"),
             Parameter("vocabulary.names", value=["chair", "table"]), Parameter("vocabulary.cache_dir", value="")]
    node = MappingNode(context=ctx, parameter_overrides=small + [Parameter("pose_type", value="Odometry")])
    try:
        assert node.get_parameter("pose_type").value == "Odometry"
        assert node.cfg.segmenter.name == "gt" and node.cfg.vlm.pretrained == "random"
        assert node.cfg.vlm.device is None        # "" in the params file = not set
        assert node.cfg.vocabulary.names == ["chair", "table"] and node.cfg.vocabulary.cache_dir is None
        descs = node.describe_parameters(["sync_tolerance_s", "fusion.method", "queue_size"])
        assert all(d.description for d in descs)
        assert "instances" in node.streams
        c = node.counters()
        assert c["received"] == 0 and accounted(c)
        wait_ready(node)
    finally:
        node.shutdown()
        node.destroy_node()
    with pytest.raises(ConfigError, match="drop_policy"):
        MappingNode(context=ctx, parameter_overrides=small + [Parameter("drop_policy", value="drop_random")])
    with pytest.raises(ConfigError, match="descriptor.tiling"):
        MappingNode(context=ctx, parameter_overrides=small + [Parameter("descriptor.tiling", value="maybe")])


def test_transport_parameters_choose_compressed_subscriptions(ros_context):
    """color_transport auto follows the remapped name (a launch remap to .../compressed switches the type);
    depth_transport compressed appends /compressedDepth to the base topic; a bad value is refused."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image

    from camfusion_ros.core.config import ConfigError
    from camfusion_ros.nodes.mapping_node import MappingNode

    small = [Parameter("segmenter.name", value="gt"), Parameter("vlm.pretrained", value="random"),
             Parameter("vlm.model_name", value="PE-Core-T-16-384"), Parameter("vocabulary.names", value=["chair"]),
             Parameter("vocabulary.cache_dir", value="")]
    depth = Parameter("depth_transport", value="compressed")
    node = MappingNode(context=ros_context, parameter_overrides=small + [depth],
                       cli_args=["--ros-args", "-r", "/camera/color/image_raw:=/cam/image_raw/compressed"])
    try:
        subs = {s.topic_name: s.msg_type for s in node._subs}
        assert subs["/cam/image_raw/compressed"] is CompressedImage
        assert subs["/camera/depth/image_raw/compressedDepth"] is CompressedImage
        assert subs["/camera/instances/image_raw"] is Image                    # the GT image stays raw
        assert "/camera/color/image_raw" not in subs and "/camera/depth/image_raw" not in subs
        wait_ready(node)
    finally:
        node.shutdown()
        node.destroy_node()
    with pytest.raises(ConfigError, match="color_transport must be auto, raw or compressed, got 'theora'"):
        MappingNode(context=ros_context, parameter_overrides=small + [Parameter("color_transport", value="theora")])


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("node_scene") / "scene",
                    SynthConfig(seed=1, frames=FRAMES, width=160, height=120, objects=3))


MAP_CLIENT = """
import json, sys
from camfusion_ros.nodes.query_cli import call_service
from camfusion_ros.srv import LoadMap, SaveMap
out = {}
r = call_service(SaveMap, "/mapping_node/save_map", SaveMap.Request(path=sys.argv[1]), 60)
out["save"] = [r.success, r.message]
r = call_service(LoadMap, "/mapping_node/load_map", LoadMap.Request(path=sys.argv[2]), 60)
out["bad_load"] = [r.success, r.message]
r = call_service(LoadMap, "/mapping_node/load_map", LoadMap.Request(path=sys.argv[1]), 60)
out["load"] = [r.success, r.message]
print(json.dumps(out))
"""


@pytest.mark.ros
@pytest.mark.slow
def test_node_replayer_and_clients_in_separate_processes_match_offline(tiny_scene, tmp_path):
    env = ros_env()
    bag = tiny_scene / "bag"
    # The offline reference runs meanwhile, in its own process (the same pipeline, read_frames directly).
    with live_run(env, write_params(tmp_path / "params.yaml", map_root=str(tmp_path)), bag) as run:
        node = run.node
        err = run.replay(bag, "--rate", "4", "--wait-for-subscribers", "30")
        from camfusion_ros.core.recording import inspect_recording

        topics = inspect_recording(bag)["topics"]     # the 5 frame topics, and /tf + /tf_static (pose_source tf)
        assert f"replayed {FRAMES * 5 + topics['/tf']['count'] + topics['/tf_static']['count']} messages" in err
        s = wait_status(env, node, lambda s: s["frames_processed"] == FRAMES and s["instances"] > 0 and s["pending"] == 0,
                        150, f"all {FRAMES} frames to be processed")
        assert s["received"] == FRAMES * 5 and s["processed"] == FRAMES * 5 and not s["dropped"] and accounted(s)
        live = client(env, "instances", "30", str(s["instances"]))
        ref = run.reference()

        assert live["frame_id"] == "map"
        assert_same_centroids([i["centroid"] for i in live["instances"]], [r["centroid"] for r in ref])
        assert all(i["dim"] > 0 and i["num_views"] > 0 for i in live["instances"])
        ids = sorted(i["id"] for i in live["instances"])
        assert live["boxes"] == ids and live["texts"] == ids          # one box and one label per instance
        assert live["cloud"]["frame_id"] == "map" and live["cloud"]["points"] > 1000
        assert set(ids) <= set(live["cloud"]["instances"]) and live["cloud"]["labelled"] > 0

        # Both services answer a separate client process (the real CLIs, JSON mode).
        q = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.query_cli import query_main; "
                            "sys.exit(query_main(sys.argv[1:]))", "a chair", "--top-k", "0", "--json"],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert q.returncode == 0, q.stderr
        qj = json.loads(q.stdout)
        assert sorted(qj["ids"]) == sorted(i["id"] for i in live["instances"])
        assert qj["scores"] == sorted(qj["scores"], reverse=True)
        lab = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.query_cli import labels_main; "
                              "sys.exit(labels_main(sys.argv[1:]))", "--json", "--top-k", "2"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert lab.returncode == 0, lab.stderr
        rows = json.loads(lab.stdout)["instances"]
        assert len(rows) == len(ref) and all(r["top_labels"] and set(r["top_labels"]) <= set(VOCAB) for r in rows)
        table = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.query_cli import labels_main; "
                                "sys.exit(labels_main(sys.argv[1:]))"], env=env, cwd=REPO, capture_output=True,
                               text=True, timeout=60)
        assert table.returncode == 0 and "label" in table.stdout.splitlines()[1]

        # save_map / load_map from another process: the saved folder reloads offline, a bad path is a
        # failed answer (not a dead node), and loading the saved map back keeps the same instances.
        saved = tmp_path / "saved_map"
        answers = json.loads(subprocess.run([python(), "-c", MAP_CLIENT, str(saved), str(tmp_path / "missing")],
                                            env=env, cwd=REPO, capture_output=True, text=True, timeout=90).stdout)
        assert answers["save"] == [True, str(saved)]
        assert answers["bad_load"][0] is False and "map folder not found" in answers["bad_load"][1]
        from camfusion_ros.core.map_store import load_map

        snap = load_map(saved)         # every tracked instance, also those without a view yet
        assert set(ids) <= set(snap.ids.tolist())
        assert answers["load"][0] is True and f"loaded {len(snap.ids)} instances" in answers["load"][1]
        after = wait_status(env, node, lambda s: s["instances"] == len(ids), 30, "the reloaded map to be published")
        assert sorted(after["instance_ids"]) == ids


CORRUPT_PEER = """
import sys, time, rclpy
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
rclpy.init(); n = rclpy.create_node("corrupt_image_peer")
pub = n.create_publisher(CompressedImage, sys.argv[1], QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
end = time.monotonic() + 30
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    time.sleep(0.05)
msg = CompressedImage(format="rgb8; jpeg compressed bgr8")
msg.header.stamp.sec, msg.header.frame_id = 7, "camera_color_optical_frame"
msg.data = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(300)      # a JPEG's first marker, then nothing decodable
pub.publish(msg)
ok = pub.wait_for_all_acked(Duration(seconds=20))
n.destroy_node(); rclpy.shutdown()
sys.exit(0 if ok else 3)
"""


@pytest.mark.ros
@pytest.mark.slow
def test_node_maps_a_replayed_compressed_bag_and_counts_a_corrupt_image_as_a_drop(tmp_path):
    """camfusion-synth --compressed replayed by camfusion-replay: colour picked by its /compressed suffix (auto),
    depth by depth_transport: compressed on the base topic. Every frame is processed, the instances are the raw
    bag's (offline reference, centroids within 5 cm), and a corrupt CompressedImage from another process is one
    counted bad_compressed drop while the node keeps serving."""
    from camfusion_ros.datasets.synth import SynthConfig, generate

    env = ros_env()
    frames = 4
    cfg = dict(seed=1, frames=frames, width=160, height=120, objects=3)
    bag = generate(tmp_path / "compressed", SynthConfig(compressed=True, **cfg)) / "bag"
    raw = generate(tmp_path / "raw", SynthConfig(**cfg)) / "bag"
    color = "/camera/color/image_raw/compressed"
    params = write_params(tmp_path / "params.yaml", topics={"color": color}, depth_transport="compressed")
    with live_run(env, params, raw) as run:
        node = run.node
        inputs = [color, "/camera/depth/image_raw/compressedDepth", "/camera/color/camera_info", "/camera/pose",
                  "/camera/instances/image_raw"]                # the node's inputs alone (bags may carry /tf too)
        err = run.replay(bag, "--rate", "4", "--wait-for-subscribers", "30", "--topics", *inputs)
        assert f"replayed {frames * 5} messages" in err
        s = wait_status(env, node, lambda s: (s["frames_processed"] == frames and s["instances"] > 0
                                              and s["pending"] == 0), 150, f"all {frames} frames to be processed")
        assert s["received"] == frames * 5 and s["processed"] == frames * 5 and not s["dropped"] and accounted(s)
        live = client(env, "instances", "30", str(s["instances"]))
        ref = run.reference()
        assert_same_centroids([i["centroid"] for i in live["instances"]], [r["centroid"] for r in ref])

        peer = subprocess.run([python(), "-c", CORRUPT_PEER, color], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=90)
        assert peer.returncode == 0, peer.stderr[-1500:]
        s = wait_status(env, node, lambda s: s["dropped"].get("bad_compressed") == 1, 60, "the corrupt image's drop")
        assert node.poll() is None and accounted(s)
        assert s["received"] == frames * 5 + 1 and s["frames_processed"] == frames
        assert s["dropped"] == {"bad_compressed": 1}
        assert "dropped (bad_compressed): color:" in node_log(node)


def test_query_cli_without_a_node_is_one_error_line(tmp_path):
    env = ros_env()
    r = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.query_cli import query_main; "
                        "sys.exit(query_main(sys.argv[1:]))", "chair", "--timeout", "1"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: service /mapping_node/query_text is not available")
    assert "Traceback" not in r.stderr
    missing = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.query_cli import labels_main; "
                              "sys.exit(labels_main(sys.argv[1:]))", "--vocab", str(tmp_path / "none.txt")],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "vocabulary file not found" in missing.stderr


def test_format_table_is_aligned():
    from camfusion_ros.nodes.query_cli import format_table

    t = format_table([{"id": 1, "label": "chair", "score": 0.5}, {"id": 12, "label": "", "score": 0.25}],
                     ["id", "label", "score"]).splitlines()
    assert t[0].split() == ["id", "label", "score"] and t[3].split() == ["12", "-", "0.250"]
    assert len({len(line.rstrip()) for line in t[:2]}) == 1


@pytest.mark.parametrize("policy,kept", [("drop_oldest", [2, 3]), ("drop_newest", [1, 2])])
def test_full_queue_drops_by_policy_and_counts_every_message(policy, kept, ros_context):
    from rclpy.parameter import Parameter

    from camfusion_ros.nodes.mapping_node import MappingNode
    from camfusion_ros.nodes.sync import Matched

    params = [Parameter("segmenter.name", value="gt"), Parameter("vlm.pretrained", value="random"),
              Parameter("vlm.model_name", value="PE-Core-T-16-384"), Parameter("vocabulary.names", value=["chair"]),
              Parameter("vocabulary.cache_dir", value=""), Parameter("queue_size", value=2),
              Parameter("drop_policy", value=policy)]
    node = MappingNode(context=ros_context, parameter_overrides=params)
    wait_ready(node)
    node.shutdown()              # stop the worker: the queue is only filled, never emptied
    try:
        with node._cond:
            for stamp in (1, 2, 3):
                node._enqueue(Matched(stamp))
        assert [m.stamp_ns for m in node.queue] == kept
        assert node.counters()["dropped"] == {"queue_full": len(node.streams)}   # one frame's messages
    finally:
        node.destroy_node()


def test_node_with_missing_weights_stops_at_once_with_one_line(tmp_path):
    """The package's default config (SAM2.1-L, PE-Core-L 'meta') on a machine without those weights."""
    env = ros_env(HF_HUB_CACHE=str(tmp_path / "empty_hub"))
    r = subprocess.run([python(), "-m", "camfusion_ros.nodes.mapping_node", "--ros-args",
                        "-p", "segmenter.sam2_checkpoint:=/nonexistent/sam2.1_hiera_large.pt"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr
    assert "PE-Core-L-14-336" in err[0] and "huggingface-cli download" in err[0]


@pytest.mark.parametrize("segmenter", ["gt_noisy", "sam2"])
def test_node_maps_automatic_masks_and_reports_mask_drops(segmenter, tmp_path):
    """SAM-like masks (gt_noisy) and real SAM2.1-T with RANDOM weights (arbitrary masks) through the live node:
    post-processing, tracker and descriptors run, and get_status counts masks per reason."""
    env = ros_env()
    seg = {"name": segmenter, "min_mask_pixels": 20}
    if segmenter == "sam2":
        seg.update(sam2_model="tiny", sam2_checkpoint="random", points_per_side=4, pred_iou_thresh=0.0,
                   stability_score_thresh=0.0, device="cpu")
    else:
        seg.update(noise={"spurious_per_frame": 3.0, "split_fraction": 1.0})
    from camfusion_ros.datasets.synth import SynthConfig, generate

    frames = 3
    scene = generate(tmp_path / "scene", SynthConfig(seed=1, frames=frames, width=160, height=120, objects=3))
    node = start_node(env, write_params(tmp_path / "params.yaml", segmenter=seg))
    replay = None
    try:
        wait_status(env, node, lambda s: s["ready"], 180, "the node to load its models")
        replay = start(["-m", "camfusion_ros.nodes.replay", str(scene / "bag"), "--rate", "1",
                        "--wait-for-subscribers", "30"], env)
        _, err = replay.communicate(timeout=90)
        assert replay.returncode == 0, err
        s = wait_status(env, node, lambda s: s["frames_processed"] == frames and s["pending"] == 0, 240,
                        f"{frames} frames to be processed")
        assert not s["dropped"] and accounted(s)
        m = s["masks"]
        assert m["proposed"] >= 1 and m["tracked"] + sum(m["dropped"].values()) == m["proposed"]
        if segmenter == "gt_noisy":
            assert m["tracked"] >= 3 and s["instances"] >= 1 and m["dropped"].get("nms_nested", 0) > 0
    finally:
        if replay is not None:
            stop(replay)
        stop(node)


def test_services_refuse_paths_outside_map_root_and_oversized_requests(ros_context, tmp_path):
    """Any participant of the graph may call the services: paths are confined, sizes bounded, nothing written."""
    from rclpy.parameter import Parameter

    from camfusion_ros.nodes.mapping_node import MappingNode
    from camfusion_ros.nodes.node_services import answer
    from camfusion_ros.nodes.requests import MAX_TEXT_CHARS, MAX_VOCABULARY
    from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap

    root, outside = tmp_path / "maps", tmp_path / "home"
    outside.mkdir()
    (outside / "thesis.tex").write_text("mine")
    params = [Parameter("segmenter.name", value="gt"), Parameter("vlm.pretrained", value="random"),
              Parameter("vlm.model_name", value="PE-Core-T-16-384"), Parameter("vocabulary.names", value=["chair"]),
              Parameter("vocabulary.cache_dir", value=""), Parameter("map_root", value=str(root))]
    node = MappingNode(context=ros_context, parameter_overrides=params)
    wait_ready(node)
    try:
        save, load = answer(node._srv_save_map), answer(node._srv_load_map)
        for path in (str(outside), str(outside / "new"), "../home", str(tmp_path)):
            r = save(SaveMap.Request(path=path), SaveMap.Response())
            assert not r.success and "outside" in r.message, (path, r.message)
            r = load(LoadMap.Request(path=path), LoadMap.Response())
            assert not r.success and "outside" in r.message
        assert sorted(p.name for p in tmp_path.iterdir()) == ["home"] and (outside / "thesis.tex").is_file()
        r = save(SaveMap.Request(path="run1"), SaveMap.Response())
        assert r.success and (root / "run1" / "meta.json").is_file(), r.message
        r = load(LoadMap.Request(path=str(root / "run1")), LoadMap.Response())
        assert r.success, r.message
        labels, text = answer(node._srv_query_labels), answer(node._srv_query_text)
        r = labels(QueryLabels.Request(vocabulary=["x"] * (MAX_VOCABULARY + 1), top_k=1), QueryLabels.Response())
        assert not r.success and "terms" in r.message
        r = labels(QueryLabels.Request(vocabulary=["chair"], top_k=10**6), QueryLabels.Response())
        assert not r.success and "top_k" in r.message
        r = text(QueryText.Request(text="a" * (MAX_TEXT_CHARS + 1), top_k=1), QueryText.Response())
        assert not r.success and "characters" in r.message
        r = text(QueryText.Request(text="a chair", top_k=1), QueryText.Response())
        assert r.success, r.message
    finally:
        node.shutdown()
        node.destroy_node()
