"""Child processes (mapping nodes, replays) that never outlive the tool that started them.

A tool stopped by SIGTERM (``timeout``, a CI runner, a process manager) used to die at once, skipping the
``finally`` that stops its children: a benchmark's mapping node once ran on for 20 minutes. Two layers:
``stop_on_signals`` turns SIGTERM/SIGHUP into an ordinary exit, so cleanup code runs; and every child started
with ``start_child`` asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), which also
covers a parent killed with SIGKILL. Standard library only (the core, nodes and tests all use it).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from typing import Iterator, Sequence

__all__ = ["start_child", "stop_child", "stop_on_signals"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Runs in the child between fork and exec."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except OSError:
            pass
    if os.getppid() != parent:          # the parent died before the request took effect
        os._exit(143)


def start_child(cmd: Sequence[str], **popen_kwargs) -> subprocess.Popen:
    """Popen in its own process group (a terminal's Ctrl-C reaches only the tool, which stops its children in
    order) that receives SIGTERM if the tool dies without stopping it."""
    parent = os.getpid()
    return subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=lambda: _die_with_parent(parent),
                            **popen_kwargs)


def stop_child(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGINT to the child's process group (a node's clean shutdown), then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, these signals raise SystemExit(128 + signal), so every ``finally`` runs."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
