"""camfusion-replay: publish a rosbag2 recording onto live topics with its recorded timing.

A stand-in for ``ros2 bag play`` where rosbag2 is not installed: the bag is
read with the ``rosbags`` library, each message is deserialised with the
rosbags typestore and copied field by field into the real rclpy message
class, then published at its recorded time scaled by ``--rate``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from camfusion_ros.cli_errors import report_error

__all__ = ["main", "to_rclpy", "rclpy_class", "ReplayError", "open_bag", "is_latched"]


class ReplayError(ValueError):
    """The bag cannot be replayed as asked; the message is one line a user can act on."""


def rclpy_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy class sensor_msgs.msg.Image."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError):
        raise ReplayError(f"message type {msgtype} is not installed in this ROS environment") from None


def to_rclpy(obj: Any, cls: type | None = None) -> Any:
    """Copy a rosbags message (dataclass) into an rclpy message, recursively."""
    cls = cls or rclpy_class(obj.__msgtype__)
    out = cls()
    for name, typ in cls.get_fields_and_field_types().items():
        v = getattr(obj, name)
        if hasattr(v, "__msgtype__"):
            v = to_rclpy(v)
        elif isinstance(v, np.ndarray):
            if typ.startswith("sequence<uint8") or typ.startswith("sequence<octet"):
                v = v.tobytes()
            elif typ.startswith("sequence"):
                v = v.tolist()     # rclpy sequences take lists / array.array, not numpy
            # fixed-size arrays (e.g. CameraInfo.k double[9]) take numpy as is
        elif isinstance(v, list) and v and hasattr(v[0], "__msgtype__"):
            v = [to_rclpy(x) for x in v]
        setattr(out, name, v)
    return out


def is_latched(conn: Any) -> bool:
    """Whether a recorded topic is replayed transient-local: /tf_static, or recorded with that durability."""
    if conn.topic == "/tf_static":
        return True
    profiles = getattr(getattr(conn, "ext", None), "offered_qos_profiles", None) or ()
    return any(getattr(getattr(q, "durability", None), "name", "") == "TRANSIENT_LOCAL" for q in profiles
               if not isinstance(q, str))


def open_bag(path: str | Path):
    """An opened rosbags AnyReader (the bag reader's own checks), or ReplayError saying why not."""
    from camfusion_ros.core.recording import RecordingError, open_recording

    try:
        return open_recording(path)
    except RecordingError as exc:
        raise ReplayError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camfusion-replay", description=__doc__.splitlines()[0])
    p.add_argument("bag", help="rosbag2 directory (or .mcap / .db3 file)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start again at the end")
    p.add_argument("--topics", nargs="+", default=None, help="publish only these topics")
    p.add_argument("--clock", action="store_true", help="publish the bag time on /clock (for use_sim_time)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds until every topic has a subscriber before starting")
    p.add_argument("--start-delay", type=float, default=0.0, metavar="S", help="sleep S seconds before publishing")
    p.add_argument("--depth", type=int, default=50, help="publisher queue depth (reliable QoS)")
    p.add_argument("--ack-timeout", type=float, default=10.0, metavar="S",
                   help="at the end, wait up to S seconds until every subscriber acknowledged every message")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.rate <= 0:
            raise ReplayError(f"--rate must be > 0, got {args.rate}")
        return _replay(args)
    except ReplayError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return 0


def _replay(args: argparse.Namespace) -> int:
    reader = open_bag(args.bag)
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    try:
        conns = [c for c in reader.connections if args.topics is None or c.topic in args.topics]
        if args.topics:
            missing = sorted(set(args.topics) - {c.topic for c in reader.connections})
            if missing:
                raise ReplayError(f"topic(s) not in the bag: {', '.join(missing)}; present: "
                                  f"{', '.join(sorted({c.topic for c in reader.connections}))}")
        if not conns:
            raise ReplayError(f"bag has no messages to replay: {args.bag}")
        classes = {c.topic: rclpy_class(c.msgtype) for c in conns}
        rclpy.init()
        node = rclpy.create_node("camfusion_replay")
        qos = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE)
        # /tf_static (and any topic recorded as transient-local) stays latched: a subscriber that joins
        # late (a node started after the replay) still gets the static transforms, as from a real publisher.
        latched = QoSProfile(depth=args.depth, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        latched_topics = {c.topic for c in conns if is_latched(c)}
        pubs = {t: node.create_publisher(cls, t, latched if t in latched_topics else qos) for t, cls in classes.items()}
        clock_pub = node.create_publisher(Clock, "/clock", 10) if args.clock else None
        try:
            _wait_for_subscribers(node, pubs, args.wait_for_subscribers)
            if args.start_delay > 0:
                time.sleep(args.start_delay)
            sent = 0
            while True:
                sent += _play_once(reader, conns, classes, pubs, clock_pub, args.rate)
                if not args.loop:
                    break
            _wait_for_acks(pubs, args.ack_timeout)
            print(f"replayed {sent} messages from {args.bag}", file=sys.stderr)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    except ReplayError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a damaged chunk surfaces as any decode error while streaming
        raise ReplayError(f"cannot read bag {args.bag}: corrupt or truncated ({' '.join(str(exc).split())[:200]})") from None
    finally:
        reader.close()
    return 0


def _wait_for_subscribers(node, pubs: dict, timeout_s: float) -> None:
    if timeout_s <= 0:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in pubs.values()):
            time.sleep(0.3)    # discovery is symmetric but not instantaneous
            return
        time.sleep(0.05)
    lonely = [t for t, p in pubs.items() if p.get_subscription_count() == 0]
    print(f"warning: no subscriber on {', '.join(lonely)} after {timeout_s:.0f} s; replaying anyway", file=sys.stderr)


def _wait_for_acks(pubs: dict, timeout_s: float) -> None:
    """Stay until the subscribers hold every message: DDS repairs a lost sample only while its writer lives.

    A fixed sleep was not enough on a loaded machine: samples lost in transport are re-sent after the writer's next
    heartbeat, which can come after the replay would have exited."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + max(timeout_s, 0.0)
    unacked = [t for t, p in pubs.items()
               if not p.wait_for_all_acked(Duration(nanoseconds=int(max(deadline - time.monotonic(), 0.0) * 1e9)))]
    if unacked:
        print(f"warning: subscribers of {', '.join(unacked)} did not acknowledge every message within "
              f"{timeout_s:.0f} s; some may be lost", file=sys.stderr)


def _play_once(reader, conns, classes, pubs, clock_pub, rate: float) -> int:
    from rosgraph_msgs.msg import Clock

    from camfusion_ros.nodes.conversions import ns_to_stamp

    t0_bag = None
    t0_wall = time.monotonic()
    n = 0
    for conn, t_bag, raw in reader.messages(connections=conns):
        if t0_bag is None:
            t0_bag = t_bag
        due = t0_wall + (t_bag - t0_bag) / 1e9 / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = to_rclpy(reader.deserialize(raw, conn.msgtype), classes[conn.topic])
        if clock_pub is not None:
            clock_pub.publish(Clock(clock=ns_to_stamp(t_bag)))
        pubs[conn.topic].publish(msg)
        n += 1
    return n


if __name__ == "__main__":
    sys.exit(main())
