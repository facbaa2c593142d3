"""The mapping node with pose_source tf: camera poses from /tf + /tf_static, over real DDS.

The waiting line (nodes/tf_listener.py) is checked in-process with real
TFMessages, the node end to end with camfusion-replay processes: all frames
mapped to the pose topic's instances, use_sim_time with --clock at 2x (lookups
in bag time), and a frame whose transform never comes counted as no_transform.
Models: GT masks and PE-Core-T with RANDOM weights, as in test_mapping_node.
"""
import time

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from mapping_node_utils import accounted, client, live_run, wait_status, write_params
from rostest_utils import ros_env
from match_utils import assert_same_centroids
from test_mapping_node import ros_context, wait_ready  # noqa: F401 (ros_context is a fixture)

FRAMES = 8
NMSG = 4                      # colour, depth, camera_info, instances: no pose topic in tf mode
S = 1_000_000_000


@pytest.fixture(scope="module")
def tf_scene(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("tf_scene") / "scene",
                    SynthConfig(seed=1, frames=FRAMES, width=160, height=120, objects=3))


def _copy_bag(src, dst, edit):
    """Rewrite a bag; ``edit(topic, msg)`` may change a message."""
    from camfusion_ros.core.recording import ros_typestore

    store = ros_typestore()
    with AnyReader([src], default_typestore=store) as reader, \
            Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        for c, t, raw in reader.messages():
            msg = edit(c.topic, reader.deserialize(raw, c.msgtype))
            writer.write(conns[c.topic], t, store.serialize_cdr(msg, c.msgtype))
    return dst


def _stamps(bag):
    from camfusion_ros.core.recording import read_frames

    return [f.stamp_ns for f in read_frames(bag)]


def _tf(parent, child, stamp_ns, xyz=(0.0, 0.0, 0.0), q=(0.0, 0.0, 0.0, 1.0)):
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from camfusion_ros.nodes.conversions import ns_to_stamp

    ts = TransformStamped(child_frame_id=child)
    ts.header.stamp, ts.header.frame_id = ns_to_stamp(stamp_ns), parent
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = xyz
    ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z, ts.transform.rotation.w = q
    return TFMessage(transforms=[ts])


def test_waiting_line_releases_late_tf_and_drops_what_never_comes(ros_context):
    """Real TFMessages into the node's TfPoseSource (worker stopped, so released frames stay in the queue)."""
    from rclpy.parameter import Parameter

    from camfusion_ros.nodes.mapping_node import MappingNode
    from camfusion_ros.nodes.sync import Matched

    params = [Parameter("segmenter.name", value="gt"), Parameter("vlm.pretrained", value="random"),
              Parameter("vlm.model_name", value="PE-Core-T-16-384"), Parameter("vocabulary.names", value=["chair"]),
              Parameter("vocabulary.cache_dir", value=""), Parameter("pose_source", value="tf"),
              Parameter("tf_wait_s", value=0.3), Parameter("sync_buffer", value=3)]
    node = MappingNode(context=ros_context, parameter_overrides=params)
    wait_ready(node)
    node.shutdown()
    tf = node.tf
    t0 = 1_700_000_000 * S

    def frame(stamp, camera="cam"):
        with node._cond:
            tf.add(Matched(stamp, {"color": (None, camera)}))

    try:
        assert "pose" not in node.streams and len(node.streams) == NMSG
        tf._on_tf(_tf("base", "cam", t0 - 5 * S, xyz=(0.0, 0.0, 1.0)), static=True)   # latched long before
        tf._on_tf(_tf("map", "base", t0, xyz=(0.0, 0.0, 0.0)), static=False)
        tf._on_tf(_tf("map", "base", t0 + S // 5, xyz=(2.0, 0.0, 0.0)), static=False)
        frame(t0 + S // 10)                                  # its transform is there: released at once
        assert len(node.queue) == 1 and tf.pending() == 0
        np.testing.assert_allclose(node.queue[0].items["pose"][:3, 3], [1.0, 0.0, 1.0])   # interpolated + static
        frame(t0 + 3 * S // 10)                              # late TF: waits ...
        assert tf.pending() == 1 and len(node.queue) == 1 and node.counters()["pending"] == 2 * NMSG
        tf._on_tf(_tf("map", "base", t0 + 4 * S // 10, xyz=(4.0, 0.0, 0.0)), static=False)
        assert tf.pending() == 0 and len(node.queue) == 2     # ... and goes once it arrived
        np.testing.assert_allclose(node.queue[1].items["pose"][:3, 3], [3.0, 0.0, 1.0])
        # a frame in a frame that is not in the tree waits; TF newer than its stamp + tf_wait_s ends the wait
        frame(t0 + 5 * S // 10, camera="nowhere")
        frame(t0 + 6 * S // 10)                              # queued behind it, in stamp order
        assert tf.pending() == 2
        tf._on_tf(_tf("map", "base", t0 + 9 * S // 10, xyz=(9.0, 0.0, 0.0)), static=False)
        assert tf.pending() == 0 and len(node.queue) == 3
        assert node.counters()["dropped"] == {"no_transform": NMSG}
        # no TF after this one: it waits tf_wait_s on the node clock, then is given up
        frame(t0 + 10 * S)
        tf._on_timer()
        assert tf.pending() == 1
        time.sleep(0.35)
        tf._on_timer()
        assert tf.pending() == 0 and node.counters()["dropped"] == {"no_transform": 2 * NMSG}
        # at most sync_buffer frames wait: the oldest goes first
        for i in range(4):
            frame(t0 + (11 + i) * S, camera="nowhere")
        assert tf.pending() == 3 and node.counters()["dropped"] == {"no_transform": 3 * NMSG}
        st = node.counters()["tf"]
        assert st["tf_messages"] == 4 and st["tf_static_messages"] == 1 and st["frames_waited"] >= 3
        assert st["backend"] == "camfusion_ros.core.transforms"      # tf2_ros is not installable in the pip venv
    finally:
        node.destroy_node()


@pytest.mark.ros
@pytest.mark.slow
def test_live_node_with_tf_poses_maps_every_frame_like_the_pose_topic(tf_scene, tmp_path):
    env = ros_env()
    bag = tf_scene / "bag"
    with live_run(env, write_params(tmp_path / "params.yaml", pose_source="tf"), bag) as run:
        node = run.node
        run.replay(bag, "--rate", "4", "--wait-for-subscribers", "30")
        s = wait_status(env, node, lambda s: s["frames_processed"] == FRAMES and s["instances"] > 0
                        and s["pending"] == 0, 150, f"all {FRAMES} frames to be processed")
        assert s["received"] == FRAMES * NMSG and not s["dropped"] and accounted(s)
        assert "/camera/pose" not in str(s["received_per_topic"]) and set(s["received_per_topic"]) == {
            "color", "depth", "camera_info", "instances"}
        tf = s["tf"]
        assert tf["tf_static_messages"] == 2 and tf["tf_messages"] > 2 * FRAMES and tf["transforms_rejected"] == 0
        assert tf["frames_waited"] > 0           # the /tf sample after each image came later: the frames waited
        assert tf["last_lookup_stamp_ns"] == _stamps(bag)[-1]
        assert abs(tf["last_lookup_clock_ns"] - time.time_ns()) < 600 * S     # no use_sim_time: the wall clock
        live = client(env, "instances", "30", str(s["instances"]))
        ref = run.reference()                                      # the pose topic, read offline
        assert_same_centroids([i["centroid"] for i in live["instances"]], [r["centroid"] for r in ref])


@pytest.mark.ros
@pytest.mark.slow
def test_live_tf_under_use_sim_time_looks_up_in_bag_time_and_counts_no_transform(tf_scene, tmp_path):
    """use_sim_time:=true, camfusion-replay --clock --rate 2: the node's clock is the bag's, lookups and the wait
    run on it; frame 3 names a camera frame no transform reaches (its TF never arrives): no_transform."""
    stamps = _stamps(tf_scene / "bag")
    lost = stamps[3]

    def edit(topic, msg):
        if topic.startswith("/camera/") and topic != "/camera/pose":
            st = msg.header.stamp
            if st.sec * S + st.nanosec == lost:
                msg.header.frame_id = "camera_without_tf_optical_frame"
        return msg

    bag = _copy_bag(tf_scene / "bag", tmp_path / "bag", edit)
    env = ros_env()
    params = write_params(tmp_path / "params.yaml", pose_source="tf", tf_wait_s=0.3, use_sim_time=True)
    with live_run(env, params) as run:
        node = run.node
        run.replay(bag, "--rate", "2", "--clock", "--wait-for-subscribers", "30")
        s = wait_status(env, node, lambda s: s["frames_processed"] == FRAMES - 1 and s["pending"] == 0, 150,
                        f"{FRAMES - 1} frames to be processed")
        assert s["dropped"] == {"no_transform": NMSG} and s["received"] == FRAMES * NMSG and accounted(s)
        tf = s["tf"]
        assert tf["last_lookup_stamp_ns"] == stamps[-1]
        # the node's clock at the last lookup was the bag's /clock (2023), not the wall clock
        assert stamps[0] - S <= tf["last_lookup_clock_ns"] <= stamps[-1] + S, (tf, stamps[-1])
    assert "dropped (no_transform): map <- camera_without_tf_optical_frame" in open(node.log_path).read()
