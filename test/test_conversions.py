"""Message <-> numpy conversions of the node: every robot encoding, every rejection."""
import math

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from camfusion_ros.nodes.conversions import (ConversionError, camera_info_to_K, cloud_from_msg, cloud_to_msg,
                                             color_from_msg, depth_from_msg, image_to_numpy, instance_to_msg,
                                             instances_from_msg, matrix_to_pose, ns_to_stamp, numpy_to_image,
                                             pose_to_matrix, stamp_to_ns)
from camfusion_ros.nodes.markers import BOX_NS, TEXT_NS, MarkerBuilder

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("enc,arr", [
    ("rgb8", RNG.integers(0, 255, (5, 7, 3), dtype=np.uint8)),
    ("bgr8", RNG.integers(0, 255, (5, 7, 3), dtype=np.uint8)),
    ("mono8", RNG.integers(0, 255, (5, 7), dtype=np.uint8)),
    ("16UC1", RNG.integers(0, 65535, (5, 7), dtype=np.uint16)),
    ("32FC1", RNG.random((5, 7), dtype=np.float32)),
])
def test_round_trip_every_encoding(enc, arr):
    msg = numpy_to_image(arr, enc)
    assert msg.step == 7 * arr.itemsize * (3 if arr.ndim == 3 else 1)
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_bgr_is_swapped_to_rgb_and_mono_expanded():
    rgb = RNG.integers(0, 255, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(color_from_msg(numpy_to_image(rgb[:, :, ::-1], "bgr8")), rgb)
    np.testing.assert_array_equal(color_from_msg(numpy_to_image(rgb, "rgb8")), rgb)
    g = rgb[:, :, 0]
    out = color_from_msg(numpy_to_image(g, "mono8"))
    assert out.shape == (4, 6, 3) and np.all(out[:, :, 2] == g)


def test_row_padding_and_big_endian_are_honoured():
    d = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=10)
    rows = [d[r].astype(">u2").tobytes() + b"\xff\xff" for r in range(3)]
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(image_to_numpy(msg), d)
    dm = depth_from_msg(msg)
    assert dm.dtype == np.float32 and dm[2, 3] == pytest.approx(1.1)


def test_depth_32f_invalid_values_become_zero():
    d = np.array([[1.5, np.nan], [np.inf, -2.0]], dtype=np.float32)
    out = depth_from_msg(numpy_to_image(d, "32FC1"))
    np.testing.assert_array_equal(out, [[1.5, 0], [0, 0]])


@pytest.mark.parametrize("bad", [np.zeros((3, 3), np.float32), np.full((3, 3), np.nan, np.float32)])
def test_depth_without_any_reading_is_rejected(bad):
    with pytest.raises(ConversionError) as e:
        depth_from_msg(numpy_to_image(bad, "32FC1"))
    assert e.value.reason == "depth"


@pytest.mark.parametrize("enc", ["rgba16", "yuv422", "", "8UC3"])
def test_unknown_encodings_rejected_with_reason(enc):
    msg = Image(height=2, width=2, encoding=enc, step=6)
    msg.data = bytes(12)
    with pytest.raises(ConversionError, match="unsupported image encoding") as e:
        color_from_msg(msg)
    assert e.value.reason == "encoding"


def test_depth_encoding_on_colour_topic_rejected():
    with pytest.raises(ConversionError) as e:
        color_from_msg(numpy_to_image(np.ones((2, 2), np.float32), "32FC1"))
    assert e.value.reason == "encoding"


def test_size_mismatch_and_empty_rejected():
    msg = numpy_to_image(np.ones((4, 4, 3), np.uint8), "rgb8")
    msg.data = bytes(len(msg.data) - 3)
    with pytest.raises(ConversionError, match="expected 48") as e:
        image_to_numpy(msg)
    assert e.value.reason == "size"
    short = Image(height=4, width=4, encoding="rgb8", step=5)
    short.data = bytes(20)
    with pytest.raises(ConversionError, match="shorter") as e:
        image_to_numpy(short)
    assert e.value.reason == "size"
    for empty in (Image(height=0, width=0, encoding="rgb8"), Image(height=2, width=2, encoding="rgb8", step=6)):
        with pytest.raises(ConversionError) as e:
            image_to_numpy(empty)
        assert e.value.reason == "empty"


def _compressed(fmt: str, data: bytes):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = data                          # rclpy stores it as array.array('B'), as a subscription delivers it
    return msg


def test_compressed_colour_and_depth_messages_decode_like_the_bag_reader():
    from camfusion_ros.core.compressed import encode_color, encode_depth

    red = np.zeros((6, 8, 3), np.uint8)
    red[..., 0] = 255
    out = color_from_msg(_compressed(*encode_color(red, "jpeg")))
    assert out.shape == (6, 8, 3) and out[..., 0].min() > 240 and out[..., 1:].max() < 15   # red stays red
    np.testing.assert_array_equal(color_from_msg(_compressed(*encode_color(red, "png"))), red)
    mm = RNG.integers(300, 9000, (5, 7)).astype(np.uint16)
    mm[0, 0] = 0
    out = depth_from_msg(_compressed(*encode_depth(mm / 1000.0, "16UC1")))
    np.testing.assert_array_equal(out, mm / np.float32(1000.0))
    d = RNG.uniform(0.5, 8.0, (5, 7))
    out = depth_from_msg(_compressed(*encode_depth(d, "32FC1")))
    assert np.all(np.abs(out - d) <= d ** 2 / 10100 * 0.51 + 1e-5)


def test_corrupt_or_unsupported_compressed_messages_are_drops_with_a_reason():
    from camfusion_ros.core.compressed import encode_color, encode_depth

    fmt, jpg = encode_color(RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8), "jpeg")
    for bad in (jpg[: len(jpg) // 2], b"not an image at all", b""):
        with pytest.raises(ConversionError) as e:
            color_from_msg(_compressed(fmt, bad))
        assert e.value.reason == "bad_compressed"
    dfmt, dep = encode_depth(np.ones((4, 4)), "16UC1")
    with pytest.raises(ConversionError) as e:
        depth_from_msg(_compressed(dfmt, dep[:12]))
    assert e.value.reason == "bad_compressed"
    with pytest.raises(ConversionError, match="rvl") as e:
        depth_from_msg(_compressed("16UC1; compressedDepth rvl", dep))
    assert e.value.reason == "encoding"
    _, zeros = encode_depth(np.zeros((4, 4)), "16UC1")        # decodes, but holds no reading
    with pytest.raises(ConversionError) as e:
        depth_from_msg(_compressed(dfmt, zeros))
    assert e.value.reason == "depth"


def test_image_input_picks_the_message_type_by_transport():
    from sensor_msgs.msg import CompressedImage

    from camfusion_ros.nodes.conversions import image_input

    assert image_input("/cam/image_raw", "auto", "color") == (Image, "/cam/image_raw")
    assert image_input("/cam/image_raw/compressed", "auto", "color") == (CompressedImage, "/cam/image_raw/compressed")
    assert image_input("/cam/depth", "compressed", "depth") == (CompressedImage, "/cam/depth/compressedDepth")
    assert image_input("/cam/depth/compressedDepth", "raw", "depth") == (Image, "/cam/depth/compressedDepth")


def test_instances_32sc1():
    ids = np.array([[0, 5], [70000, -1]], dtype=np.int32)
    np.testing.assert_array_equal(instances_from_msg(numpy_to_image(ids, "32SC1")), ids)


def test_camera_info_zero_focal_rejected():
    info = CameraInfo()
    info.k = [100.0, 0.0, 50.0, 0.0, 110.0, 40.0, 0.0, 0.0, 1.0]
    K = camera_info_to_K(info)
    assert K.shape == (3, 3) and K[1, 1] == 110.0
    for bad in ([0.0] * 9, [100.0, 0, 50, 0, float("nan"), 40, 0, 0, 1]):
        info.k = bad
        with pytest.raises(ConversionError, match="intrinsics") as e:
            camera_info_to_K(info)
        assert e.value.reason == "camera_info"


def test_pose_stamped_and_odometry_to_matrix():
    T = np.eye(4)
    c, s = math.cos(0.3), math.sin(0.3)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [1.0, -2.0, 0.5]
    ps = PoseStamped(pose=matrix_to_pose(T))
    np.testing.assert_allclose(pose_to_matrix(ps), T, atol=1e-9)
    od = Odometry()
    od.pose.pose = matrix_to_pose(T)
    np.testing.assert_allclose(pose_to_matrix(od), T, atol=1e-9)


@pytest.mark.parametrize("q,t", [((0, 0, 0, 2.0), (0, 0, 0)), ((0, 0, 0, 0), (0, 0, 0)),
                                 ((float("nan"), 0, 0, 1), (0, 0, 0)), ((0, 0, 0, 1), (float("inf"), 0, 0))])
def test_bad_poses_rejected(q, t):
    ps = PoseStamped()
    ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = q
    ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = t
    with pytest.raises(ConversionError) as e:
        pose_to_matrix(ps)
    assert e.value.reason == "pose"


def test_stamp_round_trip():
    assert stamp_to_ns(ns_to_stamp(1_234_567_890_123)) == 1_234_567_890_123


def _rec(iid, label="chair"):
    return {"id": iid, "label": label, "score": 0.4, "top_labels": [label, "table"], "top_scores": [0.4, 0.1],
            "embedding": np.eye(4, dtype=np.float32)[iid % 4], "num_views": 3, "num_points": 99,
            "centroid": [1, 2, 3], "bbox_min": [0.5, 1.5, 2.5], "bbox_max": [1.5, 2.5, 3.5],
            "first_seen_ns": 5, "last_seen_ns": 2_000_000_007}


def test_instance_record_to_msg():
    m = instance_to_msg(_rec(7), embedding_model="PE-Core-T-16-384/random", fusion_method="avg")
    assert (m.id, m.label, m.num_views, m.num_points) == (7, "chair", 3, 99)
    assert list(m.top_labels) == ["chair", "table"] and m.top_scores[1] == pytest.approx(0.1)
    assert list(m.embedding) == [0, 0, 0, 1.0] and m.embedding_model.endswith("/random")
    assert (m.centroid.x, m.bbox_max.z) == (1.0, 3.5)
    assert (m.last_seen.sec, m.last_seen.nanosec) == (2, 7)


def test_point_cloud_fields_round_trip():
    xyz = RNG.random((50, 3)).astype(np.float32)
    rgb = RNG.integers(0, 255, (50, 3), dtype=np.uint8)
    inst = RNG.integers(-1, 9, 50).astype(np.int32)
    lab = RNG.integers(-1, 4, 50).astype(np.int32)
    msg = cloud_to_msg(xyz, rgb, inst, lab, Header(frame_id="map"))
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "instance", "label"]
    assert msg.width == 50 and len(msg.data) == 50 * msg.point_step
    back = cloud_from_msg(msg)
    np.testing.assert_array_equal(back["xyz"], xyz)
    np.testing.assert_array_equal(back["rgb"], rgb)
    np.testing.assert_array_equal(back["instance"], inst)
    np.testing.assert_array_equal(back["label"], lab)


def test_markers_stable_ids_and_deletions():
    mb = MarkerBuilder()
    h = Header(frame_id="map")
    first = mb.build([_rec(1), _rec(2, "table")], h)
    assert sorted((m.ns, m.id) for m in first.markers) == sorted(
        [(BOX_NS, 1), (TEXT_NS, 1), (BOX_NS, 2), (TEXT_NS, 2)])
    box = next(m for m in first.markers if m.ns == BOX_NS and m.id == 1)
    assert box.type == Marker.CUBE and box.scale.x == pytest.approx(1.0) and box.pose.position.y == pytest.approx(2.0)
    assert any(m.ns == TEXT_NS and m.id == 2 and "table" in m.text for m in first.markers)
    second = mb.build([_rec(2, "table")], h, removed=[1])
    deletes = [(m.ns, m.id) for m in second.markers if m.action == Marker.DELETE]
    assert sorted(deletes) == sorted([(BOX_NS, 1), (TEXT_NS, 1)])
    assert mb.build([_rec(2, "table")], h).markers and not [m for m in mb.build([_rec(2)], h).markers
                                                           if m.action == Marker.DELETE]
