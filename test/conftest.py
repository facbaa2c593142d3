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


@pytest.fixture
def users_files():
    """plant(folder, *names) puts a user's files in ``folder`` (important.txt, sub/thesis.tex and any ``names``)
    and returns intact(), which asserts every one is still there with its content."""
    def plant(folder: Path, *names: str):
        planted = {Path("important.txt"): "mine", Path("sub/thesis.tex"): "also mine",
                   **{Path(n): f"user's {n}" for n in names}}
        for rel, text in planted.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)

        def intact() -> None:
            for rel, text in planted.items():
                assert (folder / rel).is_file() and (folder / rel).read_text() == text, f"{folder / rel} was touched"
        return intact
    return plant


@pytest.fixture
def peak_rss_growth_mib():
    """Call it after the work: how far this process's peak RSS rose above where it stood when the test began."""
    import resource

    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
