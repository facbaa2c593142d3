"""core/recording.py: synchronised frames from rosbag2, and one clear error line for bad recordings."""
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from camfusion_ros.core.recording import (RecordingError, RecordingTopics, decode_depth, decode_image,
                                          exit_on_error, inspect_recording, read_frames, ros_typestore)

STORE = ros_typestore()


def _copy_bag(src, dst, drop=(), edit=None, limit=None):
    """Rewrite a bag message by message; ``edit(topic, msg)`` may change a message (None drops it)."""
    with AnyReader([src]) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic not in drop:
                conns[c.topic] = writer.add_connection(c.topic, c.msgtype, typestore=STORE)
        seen = {}
        for c, t, raw in reader.messages():
            if c.topic in drop:
                continue
            seen[c.topic] = seen.get(c.topic, 0) + 1
            if limit is not None and seen[c.topic] > limit:
                continue
            msg = reader.deserialize(raw, c.msgtype)
            if edit is not None:
                msg = edit(c.topic, msg)
                if msg is None:
                    continue
            writer.write(conns[c.topic], t, STORE.serialize_cdr(msg, c.msgtype))
    return dst


def test_reads_synchronised_frames(synth_scene):
    frames = list(read_frames(synth_scene / "bag"))
    assert len(frames) == 30
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 30
    for i, f in enumerate(frames):
        f.validate()
        assert f.index == i and f.frame_id == "camera_color_optical_frame"
        assert f.rgb.shape == (240, 320, 3) and f.depth.dtype == np.float32 and f.gt_instances.dtype == np.int32
        assert 0.1 < float(np.median(f.depth)) < 10.0  # metres, not millimetres
        assert f.K[0, 2] == pytest.approx(159.5) and f.K[2, 2] == 1.0
    assert not np.allclose(frames[0].T_world_cam, frames[5].T_world_cam)
    assert len(list(read_frames(synth_scene / "bag", max_frames=4))) == 4
    no_inst = list(read_frames(synth_scene / "bag", topics=RecordingTopics(instances=""), max_frames=2))
    assert no_inst[0].gt_instances is None
    # a bare .mcap file is read too
    mcap = next((synth_scene / "bag").glob("*.mcap"))
    assert len(list(read_frames(mcap, max_frames=2))) == 2


def test_inspect_recording(synth_scene):
    info = inspect_recording(synth_scene / "bag")
    # 5 topics x 30 frames, /tf (2 odom->base_link per frame, map->odom every other frame + 1), 2 /tf_static
    assert info["message_count"] == 150 + 76 + 2
    assert info["topics"]["/camera/pose"] == {"type": "geometry_msgs/msg/PoseStamped", "count": 30}
    assert info["topics"]["/tf"] == {"type": "tf2_msgs/msg/TFMessage", "count": 76}
    assert info["duration_s"] == pytest.approx(2.9 + 0.02, abs=1e-3)    # /tf samples 10 ms around the images


def test_pose_nearest_within_tolerance(synth_scene, tmp_path):
    def shift(ms):
        def edit(topic, msg):
            if topic == "/camera/pose":
                ns = msg.header.stamp.nanosec + ms * 1_000_000
                msg.header.stamp = replace(msg.header.stamp, sec=msg.header.stamp.sec + ns // 10**9, nanosec=ns % 10**9)
            return msg
        return edit

    ref = list(read_frames(synth_scene / "bag", max_frames=5))
    near = list(read_frames(_copy_bag(synth_scene / "bag", tmp_path / "near", edit=shift(10), limit=5)))
    assert len(near) == 5
    np.testing.assert_allclose(near[2].T_world_cam, ref[2].T_world_cam)
    far = list(read_frames(_copy_bag(synth_scene / "bag", tmp_path / "far", edit=shift(300), limit=5)))
    # poses now sit 300 ms late: frames 0-2 have none within 50 ms and are skipped; frames 3-4 meet shifted ones
    assert len(far) == 2
    assert all(f.stamp_ns >= ref[3].stamp_ns for f in far)


def test_missing_topic_is_named(synth_scene, tmp_path):
    bag = _copy_bag(synth_scene / "bag", tmp_path / "nopose", drop=("/camera/pose",), limit=3)
    with pytest.raises(RecordingError) as exc:
        list(read_frames(bag))
    msg = str(exc.value)
    assert "missing required topic pose (/camera/pose)" in msg and "/camera/color/image_raw" in msg
    assert "\n" not in msg
    # the optional instance topic may be missing
    bag2 = _copy_bag(synth_scene / "bag", tmp_path / "noinst", drop=("/camera/instances/image_raw",), limit=3)
    frames = list(read_frames(bag2))
    assert len(frames) == 3 and frames[0].gt_instances is None


def test_unknown_encoding(synth_scene, tmp_path):
    def edit(topic, msg):
        if topic == "/camera/depth/image_raw":
            msg.encoding = "8UC3"
        return msg

    bag = _copy_bag(synth_scene / "bag", tmp_path / "enc", edit=edit, limit=2)
    with pytest.raises(RecordingError, match="unknown depth encoding '8UC3'"):
        list(read_frames(bag))


def test_colour_and_depth_decoding():
    Image, Header, Time = (STORE.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    hdr = Header(stamp=Time(sec=0, nanosec=0), frame_id="c")
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 12), np.uint8)  # step with 3 bytes of row padding
    padded[:, :9] = rgb[:, :, ::-1].reshape(2, 9)
    out = decode_image(Image(header=hdr, height=2, width=3, encoding="bgr8", is_bigendian=0, step=12, data=padded.ravel()))
    np.testing.assert_array_equal(out, rgb)
    mono = decode_image(Image(header=hdr, height=2, width=3, encoding="mono8", is_bigendian=0, step=3,
                              data=np.arange(6, dtype=np.uint8)))
    assert mono.shape == (2, 3, 3) and mono[1, 2].tolist() == [5, 5, 5]
    mm = np.array([[0, 1000, 2500]], np.uint16)
    big = mm.astype(">u2").view(np.uint8).ravel()
    d = decode_depth(Image(header=hdr, height=1, width=3, encoding="16UC1", is_bigendian=1, step=6, data=big))
    np.testing.assert_allclose(d, [[0.0, 1.0, 2.5]])
    f = np.array([[np.nan, 1.25]], np.float32)
    d = decode_depth(Image(header=hdr, height=1, width=2, encoding="32FC1", is_bigendian=0, step=8, data=f.view(np.uint8).ravel()))
    np.testing.assert_array_equal(d, [[0.0, 1.25]])
    with pytest.raises(RecordingError, match="unknown colour encoding 'yuv422'"):
        decode_image(Image(header=hdr, height=1, width=2, encoding="yuv422", is_bigendian=0, step=4, data=np.zeros(4, np.uint8)))
    with pytest.raises(RecordingError, match="too short"):
        decode_depth(Image(header=hdr, height=2, width=2, encoding="16UC1", is_bigendian=0, step=4, data=np.zeros(4, np.uint8)))


@pytest.fixture(scope="module")
def compressed_pair(tmp_path_factory):
    """The same tiny scene written raw and with --compressed, for each depth encoding."""
    from camfusion_ros.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("compressed")
    out = {}
    for enc in ("16UC1", "32FC1"):
        for comp in (False, True):
            cfg = SynthConfig(seed=2, frames=4, width=64, height=48, objects=2, depth_encoding=enc, compressed=comp)
            out[enc, comp] = generate(root / f"{enc}_{comp}", cfg) / "bag"
    return out


@pytest.mark.parametrize("enc", ["16UC1", "32FC1"])
def test_compressed_bag_reads_like_the_raw_bag(compressed_pair, enc):
    raw = list(read_frames(compressed_pair[enc, False]))
    info = inspect_recording(compressed_pair[enc, True])["topics"]
    assert info["/camera/color/image_raw/compressed"]["type"] == "sensor_msgs/msg/CompressedImage"
    assert info["/camera/depth/image_raw/compressedDepth"]["type"] == "sensor_msgs/msg/CompressedImage"
    assert "/camera/color/image_raw" not in info                 # read through the /compressed fallback
    comp = list(read_frames(compressed_pair[enc, True]))
    named = list(read_frames(compressed_pair[enc, True], topics=RecordingTopics(
        color="/camera/color/image_raw/compressed", depth="/camera/depth/image_raw/compressedDepth")))
    assert len(raw) == len(comp) == len(named) == 4
    for r, c, n in zip(raw, comp, named):
        c.validate()
        assert r.stamp_ns == c.stamp_ns and c.frame_id == r.frame_id
        np.testing.assert_array_equal(c.T_world_cam, r.T_world_cam)
        np.testing.assert_array_equal(c.K, r.K)
        np.testing.assert_array_equal(c.gt_instances, r.gt_instances)
        assert c.rgb.shape == r.rgb.shape and np.abs(c.rgb.astype(int) - r.rgb).mean() < 4     # JPEG 95
        if enc == "16UC1":
            np.testing.assert_array_equal(c.depth, r.depth)                                # PNG: exact mm
        else:
            step = r.depth ** 2 / 10100.0                                                   # inverse-depth quantum
            assert np.all(np.abs(c.depth - r.depth) <= 0.51 * step + 1e-5)
        np.testing.assert_array_equal(n.depth, c.depth)


def test_corrupt_compressed_payloads_skip_their_frames_and_are_counted(compressed_pair, tmp_path, caplog):
    seen = {"c": 0, "d": 0}

    def edit(topic, msg):
        if topic.endswith("/compressed"):
            seen["c"] += 1
            if seen["c"] == 2:                                       # frame 1: truncated JPEG
                msg.data = msg.data[: len(msg.data) // 2].copy()
        elif topic.endswith("/compressedDepth"):
            seen["d"] += 1
            if seen["d"] == 3:                                       # frame 2: the PNG replaced by noise
                noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8)
                msg.data = np.concatenate([msg.data[:12], noise])
        return msg

    good = list(read_frames(compressed_pair["16UC1", True]))
    bag = _copy_bag(compressed_pair["16UC1", True], tmp_path / "bad", edit=edit)
    with caplog.at_level("WARNING", logger="camfusion_ros.core.recording"):
        frames = list(read_frames(bag))
    assert [f.stamp_ns for f in frames] == [good[0].stamp_ns, good[3].stamp_ns]
    text = caplog.text
    assert "/camera/color/image_raw/compressed: colour: JPEG payload has no end-of-image marker" in text
    assert ("/camera/depth/image_raw/compressedDepth: compressedDepth payload has no PNG after its 12-byte header"
            in text)
    assert "2 frame(s) skipped" in text


def test_rvl_compressed_depth_is_refused_with_the_reason(compressed_pair, tmp_path):
    def edit(topic, msg):
        if topic.endswith("/compressedDepth"):
            msg.format = "16UC1; compressedDepth rvl"
        return msg

    bag = _copy_bag(compressed_pair["16UC1", True], tmp_path / "rvl", edit=edit, limit=2)
    with pytest.raises(RecordingError, match=r"/camera/depth/image_raw/compressedDepth: compressedDepth 'rvl' is not "
                                             r"supported") as exc:
        list(read_frames(bag))
    assert "\n" not in str(exc.value)


def _damaged(synth_scene, tmp_path, how):
    src = synth_scene / "bag"
    dst = tmp_path / how
    dst.mkdir()
    (dst / "metadata.yaml").write_bytes((src / "metadata.yaml").read_bytes())
    mcap = next(src.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "garbage-early":  # a damaged record near the start, magic intact
        data[len(data) // 10: len(data) // 10 + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    else:  # overwrite a stretch in the middle of the data with garbage
        rng = np.random.default_rng(0)
        mid = len(data) // 3
        data[mid: mid + 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        data[:8] = b"\x00" * 8  # and the magic
    (dst / mcap.name).write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how", ["truncated", "corrupt", "garbage-early"])
def test_damaged_bags_raise_recording_error(synth_scene, tmp_path, how):
    bag = _damaged(synth_scene, tmp_path, how)
    with pytest.raises(RecordingError) as exc:
        list(read_frames(bag))
    assert "corrupt or truncated" in str(exc.value) and "\n" not in str(exc.value)


def test_not_a_bag(tmp_path):
    with pytest.raises(RecordingError, match="recording not found"):
        list(read_frames(tmp_path / "nothing"))
    with pytest.raises(RecordingError, match="not a rosbag2 recording"):
        list(read_frames(tmp_path))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(RecordingError, match="not a rosbag2 recording"):
        inspect_recording(tmp_path / "x.txt")
    (tmp_path / "junk.mcap").write_bytes(b"garbage" * 100)
    with pytest.raises(RecordingError, match="corrupt or truncated"):
        inspect_recording(tmp_path / "junk.mcap")


def test_exit_on_error(capsys):
    with pytest.raises(SystemExit) as exc:
        with exit_on_error():
            raise RecordingError("bad bag")
    assert exc.value.code == 2 and capsys.readouterr().err == "error: bad bag\n"
    with pytest.raises(KeyError):  # other errors are not swallowed
        with exit_on_error():
            raise KeyError("x")


def test_cli_facing_path_prints_one_line(synth_scene, tmp_path):
    bag = _damaged(synth_scene, tmp_path, "truncated")
    script = textwrap.dedent(f"""
        from camfusion_ros.core.recording import exit_on_error, read_frames
        with exit_on_error():
            for frame in read_frames({str(bag)!r}):
                pass
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    from scipy.spatial.transform import Rotation

    return float(np.degrees(Rotation.from_matrix(Ra.T @ Rb).magnitude()))


def test_tf_poses_equal_the_pose_topic(synth_scene, tmp_path):
    """pose_source tf: map <- optical frame from /tf + /tf_static, interpolated at the image stamps."""
    from camfusion_ros.core.transforms import OPTICAL_ROTATION, TransformBuffer, transform_matrix

    by_topic = list(read_frames(synth_scene / "bag"))
    by_tf = list(read_frames(synth_scene / "bag", pose_source="tf"))
    assert [f.stamp_ns for f in by_tf] == [f.stamp_ns for f in by_topic] and len(by_tf) == 30
    for a, b in zip(by_topic, by_tf):
        assert np.linalg.norm(a.T_world_cam[:3, 3] - b.T_world_cam[:3, 3]) < 1e-3
        assert _angle_deg(a.T_world_cam[:3, :3], b.T_world_cam[:3, :3]) < 0.1
    # The bag is what a robot records: /tf never stamped at an image stamp, /tf_static from two latched
    # publishers stamped before the recording, and the samples around an image a visible motion apart
    images = {f.stamp_ns for f in by_topic}
    buf, statics, tf_stamps = TransformBuffer(cache_ns=None), [], set()
    with AnyReader([synth_scene / "bag"], default_typestore=STORE) as reader:
        for c, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic in ("/tf", "/tf_static")]):
            msg = reader.deserialize(raw, c.msgtype)
            buf.add_message(msg, static=c.topic == "/tf_static")
            for ts in msg.transforms:
                stamp = ts.header.stamp.sec * 10**9 + ts.header.stamp.nanosec
                if c.topic == "/tf_static":
                    statics.append((ts.header.frame_id, ts.child_frame_id, stamp))
                else:
                    tf_stamps.add(stamp)
    assert not tf_stamps & images and len(tf_stamps) == 2 * len(images)
    assert sorted(s[:2] for s in statics) == [("base_link", "camera_link"), ("camera_link", "camera_color_optical_frame")]
    assert all(s[2] < min(images) for s in statics)
    off = [np.linalg.norm(buf.lookup("map", "camera_color_optical_frame", f.stamp_ns - 10_000_000)[:3, 3]
                          - f.T_world_cam[:3, 3]) for f in by_topic[1:]]
    assert np.median(off) > 0.01        # holding the nearest sample would be centimetres off
    # camera_frame overrides the image's frame_id: the camera body frame differs by the REP-103 rotation
    body = list(read_frames(synth_scene / "bag", pose_source="tf", camera_frame="camera_link", max_frames=2))
    T_link_opt = np.linalg.inv(body[1].T_world_cam) @ by_tf[1].T_world_cam
    np.testing.assert_allclose(T_link_opt[:3, :3], transform_matrix((0, 0, 0), OPTICAL_ROTATION)[:3, :3], atol=1e-9)


def test_tf_only_bag_and_frames_without_a_transform(synth_scene, tmp_path, caplog):
    ref = list(read_frames(synth_scene / "bag", max_frames=6))
    tf_only = _copy_bag(synth_scene / "bag", tmp_path / "tf_only", drop=("/camera/pose",))
    with pytest.raises(RecordingError, match=r"missing required topic pose \(/camera/pose\)"):
        list(read_frames(tf_only))
    got = list(read_frames(tf_only, pose_source="tf", max_frames=6))
    np.testing.assert_allclose([f.T_world_cam for f in got], [f.T_world_cam for f in ref], atol=1e-9)
    # odom -> base_link stops after frame 2: frames 3.. would need extrapolation and are skipped, with the reason
    cut = ref[2].stamp_ns + 10_000_000

    def edit(topic, msg):
        if topic == "/tf" and msg.transforms[0].child_frame_id == "base_link":
            st = msg.transforms[0].header.stamp
            return None if st.sec * 10**9 + st.nanosec > cut else msg
        return msg

    short = _copy_bag(synth_scene / "bag", tmp_path / "short", edit=edit)
    with caplog.at_level("WARNING"):
        frames = list(read_frames(short, pose_source="tf", max_frames=6))
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in ref[:3]]
    assert "no transform map <- camera_color_optical_frame" in caplog.text and "extrapolation into the future" in caplog.text
    no_tf = _copy_bag(synth_scene / "bag", tmp_path / "no_tf", drop=("/tf", "/tf_static"), limit=2)
    with pytest.raises(RecordingError, match=r"missing required topic tf \(/tf or /tf_static\)"):
        list(read_frames(no_tf, pose_source="tf"))
    with pytest.raises(RecordingError, match="pose source must be one of topic, tf"):
        list(read_frames(no_tf, pose_source="odom"))


@pytest.mark.parametrize("claimed", [10**10, 10**15])
def test_mcap_records_claiming_huge_lengths_are_one_error_without_a_memory_blow_up(synth_scene, tmp_path, claimed,
                                                                                  peak_rss_growth_mib):
    """A damaged or hostile MCAP whose first record claims 10 GB / 1 PB: one RecordingError, nothing allocated."""
    import struct

    src = synth_scene / "bag"
    dst = tmp_path / "lying"
    dst.mkdir()
    (dst / "metadata.yaml").write_bytes((src / "metadata.yaml").read_bytes())
    mcap = next(src.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    struct.pack_into("<Q", data, 9, claimed)        # after the 8-byte magic: opcode (1 byte), then the length
    (dst / mcap.name).write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="corrupt or truncated") as exc:
        list(read_frames(dst))
    assert "\n" not in str(exc.value)
    assert peak_rss_growth_mib() < 100
