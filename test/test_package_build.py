"""The package builds and installs the way colcon does it on a ROS 2 distro.

CMake with the sources installed next to the generated interfaces
(CAMFUSION_INSTALL_PYTHON_SOURCES=ON, colcon's default), into a fresh prefix,
from a copy of the checkout (the venv inside the checkout would otherwise
count as "in the source tree" for CMake's export checks). The installed
node executable must start from that prefix.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rostest_utils import REPO, python, ros_env

pytestmark = pytest.mark.slow
TOP_LEVEL_SKIP = {".venv", "build", "install", "log", "out", ".git", ".pytest_cache"}


def ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    return skip | (TOP_LEVEL_SKIP & set(names) if Path(folder) == REPO else set())


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    root = tmp_path_factory.mktemp("colcon_like")
    src, build, install = root / "src", root / "build", root / "install"
    shutil.copytree(REPO, src, ignore=ignore)
    venv = REPO / ".venv"
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    steps = [["cmake", "-S", str(src), "-B", str(build), "-Wno-dev", f"-DCMAKE_PREFIX_PATH={venv}",
              f"-DCMAKE_INSTALL_PREFIX={install}", f"-DPython3_EXECUTABLE={python()}", "-DBUILD_TESTING=OFF"],
             ["cmake", "--build", str(build), "-j2"], ["cmake", "--install", str(build)]]
    for cmd in steps:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd[:2])} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return install


def site_packages(install: Path) -> Path:
    return install / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def test_install_tree_has_executables_launch_config_and_the_whole_python_package(prefix):
    assert os.access(prefix / "lib" / "camfusion_ros" / "mapping_node", os.X_OK)
    assert os.access(prefix / "lib" / "camfusion_ros" / "replay", os.X_OK)
    share = prefix / "share" / "camfusion_ros"
    assert (share / "launch" / "mapping.launch.py").is_file()
    assert (share / "config" / "mapping.yaml").is_file()
    assert (share / "config" / "vocabularies" / "scannet200.txt").is_file()
    pkg = site_packages(prefix) / "camfusion_ros"
    for rel in ("msg/_instance.py", "srv/_query_text.py", "core/pipeline.py", "nodes/mapping_node.py",
                "eval/cli.py", "training/train.py", "bench/cli.py", "datasets/synth.py"):
        assert (pkg / rel).is_file(), rel


def test_installed_node_executable_starts_from_the_prefix(prefix):
    """A bad parameter makes the installed node stop with one clear line: it imported rclpy, the
    generated messages and the node from the install prefix."""
    env = ros_env(PYTHONPATH=str(site_packages(prefix)),
                  AMENT_PREFIX_PATH=f"{prefix}{os.pathsep}{REPO / '.venv'}")
    r = subprocess.run([python(), str(prefix / "lib" / "camfusion_ros" / "mapping_node"),
                        "--ros-args", "-p", "pose_type:=Nope"], env=env, capture_output=True, text=True,
                       timeout=120, cwd=prefix)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "pose_type must be PoseStamped or Odometry" in r.stderr
    probe = subprocess.run([python(), "-c", "import camfusion_ros.nodes.mapping_node as m; print(m.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=prefix)
    assert probe.stdout.strip().startswith(str(site_packages(prefix))), probe.stderr[-2000:]
