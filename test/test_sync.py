"""Approximate-time synchronisation: matching, tolerance, bounded buffers, full accounting."""
import random

import pytest

from camfusion_ros.nodes.sync import ApproximateSync

MS = 1_000_000
STREAMS = ["color", "depth", "info", "pose"]


def _accounted(s: ApproximateSync, received: int) -> bool:
    return received == s.matched * len(s.streams) + sum(s.dropped.values()) + s.pending()


def test_exact_and_jittered_stamps_match():
    s = ApproximateSync(STREAMS, "color", tolerance_ns=10 * MS)
    out = []
    for k in range(5):
        t = k * 100 * MS
        for i, name in enumerate(STREAMS):
            out += s.add(name, t + i * 3 * MS, (name, k))
    assert [m.stamp_ns for m in out] == [k * 100 * MS for k in range(5)]
    assert all(m.items["pose"] == ("pose", k) for k, m in enumerate(out))
    assert s.pending() == 0 and not s.dropped


def test_outside_tolerance_never_matches_and_is_dropped():
    s = ApproximateSync(["a", "b"], "a", tolerance_ns=5 * MS)
    assert s.add("a", 100 * MS, 1) == []
    assert s.add("b", 120 * MS, 2) == []          # too far: a@100 can never complete now
    assert s.dropped["unmatched"] == 1
    out = s.add("a", 121 * MS, 3)
    assert [m.items for m in out] == [{"a": 3, "b": 2}]
    assert _accounted(s, 3)


def test_out_of_order_stamps_rejected_and_counted():
    s = ApproximateSync(["a", "b"], "a", tolerance_ns=MS)
    s.add("a", 10 * MS, 0)
    s.add("a", 5 * MS, 0)
    s.add("a", 10 * MS, 0)
    assert s.dropped["out_of_order"] == 2
    assert _accounted(s, 3)


def test_buffers_are_bounded():
    s = ApproximateSync(["a", "b"], "a", tolerance_ns=MS, max_buffer=4)
    for k in range(100):
        s.add("a", k * 100 * MS, k)
    assert s.pending() <= 4 and s.dropped["overflow"] == 96
    assert _accounted(s, 100)


def test_nearest_candidate_wins_and_older_ones_go():
    s = ApproximateSync(["a", "b"], "a", tolerance_ns=20 * MS)
    s.add("b", 90 * MS, "b90")
    s.add("b", 99 * MS, "b99")
    s.add("b", 115 * MS, "b115")
    out = s.add("a", 100 * MS, "a100")
    assert out[0].items["b"] == "b99"
    assert s.dropped["unmatched"] == 1 and s.pending() == 1


def test_random_hostile_stream_is_fully_accounted():
    rng = random.Random(3)
    s = ApproximateSync(STREAMS, "color", tolerance_ns=15 * MS, max_buffer=6)
    n = 0
    for k in range(3000):
        name = rng.choice(STREAMS)      # increasing time with jitter: some match, some go backwards
        s.add(name, k * 10 * MS + rng.randrange(-60, 60) * MS, None)
        n += 1
        assert s.pending() <= 6 * len(STREAMS)
    assert s.matched > 0 and _accounted(s, n)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateSync(["a"], "b", 1)
    with pytest.raises(ValueError):
        ApproximateSync(["a"], "a", -1)
