"""A stand-alone ROS 2 process for the cross-process interface test.

Roles: pub (publishes InstanceArray), sub (prints the first InstanceArray as
JSON), server (serves QueryText over a fixed set of labelled instances),
client (calls QueryText once and prints the answer as JSON). Bounded waits:
exit code 3 means the peer never showed up.
"""
import json
import sys
import time

import rclpy
from rclpy.node import Node

from camfusion_ros.msg import Instance, InstanceArray
from camfusion_ros.srv import QueryText

LABELS = {7: "chair", 8: "table", 9: "sofa"}


def make_instances():
    out = []
    for iid, label in LABELS.items():
        inst = Instance(id=iid, label=label, score=0.5 + iid / 100, num_views=iid - 5)
        inst.top_labels = [label, "other"]
        inst.top_scores = [0.9, 0.1]
        inst.embedding = [1.0, 0.0, 0.0]
        inst.centroid.x, inst.centroid.y, inst.centroid.z = float(iid), 2.0, 0.5
        inst.fusion_method = "avg"
        out.append(inst)
    return out


def as_dict(inst: Instance) -> dict:
    return {"id": inst.id, "label": inst.label, "score": round(inst.score, 4),
            "top_labels": list(inst.top_labels), "embedding": [float(x) for x in inst.embedding],
            "centroid": [inst.centroid.x, inst.centroid.y, inst.centroid.z], "num_views": inst.num_views}


def main(role: str, timeout: float) -> int:
    rclpy.init()
    node = Node(f"interface_peer_{role}")
    deadline = time.monotonic() + timeout
    try:
        if role == "pub":
            pub = node.create_publisher(InstanceArray, "instances", 10)
            while time.monotonic() < deadline:
                msg = InstanceArray(instances=make_instances())
                msg.header.frame_id = "map"
                pub.publish(msg)
                rclpy.spin_once(node, timeout_sec=0.2)
            return 0
        if role == "sub":
            got = []
            node.create_subscription(InstanceArray, "instances", got.append, 10)
            while not got and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.2)
            if not got:
                return 3
            print(json.dumps({"frame_id": got[0].header.frame_id,
                              "instances": [as_dict(i) for i in got[0].instances]}))
            return 0
        if role == "server":
            def handle(req, resp):
                ranked = sorted(LABELS, key=lambda i: (LABELS[i] not in req.text, i))
                ranked = ranked[: req.top_k or len(ranked)]
                resp.ids = ranked
                resp.scores = [1.0 if LABELS[i] in req.text else 0.0 for i in ranked]
                by_id = {i.id: i for i in make_instances()}
                resp.instances = [by_id[i] for i in ranked]
                resp.success, resp.message = True, f"{len(ranked)} instances"
                return resp
            node.create_service(QueryText, "query_text", handle)
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.2)
            return 0
        if role == "client":
            cli = node.create_client(QueryText, "query_text")
            if not cli.wait_for_service(timeout_sec=timeout):
                return 3
            fut = cli.call_async(QueryText.Request(text=sys.argv[3], top_k=2))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=max(0.1, deadline - time.monotonic()))
            if not fut.done():
                return 3
            r = fut.result()
            print(json.dumps({"success": r.success, "message": r.message, "ids": list(r.ids),
                              "scores": [float(s) for s in r.scores],
                              "labels": [i.label for i in r.instances]}))
            return 0
        raise SystemExit(f"unknown role {role}")
    except KeyboardInterrupt:
        return 0
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
