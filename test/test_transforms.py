"""core/transforms.py: the tf2-like buffer behind pose_source tf (interpolation, chains, statics, refusals)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camfusion_ros.core.recording import ros_typestore
from camfusion_ros.core.transforms import OPTICAL_ROTATION, TransformBuffer, TransformError, transform_matrix

S = 1_000_000_000
T0 = 1_700_000_000 * S


def yaw(deg: float) -> tuple:
    return tuple(Rotation.from_euler("z", deg, degrees=True).as_quat())


def robot(buf: TransformBuffer, static_stamp: int = T0 - 5 * S) -> None:
    """map -> odom (slow), odom -> base_link (moving), base_link -> camera_link -> optical (two static publishers)."""
    buf.set_transform("map", "odom", T0, (1.0, 2.0, 0.0), yaw(30))
    buf.set_transform("map", "odom", T0 + 2 * S, (1.0, 2.0, 0.0), yaw(30))
    for i in range(5):
        buf.set_transform("odom", "base_link", T0 + i * S // 2, (0.5 * i, 0.0, 0.0), yaw(10 * i))
    buf.set_transform("base_link", "camera_link", static_stamp, (0.1, 0.0, 0.3), yaw(0), static=True)
    buf.set_transform("camera_link", "camera_optical", static_stamp, (0.0, 0.0, 0.0), OPTICAL_ROTATION, static=True)


def test_interpolation_is_linear_in_translation_and_slerp_in_rotation():
    buf = TransformBuffer()
    buf.set_transform("odom", "base", T0, (0, 0, 0), yaw(0))
    buf.set_transform("odom", "base", T0 + S, (2.0, -4.0, 1.0), yaw(90))
    T = buf.lookup("odom", "base", T0 + S // 4)
    np.testing.assert_allclose(T[:3, 3], [0.5, -1.0, 0.25], atol=1e-12)
    assert Rotation.from_matrix(T[:3, :3]).as_euler("zyx", degrees=True)[0] == pytest.approx(22.5)
    # the samples themselves come back exactly
    np.testing.assert_allclose(buf.lookup("odom", "base", T0 + S), transform_matrix((2.0, -4.0, 1.0), yaw(90)),
                               atol=1e-12)


def test_chain_composes_through_intermediate_frames_and_the_optical_rotation():
    buf = TransformBuffer()
    robot(buf)
    t = T0 + 3 * S // 4                          # between two odom->base samples, 1.5 of them
    T = buf.lookup("map", "camera_optical", t)
    odom_base = transform_matrix((0.75, 0.0, 0.0), yaw(15))
    want = (transform_matrix((1.0, 2.0, 0.0), yaw(30)) @ odom_base @ transform_matrix((0.1, 0.0, 0.3), yaw(0))
            @ transform_matrix((0, 0, 0), OPTICAL_ROTATION))
    np.testing.assert_allclose(T, want, atol=1e-12)
    # REP-103: the optical z axis (forward) is the body's x axis, optical x (right) is body -y, y (down) is -z
    R = buf.lookup("base_link", "camera_optical", t)[:3, :3]
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    # the other direction is the inverse, a sibling lookup goes through the common ancestor
    np.testing.assert_allclose(buf.lookup("camera_optical", "map", t) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("odom", "camera_link", t),
                               odom_base @ transform_matrix((0.1, 0.0, 0.3), yaw(0)), atol=1e-12)


def test_static_transforms_from_several_publishers_merge_and_are_timeless():
    buf = TransformBuffer()
    robot(buf, static_stamp=T0 - 3600 * S)       # latched an hour before the recording
    for t in (T0, T0 + S + 123, T0 + 2 * S):
        assert buf.can_transform("map", "camera_optical", t)
    # static alone answers any time, far outside the dynamic data
    np.testing.assert_allclose(buf.lookup("base_link", "camera_optical", T0 + 10**6 * S)[:3, 3], [0.1, 0, 0.3])
    # a re-sent static replaces its value (the latest publisher wins for that child)
    buf.set_transform("base_link", "camera_link", T0 - S, (0.2, 0.0, 0.3), yaw(0), static=True)
    np.testing.assert_allclose(buf.lookup("base_link", "camera_link", T0)[:3, 3], [0.2, 0, 0.3])


def test_extrapolation_is_refused_beyond_the_tolerance():
    buf = TransformBuffer()
    robot(buf)
    last = T0 + 2 * S                            # newest odom->base sample
    with pytest.raises(TransformError, match="extrapolation into the future") as exc:
        buf.lookup("map", "camera_optical", last + 50_000_000)
    assert exc.value.kind == "extrapolation" and "base_link" in str(exc.value)
    with pytest.raises(TransformError, match="extrapolation into the past"):
        buf.lookup("map", "camera_optical", T0 - 1)
    # within the tolerance the end sample is held (no extrapolated motion)
    T = buf.lookup("map", "camera_optical", last + 5_000_000, tolerance_ns=10_000_000)
    np.testing.assert_allclose(T, buf.lookup("map", "camera_optical", last), atol=1e-12)
    with pytest.raises(TransformError):
        buf.lookup("map", "camera_optical", last + 20_000_000, tolerance_ns=10_000_000)
    # a link with a single sample only answers at its own stamp
    one = TransformBuffer()
    one.set_transform("a", "b", T0, (1, 0, 0), yaw(0))
    assert one.can_transform("a", "b", T0) and not one.can_transform("a", "b", T0 + 1)


def test_out_of_order_repeated_and_old_samples():
    ordered, shuffled = TransformBuffer(), TransformBuffer(cache_ns=10 * S)
    samples = [(T0 + i * S // 10, (0.1 * i, 0.01 * i * i, 0.0), yaw(3 * i)) for i in range(10)]
    for s in samples:
        ordered.set_transform("odom", "base", *s)
    for i in (3, 0, 9, 5, 1, 8, 2, 7, 4, 6):
        assert shuffled.set_transform("odom", "base", *samples[i])
    for t in range(T0, T0 + 9 * S // 10, 37_000_000):
        np.testing.assert_allclose(shuffled.lookup("odom", "base", t), ordered.lookup("odom", "base", t), atol=1e-12)
    assert not shuffled.set_transform("odom", "base", samples[4][0], (9, 9, 9), yaw(0))      # repeated stamp: ignored
    assert shuffled.ignored["repeated"] == 1
    np.testing.assert_allclose(shuffled.lookup("odom", "base", samples[4][0])[:3, 3], samples[4][1])
    # the cache keeps cache_ns of data: a newer sample prunes the oldest, and older data is refused
    assert shuffled.set_transform("odom", "base", T0 + 11 * S, (0, 0, 0), yaw(0))
    assert not shuffled.can_transform("odom", "base", T0 + S // 2)
    assert not shuffled.set_transform("odom", "base", T0, (0, 0, 0), yaw(0)) and shuffled.ignored["old"] == 1
    assert shuffled.latest_ns == T0 + 11 * S


def test_wrong_direction_and_unknown_frames_are_caught():
    buf = TransformBuffer()
    buf.set_transform("map", "base_link", T0, (1, 0, 0), yaw(90))
    buf.set_transform("map", "base_link", T0 + S, (2, 0, 0), yaw(90))
    buf.set_transform("base_link", "camera_link", T0, (0.1, 0, 0.3), yaw(0), static=True)
    assert buf.can_transform("map", "camera_link", T0 + S // 2)
    # the optical link published the wrong way round (parent optical, child camera_link): camera_link is
    # re-parented under the optical frame, which is the root of a second tree; the lookup fails loudly
    # instead of returning a transform of the wrong direction
    buf.set_transform("camera_optical", "camera_link", T0, (0, 0, 0), OPTICAL_ROTATION, static=True)
    with pytest.raises(TransformError, match="not part of the same tree") as exc:
        buf.lookup("map", "camera_optical", T0 + S // 2)
    assert exc.value.kind == "connectivity"
    with pytest.raises(TransformError, match="does not exist") as exc:
        buf.lookup("map", "nowhere", T0)
    assert exc.value.kind == "unknown_frame"
    # T_target_source maps points of the source frame into the target: a point 1 m ahead of base_link
    # (its x axis) lies at +y in map, since base_link is yawed 90 degrees
    p = buf.lookup("map", "base_link", T0) @ [1, 0, 0, 1]
    np.testing.assert_allclose(p[:3], [1, 1, 0], atol=1e-12)
    p = buf.lookup("base_link", "map", T0) @ [1, 1, 0, 1]
    np.testing.assert_allclose(p[:3], [1, 0, 0], atol=1e-12)


def test_latest_common_time_and_invalid_samples():
    buf = TransformBuffer()
    robot(buf)
    buf.set_transform("map", "odom", T0 + 5 * S, (1.0, 2.0, 0.0), yaw(30))     # odom runs ahead of base_link
    latest = buf.lookup("map", "camera_optical", 0)
    np.testing.assert_allclose(latest, buf.lookup("map", "camera_optical", T0 + 2 * S), atol=1e-12)
    for bad in [("map", "map", (0, 0, 0), yaw(0)), ("", "x", (0, 0, 0), yaw(0)),
                ("map", "x", (np.nan, 0, 0), yaw(0)), ("map", "x", (0, 0, 0), (0, 0, 0, 2.0))]:
        with pytest.raises(TransformError) as exc:
            buf.set_transform(bad[0], bad[1], T0, bad[2], bad[3])
        assert exc.value.kind == "invalid"
    # ROS 1 style names ('/map') are the same frames
    np.testing.assert_allclose(buf.lookup("/map", "/odom", T0), buf.lookup("map", "odom", T0))


def test_add_message_takes_a_real_tfmessage_and_skips_bad_transforms():
    store = ros_typestore()
    t = store.types
    Time, Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
    V3, Q, Tr, TS = (t[n] for n in ("geometry_msgs/msg/Vector3", "geometry_msgs/msg/Quaternion",
                                    "geometry_msgs/msg/Transform", "geometry_msgs/msg/TransformStamped"))

    def ts(parent, child, sec, x, q):
        return TS(header=Header(stamp=Time(sec=sec, nanosec=0), frame_id=parent), child_frame_id=child,
                  transform=Tr(translation=V3(x=x, y=0.0, z=0.0), rotation=Q(x=q[0], y=q[1], z=q[2], w=q[3])))

    msg = t["tf2_msgs/msg/TFMessage"](transforms=[ts("odom", "base", 10, 0.0, yaw(0)), ts("odom", "base", 11, 1.0, yaw(0)),
                                                  ts("odom", "bad", 10, 0.0, (0.0, 0.0, 0.0, 0.0))])
    # the message survives a CDR round trip as a bag stores it
    msg = store.deserialize_cdr(store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"), "tf2_msgs/msg/TFMessage")
    buf = TransformBuffer()
    stored, errors = buf.add_message(msg)
    assert stored == 2 and len(errors) == 1 and "quaternion" in errors[0]
    assert buf.lookup("odom", "base", 10 * S + S // 2)[0, 3] == pytest.approx(0.5)


def test_a_loop_in_the_tree_is_one_connectivity_error():
    """Links published so that a -> b -> c -> a: any lookup through them stops with an error, never spins."""
    buf = TransformBuffer()
    buf.set_transform("a", "b", T0, (1, 0, 0), yaw(0), static=True)
    buf.set_transform("b", "c", T0, (1, 0, 0), yaw(0), static=True)
    buf.set_transform("c", "a", T0, (1, 0, 0), yaw(0), static=True)
    buf.set_transform("world", "x", T0, (0, 0, 0), yaw(0), static=True)
    for target, source in (("world", "a"), ("a", "x")):
        with pytest.raises(TransformError, match="loop") as exc:
            buf.lookup(target, source, T0)
        assert exc.value.kind == "connectivity"
