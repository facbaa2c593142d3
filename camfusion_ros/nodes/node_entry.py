"""Entry point of the mapping node's executables (``ros2 run``, ``camfusion-mapping-node``): stop handling is in force
before the heavy imports (see node_exit)."""
from __future__ import annotations

from typing import Sequence

from camfusion_ros.nodes.node_exit import exit_now, stop_quietly_until_ros_is_up


def main(argv: Sequence[str] | None = None) -> int:
    stop_quietly_until_ros_is_up()
    from camfusion_ros.nodes.mapping_node import main as node_main

    exit_now(node_main(argv))
    return 0  # not reached
