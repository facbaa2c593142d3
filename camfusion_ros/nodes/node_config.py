"""The mapping node's own parameters (topics, QoS, queue, TF, autosave, ...): one dataclass, its checks and the
descriptions ``ros2 param describe`` shows. The pipeline's parameters come from ``core/config.py``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from camfusion_ros.core.config import ConfigError, MappingConfig, flatten, from_dict, unflatten
from camfusion_ros.core.recording import RecordingTopics

__all__ = ["NODE_NAME", "NODE_DESCRIPTIONS", "NodeConfig", "TopicsConfig", "node_parameter_defaults",
           "own_keys", "node_config_from"]

NODE_NAME = "mapping_node"


@dataclass
class TopicsConfig(RecordingTopics):
    """The node's input topics; defaults are the recordings' (``instances``: read only by segmenter.name gt / gt_noisy)."""


@dataclass
class NodeConfig:
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    color_transport: str = "auto"           # auto (by topic suffix) | raw | compressed: sensor_msgs/CompressedImage
    depth_transport: str = "auto"           # auto | raw | compressed (image_transport's compressedDepth)
    pose_type: str = "PoseStamped"          # PoseStamped | Odometry
    pose_source: str = "topic"              # topic (topics.pose) | tf (/tf + /tf_static, nodes/tf_listener.py)
    camera_frame: str = ""                  # tf: the camera frame ("" = the colour image's header.frame_id)
    tf_wait_s: float = 0.5                  # tf: how long a frame may wait for its transform
    tf_tolerance_s: float = 0.01            # tf: a stamp this far past the TF data holds the end sample
    tf_cache_s: float = 10.0                # tf: seconds of transforms kept per link
    sync_tolerance_s: float = 0.02          # colour/depth/info/pose stamps must lie this close
    sync_buffer: int = 10                   # messages buffered per input topic while waiting for a match
    input_qos: str = "sensor_data"          # sensor_data (best effort) | reliable
    input_depth: int = 10                   # subscription history depth
    queue_size: int = 4                     # synchronised frames waiting for the worker
    drop_policy: str = "drop_oldest"        # drop_oldest | drop_newest when the queue is full
    fusion_period_s: float = 1.0            # re-fuse changed instances and publish every this often
    status_period_s: float = 1.0            # /diagnostics period
    autosave_period_s: float = 0.0          # 0 = no autosave
    autosave_folder: str = ""               # where autosaves go (<folder>/map is the latest)
    reload_on_start: bool = False           # load <autosave_folder>/map at start when it exists
    map_root: str = ""                      # save_map/load_map paths must lie inside ("" = autosave_folder,
                                            # else ~/.ros/camfusion_maps)
    map_frame: str = "map"
    publish_cloud: bool = True
    log_throttle_s: float = 5.0

    def validate(self) -> "NodeConfig":
        if self.pose_type not in ("PoseStamped", "Odometry"):
            raise ConfigError(f"pose_type must be PoseStamped or Odometry, got {self.pose_type!r}")
        if self.pose_source not in ("topic", "tf"):
            raise ConfigError(f"pose_source must be topic or tf, got {self.pose_source!r}")
        if self.tf_wait_s < 0 or self.tf_tolerance_s < 0 or self.tf_cache_s <= self.tf_wait_s:
            raise ConfigError("tf_wait_s and tf_tolerance_s must be >= 0 and tf_cache_s > tf_wait_s")
        if self.drop_policy not in ("drop_oldest", "drop_newest"):
            raise ConfigError(f"drop_policy must be drop_oldest or drop_newest, got {self.drop_policy!r}")
        if self.input_qos not in ("sensor_data", "reliable"):
            raise ConfigError(f"input_qos must be sensor_data or reliable, got {self.input_qos!r}")
        for key in ("color_transport", "depth_transport"):
            if getattr(self, key) not in ("auto", "raw", "compressed"):
                raise ConfigError(f"{key} must be auto, raw or compressed, got {getattr(self, key)!r}")
        if self.queue_size < 1 or self.sync_buffer < 1 or self.input_depth < 1:
            raise ConfigError("queue_size, sync_buffer and input_depth must be >= 1")
        if self.sync_tolerance_s < 0 or self.fusion_period_s <= 0 or self.status_period_s <= 0:
            raise ConfigError("sync_tolerance_s must be >= 0 and the periods > 0")
        if self.autosave_period_s > 0 and not self.autosave_folder:
            raise ConfigError("autosave_period_s > 0 needs autosave_folder")
        return self


NODE_DESCRIPTIONS = {
    "topics.color": "colour image topic (rgb8, bgr8 or mono8; JPEG/PNG CompressedImage: see color_transport)",
    "topics.depth": "depth image topic (16UC1 millimetres or 32FC1 metres; compressedDepth: see depth_transport)",
    "topics.camera_info": "CameraInfo of the (registered) depth/colour images",
    "topics.pose": "camera-to-map pose topic (see pose_type)",
    "topics.instances": "ground-truth instance image (32SC1), read only when segmenter.name is gt or gt_noisy",
    "color_transport": "auto (CompressedImage when topics.color ends in /compressed), raw (Image) or compressed "
                       "(CompressedImage JPEG/PNG on topics.color, + /compressed unless it ends so)",
    "depth_transport": "auto (CompressedImage when topics.depth ends in /compressedDepth), raw (Image) or compressed "
                       "(compressedDepth PNG on topics.depth, + /compressedDepth unless it ends so)",
    "pose_type": "message type of the pose topic: PoseStamped or Odometry",
    "pose_source": "topic: the camera pose from topics.pose; tf: map_frame <- camera frame from /tf + /tf_static at "
                   "each image stamp (interpolated; frames without one are dropped as no_transform)",
    "camera_frame": "pose_source tf: the camera frame to look up (empty: the colour image's header.frame_id)",
    "tf_wait_s": "pose_source tf: seconds a frame waits for its transform (node clock, i.e. bag time under "
                 "use_sim_time; also given up once TF this much newer arrived)",
    "tf_tolerance_s": "pose_source tf: after the wait, a stamp up to this far outside the TF data holds the end "
                      "sample; beyond it the frame is dropped (no_transform)",
    "tf_cache_s": "pose_source tf: seconds of transforms kept per link (tf2's cache time)",
    "sync_tolerance_s": "approximate-time synchronisation tolerance in seconds",
    "sync_buffer": "messages buffered per input topic while waiting for a match",
    "input_qos": "input subscription QoS: sensor_data (best effort) or reliable",
    "input_depth": "input subscription history depth",
    "queue_size": "synchronised frames waiting for the worker (bounded)",
    "drop_policy": "drop_oldest or drop_newest when the frame queue is full",
    "fusion_period_s": "seconds between fusions of changed instances (and publications)",
    "status_period_s": "seconds between /diagnostics messages",
    "autosave_period_s": "seconds between atomic autosaves of the map (0 = off)",
    "autosave_folder": "folder of the autosaves; <folder>/map is the latest",
    "reload_on_start": "load <autosave_folder>/map at start when it exists",
    "map_root": "save_map/load_map requests may only touch paths inside this folder (empty: autosave_folder, "
                "else ~/.ros/camfusion_maps); relative paths are taken from it",
    "map_frame": "frame id of everything the node publishes (and, with pose_source tf, the frame poses are "
                 "looked up in)",
    "publish_cloud": "publish ~/cloud (PointCloud2 with instance and label fields)",
    "log_throttle_s": "at most one warning per reason this often",
}


def node_parameter_defaults() -> dict[str, Any]:
    """Every parameter the node declares (pipeline keys + its own), with the dataclass defaults."""
    out = {k: v for k, v in flatten(MappingConfig()).items()}
    out.update(flatten(NodeConfig()))
    return out


def own_keys() -> set[str]:
    return set(flatten(NodeConfig()))


def node_config_from(values: dict[str, Any]) -> NodeConfig:
    """The node's own parameters (dotted keys), typed and checked like the pipeline's."""
    return from_dict(NodeConfig, unflatten(values)).validate()
