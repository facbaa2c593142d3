"""A separate client process for the mapping-node tests: prints one JSON line.

  mapping_client.py status TIMEOUT              -> the node's ~/get_status counters
  mapping_client.py instances TIMEOUT MIN_N     -> the latest ~/instances (ids, centroids, labels)
  mapping_client.py hostile COUNT FLOOD SEED    -> publish COUNT malformed messages, then FLOOD valid frames fast
  mapping_client.py services COUNT              -> COUNT malformed / oversized service requests, then one valid query
"""
import json
import math
import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import cloud_from_msg, matrix_to_pose, ns_to_stamp, numpy_to_image
from camfusion_ros.nodes.query_cli import call_service

NODE = "/mapping_node"


def status(timeout: float) -> dict:
    resp = call_service(Trigger, f"{NODE}/get_status", Trigger.Request(), timeout)
    return json.loads(resp.message)


def instances(timeout: float, min_n: int) -> dict:
    rclpy.init()
    node = rclpy.create_node("test_instances_listener")
    got = {}
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def cb(msg):
        got["msg"] = msg

    node.create_subscription(InstanceArray, f"{NODE}/instances", cb, qos)
    node.create_subscription(MarkerArray, f"{NODE}/markers", lambda m: got.__setitem__("markers", m), qos)
    node.create_subscription(PointCloud2, f"{NODE}/cloud", lambda m: got.__setitem__("cloud", m), qos)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ("msg" in got and len(got["msg"].instances) >= min_n
                                               and "markers" in got and "cloud" in got):
        rclpy.spin_once(node, timeout_sec=0.2)
    node.destroy_node()
    rclpy.shutdown()
    if "msg" not in got:
        sys.exit(3)
    m = got["msg"]
    extra = {}
    if "markers" in got:
        extra["boxes"] = sorted(k.id for k in got["markers"].markers if k.type == Marker.CUBE and k.action == Marker.ADD)
        extra["texts"] = sorted(k.id for k in got["markers"].markers if k.type == Marker.TEXT_VIEW_FACING)
    if "cloud" in got:
        c = cloud_from_msg(got["cloud"])
        extra["cloud"] = {"frame_id": got["cloud"].header.frame_id, "points": int(len(c["xyz"])),
                          "instances": sorted(set(c["instance"].tolist())), "labelled": int((c["label"] >= 0).sum())}
    return {"frame_id": m.header.frame_id, **extra, "instances": [
        {"id": i.id, "label": i.label, "num_points": i.num_points, "num_views": i.num_views,
         "centroid": [i.centroid.x, i.centroid.y, i.centroid.z], "dim": len(i.embedding)} for i in m.instances]}


def _img(arr, enc, stamp, frame="cam"):
    msg = numpy_to_image(arr, enc, Header(stamp=ns_to_stamp(stamp), frame_id=frame))
    return msg


def hostile(count: int, flood: int, seed: int) -> dict:
    """Malformed messages round-robin over every input topic, then a flood of valid frames."""
    rng = np.random.default_rng(seed)
    rclpy.init()
    node = rclpy.create_node("test_hostile_publisher")
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"color": node.create_publisher(Image, "/camera/color/image_raw", qos),
            "depth": node.create_publisher(Image, "/camera/depth/image_raw", qos),
            "info": node.create_publisher(CameraInfo, "/camera/color/camera_info", qos),
            "pose": node.create_publisher(PoseStamped, "/camera/pose", qos),
            "inst": node.create_publisher(Image, "/camera/instances/image_raw", qos)}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        time.sleep(0.05)
    time.sleep(0.5)
    H, W = 48, 64
    sent = {k: 0 for k in pubs}
    t = 2_000_000_000_000

    def send(k, msg):
        pubs[k].publish(msg)
        sent[k] += 1

    def info(stamp, fx=50.0):
        m = CameraInfo(header=Header(stamp=ns_to_stamp(stamp)), height=H, width=W)
        m.k = [fx, 0.0, W / 2, 0.0, fx, H / 2, 0.0, 0.0, 1.0]
        return m

    def pose(stamp, q=(0.0, 0.0, 0.0, 1.0), p=(0.0, 0.0, 0.0)):
        T = np.eye(4)
        m = PoseStamped(header=Header(stamp=ns_to_stamp(stamp), frame_id="map"), pose=matrix_to_pose(T))
        m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = q
        m.pose.position.x, m.pose.position.y, m.pose.position.z = p
        return m

    kinds = 0
    for i in range(count):
        t += 1_000_000
        kind = i % 12
        if kind == 0:    # wrong colour encoding
            m = _img(rng.integers(0, 255, (H, W), dtype=np.uint16), "16UC1", t)
            send("color", m)
        elif kind == 1:  # data shorter than the header says
            m = _img(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), "rgb8", t)
            m.data = bytes(m.data)[: len(m.data) // 2]
            send("color", m)
        elif kind == 2:  # empty image
            send("color", Image(header=Header(stamp=ns_to_stamp(t)), encoding="rgb8"))
        elif kind == 3:  # unknown encoding on depth
            m = Image(header=Header(stamp=ns_to_stamp(t)), height=H, width=W, encoding="yuv422", step=W * 2)
            m.data = bytes(H * W * 2)
            send("depth", m)
        elif kind == 4:  # NaN / inf / zero depth
            d = np.full((H, W), [np.nan, np.inf, 0.0][i % 3], np.float32)
            send("depth", _img(d, "32FC1", t))
        elif kind == 5:  # step smaller than a row
            m = _img(np.ones((H, W), np.uint16), "16UC1", t)
            m.step = 3
            send("depth", m)
        elif kind == 6:  # zero focal length
            send("info", info(t, fx=0.0))
        elif kind == 7:  # NaN focal length
            send("info", info(t, fx=float("nan")))
        elif kind == 8:  # NaN quaternion
            send("pose", pose(t, q=(float("nan"), 0.0, 0.0, 1.0)))
        elif kind == 9:  # non-unit quaternion
            send("pose", pose(t, q=(0.0, 0.0, 0.0, 3.0)))
        elif kind == 10:  # NaN position
            send("pose", pose(t, p=(float("nan"), 0.0, 0.0)))
        else:           # stamps going backwards on a valid message
            send("pose", pose(1_000_000_000 - i))
        time.sleep(0.0005)
    # flood: complete, valid frames at a high rate
    yy, xx = np.mgrid[0:H, 0:W]
    inst = ((xx // 16) + 1 + 4 * (yy // 24)).astype(np.int32)
    depth = (1.5 + 0.1 * (inst % 3)).astype(np.float32)
    for i in range(flood):
        t += 50_000_000
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        send("color", _img(rgb, "rgb8", t))
        send("depth", _img(depth, "32FC1", t))
        send("info", info(t))
        send("pose", pose(t))
        send("inst", _img(inst, "32SC1", t))
        time.sleep(0.01)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()
    return {"sent": sent, "total": sum(sent.values())}


def service_flood(count: int) -> dict:
    """Malformed and oversized requests round-robin over the four services, 8 in flight at most (the
    services' default queue depth is 10: more in flight could be dropped, not answered)."""
    from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap

    rclpy.init()
    node = rclpy.create_node("test_service_flooder")
    clients = {name: node.create_client(t, f"{NODE}/{name}")
               for name, t in (("query_labels", QueryLabels), ("query_text", QueryText), ("save_map", SaveMap),
                               ("load_map", LoadMap))}
    for c in clients.values():
        if not c.wait_for_service(timeout_sec=30):
            sys.exit(4)
    bad = [("query_labels", QueryLabels.Request(vocabulary=["chair"] * 5000, top_k=1)),
           ("query_labels", QueryLabels.Request(vocabulary=["x" * 10000], top_k=1)),
           ("query_labels", QueryLabels.Request(vocabulary=["chair"], top_k=10**6)),
           ("query_text", QueryText.Request(text="y" * 100000, top_k=1)),
           ("query_text", QueryText.Request(text="", top_k=1)),
           ("query_text", QueryText.Request(text="a chair", top_k=10**6)),
           ("save_map", SaveMap.Request(path="/etc/camfusion_test")),
           ("save_map", SaveMap.Request(path="../../escape")),
           ("save_map", SaveMap.Request(path="z" * 5000)),
           ("load_map", LoadMap.Request(path="/")),
           ("load_map", LoadMap.Request(path="../..")),
           ("load_map", LoadMap.Request(path="/proc/self"))]
    pending, answers = [], {"success": 0, "refused": 0}
    sent = 0
    deadline = time.monotonic() + 180
    while (sent < count or pending) and time.monotonic() < deadline:
        while sent < count and len(pending) < 8:
            name, req = bad[sent % len(bad)]
            pending.append(clients[name].call_async(req))
            sent += 1
        rclpy.spin_once(node, timeout_sec=0.05)
        for f in [f for f in pending if f.done()]:
            pending.remove(f)
            answers["success" if f.result().success else "refused"] += 1
    answers["unanswered"] = len(pending) + count - sent
    t0 = time.monotonic()
    fut = clients["query_text"].call_async(QueryText.Request(text="a table", top_k=3))
    while not fut.done() and time.monotonic() - t0 < 30:
        rclpy.spin_once(node, timeout_sec=0.01)
    answers["valid_seconds"] = time.monotonic() - t0
    answers["valid_success"] = bool(fut.done() and fut.result().success)
    node.destroy_node()
    rclpy.shutdown()
    return answers


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "status":
        out = status(float(sys.argv[2]))
    elif cmd == "instances":
        out = instances(float(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "hostile":
        out = hostile(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "services":
        out = service_flood(int(sys.argv[2]))
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(out))
