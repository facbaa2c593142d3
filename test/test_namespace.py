"""Under a namespace (the usual multi-robot set-up) the parameters file still applies to the node.

rcl matches a parameters file's key against the node's full name: ``mapping_node:`` matches only
``/mapping_node``, so a node started as ``/robot/mapping_node`` used to ignore the file and run on built-in
defaults. The package's files are keyed ``/**/mapping_node``. Models: GT masks, PE-Core-T with RANDOM weights (no
pretrained weights on this machine); with the defaults instead (SAM2-L, PE-Core-L) the node could not even start.
"""
import json
import subprocess
import time

import pytest
import yaml

from mapping_node_utils import write_params
from rostest_utils import REPO, python, ros_env, start, stop

READ_BACK = """
import json, sys, time
import rclpy
from rcl_interfaces.srv import GetParameters
from std_srvs.srv import Trigger
from camfusion_ros.nodes.query_cli import call_service
node = sys.argv[1]
deadline = time.monotonic() + 150
while True:
    status = json.loads(call_service(Trigger, f"{node}/get_status", Trigger.Request(), 150).message)
    if status["ready"] or time.monotonic() > deadline:
        break
    time.sleep(0.5)
resp = call_service(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=sys.argv[2:]), 30)
values = [v.integer_value if v.type == 2 else v.string_value for v in resp.values]
print(json.dumps({"ready": status["ready"], "values": values}))
"""


def test_shipped_parameter_files_apply_under_any_namespace():
    doc = yaml.safe_load((REPO / "config" / "mapping.yaml").read_text())
    assert list(doc) == ["/**/mapping_node"]


@pytest.mark.ros
def test_launch_under_a_namespace_applies_the_parameters_file(tmp_path):
    env = ros_env()
    params = write_params(tmp_path / "params.yaml", top_k=7)
    assert list(yaml.safe_load(params.read_text())) == ["/**/mapping_node"]
    launch = start(["-c", "import sys; from camfusion_ros.nodes.launch_cli import main; sys.exit(main(sys.argv[1:]))",
                    "--config-file", str(params), "--namespace", "robot"], env)
    try:
        r = subprocess.run([python(), "-c", READ_BACK, "/robot/mapping_node", "top_k", "segmenter.name"], env=env,
                           cwd=REPO, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, (r.stderr[-2000:], launch.poll())
        got = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        out, err = stop(launch, timeout=20)
    assert got == {"ready": True, "values": [7, "gt"]}, err[-2000:]
    assert launch.returncode == 0, err[-2000:]
