"""Stopping the node at any moment: while Python imports, while models load, mid-frame, during an autosave.

Every stop (SIGINT as launch sends first, SIGTERM as it escalates) must end the process with exit 0 within 5 s,
and whatever autosave folder it left must load. Models: GT masks, PE-Core-T with RANDOM weights (no pretrained
weights on this machine).
"""
import os
import random
import signal
import time

import pytest

from mapping_node_utils import node_log, start_node, write_params
from rostest_utils import ros_env, start, stop

pytestmark = [pytest.mark.ros, pytest.mark.slow]
STOPS = 20


@pytest.fixture(scope="module")
def lifecycle_bag(tmp_path_factory):
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("lifecycle") / "scene",
                    SynthConfig(seed=4, frames=24, width=96, height=72, objects=3)) / "bag"


def test_stops_at_random_moments_exit_0_within_5_s_and_leave_a_loadable_map(lifecycle_bag, tmp_path):
    from camfusion_ros.core.map_store import load_map
    from camfusion_ros.nodes.mapping_node import AUTOSAVE_LINK

    rng = random.Random(0)
    env = ros_env()
    outcomes = []
    for i in range(STOPS):
        folder = tmp_path / f"run{i}" / "autosave"
        params = write_params(tmp_path / f"run{i}.yaml", autosave_period_s=0.3, autosave_folder=str(folder))
        node = start_node(env, params)
        replay = start(["-m", "camfusion_ros.nodes.replay", str(lifecycle_bag), "--rate", "4",
                        "--wait-for-subscribers", "30", "--ack-timeout", "1"], env)
        sig = signal.SIGTERM if i % 4 == 3 else signal.SIGINT
        try:
            if i % 3 == 0:                        # during imports / model loading
                phase = "starting"
            else:                                 # mapping, autosaves running: just after one finished or mid-way
                phase = "mapping"
                _wait_for(lambda: (folder / AUTOSAVE_LINK).exists(), 120, node)
            delay = rng.uniform(0.0, 3.0 if phase == "starting" else 0.4)
            time.sleep(delay)
            t0 = time.monotonic()
            os.kill(node.pid, sig)
            rc = node.wait(timeout=30)
            took = time.monotonic() - t0
        finally:
            stop(replay)
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
        saved = (folder / AUTOSAVE_LINK).exists()
        if saved:
            load_map(folder / AUTOSAVE_LINK)      # raises if the stop left a broken map
        outcomes.append((phase, round(delay, 2), sig.name, rc, round(took, 2), saved))
        assert rc == 0 and took < 5.0, (outcomes[-1], node_log(node))
        assert "Traceback" not in node_log(node), node_log(node)
    print(outcomes)


def _wait_for(pred, timeout: float, node) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if node.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the node never reached the phase to stop it in: {node_log(node)}")
        time.sleep(0.02)
