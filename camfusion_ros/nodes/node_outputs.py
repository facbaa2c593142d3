"""What the mapping node publishes: fused instances, RViz markers, the labelled cloud, /diagnostics, and the
counters behind ~/get_status (received = processed + dropped per reason + pending)."""
from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from camfusion_ros.msg import InstanceArray
from camfusion_ros.nodes.conversions import cloud_to_msg, instance_to_msg


class NodeOutputs:
    """Mixin of MappingNode (see mapping_node.py for the state it uses)."""

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
