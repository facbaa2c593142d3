"""Child process of the node benchmark (it imports rclpy, so it lives in nodes/): replay bags, watch the node.

Subscribes to the colour topic (arrival time of each sensor stamp), the
node's ``~/instances`` and ``/diagnostics``; runs ``camfusion-replay`` once per
(bag, rate) and writes what it saw as JSON. The bench process itself stays
ROS-free and only starts this and the node.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import stamp_to_ns


class Probe:
    def __init__(self, node, node_name: str, color_topic: str):
        self.lock = threading.Lock()
        self.arrivals: dict[int, float] = {}        # sensor stamp -> wall arrival (monotonic)
        self.pubs: list[tuple[float, int, list[int]]] = []   # (arrival, max last_seen, all last_seen)
        self.diag: dict[str, str] = {}
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(Image, color_topic, self._on_color, QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(InstanceArray, f"/{node_name}/instances", self._on_instances, latched)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node_name = node_name

    def _on_color(self, msg) -> None:
        with self.lock:
            self.arrivals.setdefault(stamp_to_ns(msg.header.stamp), time.monotonic())

    def _on_instances(self, msg) -> None:
        t = time.monotonic()
        seen = [stamp_to_ns(i.last_seen) for i in msg.instances]
        with self.lock:
            self.pubs.append((t, max(seen, default=0), seen))

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if self.node_name in st.name:
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}

    def counters(self) -> dict:
        with self.lock:
            d = dict(self.diag)
        out = {k: int(float(v)) for k, v in d.items() if k in ("received", "processed", "pending", "frames_processed")}
        out["dropped"] = {k.split(".", 1)[1]: int(float(v)) for k, v in d.items() if k.startswith("dropped.")}
        out["ready"] = d.get("ready") == "True"
        return out


def _wait(pred, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def _run_one(probe: Probe, bag: str, rate: float, frames: int, msgs_per_frame: int, drain_s: float) -> dict:
    before = probe.counters()
    with probe.lock:
        first_pub = len(probe.pubs)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "camfusion_ros.nodes.replay", bag, "--rate", str(rate),
                        "--wait-for-subscribers", "20", "--start-delay", "1.5"], capture_output=True, text=True, timeout=600)
    t_replay = time.monotonic() - t0
    if r.returncode != 0:
        return {"rate": rate, "error": f"replay failed rc={r.returncode}: {r.stderr.strip()[-300:]}"}
    expected = before.get("received", 0) + frames * msgs_per_frame

    def drained() -> bool:
        c = probe.counters()
        return c.get("received", 0) >= expected and c.get("pending", 1) == 0
    ok = _wait(drained, drain_s)
    time.sleep(1.0)                                   # one more fusion period + diagnostics
    after = probe.counters()
    with probe.lock:
        pubs = probe.pubs[first_pub:]
        arrivals = dict(probe.arrivals)
    run_stamps = sorted(s for s, t in arrivals.items() if t >= t0)
    published_stamps = {s for _, _, seen in pubs for s in seen}
    lat = []
    for s in run_stamps:
        if s not in published_stamps:
            continue
        t_pub = next((t for t, mx, _ in pubs if mx >= s), None)
        if t_pub is not None:
            lat.append(t_pub - arrivals[s])
    dropped = {k: after["dropped"].get(k, 0) - before["dropped"].get(k, 0) for k in after["dropped"]}
    processed = after.get("frames_processed", 0) - before.get("frames_processed", 0)
    t_first = min((arrivals[s] for s in run_stamps), default=t0)
    t_last = max((t for t, _, _ in pubs), default=time.monotonic())
    out = {"rate": rate, "frames_sent": frames, "replay_seconds": t_replay, "drained": ok,
           "frames_processed": processed, "dropped_messages": {k: v for k, v in dropped.items() if v},
           "dropped_frames_equivalent": sum(dropped.values()) / msgs_per_frame,
           "publications": len(pubs), "frames_with_latency": len(lat),
           "fps_processed": processed / max(1e-9, t_last - t_first)}
    # every frame of the run, dropped ones included: until the published map reflects it or a later frame
    stale = []
    for s in run_stamps:
        t_pub = next((t for t, mx, _ in pubs if mx >= s), None)
        if t_pub is not None:
            stale.append(t_pub - arrivals[s])
    for key, vals in (("latency_ms", lat), ("staleness_ms", stale)):
        if vals:
            p50, p95, p99 = np.percentile(np.array(vals) * 1e3, [50, 95, 99])
            out[key] = {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": len(vals)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bags", nargs="+", required=True)
    p.add_argument("--rates", nargs="+", type=float, required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--msgs-per-frame", type=int, default=5)
    p.add_argument("--node-name", default="mapping_node")
    p.add_argument("--ready-timeout", type=float, default=240)
    p.add_argument("--drain", type=float, default=120)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    rclpy.init()
    node = rclpy.create_node("camfusion_bench_probe")
    probe = Probe(node, a.node_name, "/camera/color/image_raw")
    ex = MultiThreadedExecutor(num_threads=2)
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    result: dict = {"runs": []}
    try:
        if not _wait(lambda: probe.counters().get("ready", False), a.ready_timeout):
            result["error"] = f"node not ready (models loaded) within {a.ready_timeout:.0f} s"
        else:
            for bag, rate in zip(a.bags, a.rates):
                print(f"[bench] node e2e: replay at {rate}x", file=sys.stderr, flush=True)
                result["runs"].append(_run_one(probe, bag, rate, a.frames, a.msgs_per_frame, a.drain))
    finally:
        with open(a.out, "w") as f:
            json.dump(result, f)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
