"""Map folders: exact round trip, atomic overwrite, one readable error per broken file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from camfusion_ros.core.map_store import MapFileError, MapSnapshot, load_map, save_map
from camfusion_ros.core.ply import write_ply


def snapshot(n: int = 3, k: int = 2, d: int = 4, p: int = 10, seed: int = 0, meta: dict | None = None) -> MapSnapshot:
    rng = np.random.default_rng(seed)
    fused = rng.normal(size=(n, d)).astype(np.float32)
    fused[n - 1:] = 0.0                               # not fused yet
    valid = np.zeros((n, k), bool)
    valid[:, 0] = True
    valid[:1, 1] = True
    return MapSnapshot(
        points=rng.normal(size=(p, 3)).astype(np.float32),
        colors=rng.integers(0, 256, (p, 3), dtype=np.uint8),
        point_instance=np.array([-1, 5, 5, 7, 7, 7, 9, -1, 9, 5][:p], np.int32),
        ids=np.array([5, 7, 9][:n], np.int64) + 1_000_000_000_000 * seed,
        fused=fused,
        view_descriptors=rng.normal(size=(n, k, d)).astype(np.float32),
        view_valid=valid,
        view_scores=rng.uniform(size=(n, k)).astype(np.float32),
        view_frames=np.arange(n * k, dtype=np.int64).reshape(n, k) - 1,
        first_seen_ns=np.array([1, 2, 3][:n], np.int64) * 10**18,
        last_seen_ns=np.array([4, 5, 6][:n], np.int64) * 10**18,
        meta=meta if meta is not None else {"model": "PE-Core-L-14-336", "fusion": "avg",
                                            "labels": ["chair", "", "table"], "label_scores": [0.5, 0.0, 0.25],
                                            "config": {"segmenter": {"name": "gt"}}},
    )


ARRAYS = ("points", "colors", "point_instance", "ids", "fused", "view_descriptors", "view_valid", "view_scores",
          "view_frames", "first_seen_ns", "last_seen_ns")


def assert_same(a: MapSnapshot, b: MapSnapshot) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_round_trip_is_exact(tmp_path):
    snap = snapshot()
    out = save_map(tmp_path / "m", snap)
    assert out == (tmp_path / "m").absolute()
    assert sorted(p.name for p in out.iterdir()) == ["instances.safetensors", "meta.json", "points.ply"]
    back = load_map(tmp_path / "m")
    assert_same(snap, back)
    assert back.meta == dict(snap.meta, format_version=1)
    assert back.labels == ["chair", "", "table"]
    np.testing.assert_array_equal(back.label_scores, np.array([0.5, 0.0, 0.25], np.float32))


def test_meta_with_numpy_values_is_written_as_plain_json(tmp_path):
    snap = snapshot(meta={"label_scores": np.array([0.5, 0.25, 1.0], np.float32), "n": np.int64(3),
                          "path": tmp_path / "x"})
    save_map(tmp_path / "m", snap)
    raw = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert raw["label_scores"] == [0.5, 0.25, 1.0] and raw["n"] == 3 and raw["path"] == str(tmp_path / "x")


def test_empty_map_round_trip(tmp_path):
    snap = snapshot(n=0, p=0, meta={})
    save_map(tmp_path / "m", snap)
    back = load_map(tmp_path / "m")
    assert back.ids.shape == (0,) and back.view_descriptors.shape == (0, 2, 4) and back.points.shape == (0, 3)
    assert back.labels == []


def test_overwrite_is_atomic_and_leaves_no_temp_folders(tmp_path):
    save_map(tmp_path / "m", snapshot(seed=0))
    second = snapshot(seed=1, n=2, p=7)
    save_map(tmp_path / "m", second)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert_same(second, load_map(tmp_path / "m"))


def test_failed_save_keeps_the_old_map(tmp_path):
    first = snapshot(seed=0)
    save_map(tmp_path / "m", first)
    bad = snapshot(seed=1)
    bad.colors = bad.colors[:3]                        # PLY fields of different lengths -> write fails
    with pytest.raises(ValueError):
        save_map(tmp_path / "m", bad)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert_same(first, load_map(tmp_path / "m"))


def test_a_folder_with_a_users_files_is_refused_and_left_alone(tmp_path):
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (home / "important.txt").write_text("mine")
    (home / "sub" / "thesis.tex").write_text("also mine")
    with pytest.raises(MapFileError, match="important.txt"):
        save_map(home, snapshot())
    assert (home / "important.txt").read_text() == "mine" and (home / "sub" / "thesis.tex").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]          # no temp folder left behind
    # a map folder someone added a file to is no longer ours to replace either
    save_map(tmp_path / "m", snapshot())
    (tmp_path / "m" / "notes.md").write_text("x")
    with pytest.raises(MapFileError, match="notes.md"):
        save_map(tmp_path / "m", snapshot(seed=1))
    assert (tmp_path / "m" / "notes.md").is_file()
    # a plain file, and three files that only look like a map, are refused too
    (tmp_path / "f").write_text("x")
    with pytest.raises(MapFileError, match="not a map folder"):
        save_map(tmp_path / "f", snapshot())
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("points.ply", "instances.safetensors", "meta.json"):
        (fake / name).write_text("{}")
    with pytest.raises(MapFileError, match="meta.json"):
        save_map(fake, snapshot())
    assert (fake / "meta.json").read_text() == "{}"


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "empty").mkdir()
    save_map(tmp_path / "empty", snapshot())
    assert_same(snapshot(), load_map(tmp_path / "empty"))


def test_missing_folder(tmp_path):
    with pytest.raises(MapFileError, match="not found"):
        load_map(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["points.ply", "instances.safetensors", "meta.json"])
def test_missing_file_is_named(tmp_path, name):
    save_map(tmp_path / "m", snapshot())
    (tmp_path / "m" / name).unlink()
    with pytest.raises(MapFileError, match=name.replace(".", r"\.")):
        load_map(tmp_path / "m")


def test_corrupt_safetensors(tmp_path):
    save_map(tmp_path / "m", snapshot())
    (tmp_path / "m" / "instances.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(MapFileError, match=r"instances\.safetensors.*corrupt"):
        load_map(tmp_path / "m")


def test_truncated_safetensors(tmp_path):
    save_map(tmp_path / "m", snapshot())
    f = tmp_path / "m" / "instances.safetensors"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(MapFileError, match=r"instances\.safetensors"):
        load_map(tmp_path / "m")


def test_safetensors_missing_array(tmp_path):
    save_map(tmp_path / "m", snapshot())
    save_file({"ids": np.arange(3, dtype=np.int64)}, str(tmp_path / "m" / "instances.safetensors"))
    with pytest.raises(MapFileError, match=r"instances\.safetensors lacks fused"):
        load_map(tmp_path / "m")


def test_safetensors_arrays_disagree(tmp_path):
    snap = snapshot()
    save_map(tmp_path / "m", snap)
    arrays = {"ids": np.arange(2, dtype=np.int64), "fused": snap.fused, "view_descriptors": snap.view_descriptors,
              "view_valid": snap.view_valid.astype(np.uint8), "view_scores": snap.view_scores,
              "view_frames": snap.view_frames, "first_seen_ns": snap.first_seen_ns, "last_seen_ns": snap.last_seen_ns}
    save_file(arrays, str(tmp_path / "m" / "instances.safetensors"))
    with pytest.raises(MapFileError, match="disagree"):
        load_map(tmp_path / "m")


def test_bad_json(tmp_path):
    save_map(tmp_path / "m", snapshot())
    (tmp_path / "m" / "meta.json").write_text('{"labels": [')
    with pytest.raises(MapFileError, match=r"meta\.json is not valid JSON"):
        load_map(tmp_path / "m")


def test_ply_missing_property(tmp_path):
    snap = snapshot()
    save_map(tmp_path / "m", snap)
    write_ply(tmp_path / "m" / "points.ply", {"x": snap.points[:, 0], "y": snap.points[:, 1], "z": snap.points[:, 2],
                                              "red": snap.colors[:, 0], "green": snap.colors[:, 1],
                                              "blue": snap.colors[:, 2]})
    with pytest.raises(MapFileError, match=r"points\.ply lacks the vertex property 'instance'"):
        load_map(tmp_path / "m")


def test_corrupt_ply(tmp_path):
    save_map(tmp_path / "m", snapshot())
    (tmp_path / "m" / "points.ply").write_bytes(b"this is not a ply file\n")
    with pytest.raises(MapFileError, match=r"points\.ply"):
        load_map(tmp_path / "m")


def test_lying_headers_wrong_dtypes_and_nans_are_refused(tmp_path, peak_rss_growth_mib):
    import struct

    save_map(tmp_path / "m", snapshot())
    f = tmp_path / "m" / "instances.safetensors"
    header = json.dumps({"ids": {"dtype": "I64", "shape": [10**12], "data_offsets": [0, 8 * 10**12]}}).encode()
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(MapFileError, match=r"instances\.safetensors is corrupt"):
        load_map(tmp_path / "m")
    assert peak_rss_growth_mib() < 100

    def broken(**arrays):
        snap = snapshot()
        save_map(tmp_path / "b", snap)
        full = {k: getattr(snap, k) for k in ("ids", "fused", "view_descriptors", "view_scores", "view_frames",
                                              "first_seen_ns", "last_seen_ns")}
        full["view_valid"] = snap.view_valid.astype(np.uint8)
        full.update(arrays)
        save_file({k: np.ascontiguousarray(v) for k, v in full.items()}, str(tmp_path / "b" / "instances.safetensors"))
        return tmp_path / "b"

    snap = snapshot()
    nan = snap.fused.copy()
    nan[0, 0] = np.nan
    with pytest.raises(MapFileError, match="NaN or infinite"):
        load_map(broken(fused=nan))
    with pytest.raises(MapFileError, match=r"ids is float32\[3\], expected a 1-D array"):
        load_map(broken(ids=snap.ids.astype(np.float32)))
    with pytest.raises(MapFileError, match="disagree"):
        load_map(broken(fused=snap.fused[:, :2].copy()))
    (tmp_path / "b" / "meta.json").write_text("[1, 2]")
    with pytest.raises(MapFileError, match="JSON object"):
        load_map(tmp_path / "b")
