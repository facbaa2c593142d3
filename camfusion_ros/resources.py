"""Where the package's shipped files (config/) are: the checkout, or an installed share/ folder.

Standard library only, so every layer (core, eval, nodes, datasets) may use it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE_CONFIG = Path(__file__).resolve().parents[1] / "config"


def config_dirs() -> list[Path]:
    """Candidate config/ folders, most specific first: the checkout, ament prefixes, this Python's prefix."""
    dirs = [SOURCE_CONFIG]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "camfusion_ros" / "config")
    dirs.append(Path(sys.prefix) / "share" / "camfusion_ros" / "config")
    return list(dict.fromkeys(dirs))


def config_file(*parts: str) -> Path:
    """The first existing config/<parts>; the checkout's path when none exists (for the error message)."""
    for d in config_dirs():
        if (d.joinpath(*parts)).exists():
            return d.joinpath(*parts)
    return SOURCE_CONFIG.joinpath(*parts)
