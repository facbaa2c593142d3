"""camfusion-replay publishes a real rosbag2 bag onto live topics, field by field, in recorded order."""
import json
import subprocess

import numpy as np
import pytest

from rostest_utils import REPO, python, ros_env, start, stop

LISTENER = """
import json, sys, time, rclpy, numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, CameraInfo
from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock
rclpy.init(); n = rclpy.create_node("replay_listener"); got = {"color": [], "info": [], "pose": [], "clock": 0}
q = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
n.create_subscription(Image, "/camera/color/image_raw", lambda m: got["color"].append(
    [m.header.stamp.sec, m.header.stamp.nanosec, m.encoding, m.width, m.height, int(np.frombuffer(bytes(m.data), np.uint8).sum())]), q)
n.create_subscription(CameraInfo, "/camera/color/camera_info", lambda m: got["info"].append(list(m.k)), q)
n.create_subscription(PoseStamped, "/camera/pose", lambda m: got["pose"].append(m.pose.orientation.w), q)
n.create_subscription(Clock, "/clock", lambda m: got.__setitem__("clock", got["clock"] + 1), 10)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end and len(got["color"]) < int(sys.argv[2]):
    rclpy.spin_once(n, timeout_sec=0.1)
t = time.monotonic() + 1.0
while time.monotonic() < t:
    rclpy.spin_once(n, timeout_sec=0.1)
print(json.dumps(got))
"""


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("replay") / "scene", SynthConfig(seed=3, frames=5, width=32, height=24,
                                                                             objects=2)) / "bag"


def test_to_rclpy_copies_every_field(small_bag):
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image

    from camfusion_ros.core.recording import ros_typestore
    from camfusion_ros.nodes.replay import to_rclpy

    with AnyReader([small_bag], default_typestore=ros_typestore()) as r:
        seen = set()
        for conn, _, raw in r.messages():
            src = r.deserialize(raw, conn.msgtype)
            msg = to_rclpy(src)
            seen.add(type(msg).__name__)
            if conn.msgtype == "tf2_msgs/msg/TFMessage":     # the generated tf2_msgs (scripts/setup.sh) interoperates
                assert [(t.header.frame_id, t.child_frame_id, t.header.stamp.nanosec, t.transform.rotation.w)
                        for t in msg.transforms] == [(t.header.frame_id, t.child_frame_id, t.header.stamp.nanosec,
                                                      t.transform.rotation.w) for t in src.transforms]
                continue
            assert msg.header.stamp.sec == src.header.stamp.sec and msg.header.frame_id == src.header.frame_id
            if isinstance(msg, Image):
                assert bytes(msg.data) == src.data.tobytes() and msg.encoding == src.encoding and msg.step == src.step
            if isinstance(msg, CameraInfo):
                np.testing.assert_array_equal(msg.k, src.k)
                assert list(msg.d) == list(src.d)
    assert seen == {"Image", "CameraInfo", "PoseStamped", "TFMessage"}


def test_to_rclpy_copies_compressed_images(tmp_path):
    """Bags from robots (and --compressed) hold sensor_msgs/CompressedImage: replayed byte for byte."""
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CompressedImage

    from camfusion_ros.core.recording import ros_typestore
    from camfusion_ros.datasets.synth import SynthConfig, generate
    from camfusion_ros.nodes.conversions import color_from_msg, depth_from_msg
    from camfusion_ros.nodes.replay import to_rclpy

    bag = generate(tmp_path / "c", SynthConfig(seed=3, frames=2, width=32, height=24, objects=2, compressed=True)) / "bag"
    n = 0
    with AnyReader([bag], default_typestore=ros_typestore()) as r:
        for conn, _, raw in r.messages():
            if conn.msgtype != "sensor_msgs/msg/CompressedImage":
                continue
            src = r.deserialize(raw, conn.msgtype)
            msg = to_rclpy(src)
            assert isinstance(msg, CompressedImage) and msg.format == src.format
            assert bytes(msg.data) == src.data.tobytes() and msg.header.stamp.nanosec == src.header.stamp.nanosec
            out = color_from_msg(msg) if conn.topic.endswith("/compressed") else depth_from_msg(msg)
            assert out.shape[:2] == (24, 32)
            n += 1
    assert n == 4


@pytest.mark.ros
def test_replay_reaches_a_subscriber_in_another_process(small_bag):
    env = ros_env()
    listener = start(["-c", LISTENER, "30", "5"], env)
    replay = None
    try:
        replay = start(["-m", "camfusion_ros.nodes.replay", str(small_bag), "--rate", "2", "--clock",
                        "--wait-for-subscribers", "20"], env)
        _, err = replay.communicate(timeout=60)
        assert replay.returncode == 0, err
        out, lerr = listener.communicate(timeout=40)
        got = json.loads(out.strip().splitlines()[-1])
    finally:
        if replay is not None:
            stop(replay)
        stop(listener)
    from camfusion_ros.core.recording import read_frames

    frames = list(read_frames(small_bag))
    assert [c[0] * 10**9 + c[1] for c in got["color"]] == [f.stamp_ns for f in frames]
    assert [c[5] for c in got["color"]] == [int(f.rgb.sum()) for f in frames]
    assert all(c[2] == "rgb8" and (c[3], c[4]) == (32, 24) for c in got["color"])
    assert len(got["info"]) == 5 and got["info"][0] == frames[0].K.reshape(-1).tolist()
    assert len(got["pose"]) == 5 and got["clock"] >= 5


def test_topics_filter_and_errors(small_bag, tmp_path):
    env = ros_env()

    def run(*args):
        return subprocess.run([python(), "-m", "camfusion_ros.nodes.replay", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    r = run(str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.strip() == f"error: recording not found: {tmp_path / 'nope'}"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap}")
    r = run(str(broken))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot open recording") and "Traceback" not in r.stderr
    r = run(str(small_bag), "--topics", "/not/there")
    assert r.returncode == 2 and "topic(s) not in the bag: /not/there" in r.stderr
    r = run(str(small_bag), "--rate", "0")
    assert r.returncode == 2 and "--rate" in r.stderr
    r = run(str(small_bag), "--topics", "/camera/pose", "--rate", "50")
    assert r.returncode == 0 and "replayed 5 messages" in r.stderr


@pytest.mark.ros
def test_loop_starts_again_at_the_end(small_bag):
    """--loop: a listener waiting for 12 colour images gets them from a 5-frame bag, the stamps repeating."""
    env = ros_env()
    listener = start(["-c", LISTENER, "40", "12"], env)
    replay = start(["-m", "camfusion_ros.nodes.replay", str(small_bag), "--rate", "10", "--loop",
                    "--topics", "/camera/color/image_raw", "--wait-for-subscribers", "20"], env)
    try:
        out, _ = listener.communicate(timeout=60)
    finally:
        stop(replay)
        stop(listener)
    stamps = [c[0] * 10**9 + c[1] for c in json.loads(out.strip().splitlines()[-1])["color"]]
    assert len(stamps) >= 12
    assert stamps[5:10] == stamps[:5]          # the second pass replays the same frames
    assert replay.returncode is not None


FROZEN_LISTENER = """
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from geometry_msgs.msg import PoseStamped
rclpy.init(); n = rclpy.create_node("frozen_listener")
s = n.create_subscription(PoseStamped, "/camera/pose", lambda m: None, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
while s.get_publisher_count() == 0:
    rclpy.spin_once(n, timeout_sec=0.1)
end = time.monotonic() + 1.5          # discovery is two-way: give the replay time to match this reader too
while time.monotonic() < end:
    rclpy.spin_once(n, timeout_sec=0.1)
print("matched", flush=True)
while True:
    rclpy.spin_once(n, timeout_sec=0.1)
"""


@pytest.mark.ros
def test_replay_stays_until_subscribers_acknowledge(small_bag):
    """The replay exits only once every reliable subscriber holds every message (DDS repairs a lost sample only while
    its writer lives): with a subscriber frozen (SIGSTOP) it waits --ack-timeout and names the topic it could not
    deliver; with a live one it does not warn."""
    import os
    import signal
    import time

    env = ros_env()
    listener = start(["-c", FROZEN_LISTENER], env)
    replay = start(["-m", "camfusion_ros.nodes.replay", str(small_bag), "--topics", "/camera/pose", "--rate", "20",
                    "--wait-for-subscribers", "20", "--start-delay", "4", "--ack-timeout", "3"], env)
    try:
        assert listener.stdout.readline().strip() == "matched"
        os.killpg(listener.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = replay.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        os.killpg(listener.pid, signal.SIGCONT)
        stop(replay)
        stop(listener)
    assert replay.returncode == 0, err
    assert "subscribers of /camera/pose did not acknowledge every message within 3 s" in err, err
    assert waited >= 3.0

    listener = start(["-c", FROZEN_LISTENER], env)
    try:
        r = subprocess.run([python(), "-m", "camfusion_ros.nodes.replay", str(small_bag), "--topics", "/camera/pose",
                            "--rate", "20", "--wait-for-subscribers", "20", "--ack-timeout", "10"],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        stop(listener)
    assert r.returncode == 0 and "replayed 5 messages" in r.stderr and "acknowledge" not in r.stderr, r.stderr


LATE_TF_LISTENER = """
import json, sys, time, rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage
rclpy.init(); n = rclpy.create_node("late_tf_listener")
deadline = time.monotonic() + 30
while n.count_publishers("/tf_static") == 0 and time.monotonic() < deadline:
    rclpy.spin_once(n, timeout_sec=0.05)
time.sleep(1.0)                 # the replay published /tf_static (and its first /tf) before we subscribe
got = {"static": [], "tf": []}
stamp = lambda t: t.header.stamp.sec * 10**9 + t.header.stamp.nanosec
latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
n.create_subscription(TFMessage, "/tf_static", lambda m: got["static"].extend(
    [t.header.frame_id, t.child_frame_id] for t in m.transforms), latched)
n.create_subscription(TFMessage, "/tf", lambda m: got["tf"].extend(stamp(t) for t in m.transforms), 100)
end = time.monotonic() + 4
while time.monotonic() < end:
    rclpy.spin_once(n, timeout_sec=0.05)
print(json.dumps(got))
"""


@pytest.mark.ros
def test_tf_static_is_latched_for_a_late_subscriber(small_bag):
    """/tf_static is replayed transient-local: a subscriber that joins after it was sent still gets both static
    messages (it demonstrably missed the first /tf samples, which are volatile)."""
    from camfusion_ros.core.recording import ros_typestore

    env = ros_env()
    listener = start(["-c", LATE_TF_LISTENER], env)
    replay = start(["-m", "camfusion_ros.nodes.replay", str(small_bag), "--rate", "0.1",
                    "--topics", "/tf", "/tf_static"], env)
    try:
        out, lerr = listener.communicate(timeout=60)
        _, err = replay.communicate(timeout=60)
    finally:
        stop(listener)
        stop(replay)
    assert replay.returncode == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    from rosbags.highlevel import AnyReader

    with AnyReader([small_bag], default_typestore=ros_typestore()) as r:
        first_tf = min(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for c, _, raw in r.messages()
                       if c.topic == "/tf" for m in r.deserialize(raw, c.msgtype).transforms)
    assert got["tf"] and min(got["tf"]) > first_tf, "the listener joined before the replay started: no late join"
    assert sorted(got["static"]) == [["base_link", "camera_link"], ["camera_link", "camera_color_optical_frame"]]
