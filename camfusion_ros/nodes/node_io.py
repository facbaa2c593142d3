"""The mapping node's wiring: input subscriptions and their callbacks (convert, count, synchronise, enqueue), the
publishers, timers and services. A callback never runs the pipeline; a bad message is a counted drop."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import (ConversionError, camera_info_to_K, color_from_msg, depth_from_msg,
                                             image_input, instances_from_msg, pose_to_matrix, stamp_to_ns)
from camfusion_ros.nodes.node_services import answer
from camfusion_ros.srv import LoadMap, QueryLabels, QueryText, SaveMap


class NodeIO:
    """Mixin of MappingNode (see mapping_node.py for the state it uses)."""

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
        self.create_service(QueryLabels, "~/query_labels", answer(self._srv_query_labels), callback_group=g)
        self.create_service(QueryText, "~/query_text", answer(self._srv_query_text), callback_group=g)
        self.create_service(SaveMap, "~/save_map", answer(self._srv_save_map), callback_group=g)
        self.create_service(LoadMap, "~/load_map", answer(self._srv_load_map), callback_group=g)
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
