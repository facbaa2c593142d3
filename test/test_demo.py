"""`make demo`'s job end to end on a small scene: node, replay, both query CLIs, a map saved over the service."""
import subprocess

import pytest

from rostest_utils import REPO, python, ros_env

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_runs_and_saves_its_map(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([python(), "-m", "camfusion_ros.demo", "--out", str(out), "--frames", "6", "--rate", "4"],
                       env=ros_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "[demo] done" in r.stdout
    assert (out / "map" / "meta.json").is_file() and (out / "map" / "points.ply").is_file()
    assert any(p.suffix == ".png" for p in out.rglob("*.png"))
