"""camfusion-launch: start the mapping node from the venv, with the launch file's arguments.

``launch`` and ``ros2cli`` cannot be installed from pip; this takes the same
arguments as ``launch/mapping.launch.py`` (names and meaning; a test checks
they agree) and the same config file, and runs the same node executable.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from camfusion_ros.child_processes import start_child
from camfusion_ros.cli_errors import report_error

__all__ = ["main", "LAUNCH_ARGUMENTS", "build_command", "default_config"]

# name -> (default, description); "" = keep the config file's value.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "config_file": ("", "parameters file (default: the package's config/mapping.yaml)"),
    "segmenter": ("", "segmenter.name override: sam2 | gt | gt_noisy"),
    "fusion": ("", "fusion.method override: avg | l1medoid | cosmedoid | camfusion"),
    "checkpoint": ("", "fusion.checkpoint override (CAMFusion checkpoint folder)"),
    "use_sim_time": ("false", "use /clock (e.g. from camfusion-replay --clock)"),
    "color_topic": ("/camera/color/image_raw", "remap of the colour image topic"),
    "depth_topic": ("/camera/depth/image_raw", "remap of the depth image topic"),
    "camera_info_topic": ("/camera/color/camera_info", "remap of the CameraInfo topic"),
    "pose_topic": ("/camera/pose", "remap of the pose topic"),
    "namespace": ("", "node namespace, e.g. robot (the parameters file's /**/mapping_node key still applies)"),
}
REMAPS = {"color_topic": "/camera/color/image_raw", "depth_topic": "/camera/depth/image_raw",
          "camera_info_topic": "/camera/color/camera_info", "pose_topic": "/camera/pose"}
OVERRIDES = {"segmenter": "segmenter.name", "fusion": "fusion.method", "checkpoint": "fusion.checkpoint"}


def default_config() -> Path:
    """config/mapping.yaml of the package (the checkout's, or an installed share/ folder's)."""
    from camfusion_ros.resources import config_file

    return config_file("mapping.yaml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camfusion-launch", description=__doc__.splitlines()[0])
    for name, (default, desc) in LAUNCH_ARGUMENTS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=default, help=desc)
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY:=VALUE",
                   help="any further node parameter, e.g. -p vlm.pretrained:=random (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the node command and exit")
    return p


def build_command(args: argparse.Namespace) -> list[str]:
    config = Path(args.config_file) if args.config_file else default_config()
    if not config.is_file():
        raise ValueError(f"config file not found: {config}")
    if args.use_sim_time.lower() not in ("true", "false"):
        raise ValueError(f"use_sim_time must be true or false, got {args.use_sim_time!r}")
    cmd = [sys.executable, "-m", "camfusion_ros.nodes.mapping_node", "--ros-args", "--params-file", str(config),
           "-p", f"use_sim_time:={args.use_sim_time.lower()}"]
    for name, key in OVERRIDES.items():
        if getattr(args, name):
            cmd += ["-p", f"{key}:={getattr(args, name)}"]
    for kv in args.param:
        if ":=" not in kv:
            raise ValueError(f"--param needs KEY:=VALUE, got {kv!r}")
        cmd += ["-p", kv]
    for name, original in REMAPS.items():
        if getattr(args, name) != original:
            cmd += ["-r", f"{original}:={getattr(args, name)}"]
    if args.namespace:
        cmd += ["-r", f"__ns:=/{args.namespace.strip('/')}"]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cmd = build_command(args)
    except ValueError as exc:
        return report_error(exc)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    proc = start_child(cmd)            # dies with this process even if it is killed outright

    def forward(sig, _frame):
        if proc.poll() is None:
            proc.send_signal(sig)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
