"""Helpers for tests that start real ROS 2 processes (Fast DDS on loopback).

Each test gets its own ROS_DOMAIN_ID so concurrent or leftover processes never
cross-talk; discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE).
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"
_counter = itertools.count()
_rng = random.Random(os.getpid())


def ros_env(domain_id: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child ROS process: loopback-only DDS, a test-unique domain."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["AMENT_PREFIX_PATH"] = str(REPO / ".venv")
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else unique_domain_id())
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def unique_domain_id() -> int:
    """A domain in 1..101 that differs for every call in this test session."""
    base = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    start = _rng.randrange(1, 102)
    for _ in range(101):
        d = (start + next(_counter)) % 101 + 1
        if d != base:
            return d
    raise RuntimeError("no free ROS domain id")


def python() -> str:
    """The venv's own interpreter (rclpy needs its bootstrapped LD_LIBRARY_PATH)."""
    return str(VENV_PY) if VENV_PY.exists() else sys.executable


def start(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([python(), *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[str, str]:
    """SIGINT, then SIGKILL the whole process group; return (stdout, stderr)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()
