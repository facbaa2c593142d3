"""The environment for child ROS processes started by the package's own tools and tests.

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and each
caller picks a domain of its own, so benchmarks, tests and a user's robot never
cross-talk. Standard library only: nothing here imports rclpy.
"""
from __future__ import annotations

import itertools
import os
import random
import sys
from pathlib import Path

_OFFSET = random.Random(os.getpid()).randrange(101)
_counter = itertools.count()


def unique_domain_id() -> int:
    """A domain in 1..101, a different one on each call (101 calls before one repeats).

    One random offset per process (so two concurrent runs rarely overlap), then
    consecutive ids; the caller's own ROS_DOMAIN_ID is skipped.
    """
    base = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    while True:
        d = (_OFFSET + next(_counter)) % 101 + 1
        if d != base:
            return d


def loopback_env(domain_id: int | None = None, **extra: str) -> dict[str, str]:
    """os.environ plus loopback-only Fast DDS on a fresh domain (and AMENT_PREFIX_PATH for this Python)."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env.setdefault("AMENT_PREFIX_PATH", str(Path(sys.prefix)))
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else unique_domain_id())
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
