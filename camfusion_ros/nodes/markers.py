"""RViz markers of the map's instances: one box and one text label per instance.

Marker ids are the instance ids (stable across updates), in two namespaces;
instances that disappear (merged away or removed) get DELETE markers once.
"""
from __future__ import annotations

import colorsys
from typing import Iterable

import numpy as np
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from camfusion_ros.nodes.conversions import _get

__all__ = ["MarkerBuilder", "BOX_NS", "TEXT_NS"]

BOX_NS = "instances/boxes"
TEXT_NS = "instances/labels"


def _color(iid: int) -> ColorRGBA:
    r, g, b = colorsys.hsv_to_rgb((iid * 0.61803398875) % 1.0, 0.7, 0.95)
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=0.5)


class MarkerBuilder:
    """Keeps the ids it has published so removed instances can be deleted."""

    def __init__(self, text_height: float = 0.12) -> None:
        self.text_height = text_height
        self._live: set[int] = set()

    def build(self, records: Iterable, header: Header, removed: Iterable[int] = ()) -> MarkerArray:
        out = MarkerArray()
        now: set[int] = set()
        for rec in records:
            iid = int(_get(rec, "id", "instance_id"))
            lo = np.asarray(_get(rec, "bbox_min"), dtype=np.float64).reshape(3)
            hi = np.asarray(_get(rec, "bbox_max"), dtype=np.float64).reshape(3)
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                continue
            now.add(iid)
            box = Marker(header=header, ns=BOX_NS, id=iid, type=Marker.CUBE, action=Marker.ADD)
            c, size = (lo + hi) / 2.0, np.maximum(hi - lo, 0.01)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in c)
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
            box.color = _color(iid)
            text = Marker(header=header, ns=TEXT_NS, id=iid, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
            text.pose.position.x, text.pose.position.y = float(c[0]), float(c[1])
            text.pose.position.z = float(hi[2] + self.text_height)
            text.pose.orientation.w = 1.0
            text.scale.z = self.text_height
            text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
            label = _get(rec, "label", default="") or "?"
            score = _get(rec, "score", default=None)
            text.text = f"{iid}: {label}" + (f" ({float(score):.2f})" if score is not None and label != "?" else "")
            out.markers.extend([box, text])
        gone = (self._live - now) | ({int(i) for i in removed} & self._live)
        for iid in sorted(gone):
            for ns in (BOX_NS, TEXT_NS):
                out.markers.append(Marker(header=header, ns=ns, id=iid, action=Marker.DELETE))
        self._live = now
        return out
