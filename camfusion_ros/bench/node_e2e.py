"""End-to-end rate of the live node: a replayed bag at several speeds, drops and latency percentiles.

The node, the replayer and a probe (``camfusion_ros.nodes.bench_probe``, the only ROS code the bench runs) run as separate
processes on a loopback-only DDS domain of their own (``camfusion_ros.ros_env``). Each rate gets a fresh node (an empty map) and its own copy of the
recording with stamps shifted past the previous one, so every published
instance's ``last_seen`` tells which frame it reflects.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from camfusion_ros.child_processes import start_child, stop_child
from camfusion_ros.bench.timing import progress
from camfusion_ros.core.recording import read_frames
from camfusion_ros.ros_env import loopback_env

REPO = Path(__file__).resolve().parents[2]


def ros_available() -> str | None:
    """None when the node can run here, else why not (checked in a child: rclpy never enters this process)."""
    r = subprocess.run([sys.executable, "-c", "import rclpy, camfusion_ros.msg, camfusion_ros.nodes.mapping_node"],
                       capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"ROS 2 (rclpy / camfusion_ros messages) not importable here: {last[:200]}"
    return None


def _shifted_bags(bag: Path, folder: Path, count: int, gap_s: float = 1000.0) -> tuple[list[Path], int, float]:
    """``count`` copies of the recording, copy i with stamps shifted by i * gap_s."""
    from camfusion_ros.datasets.bag_writer import BagWriter

    frames = list(read_frames(bag))
    period = (frames[-1].stamp_ns - frames[0].stamp_ns) / max(1, len(frames) - 1) / 1e9 if len(frames) > 1 else 0.1
    out = []
    for i in range(count):
        p = folder / f"bag_{i}"
        with BagWriter(p) as w:
            for f in frames:
                w.write_frame(f.stamp_ns + int(i * gap_s * 1e9), f.rgb, f.depth, f.K, f.T_world_cam, f.gt_instances)
        out.append(p)
    return out, len(frames), 1.0 / period if period > 0 else 10.0


def bench_node(bag: Path, rates: tuple[float, ...], device: str, timeout_s: float = 600) -> dict:
    """fps, drops and stamp-to-publication latency at each replay rate (or a skipped entry saying why)."""
    why = ros_available()
    if why:
        return {"skipped": why}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bags, n_frames, fps = _shifted_bags(bag, tmp, len(rates))
        params = {"segmenter": {"name": "gt"}, "segment_every": 1,
                  "vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "random", "device": device},
                  "descriptor": {"tiling": False},
                  "vocabulary": {"names": ["chair", "table", "sofa", "lamp", "wall", "floor"], "cache_dir": "",
                                 "templates": ["a photo of a {}."]},
                  "fusion": {"method": "avg"},
                  "input_qos": "reliable", "input_depth": 100, "fusion_period_s": 0.2, "status_period_s": 0.25,
                  "publish_cloud": True}
        pfile = tmp / "params.yaml"
        pfile.write_text(yaml.safe_dump({"/**/mapping_node": {"ros__parameters": params}}))
        env = loopback_env()
        res: dict = {"runs": []}
        for bag_i, rate in zip(bags, rates):       # a fresh node (empty map) per rate
            progress(f"node e2e: replay at {rate}x")
            log_path = tmp / f"node_{rate}.log"
            log = open(log_path, "w")
            node = start_child([sys.executable, "-m", "camfusion_ros.nodes.mapping_node", "--ros-args",
                                "--params-file", str(pfile)], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            result_file = tmp / f"probe_{rate}.json"
            try:
                probe = subprocess.run([sys.executable, "-m", "camfusion_ros.nodes.bench_probe", "--bags", str(bag_i),
                                        "--rates", str(rate), "--frames", str(n_frames), "--msgs-per-frame", "5",
                                        "--out", str(result_file)], env=env, cwd=REPO, timeout=timeout_s,
                                       capture_output=True, text=True)
                if not result_file.exists():
                    run = {"rate": rate, "error": f"probe failed rc={probe.returncode}: {probe.stderr.strip()[-400:]}"}
                else:
                    one = json.loads(result_file.read_text())
                    run = one["runs"][0] if one.get("runs") else {"rate": rate, "error": one.get("error", "no result")}
            except subprocess.TimeoutExpired:
                run = {"rate": rate, "error": f"node benchmark exceeded {timeout_s:.0f} s"}
            finally:
                stop_child(node)
                log.close()
            if "error" in run:
                run["node_log_tail"] = log_path.read_text()[-1500:]
            res["runs"].append(run)
    res.update(recorded_fps=fps, frames_per_bag=n_frames, seconds=time.perf_counter() - t0, device=device,
               config="GT masks, PE-Core-T-16-384 (random weights), TextRegion without tiling, avg fusion, "
                      "fusion/publication every 0.2 s, reliable inputs, queue_size 4 drop_oldest",
               latency_is="colour-image arrival at a probe subscriber -> arrival of the first ~/instances message "
                          "reflecting that frame (max last_seen >= stamp); only frames whose stamp is some "
                          "published instance's last_seen are counted",
               staleness_is="every frame that arrived (dropped ones too) -> first ~/instances message reflecting "
                            "it or a later frame",
               fps_is="frames processed by the node / (last publication - first frame arrival)")
    progress(f"node section {res['seconds']:.0f} s")
    return res
