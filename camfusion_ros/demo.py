"""make demo: the package's main job, end to end, on a synthetic recording.

Generates the default synthetic scene, starts the mapping node in its own
process, replays the bag into it with camfusion-replay, asks both services
from this process (the camfusion-labels / camfusion-query CLIs), saves the
map and draws it from above. Models: ground-truth masks and PE-Core-T with
RANDOM weights (no pretrained weights ship with the package), so the labels
are meaningless; the output says so and how to use real weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from camfusion_ros.child_processes import start_child, stop_child, stop_on_signals
from camfusion_ros.cli_errors import report_error
from camfusion_ros.core.output_folder import claim_outputs

__all__ = ["main", "draw_topdown"]

DEMO_OUTPUTS = ("scene", "params.yaml", "mapping_node.log", "map", "map_topdown.png")

REAL_WEIGHTS_HELP = """\
NOTE: these labels come from UNTRAINED (random) weights: PE-Core-T-16-384 with pretrained=random,
and ground-truth masks instead of SAM2. They show the plumbing, not the accuracy. For real labels:
  camfusion-launch -p vlm.model_name:=PE-Core-L-14-336 -p vlm.pretrained:=/path/to/open_clip_model.safetensors \\
                   --segmenter sam2 -p segmenter.sam2_checkpoint:=/path/to/sam2.1_hiera_large.pt \\
                   [--fusion camfusion --checkpoint /path/to/camfusion_checkpoint_dir]
(or vlm.pretrained:=meta after `huggingface-cli download timm/PE-Core-L-14-336`: nothing is downloaded at run time)."""


def _params(scene: Path, out: Path, frames: int) -> Path:
    classes = json.loads((scene / "gt" / "classes.json").read_text())
    names = [n for n in classes["names"]]
    params = {"segmenter": {"name": "gt"}, "segment_every": 1,
              "vlm": {"model_name": "PE-Core-T-16-384", "pretrained": "random", "device": "cpu"},
              "descriptor": {"tiling": False},
              "vocabulary": {"names": names, "cache_dir": ""},
              "fusion": {"method": "avg", "device": "cpu"},
              "input_qos": "reliable", "input_depth": 5 * frames, "sync_buffer": 5 * frames,
              "queue_size": frames, "fusion_period_s": 2.0, "map_root": str(out)}   # ~/save_map may write only here
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump({"/**/mapping_node": {"ros__parameters": params}}))
    return path


def _status(timeout: float = 10.0) -> dict:
    from std_srvs.srv import Trigger

    from camfusion_ros.nodes.query_cli import call_service

    return json.loads(call_service(Trigger, "/mapping_node/get_status", Trigger.Request(), timeout).message)


def _wait(node: subprocess.Popen, pred, timeout: float, what: str, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the mapping node exited (rc={node.returncode}) while {what}; see {log}")
        try:
            s = _status()
            if pred(s):
                return s
        except Exception:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"timed out while {what}; see {log}")


def draw_topdown(map_dir: Path, png: Path) -> Path:
    """A top-down scatter of the saved map, one colour per instance, its label at its centroid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from camfusion_ros.core.map_store import load_map

    snap = load_map(map_dir)
    pts, inst = snap.points, snap.point_instance
    labels = dict(zip(snap.ids.tolist(), snap.labels))
    keep = (inst >= 0) & (pts[:, 2] < pts[:, 2].max() - 0.25)   # cut the ceiling: it would hide everything
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    order = np.argsort(pts[keep, 2])          # low points first: the tops of objects stay visible
    cmap = plt.get_cmap("tab20")
    ax.scatter(pts[keep][order, 0], pts[keep][order, 1], s=0.5, c=cmap((inst[keep][order] * 7) % 20))
    for iid in np.unique(inst[keep]):
        p = pts[keep & (inst == iid)]
        c = p.mean(0)
        ax.text(c[0], c[1], f"{iid}: {labels.get(int(iid), '') or '?'}", fontsize=7, ha="center",
                bbox=dict(boxstyle="round,pad=0.2", fc="white", alpha=0.7, lw=0))
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("camfusion_ros demo map (top-down; labels from RANDOM weights)")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="camfusion-demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--frames", type=int, default=None, help="frames of the synthetic scene (default: the generator's)")
    p.add_argument("--rate", type=float, default=2.0, help="replay speed factor")
    a = p.parse_args(argv)
    try:
        with stop_on_signals():        # SIGTERM/SIGHUP: the node is still stopped (finally in _run)
            return _run(a)
    except (RuntimeError, ValueError, OSError) as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return 130


def _run(a: argparse.Namespace) -> int:
    import rclpy

    from camfusion_ros.datasets.synth import SynthConfig, run

    t0 = time.monotonic()
    out = claim_outputs(Path(a.out).resolve(), "camfusion-demo", DEMO_OUTPUTS)   # never over a user's files
    scene = out / "scene"
    cfg = SynthConfig() if a.frames is None else SynthConfig(frames=a.frames)
    if not (scene / "bag" / "metadata.yaml").exists() or not (scene / "gt" / "classes.json").exists():
        import shutil

        shutil.rmtree(scene, ignore_errors=True)
        print(f"[demo] generating the default synthetic scene ({cfg.frames} frames, {cfg.width}x{cfg.height}, "
              f"{cfg.objects} objects) in {scene}", flush=True)
        run(scene, cfg)
    else:
        print(f"[demo] reusing the synthetic scene in {scene}", flush=True)
    from camfusion_ros.core.recording import inspect_recording

    frames = inspect_recording(scene / "bag")["topics"]["/camera/color/image_raw"]["count"]
    params = _params(scene, out, frames)
    log = out / "mapping_node.log"
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    py = sys.executable
    print(f"[demo] starting the mapping node (log: {log})", flush=True)
    with open(log, "w") as fh:
        node = start_child([py, "-m", "camfusion_ros.nodes.mapping_node", "--ros-args", "--params-file", str(params)],
                           stdout=fh, stderr=subprocess.STDOUT, env=env)
    rclpy.init()
    try:
        _wait(node, lambda s: s.get("ready"), 180, "loading the models", log)
        print(f"[demo] replaying {scene / 'bag'} at {a.rate}x with camfusion-replay", flush=True)
        rep = subprocess.run([py, "-m", "camfusion_ros.nodes.replay", str(scene / "bag"), "--rate", str(a.rate),
                              "--wait-for-subscribers", "30"], env=env, capture_output=True, text=True, timeout=600)
        if rep.returncode != 0:
            raise RuntimeError(f"camfusion-replay failed: {rep.stderr.strip()}")
        s = _wait(node, lambda s: s["received"] >= 5 * frames and s["pending"] == 0
                  and s["instances"] > 0, 600, "mapping the replayed frames", log)
        print(f"[demo] node: received {s['received']} messages, processed {s['frames_processed']} frames, "
              f"dropped {s['dropped'] or 'none'}, {s['instances']} instances", flush=True)
        cli = [py, "-c", "import sys; from camfusion_ros.nodes.query_cli import {f}; sys.exit({f}(sys.argv[1:]))"]
        print("\n[demo] camfusion-labels (service ~/query_labels):", flush=True)
        subprocess.run([cli[0], cli[1], cli[2].format(f="labels_main"), "--top-k", "3"], env=env, check=True, timeout=120)
        print("\n[demo] camfusion-query 'a chair' (service ~/query_text):", flush=True)
        subprocess.run([cli[0], cli[1], cli[2].format(f="query_main"), "a chair", "--top-k", "3"], env=env,
                       check=True, timeout=120)
        from camfusion_ros.nodes.query_cli import call_service
        from camfusion_ros.srv import SaveMap

        map_dir = out / "map"           # a map of an earlier demo run is replaced (save_map's own rule)
        resp = call_service(SaveMap, "/mapping_node/save_map", SaveMap.Request(path=str(map_dir)), 120)
        if not resp.success:
            raise RuntimeError(f"save_map failed: {resp.message}")
        png = draw_topdown(map_dir, out / "map_topdown.png")
        print(f"\n[demo] map saved to {map_dir}; top-down picture: {png}")
        print(f"[demo] done in {time.monotonic() - t0:.0f} s\n")
        print(REAL_WEIGHTS_HELP)
        return 0
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"a service client failed (rc={exc.returncode}); see {log}") from None
    finally:
        rclpy.try_shutdown()
        stop_child(node)


if __name__ == "__main__":
    sys.exit(main())
