"""How the mapping node's process starts and ends around ROS (standard library only).

A stop signal that arrives while Python is still importing torch and rclpy used to end in a KeyboardInterrupt
traceback (exit 1) or, for SIGTERM, a kill (-15): launch reported a failure for a node that had nothing to lose.
Until ROS is up, SIGINT and SIGTERM now exit 0 at once; ``mapping_node.main`` then installs the handlers that stop
the node cleanly, and the process ends with ``exit_now`` once the node has completed any save it started.
"""
from __future__ import annotations

import os
import signal
import sys


def stop_quietly_until_ros_is_up() -> None:
    """Nothing is mapped or saved yet: a stop request simply ends the process, successfully."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: os._exit(0))


def exit_now(code: int) -> None:
    """Exit without waiting for threads: abandoned model loading or a frame in flight must not hold the process past
    launch's grace period (MappingNode.shutdown has already waited for any save)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
