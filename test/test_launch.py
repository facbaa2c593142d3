"""launch/mapping.launch.py and camfusion-launch take the same arguments and start the same node."""
import ast
import importlib.util
import subprocess

import pytest

from rostest_utils import REPO, python, ros_env

LAUNCH_FILE = REPO / "launch" / "mapping.launch.py"


def declared_launch_arguments(path=LAUNCH_FILE) -> dict[str, str | None]:
    """DeclareLaunchArgument names (and literal defaults) from the launch file's source, without importing launch."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "DeclareLaunchArgument":
            name = ast.literal_eval(node.args[0])
            default = next((k.value for k in node.keywords if k.arg == "default_value"), None)
            try:
                out[name] = ast.literal_eval(default) if default is not None else None
            except ValueError:
                out[name] = None          # a substitution (e.g. the package's config path)
    return out


def test_launch_arguments_match_camfusion_launch():
    from camfusion_ros.nodes.launch_cli import LAUNCH_ARGUMENTS, _parser

    declared = declared_launch_arguments()
    assert set(declared) == set(LAUNCH_ARGUMENTS)
    dests = {a.dest for a in _parser()._actions}
    assert set(LAUNCH_ARGUMENTS) <= dests
    for name, default in declared.items():
        if default is not None and name != "config_file":
            assert LAUNCH_ARGUMENTS[name][0] == default, name
    assert {"config_file", "segmenter", "fusion", "checkpoint", "use_sim_time"} <= set(declared)
    assert any(n.endswith("_topic") for n in declared)


def test_launch_file_imports_where_launch_exists():
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("the ROS 2 'launch'/'launch_ros' packages are not installable from pip; "
                    "the launch file is checked by its source (test_launch_arguments_match_camfusion_launch)")
    spec = importlib.util.spec_from_file_location("mapping_launch", LAUNCH_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    from launch.actions import DeclareLaunchArgument

    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert names == set(declared_launch_arguments())


def test_camfusion_launch_builds_the_node_command(tmp_path):
    from camfusion_ros.nodes.launch_cli import main

    def dry(*args):
        r = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.launch_cli import main; "
                            "sys.exit(main(sys.argv[1:]))", *args, "--dry-run"], env=ros_env(), cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        return r

    r = dry("--segmenter", "gt", "--fusion", "camfusion", "--checkpoint", "/ckpt", "--use-sim-time", "true",
            "--pose-topic", "/odom_pose", "-p", "vlm.pretrained:=random")
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.split()
    assert cmd[1:3] == ["-m", "camfusion_ros.nodes.mapping_node"] and "--params-file" in cmd
    assert cmd[cmd.index("--params-file") + 1].endswith("config/mapping.yaml")
    for p in ("segmenter.name:=gt", "fusion.method:=camfusion", "fusion.checkpoint:=/ckpt", "use_sim_time:=true",
              "vlm.pretrained:=random"):
        assert p in cmd
    assert "/camera/pose:=/odom_pose" in cmd and "/camera/color/image_raw:=/camera/color/image_raw" not in cmd
    bad = dry("--config-file", str(tmp_path / "none.yaml"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: config file not found")
    assert main(["--use-sim-time", "maybe", "--dry-run"]) == 2


@pytest.mark.ros
def test_camfusion_launch_starts_a_node_that_rejects_a_bad_config_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mapping_node:\n  ros__parameters:\n    drop_policy: sometimes\n")
    r = subprocess.run([python(), "-c", "import sys; from camfusion_ros.nodes.launch_cli import main; "
                        "sys.exit(main(sys.argv[1:]))", "--config-file", str(bad)], env=ros_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "error: drop_policy must be drop_oldest or drop_newest" in r.stderr
    assert "Traceback" not in r.stderr
