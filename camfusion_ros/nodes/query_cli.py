"""camfusion-query / camfusion-labels: command-line clients of the mapping node's services.

They print a readable table (or JSON with ``--json``); a node that does not
answer is one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from camfusion_ros.cli_errors import report_error

__all__ = ["query_main", "labels_main", "call_service", "format_table", "ServiceError", "instances_as_rows"]

DEFAULT_NODE = "/mapping_node"


class ServiceError(RuntimeError):
    """The node's service did not answer or refused."""


def call_service(srv_type: type, name: str, request: Any, timeout_s: float = 30.0) -> Any:
    """One service call from a short-lived node; ServiceError when nothing answers in time."""
    import rclpy

    started = rclpy.ok()
    if not started:
        rclpy.init()
    node = rclpy.create_node(f"camfusion_client_{time.time_ns() % 10**9}")
    try:
        cli = node.create_client(srv_type, name)
        deadline = time.monotonic() + timeout_s
        while not cli.wait_for_service(timeout_sec=0.2):
            if time.monotonic() > deadline:
                raise ServiceError(f"service {name} is not available after {timeout_s:.0f} s "
                                   f"(is the mapping node running on ROS_DOMAIN_ID the same as here?)")
        future = cli.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=max(0.1, deadline - time.monotonic()))
        if not future.done() or future.result() is None:
            raise ServiceError(f"service {name} did not answer within {timeout_s:.0f} s")
        return future.result()
    finally:
        node.destroy_node()
        if not started:
            rclpy.try_shutdown()


def instances_as_rows(instances: Sequence[Any], scores: Sequence[float] | None = None) -> list[dict]:
    rows = []
    for k, m in enumerate(instances):
        rows.append({"id": int(m.id), "label": m.label or "", "score": float(scores[k] if scores is not None else m.score),
                     "top_labels": list(m.top_labels), "views": int(m.num_views), "points": int(m.num_points),
                     "centroid": [round(m.centroid.x, 3), round(m.centroid.y, 3), round(m.centroid.z, 3)]})
    return rows


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return ", ".join(cell(x) for x in v)
        return str(v) if v != "" else "-"

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default=DEFAULT_NODE, help=f"the mapping node's name (default {DEFAULT_NODE})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run(fn, argv) -> int:
    try:
        return fn(argv)
    except (ServiceError, OSError, ValueError) as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return 130


def query_main(argv: Sequence[str] | None = None) -> int:
    """camfusion-query TEXT [--top-k K]: instances ranked by similarity to a text."""
    return _run(_query, argv)


def _query(argv) -> int:
    from camfusion_ros.srv import QueryText

    p = argparse.ArgumentParser(prog="camfusion-query", description="Rank the map's instances by a text query.")
    p.add_argument("text")
    p.add_argument("--top-k", type=int, default=5, help="instances to list (0 = all)")
    _common(p)
    a = p.parse_args(argv)
    if a.top_k < 0:
        raise ValueError("--top-k must be >= 0")
    resp = call_service(QueryText, f"{a.node.rstrip('/')}/query_text", QueryText.Request(text=a.text, top_k=a.top_k), a.timeout)
    if not resp.success:
        raise ServiceError(f"query_text refused: {resp.message}")
    rows = instances_as_rows(resp.instances, list(resp.scores))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    if a.json:
        print(json.dumps({"text": a.text, "ids": list(resp.ids), "scores": list(resp.scores), "instances": rows}))
    else:
        print(f"query: {a.text!r} ({len(rows)} instances)")
        print(format_table(rows, ["rank", "id", "score", "label", "points", "centroid"]))
    return 0


def labels_main(argv: Sequence[str] | None = None) -> int:
    """camfusion-labels [--vocab FILE]: every instance labelled against a vocabulary."""
    return _run(_labels, argv)


def _labels(argv) -> int:
    from camfusion_ros.srv import QueryLabels

    p = argparse.ArgumentParser(prog="camfusion-labels", description="Label the map's instances.")
    p.add_argument("--vocab", default=None, help="text file, one class name per line (default: the node's vocabulary)")
    p.add_argument("--top-k", type=int, default=3, help="labels per instance")
    _common(p)
    a = p.parse_args(argv)
    vocab: list[str] = []
    if a.vocab:
        path = Path(a.vocab)
        if not path.is_file():
            raise ValueError(f"vocabulary file not found: {path}")
        vocab = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not vocab:
            raise ValueError(f"vocabulary file {path} has no class names")
    req = QueryLabels.Request(vocabulary=vocab, top_k=max(1, a.top_k))
    resp = call_service(QueryLabels, f"{a.node.rstrip('/')}/query_labels", req, a.timeout)
    if not resp.success:
        raise ServiceError(f"query_labels refused: {resp.message}")
    rows = instances_as_rows(resp.instances)
    if a.json:
        print(json.dumps({"instances": rows}))
    else:
        print(f"{len(rows)} instances" + (f" (vocabulary {a.vocab})" if a.vocab else ""))
        print(format_table(rows, ["id", "label", "score", "top_labels", "views", "points", "centroid"]))
    return 0


if __name__ == "__main__":
    sys.exit(query_main())
