"""The generated interfaces cross real process boundaries over Fast DDS."""
import json

import pytest

from rostest_utils import ros_env, start, stop

pytestmark = pytest.mark.ros
PEER = "test/ros_peers/interface_peer.py"


def test_generated_interfaces_import():
    from camfusion_ros.msg import Instance, InstanceArray  # noqa: F401
    from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap  # noqa: F401

    assert "embedding" in Instance.get_fields_and_field_types()
    assert QueryText.Request.get_fields_and_field_types() == {"text": "string", "top_k": "uint32"}


def test_tf2_msgs_is_upstreams_type():
    """TFMessage built by make setup (no wheel has it) is upstream's: same fields and the same RIHS01 type hash
    as rosbags' copy of the upstream Kilted definitions, so real /tf publishers and bags interoperate."""
    import re
    import sys
    from pathlib import Path

    from tf2_msgs.msg import TFMessage

    from camfusion_ros.core.recording import ros_typestore

    assert TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    desc = (Path(sys.prefix) / "share" / "tf2_msgs" / "msg" / "TFMessage.json").read_text()
    ours = re.search(r'"type_name": "tf2_msgs/msg/TFMessage",\s*"hash_string": "(RIHS01_[0-9a-f]+)"', desc)
    assert ours and ours.group(1) == ros_typestore().hash_rihs01("tf2_msgs/msg/TFMessage")


def test_instance_array_published_in_one_process_arrives_in_another():
    env = ros_env()
    pub = start([PEER, "pub", "30"], env)
    sub = start([PEER, "sub", "25"], env)
    try:
        out, err = sub.communicate(timeout=40)
    finally:
        stop(pub)
    assert sub.returncode == 0, f"subscriber got nothing (rc={sub.returncode}): {err[-2000:]}"
    got = json.loads(out.strip().splitlines()[-1])
    assert got["frame_id"] == "map"
    assert [i["id"] for i in got["instances"]] == [7, 8, 9]
    assert [i["label"] for i in got["instances"]] == ["chair", "table", "sofa"]
    assert got["instances"][0]["top_labels"] == ["chair", "other"]
    assert got["instances"][1]["centroid"] == [8.0, 2.0, 0.5]
    assert got["instances"][2]["embedding"] == [1.0, 0.0, 0.0]


def test_query_text_served_in_one_process_answers_another():
    env = ros_env()
    server = start([PEER, "server", "30"], env)
    client = start([PEER, "client", "25", "where is the sofa"], env)
    try:
        out, err = client.communicate(timeout=40)
    finally:
        stop(server)
    assert client.returncode == 0, f"client got no answer (rc={client.returncode}): {err[-2000:]}"
    got = json.loads(out.strip().splitlines()[-1])
    assert got["success"] is True
    assert got["ids"] == [9, 7] and got["labels"] == ["sofa", "chair"]
    assert got["scores"] == [1.0, 0.0]


def test_peers_on_different_domains_do_not_meet():
    """The isolation every ROS test relies on: a subscriber on another domain hears nothing."""
    pub = start([PEER, "pub", "12"], ros_env())
    sub = start([PEER, "sub", "4"], ros_env())
    try:
        sub.communicate(timeout=30)
    finally:
        stop(pub)
    assert sub.returncode == 3
