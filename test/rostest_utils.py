"""Helpers for tests that start real ROS 2 processes (Fast DDS on loopback).

Each test gets its own ROS_DOMAIN_ID so concurrent or leftover processes never
cross-talk; discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from camfusion_ros.child_processes import start_child
from camfusion_ros.ros_env import loopback_env, unique_domain_id  # noqa: F401 (tests import both from here)

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"


def ros_env(domain_id: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child ROS process: loopback-only DDS, a test-unique domain, this checkout's venv."""
    return loopback_env(domain_id, **{"AMENT_PREFIX_PATH": str(REPO / ".venv"), **extra})


def python() -> str:
    """The venv's own interpreter (rclpy needs its bootstrapped LD_LIBRARY_PATH)."""
    return str(VENV_PY) if VENV_PY.exists() else sys.executable


def start(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    """A child in its own process group that dies with the test process (even a killed pytest leaves no node)."""
    return start_child([python(), *args], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, **kw)


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
