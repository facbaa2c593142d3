"""Peer processes of test_node_settings.py: each prints one JSON line.

  settings_peer.py publish BAG             -> the recording's frames as a camera driver would send them: best-effort
                                              (sensor_data) publishers, the pose as nav_msgs/Odometry; each frame is
                                              confirmed on ~/get_status before the next (a lost sample is re-sent),
                                              then one Odometry with a NaN quaternion (a counted 'pose' drop)
  settings_peer.py listen STOP_FILE TIMEOUT -> ~/instances, ~/markers, ~/cloud and /diagnostics until STOP_FILE exists
  settings_peer.py services PATH TOP_K TERM... -> QueryLabels with the node's vocabulary, then with TERM...; SaveMap to
                                                 PATH (the map's stored labels); QueryLabels with the node's again
"""
import json
import math
import os
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import matrix_to_pose, ns_to_stamp, numpy_to_image

NODE = "/mapping_node"
TOPICS = {"color": "/camera/color/image_raw", "depth": "/camera/depth/image_raw",
          "camera_info": "/camera/color/camera_info", "pose": "/camera/pose",
          "instances": "/camera/instances/image_raw"}


def _call(node, client, request, timeout: float):
    if not client.wait_for_service(timeout_sec=timeout):
        raise SystemExit(f"service {client.srv_name} not available")
    fut = client.call_async(request)
    rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
    if not fut.done() or fut.result() is None:
        raise SystemExit(f"service {client.srv_name} did not answer")
    return fut.result()


def publish(bag: str) -> dict:
    from camfusion_ros.core.recording import read_frames

    frames = list(read_frames(bag))
    rclpy.init()
    node = rclpy.create_node("test_sensor_driver")
    types = {"color": Image, "depth": Image, "camera_info": CameraInfo, "pose": Odometry, "instances": Image}
    pubs = {k: node.create_publisher(types[k], TOPICS[k], qos_profile_sensor_data) for k in TOPICS}
    status = node.create_client(Trigger, f"{NODE}/get_status")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        time.sleep(0.05)
    if not all(p.get_subscription_count() for p in pubs.values()):
        raise SystemExit("the node never subscribed to every input")
    time.sleep(1.0)     # best effort: samples sent before the reader has matched this writer are lost
    # What the node subscribed with, as the graph reports it
    subs = {}
    for k, topic in TOPICS.items():
        infos = [i for i in node.get_subscriptions_info_by_topic(topic) if i.node_name == "mapping_node"]
        subs[k] = [{"type": i.topic_type, "reliability": i.qos_profile.reliability.name} for i in infos]

    def received() -> dict:
        return json.loads(_call(node, status, Trigger.Request(), 30).message)["received_per_topic"]

    def messages(f) -> dict:
        h = Header(stamp=ns_to_stamp(f.stamp_ns), frame_id=f.frame_id)
        info = CameraInfo(header=h, height=f.height, width=int(f.depth.shape[1]))
        info.k = [float(v) for v in f.K.reshape(-1)]
        odom = Odometry(header=Header(stamp=h.stamp, frame_id="map"), child_frame_id=f.frame_id)
        odom.pose.pose = matrix_to_pose(f.T_world_cam)
        return {"color": numpy_to_image(f.rgb, "rgb8", h),
                "depth": numpy_to_image(f.depth.astype("float32"), "32FC1", h), "camera_info": info, "pose": odom,
                "instances": numpy_to_image(f.gt_instances, "32SC1", h)}

    sent = {k: 0 for k in TOPICS}
    resent = 0

    def deliver(msgs: dict) -> None:
        """Publish, then wait until the node counted each message; re-send one still missing after 5 s."""
        nonlocal resent
        for k, m in msgs.items():
            pubs[k].publish(m)
            sent[k] += 1
        for attempt in range(4):
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                got = received()
                missing = [k for k in msgs if got.get(k, 0) < sent[k]]
                if not missing:
                    return
                time.sleep(0.1)
            for k in missing:
                pubs[k].publish(msgs[k])
                sent[k] += 1
                resent += 1
        raise SystemExit(f"the node never received {missing} (sent {sent}, received {received()})")

    for f in frames:
        deliver(messages(f))
    bad = Odometry(header=Header(stamp=ns_to_stamp(frames[-1].stamp_ns + 10**9), frame_id="map"))
    bad.pose.pose.orientation.x, bad.pose.pose.orientation.w = math.nan, 1.0
    deliver({"pose": bad})
    node.destroy_node()
    rclpy.shutdown()
    return {"frames": len(frames), "sent": sent, "resent": resent, "subscriptions": subs}


def listen(stop_file: str, timeout: float) -> dict:
    rclpy.init()
    node = rclpy.create_node("test_output_listener")
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    got = {"instances": [], "markers": [], "cloud": 0, "diagnostics": 0}
    last_diag = {}

    def on_diag(msg):
        for st in msg.status:
            if st.name == f"{NODE}: mapping":
                got["diagnostics"] += 1
                last_diag.update(name=st.name, level=int.from_bytes(st.level, "little") if isinstance(st.level, bytes)
                                 else int(st.level), message=st.message, hardware_id=st.hardware_id,
                                 values={kv.key: kv.value for kv in st.values})

    def on_instances(msg):
        got["instances"].append({"frame_id": msg.header.frame_id, "instances": [
            {"id": i.id, "label": i.label, "top_labels": list(i.top_labels), "fusion_method": i.fusion_method,
             "embedding_model": i.embedding_model, "num_views": i.num_views, "num_points": i.num_points,
             "centroid": [i.centroid.x, i.centroid.y, i.centroid.z], "embedding": list(i.embedding)}
            for i in msg.instances]})

    def on_markers(msg):
        got["markers"].append(sorted(m.id for m in msg.markers if m.type == Marker.CUBE and m.action == Marker.ADD))

    def on_cloud(_msg):
        got["cloud"] += 1

    node.create_subscription(InstanceArray, f"{NODE}/instances", on_instances, latched)
    node.create_subscription(MarkerArray, f"{NODE}/markers", on_markers, latched)
    node.create_subscription(PointCloud2, f"{NODE}/cloud", on_cloud, latched)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    print("listening", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        rclpy.spin_once(node, timeout_sec=0.1)
    end = time.monotonic() + 0.5          # what is already on the way
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    cloud_publishers = [i.node_name for i in node.get_publishers_info_by_topic(f"{NODE}/cloud")]
    node.destroy_node()
    rclpy.shutdown()
    return {"instance_msgs": len(got["instances"]),
            "last_instances": got["instances"][-1] if got["instances"] else None,
            "marker_msgs": len(got["markers"]), "last_boxes": got["markers"][-1] if got["markers"] else None,
            "cloud_msgs": got["cloud"], "cloud_publishers": cloud_publishers, "diagnostics_msgs": got["diagnostics"],
            "last_diagnostics": last_diag, "stopped": os.path.exists(stop_file)}


def services(path: str, top_k: int, terms: list[str]) -> dict:
    from camfusion_ros.srv import QueryLabels, SaveMap

    rclpy.init()
    node = rclpy.create_node("test_services_client")
    cli = node.create_client(QueryLabels, f"{NODE}/query_labels")
    save = node.create_client(SaveMap, f"{NODE}/save_map")

    def ask(vocabulary):
        r = _call(node, cli, QueryLabels.Request(vocabulary=vocabulary, top_k=top_k), 60)
        return {"success": r.success, "message": r.message, "instances": [
            {"id": i.id, "label": i.label, "top_labels": list(i.top_labels), "top_scores": list(i.top_scores)}
            for i in r.instances]}

    out = {"own_before": ask([]), "callers": ask(terms)}
    saved = _call(node, save, SaveMap.Request(path=path), 60)
    out.update(save=[saved.success, saved.message], own_after=ask([]))
    node.destroy_node()
    rclpy.shutdown()
    return out


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "publish":
        result = publish(sys.argv[2])
    elif cmd == "listen":
        result = listen(sys.argv[2], float(sys.argv[3]))
    elif cmd == "services":
        result = services(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        sys.exit(f"unknown command {cmd}")
    print(json.dumps(result))
