"""The ROS 2 mapping node: live RGB-D + pose in, labelled 3D instances, markers and a cloud out.

Callbacks only convert, synchronise and enqueue; a worker thread runs the
pipeline, a timer fuses and publishes, and every input message is accounted
for (received = processed + dropped per reason + pending) so a robot operator
can see exactly what the node did with its data.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

if __name__ == "__main__":          # python -m: in force before the heavy imports below (see node_exit)
    from camfusion_ros.nodes.node_exit import stop_quietly_until_ros_is_up
    stop_quietly_until_ros_is_up()

import numpy as np
import rclpy
import rclpy.exceptions
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from camfusion_ros.cli_errors import one_line, report_error
from camfusion_ros.core.config import ConfigError, MappingConfig, flatten, from_dict, load_config, unflatten
from camfusion_ros.core.frames import FrameError, RGBDFrame
from camfusion_ros.core.output_folder import claim_outputs
from camfusion_ros.core.recording import RecordingTopics
from camfusion_ros.core.segmentation import GT_SEGMENTERS
from camfusion_ros.nodes.requests import check_text, check_top_k, check_vocabulary, confined_path, map_root
from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import (ConversionError, camera_info_to_K, cloud_to_msg, color_from_msg,
                                             depth_from_msg, image_input, instance_to_msg, instances_from_msg,
                                             pose_to_matrix, stamp_to_ns)
from camfusion_ros.nodes.markers import MarkerBuilder
from camfusion_ros.nodes.sync import ApproximateSync
from camfusion_ros.nodes.tf_listener import TfPoseSource
from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap

__all__ = ["NodeConfig", "TopicsConfig", "MappingNode", "main", "node_parameter_defaults", "save_map_atomic",
           "NODE_NAME", "AUTOSAVE_LINK"]

NODE_NAME = "mapping_node"
AUTOSAVE_LINK = "map"          # <autosave_folder>/map -> snapshots/<n>, swapped atomically
SNAPSHOT_NAME = re.compile(r"\d{20}")   # snapshots/<time_ns, 20 digits>: the only names autosave prunes


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


def _own_keys() -> set[str]:
    return set(flatten(NodeConfig()))


def _node_config_from(values: dict[str, Any]) -> NodeConfig:
    """The node's own parameters (dotted keys), typed and checked like the pipeline's."""
    return from_dict(NodeConfig, unflatten(values)).validate()


def save_map_atomic(pipeline, folder: str | os.PathLike, keep: int = 2) -> Path:
    """Write the map to a fresh folder, then swap the ``<folder>/map`` link to it in one rename.

    A kill at any moment leaves ``<folder>/map`` pointing at a complete map.
    """
    from camfusion_ros.core.map_store import save_map

    folder = claim_outputs(folder, "autosave", ["snapshots", AUTOSAVE_LINK])
    snaps = folder / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}"
    tmp = snaps / f".{name}.partial"
    save_map(tmp, pipeline.snapshot())
    final = snaps / name
    os.replace(tmp, final)
    link_tmp = folder / f".{AUTOSAVE_LINK}.{name}.tmp"
    os.symlink(Path("snapshots") / name, link_tmp)
    os.replace(link_tmp, folder / AUTOSAVE_LINK)
    # Only snapshots this function wrote are pruned (their names are stamps); anything else there is left alone.
    ours = sorted(p for p in snaps.iterdir() if p.name != name and SNAPSHOT_NAME.fullmatch(p.name) and p.is_dir()
                  and not p.is_symlink())
    for old in ours[:-keep or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _answer(handler):
    """A service callback that reports any failure in the response instead of raising.

    ``handler(req, resp)`` fills ``resp`` and returns the success message.
    """
    def serve(req, resp):
        try:
            resp.success, resp.message = True, handler(req, resp)
        except Exception as exc:  # a bad request must not take the node down
            resp.success, resp.message = False, f"{type(exc).__name__}: {exc}"
        return resp

    return serve


class MappingNode(Node):
    """See the module docstring; ``pipeline_factory`` lets tests inject a prepared pipeline."""

    def __init__(self, pipeline_factory=None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        values = self._declare_parameters()
        own = _own_keys()
        self.ncfg = _node_config_from({k: v for k, v in values.items() if k in own})
        pipe_values = {k: v for k, v in values.items() if k not in own}   # "" = not set, for optional keys
        self.cfg = load_config(pipe_values)
        from camfusion_ros.core.pipeline import MappingPipeline

        self.pipeline = (pipeline_factory or MappingPipeline)(self.cfg)
        self.pipeline.check_weights()        # a missing weight file stops the node with one line, at once
        self._plock = threading.RLock()      # every pipeline access
        self._save_lock = threading.Lock()   # held while a map is written; shutdown waits for it
        self._lock = threading.Lock()       # counters, sync, queue
        self._cond = threading.Condition(self._lock)
        self.streams = ["color", "depth", "camera_info"] + (["pose"] if self.ncfg.pose_source == "topic" else [])
        if self.cfg.segmenter.name in GT_SEGMENTERS:
            self.streams.append("instances")
        self.sync = ApproximateSync(self.streams, "color", int(self.ncfg.sync_tolerance_s * 1e9), self.ncfg.sync_buffer)
        self.received: collections.Counter = collections.Counter()
        self.dropped: collections.Counter = collections.Counter()
        self.processed_msgs = 0
        self.frames_processed = 0
        self.frames_inflight = 0
        self.queue: collections.deque = collections.deque()
        self.last_fusion_ns = 0
        self.last_fusion_seconds = 0.0
        self.last_autosave: dict[str, Any] = {}
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)
        self._stop = False
        self.ready = False
        self.fatal = ""                 # why the node cannot map (set once; main exits non-zero with it)
        self._markers = MarkerBuilder()
        self._last_instance_ids: list[int] = []

        reloaded = self.ncfg.reload_on_start and self._reload()
        # pose_source tf: synchronised frames wait there for their camera pose, then go to the queue
        self.tf = (TfPoseSource(self, self.ncfg, self._cond, self._enqueue, self.dropped, len(self.streams))
                   if self.ncfg.pose_source == "tf" else None)
        self._admit = self.tf.add if self.tf is not None else self._enqueue
        self._make_io()
        if reloaded:
            self._fuse_and_publish(force=True)   # a restarted node shows its map at once
        self._worker = threading.Thread(target=self._work, name="camfusion-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"mapping: segmenter={self.cfg.segmenter.name} model={self.pipeline.model_name} "
                               f"fusion={self.cfg.fusion.method} inputs={self.streams}")

    # -- parameters --------------------------------------------------------------
    def _declare_parameters(self) -> dict[str, Any]:
        values = {}
        for key, default in node_parameter_defaults().items():
            desc = NODE_DESCRIPTIONS.get(key, f"mapping pipeline setting {key} (see camfusion_ros/core; "
                                              f"default {default!r})")
            dyn = default is None or isinstance(default, list)
            value = "" if default is None else default
            if isinstance(value, list) and not value:
                value = [""]
            d = ParameterDescriptor(description=desc, dynamic_typing=dyn)
            try:
                values[key] = self.declare_parameter(key, value, d).value
            except rclpy.exceptions.InvalidParameterTypeException as exc:
                raise ConfigError(f"parameter {key}: {' '.join(str(exc).split(':')[0].split())}") from None
        return values

    # -- inputs ------------------------------------------------------------------
    def _make_io(self) -> None:
        n = self.ncfg
        if n.input_qos == "sensor_data":
            qos = QoSProfile(depth=n.input_depth, reliability=qos_profile_sensor_data.reliability,
                             durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
        else:
            qos = QoSProfile(depth=n.input_depth, reliability=ReliabilityPolicy.RELIABLE)
        self._cb_in = MutuallyExclusiveCallbackGroup()
        self._cb_timer = MutuallyExclusiveCallbackGroup()
        self._cb_srv = MutuallyExclusiveCallbackGroup()
        pose_cls = PoseStamped if n.pose_type == "PoseStamped" else Odometry
        # transports decide on the remapped name: a launch remap to .../compressed must switch the type too
        spec = {"color": image_input(self.resolve_topic_name(n.topics.color), n.color_transport, "color"),
                "depth": image_input(self.resolve_topic_name(n.topics.depth), n.depth_transport, "depth"),
                "camera_info": (CameraInfo, n.topics.camera_info), "pose": (pose_cls, n.topics.pose),
                "instances": (Image, n.topics.instances)}
        self._subs = [self.create_subscription(spec[s][0], spec[s][1], self._callback(s), qos,
                                               callback_group=self._cb_in) for s in self.streams]
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_instances = self.create_publisher(InstanceArray, "~/instances", latched)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", latched)
        self.pub_cloud = self.create_publisher(PointCloud2, "~/cloud", latched)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(n.fusion_period_s, self._fuse_and_publish, callback_group=self._cb_timer)
        self.create_timer(n.status_period_s, self._publish_status, callback_group=self._cb_timer)
        if n.autosave_period_s > 0:   # its own group: a slow fusion must not delay the autosave
            self.create_timer(n.autosave_period_s, self._autosave, callback_group=MutuallyExclusiveCallbackGroup())
        g = self._cb_srv
        self.create_service(QueryLabels, "~/query_labels", _answer(self._srv_query_labels), callback_group=g)
        self.create_service(QueryText, "~/query_text", _answer(self._srv_query_text), callback_group=g)
        self.create_service(SaveMap, "~/save_map", _answer(self._srv_save_map), callback_group=g)
        self.create_service(LoadMap, "~/load_map", _answer(self._srv_load_map), callback_group=g)
        self.create_service(Trigger, "~/get_status", self._srv_status, callback_group=g)

    def _callback(self, stream: str):
        convert = {"color": color_from_msg, "depth": depth_from_msg, "camera_info": camera_info_to_K,
                   "pose": pose_to_matrix, "instances": instances_from_msg}[stream]

        def on_message(msg) -> None:
            with self._lock:
                self.received[stream] += 1
            try:
                payload = convert(msg)
                stamp = stamp_to_ns(msg.header.stamp)
                if stream == "color":
                    payload = (payload, msg.header.frame_id)
            except ConversionError as exc:
                self._drop(exc.reason, f"{stream}: {exc}")
                return
            except Exception as exc:  # a hostile message must never take the node down
                self._drop("invalid", f"{stream}: {type(exc).__name__}: {exc}")
                return
            with self._cond:
                for m in self.sync.add(stream, stamp, payload):
                    self._admit(m)

        return on_message

    def _drop(self, reason: str, text: str, count: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += count
        self.get_logger().warning(f"dropped ({reason}): {text}", throttle_duration_sec=self.ncfg.log_throttle_s)

    def _enqueue(self, matched) -> None:
        """Called with the lock held."""
        nmsg = len(self.streams)
        if len(self.queue) >= self.ncfg.queue_size:
            self.dropped["queue_full"] += nmsg
            if self.ncfg.drop_policy == "drop_newest":
                return
            self.queue.popleft()
        self.queue.append(matched)
        self._cond.notify()

    # -- worker ------------------------------------------------------------------
    def _warm_up(self) -> None:
        """Load the models before the first frame so it is not dropped while they load."""
        try:
            with self._plock:
                p = self.pipeline
                p.segmenter, p.extractor, p.fuser, p.vocabulary  # noqa: B018 (lazy properties)
        except Exception as exc:      # e.g. a corrupt weight file: the node cannot map, so it says so and stops
            self.fatal = f"cannot load the models: {one_line(exc)}"
            self.get_logger().error(self.fatal)
            rclpy.try_shutdown(context=self.context)      # ends executor.spin(); main reports fatal, exits 2
            return
        self.ready = True

    def _work(self) -> None:
        nmsg = len(self.streams)
        self._warm_up()
        while not self.fatal:
            with self._cond:
                while not self.queue and not self._stop:
                    self._cond.wait(timeout=0.5)
                if self._stop:
                    return
                m = self.queue.popleft()
                self.frames_inflight = 1
            ok, reason, text = False, "", ""
            try:
                rgb, frame_id = m.items["color"]
                frame = RGBDFrame(stamp_ns=m.stamp_ns, rgb=rgb, depth=m.items["depth"], K=m.items["camera_info"],
                                  T_world_cam=m.items["pose"], gt_instances=m.items.get("instances"),
                                  frame_id=frame_id)
                with self._plock:
                    self.pipeline.process(frame)
                ok = True
            except FrameError as exc:
                reason, text = "frame_error", str(exc)
            except Exception as exc:  # keep mapping after any per-frame failure
                reason, text = "pipeline_error", f"{type(exc).__name__}: {exc}"
            with self._cond:
                self.frames_inflight = 0
                if ok:
                    self.processed_msgs += nmsg
                    self.frames_processed += 1
                else:
                    self.dropped[reason] += nmsg
            if not ok:
                self.get_logger().warning(f"frame at {m.stamp_ns} ns dropped ({reason}): {text}",
                                          throttle_duration_sec=self.ncfg.log_throttle_s)

    # -- fusion and outputs ------------------------------------------------------
    def _header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg(), frame_id=self.ncfg.map_frame)

    def _fuse_and_publish(self, force: bool = False) -> None:
        try:
            t0 = time.perf_counter()
            with self._plock:
                fused = self.pipeline.fuse_pending()
                removed = self.pipeline.removed_ids()
                if not (fused or removed or force):
                    return
                records = self.pipeline.instances()
                cloud = self.pipeline.tracker.point_cloud() if self.ncfg.publish_cloud else None
                names = list(self.pipeline.vocabulary.names) if records else []
                model = self.pipeline.model_name
            self.last_fusion_seconds = time.perf_counter() - t0
            self.last_fusion_ns = time.time_ns()
            header = self._header()
            arr = InstanceArray(header=header, instances=[
                instance_to_msg(r, embedding_model=model, fusion_method=self.cfg.fusion.method) for r in records])
            self.pub_instances.publish(arr)
            self.pub_markers.publish(self._markers.build(records, header, removed))
            if cloud is not None:
                pts, cols, inst = cloud
                index = {n: i for i, n in enumerate(names)}
                lab_of = {r.id: index.get(r.label, -1) for r in records}
                label = np.array([lab_of.get(int(i), -1) for i in inst], np.int32) if len(inst) else np.zeros(0, np.int32)
                self.pub_cloud.publish(cloud_to_msg(pts, cols, inst, label, header))
            self._last_instance_ids = [r.id for r in records]
        except Exception as exc:
            self._drop_log("fusion", exc)

    def _drop_log(self, what: str, exc: Exception) -> None:
        self.get_logger().error(f"{what} failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=self.ncfg.log_throttle_s)

    def counters(self) -> dict[str, Any]:
        """A consistent snapshot: received == processed + sum(dropped) + pending."""
        with self._lock:
            nmsg = len(self.streams)
            dropped = collections.Counter(self.dropped)
            dropped.update(self.sync.dropped)
            waiting_tf = self.tf.pending() if self.tf is not None else 0
            pending = self.sync.pending() + (len(self.queue) + self.frames_inflight + waiting_tf) * nmsg
            return {"received": sum(self.received.values()), "received_per_topic": dict(self.received),
                    "processed": self.processed_msgs, "dropped": dict(dropped), "pending": pending,
                    "frames_processed": self.frames_processed, "queue": len(self.queue),
                    "frames_matched": self.sync.matched,
                    **({"tf": self.tf.stats()} if self.tf is not None else {})}

    def status(self) -> dict[str, Any]:
        c = self.counters()
        now = time.monotonic()
        t, rec, frames = self._rate_mark
        if now - t >= 1.0:
            self._rates = ((c["received"] - rec) / (now - t), (c["frames_processed"] - frames) / (now - t))
            self._rate_mark = (now, c["received"], c["frames_processed"])
        c.update(ready=self.ready, error=self.fatal, input_rate_hz=round(self._rates[0], 3), frame_rate_hz=round(self._rates[1], 3),
                 instances=len(self._last_instance_ids), instance_ids=list(self._last_instance_ids),
                 frames_seen=int(self.pipeline.frames_seen), last_fusion_unix_ns=self.last_fusion_ns,
                 last_fusion_seconds=round(self.last_fusion_seconds, 4), autosave=dict(self.last_autosave),
                 masks=self.pipeline.mask_summary())
        return c

    def _publish_status(self) -> None:
        try:
            s = self.status()
            ok = s["received"] == 0 or s["frames_processed"] > 0
            st = DiagnosticStatus(level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
                                  name=f"{self.get_fully_qualified_name()}: mapping", hardware_id="camfusion_ros",
                                  message="mapping" if ok else "no frame processed yet")
            flat = {k: v for k, v in s.items() if not isinstance(v, (dict, list))}
            flat.update({f"dropped.{k}": v for k, v in s["dropped"].items()})
            flat.update({f"tf.{k}": v for k, v in s.get("tf", {}).items()})
            flat.update({"masks.proposed": s["masks"]["proposed"], "masks.tracked": s["masks"]["tracked"]})
            flat.update({f"masks_dropped.{k}": v for k, v in s["masks"]["dropped"].items()})
            st.values = [KeyValue(key=k, value=str(v)) for k, v in flat.items()]
            self.pub_diag.publish(DiagnosticArray(header=self._header(), status=[st]))
        except Exception as exc:
            self._drop_log("status", exc)

    def _autosave(self) -> None:
        try:
            with self._plock, self._save_lock:
                frames = int(self.pipeline.frames_seen)
                if self._stop or frames == self.last_autosave.get("frames"):
                    return
                n = len(self.pipeline.tracker.instances)
                path = save_map_atomic(self.pipeline, self.ncfg.autosave_folder)
            self.last_autosave = {"frames": frames, "instances": n, "path": str(path), "unix_ns": time.time_ns()}
        except Exception as exc:
            self._drop_log("autosave", exc)

    def _reload(self) -> bool:
        link = Path(self.ncfg.autosave_folder) / AUTOSAVE_LINK if self.ncfg.autosave_folder else None
        if link is None or not link.exists():
            self.get_logger().info(f"reload_on_start: no saved map at {link}; starting empty")
            return False
        from camfusion_ros.core.map_store import load_map

        with self._plock:
            self.pipeline.load_snapshot(load_map(link))
        self.get_logger().info(f"reloaded {len(self.pipeline.tracker.instances)} instances "
                               f"({self.pipeline.frames_seen} frames) from {link.resolve()}")
        return True

    # -- services ----------------------------------------------------------------
    def _srv_query_labels(self, req, resp):
        vocabulary = check_vocabulary(list(req.vocabulary))
        top_k = max(1, check_top_k(req.top_k))
        vocab = self.pipeline.vocabulary_for(vocabulary)        # text encoding: outside the map's lock
        with self._plock:
            records = self.pipeline.label_with(vocab, top_k)
            model = self.pipeline.model_name
        resp.instances = [instance_to_msg(r, model, self.cfg.fusion.method) for r in records]
        return f"{len(records)} instances"

    def _srv_query_text(self, req, resp):
        text, top_k = check_text(req.text), check_top_k(req.top_k)
        embedding = self.pipeline.encode_query(text) if text.strip() else None   # outside the map's lock
        with self._plock:
            ranked = self.pipeline.query_text(text, top_k, embedding)
            by_id = {r.id: r for r in self.pipeline.instances()}
            model = self.pipeline.model_name
        resp.ids = [int(i) for i, _ in ranked]
        resp.scores = [float(s) for _, s in ranked]
        resp.instances = [instance_to_msg(by_id[i], model, self.cfg.fusion.method) for i, _ in ranked if i in by_id]
        return f"{len(ranked)} instances ranked"

    def _map_root(self) -> Path:
        return map_root(self.ncfg.map_root, self.ncfg.autosave_folder)

    def _srv_save_map(self, req, resp):
        path = confined_path(req.path, self._map_root()) if req.path else None
        with self._plock, self._save_lock:
            if self._stop:
                raise RuntimeError("the node is shutting down")
            if path is not None:
                from camfusion_ros.core.map_store import save_map

                path.parent.mkdir(parents=True, exist_ok=True)
                return str(save_map(path, self.pipeline.snapshot()))
            if self.ncfg.autosave_folder:
                return str(save_map_atomic(self.pipeline, self.ncfg.autosave_folder))
        raise ValueError("no path given and no autosave_folder configured")

    def _srv_load_map(self, req, resp):
        from camfusion_ros.core.map_store import load_map

        if req.path:
            path = confined_path(req.path, self._map_root())
        elif self.ncfg.autosave_folder:
            path = Path(self.ncfg.autosave_folder) / AUTOSAVE_LINK
        else:
            raise ValueError("no path given and no autosave_folder configured")
        snap = load_map(path)
        with self._plock:
            self.pipeline.load_snapshot(snap)
        self._fuse_and_publish(force=True)
        return f"loaded {len(snap.ids)} instances from {path}"

    def _srv_status(self, req, resp):
        resp.success, resp.message = True, json.dumps(self.status())
        return resp

    def shutdown(self) -> None:
        """Complete any save already started; the frame in flight and model loading are abandoned (the worker is a
        daemon thread and the process exits right after), so a stop never waits on the models."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._save_lock.acquire(timeout=4.0):     # no new save starts once _stop is set
            self._save_lock.release()


def _spin(executor: MultiThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:      # rclpy shut down (a fatal error, or the process is stopping)
        pass


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv if argv is None else ["mapping_node", *argv])
    rclpy.init(args=args)
    for s in (signal.SIGINT, signal.SIGTERM):     # from now on a stop request unwinds through the cleanup below
        signal.signal(s, _interrupt)
    node = None
    try:
        node = MappingNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        # The executor spins in a thread: while it waits inside rcl, a signal reaches Python only when rcl wakes
        # (seconds, measured up to 8 s); the main thread's short joins take it within 0.2 s.
        spinner = threading.Thread(target=_spin, args=(executor,), name="camfusion-executor", daemon=True)
        spinner.start()
        while spinner.is_alive():
            spinner.join(timeout=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, ValueError, FileNotFoundError) as exc:   # incl. missing weights / checkpoint
        return report_error(exc)
    finally:
        # shutting down already: a second Ctrl-C / SIGTERM (launch escalating) must not interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    if node is not None and node.fatal:
        return report_error(node.fatal)
    return 0


if __name__ == "__main__":
    from camfusion_ros.nodes.node_exit import exit_now
    exit_now(main())
