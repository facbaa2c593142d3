"""pip install of camfusion_ros (the venv path; colcon users build CMakeLists.txt).

The generated msg/srv modules come from CMake (make setup builds them into the
venv prefix); this installs the Python sources and the console scripts.
"""
from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    "camfusion-synth = camfusion_ros.datasets.synth_cli:main",
    "camfusion-convert = camfusion_ros.datasets.convert_cli:main",
    "camfusion-map = camfusion_ros.cli.map_cli:main",
    "camfusion-relabel = camfusion_ros.cli.relabel_cli:main",
    "camfusion-precompute = camfusion_ros.training.precompute:main",
    "camfusion-train = camfusion_ros.training.train:main",
    "camfusion-eval-fusion = camfusion_ros.training.eval_fusion:main",
    "camfusion-fusion-benchmark = camfusion_ros.training.fusion_benchmark:main",
    "camfusion-eval = camfusion_ros.eval.cli:main",
    "camfusion-mapping-node = camfusion_ros.nodes.node_entry:main",
    "camfusion-launch = camfusion_ros.nodes.launch_cli:main",
    "camfusion-replay = camfusion_ros.nodes.replay:main",
    "camfusion-query = camfusion_ros.nodes.query_cli:query_main",
    "camfusion-labels = camfusion_ros.nodes.query_cli:labels_main",
    "camfusion-bench = camfusion_ros.bench.cli:main",
    "camfusion-demo = camfusion_ros.demo:main",
]

setup(
    # Not "camfusion_ros": CMake's rosidl install registers that distribution
    # name for the generated msg/srv, and pip would uninstall it (deleting them).
    name="camfusion-ros-python",
    version="0.1.0",
    description="Online open-vocabulary semantic mapping with CAMFusion (ROS 2)",
    packages=find_packages(include=["camfusion_ros", "camfusion_ros.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    license="Apache-2.0",
)
