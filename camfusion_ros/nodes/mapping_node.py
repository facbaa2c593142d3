"""The ROS 2 mapping node: live RGB-D + pose in, labelled 3D instances, markers and a cloud out.

Callbacks only convert, synchronise and enqueue; a worker thread runs the
pipeline, a timer fuses and publishes, and every input message is accounted
for (received = processed + dropped per reason + pending) so a robot operator
can see exactly what the node did with its data.

This file holds the node's state, its worker and its start / stop; the rest is split by job:
``node_config.py`` (parameters), ``node_io.py`` (subscriptions, publishers, timers, services wiring),
``node_outputs.py`` (publishing and counters), ``node_services.py`` (services and autosave),
``tf_listener.py`` (pose_source tf), ``node_exit.py`` (process start / exit).
"""
from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from typing import Any, Optional, Sequence

if __name__ == "__main__":          # python -m: in force before the heavy imports below (see node_exit)
    from camfusion_ros.nodes.node_exit import stop_quietly_until_ros_is_up
    stop_quietly_until_ros_is_up()

import rclpy
import rclpy.exceptions
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from camfusion_ros.cli_errors import one_line, report_error
from camfusion_ros.core.config import ConfigError, load_config
from camfusion_ros.core.frames import FrameError, RGBDFrame
from camfusion_ros.core.segmentation import GT_SEGMENTERS
from camfusion_ros.nodes.markers import MarkerBuilder
from camfusion_ros.nodes.node_config import (NODE_DESCRIPTIONS, NODE_NAME, NodeConfig, TopicsConfig, node_config_from,
                                             node_parameter_defaults, own_keys)
from camfusion_ros.nodes.node_io import NodeIO
from camfusion_ros.nodes.node_outputs import NodeOutputs
from camfusion_ros.nodes.node_services import AUTOSAVE_LINK, NodeServices, save_map_atomic
from camfusion_ros.nodes.sync import ApproximateSync
from camfusion_ros.nodes.tf_listener import TfPoseSource

__all__ = ["NodeConfig", "TopicsConfig", "MappingNode", "main", "node_parameter_defaults", "save_map_atomic",
           "NODE_NAME", "AUTOSAVE_LINK"]


class MappingNode(NodeIO, NodeOutputs, NodeServices, Node):
    """See the module docstring; ``pipeline_factory`` lets tests inject a prepared pipeline."""

    def __init__(self, pipeline_factory=None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        values = self._declare_parameters()
        own = own_keys()
        self.ncfg = node_config_from({k: v for k, v in values.items() if k in own})
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
