"""ros2 launch camfusion_ros mapping.launch.py [segmenter:=gt] [fusion:=camfusion checkpoint:=DIR] ...

The same arguments as ``camfusion-launch`` (the venv stand-in; a test checks they agree).
Empty segmenter / fusion / checkpoint keep the parameters file's values.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

REMAPS = {"color_topic": "/camera/color/image_raw", "depth_topic": "/camera/depth/image_raw",
          "camera_info_topic": "/camera/color/camera_info", "pose_topic": "/camera/pose"}
OVERRIDES = {"segmenter": "segmenter.name", "fusion": "fusion.method", "checkpoint": "fusion.checkpoint"}


def _node(context, *args, **kwargs):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {key: get(name) for name, key in OVERRIDES.items() if get(name)}
    overrides["use_sim_time"] = get("use_sim_time").lower() == "true"
    remaps = [(orig, get(name)) for name, orig in REMAPS.items() if get(name) != orig]
    return [Node(package="camfusion_ros", executable="mapping_node", name="mapping_node", output="screen",
                 namespace=get("namespace"), parameters=[get("config_file"), overrides], remappings=remaps)]


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare("camfusion_ros"), "config", "mapping.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("config_file", default_value=default_config, description="parameters file"),
        DeclareLaunchArgument("segmenter", default_value="", description="segmenter.name override: sam2 | gt"),
        DeclareLaunchArgument("fusion", default_value="",
                              description="fusion.method override: avg | l1medoid | cosmedoid | camfusion"),
        DeclareLaunchArgument("checkpoint", default_value="", description="fusion.checkpoint override"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock"),
        DeclareLaunchArgument("color_topic", default_value=REMAPS["color_topic"], description="colour image topic"),
        DeclareLaunchArgument("depth_topic", default_value=REMAPS["depth_topic"], description="depth image topic"),
        DeclareLaunchArgument("camera_info_topic", default_value=REMAPS["camera_info_topic"],
                              description="CameraInfo topic"),
        DeclareLaunchArgument("pose_topic", default_value=REMAPS["pose_topic"], description="pose topic"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="node namespace (the parameters file's /**/mapping_node key still applies)"),
        OpaqueFunction(function=_node),
    ])
