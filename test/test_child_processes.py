"""Children started by a tool die with it: SIGTERM to the tool runs its cleanup, and even SIGKILL takes them down."""
import os
import signal
import subprocess
import sys
import time

import pytest

from camfusion_ros.child_processes import start_child, stop_child, stop_on_signals

PARENT = """
import sys, time
from camfusion_ros.child_processes import start_child, stop_child, stop_on_signals
with stop_on_signals():
    child = start_child([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        print(child.pid, flush=True)
        time.sleep(600)
    finally:
        stop_child(child)
        print("cleaned up", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:         # a zombie waiting for its (new) parent counts as gone
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_stopped_or_killed_parent_leaves_no_child(sig):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(sig)
    rest = parent.stdout.read()
    parent.wait(timeout=30)
    assert _wait_gone(child), f"child {child} outlived its parent stopped by {sig.name}"
    if sig != signal.SIGKILL:                      # a catchable signal runs the cleanup and exits 128 + signal
        assert "cleaned up" in rest and parent.returncode == 128 + sig


def test_stop_child_escalates_to_sigkill_and_stop_on_signals_restores_handlers():
    stubborn = start_child([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                            "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    stop_child(stubborn, timeout=0.5)
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - t0 < 10
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
