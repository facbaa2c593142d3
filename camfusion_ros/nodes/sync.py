"""Approximate-time synchronisation of several streams (message_filters is not installable here).

Pure Python, no ROS: the node feeds it (stream, stamp, payload) and gets back
matched sets. Every message ends in exactly one place: a matched set, a drop
counter (per reason), or the bounded buffers (``pending``), so the node can
account for all of its input.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = ["ApproximateSync", "Matched"]


@dataclass
class Matched:
    stamp_ns: int                     # the reference stream's stamp
    items: dict[str, Any] = field(default_factory=dict)


class ApproximateSync:
    """Match one message of every stream whose stamps lie within ``tolerance_ns`` of the reference's.

    Stamps must increase per stream; a stamp not newer than the stream's last
    is dropped as ``out_of_order``. Buffers hold at most ``max_buffer``
    messages per stream (the oldest goes, ``overflow``); messages that can no
    longer be matched are dropped as ``unmatched``.
    """

    def __init__(self, streams: Sequence[str], reference: str, tolerance_ns: int, max_buffer: int = 10) -> None:
        if reference not in streams:
            raise ValueError(f"reference stream {reference!r} is not one of {list(streams)}")
        if tolerance_ns < 0 or max_buffer < 1:
            raise ValueError("tolerance must be >= 0 and max_buffer >= 1")
        self.streams = list(streams)
        self.reference = reference
        self.tolerance_ns = int(tolerance_ns)
        self.max_buffer = int(max_buffer)
        self._buf: dict[str, collections.deque] = {s: collections.deque() for s in self.streams}
        self._last: dict[str, int | None] = {s: None for s in self.streams}
        self.dropped: collections.Counter = collections.Counter()
        self.matched = 0

    def pending(self) -> int:
        return sum(len(b) for b in self._buf.values())

    def add(self, stream: str, stamp_ns: int, payload: Any) -> list[Matched]:
        last = self._last[stream]
        if last is not None and stamp_ns <= last:
            self.dropped["out_of_order"] += 1
            return []
        self._last[stream] = stamp_ns
        buf = self._buf[stream]
        buf.append((stamp_ns, payload))
        if len(buf) > self.max_buffer:
            buf.popleft()
            self.dropped["overflow"] += 1
        return self._match()

    def _match(self) -> list[Matched]:
        out: list[Matched] = []
        tol = self.tolerance_ns
        ref = self._buf[self.reference]
        while True:
            self._prune()
            if not ref:
                return out
            r_stamp, r_payload = ref[0]
            picks: dict[str, int] = {}
            hopeless = False
            for s in self.streams:
                if s == self.reference:
                    continue
                best = None
                for i, (t, _) in enumerate(self._buf[s]):
                    if abs(t - r_stamp) <= tol and (best is None or abs(t - r_stamp) < abs(self._buf[s][best][0] - r_stamp)):
                        best = i
                if best is not None:
                    picks[s] = best
                elif self._last[s] is not None and self._last[s] > r_stamp + tol:
                    hopeless = True     # this stream has moved past the window for good
            if hopeless:
                ref.popleft()
                self.dropped["unmatched"] += 1
                continue
            if len(picks) < len(self.streams) - 1:
                return out
            m = Matched(r_stamp, {self.reference: r_payload})
            ref.popleft()
            for s, i in picks.items():
                buf = self._buf[s]
                for _ in range(i):            # older ones can no longer match anything newer
                    buf.popleft()
                    self.dropped["unmatched"] += 1
                m.items[s] = buf.popleft()[1]
            self.matched += 1
            out.append(m)

    def _prune(self) -> None:
        """Drop non-reference messages older than any reference stamp still to come minus the tolerance."""
        ref = self._buf[self.reference]
        floor = ref[0][0] if ref else self._last[self.reference]
        if floor is None:
            return
        if not ref:
            floor += 1      # future reference stamps are strictly newer than the last one
        for s in self.streams:
            if s == self.reference:
                continue
            buf = self._buf[s]
            while buf and buf[0][0] < floor - self.tolerance_ns:
                buf.popleft()
                self.dropped["unmatched"] += 1
