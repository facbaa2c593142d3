"""Shared pytest fixtures.

``synth_scene``: one default synthetic recording per test session, made with
``camfusion_ros.datasets.synth.generate(out_dir, SynthConfig(seed=0))``
(30 frames, 320x240, 6 objects, 16UC1 depth; a few seconds). Returns the output
directory as a Path holding ``bag/`` (rosbag2 MCAP, topics of
docs/architecture.md) and ``gt/`` (points.ply, classes.json, instances.json).
Treat it as read-only: every test module shares it.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_scene(tmp_path_factory) -> Path:
    from camfusion_ros.datasets.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("synth_scene") / "scene", SynthConfig(seed=0))
