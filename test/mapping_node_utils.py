"""Shared helpers of the mapping-node tests: tiny configs, node start-up, status polling, live runs beside an
offline reference."""
from __future__ import annotations

import json
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import yaml

from camfusion_ros.child_processes import start_child
from rostest_utils import REPO, python, start, stop

CLIENT = "test/ros_peers/mapping_client.py"
VOCAB = ["chair", "table", "sofa", "lamp", "wall", "floor"]

# GT masks and the smallest Perception Encoder with RANDOM weights (no pretrained weights on this machine).
TINY = {"segmenter": {"name": "gt"}, "segment_every": 1,
        "vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "random", "device": "cpu"},
        "descriptor": {"tiling": False},
        "vocabulary": {"names": VOCAB, "cache_dir": "", "templates": ["a photo of a {}."]},
        "fusion": {"device": "cpu"}}


def write_params(path: Path, **node: object) -> Path:
    params = dict(TINY)
    params.update({"input_qos": "reliable", "input_depth": 200, "sync_buffer": 50, "queue_size": 100,
                   "fusion_period_s": 0.5, "status_period_s": 0.5})
    params.update(node)
    path.write_text(yaml.safe_dump({"/**/mapping_node": {"ros__parameters": params}}))
    return path


def start_node(env: dict, params: Path, *extra: str) -> subprocess.Popen:
    """The node in its own process group; its output goes to a file next to params (a full pipe would block it)."""
    log = open(params.with_suffix(".log"), "a")
    proc = start_child([python(), "-m", "camfusion_ros.nodes.mapping_node", "--ros-args", "--params-file",
                        str(params), *extra], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = params.with_suffix(".log")
    return proc


def node_log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text()[-3000:]


def client(env: dict, *args: str, timeout: float = 60) -> dict:
    r = subprocess.run([python(), CLIENT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"client {args} failed rc={r.returncode}: {r.stderr[-1500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wait_status(env: dict, node: subprocess.Popen, pred, timeout: float, what: str) -> dict:
    """Poll the node's ~/get_status until pred(status) holds; fail with the last status otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise AssertionError(f"node exited (rc={node.returncode}) while waiting for {what}: {node_log(node)}")
        try:
            last = client(env, "status", "15", timeout=40)
        except (AssertionError, subprocess.TimeoutExpired):
            last = None
        if last is not None and pred(last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last status: {last}")


def accounted(s: dict) -> bool:
    return s["received"] == s["processed"] + sum(s["dropped"].values()) + s["pending"]


# The same pipeline run offline over a bag, in its own process: what a live run of the node must reproduce.
OFFLINE = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from camfusion_ros.core.config import load_config
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import read_frames
p = MappingPipeline(load_config(json.loads(sys.argv[2])))
for f in read_frames(sys.argv[1]):
    p.process(f)
p.fuse_pending()
print(json.dumps([{"id": r.id, "centroid": r.centroid.tolist(), "num_points": r.num_points} for r in p.instances()]))
"""


class LiveRun:
    """A ready node, the replays fed to it and (optionally) the offline reference computed beside it."""

    def __init__(self, env: dict, node: subprocess.Popen, offline: Optional[subprocess.Popen]) -> None:
        self.env, self.node, self.offline = env, node, offline
        self.replays: list[subprocess.Popen] = []

    def replay(self, bag: Path, *args: str) -> str:
        """camfusion-replay BAG ARGS to the end; returns its stderr (the replay summary)."""
        proc = start(["-m", "camfusion_ros.nodes.replay", str(bag), *args], self.env)
        self.replays.append(proc)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        return err

    def reference(self) -> list[dict]:
        """The offline pipeline's instances (id, centroid, num_points) of the same bag."""
        out, err = self.offline.communicate(timeout=240)
        assert self.offline.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    def stop_all(self) -> None:
        for proc in self.replays:
            stop(proc)
        stop(self.node)
        if self.offline is not None and self.offline.poll() is None:
            self.offline.kill()
            self.offline.communicate()


@contextmanager
def live_run(env: dict, params: Path, reference_bag: Optional[Path] = None) -> Iterator[LiveRun]:
    """The node started with ``params`` and ready; with ``reference_bag``, that bag mapped offline in parallel
    (TINY config). Every process started here is stopped when the block ends, whatever happened in it."""
    offline = None
    if reference_bag is not None:
        offline = subprocess.Popen([python(), "-c", OFFLINE, str(reference_bag), json.dumps(TINY)], cwd=REPO,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = LiveRun(env, start_node(env, params), offline)
    try:
        wait_status(env, run.node, lambda s: s["ready"], 120, "the node to load its models")
        yield run
    finally:
        run.stop_all()

