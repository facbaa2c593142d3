"""core/compressed.py: image_transport's compressed / compressedDepth payloads, decoded with real OpenCV.

Payloads are built both with this module's encoders and by hand the way the upstream C++ plugins build
them (cv::imencode of a BGR image; a 12-byte ConfigHeader then a 16-bit PNG), so the decoder is checked
against the wire format, not only against itself.
"""
import struct

import cv2
import numpy as np
import pytest

from camfusion_ros.core.compressed import (CompressedImageError, decode_color, decode_depth, encode_color,
                                           encode_depth, input_topic)

RNG = np.random.default_rng(0)
RED = np.zeros((12, 16, 3), np.uint8)
RED[..., 0] = 255                      # pure red in RGB
A, B = 100.0 * 101.0, 1.0 - 100.0 * 101.0 / 10.0      # upstream defaults: quantization 100, depth_max 10 m


def smooth_rgb(h=48, w=64):
    """A natural-ish image (JPEG's error on random noise says nothing)."""
    return cv2.GaussianBlur(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8), (9, 9), 0)


def upstream_depth_payload(v: np.ndarray, a: float = 0.0, b: float = 0.0) -> bytes:
    """compressed_depth_image_transport's payload: ConfigHeader {int32 format; float depthParam[2]} then PNG."""
    ok, png = cv2.imencode(".png", v.astype(np.uint16))
    assert ok
    return struct.pack("<iff", 0, a, b) + png.tobytes()


def test_jpeg_colour_round_trip_is_close_and_png_exact():
    rgb = smooth_rgb()
    fmt, data = encode_color(rgb, "jpeg", 95)
    assert fmt == "rgb8; jpeg compressed bgr8" and data[:3] == b"\xff\xd8\xff"
    out = decode_color(fmt, data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb)
    assert err.mean() < 4.0 and err.max() < 64          # quality 95 with 4:2:0 chroma; a channel swap is ~10
    fmt, data = encode_color(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_color(fmt, data), rgb)
    # every container a message library hands over: numpy (rosbags), array.array (rclpy), bytes, list
    import array

    for container in (np.frombuffer(data, np.uint8), array.array("B", data), bytearray(data), list(data)):
        np.testing.assert_array_equal(decode_color(fmt, container), rgb)


@pytest.mark.parametrize("fmt,buffer_order", [
    ("rgb8; jpeg compressed bgr8", "bgr"),   # image_transport today: rgb8 converted to bgr8, then encoded
    ("bgr8; jpeg compressed bgr8", "bgr"),
    ("rgb8; png compressed bgr8", "bgr"),
    ("jpeg", "bgr"),                         # a bare format: an ordinary image file
    ("png", "bgr"),
    ("rgb8; jpeg compressed ", "rgb"),       # older publishers: the rgb8 buffer encoded as it was
    ("bgr8; png compressed ", "bgr"),
])
def test_pure_red_decodes_red_whatever_the_format_says(fmt, buffer_order):
    buf = RED[:, :, ::-1] if buffer_order == "bgr" else RED     # what was handed to cv::imencode
    ext = ".png" if "png" in fmt else ".jpg"
    ok, data = cv2.imencode(ext, np.ascontiguousarray(buf), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out = decode_color(fmt, data.tobytes())
    assert out.shape == RED.shape
    r, g, b = (int(np.median(out[..., c])) for c in range(3))
    assert r > 240 and g < 15 and b < 15, (fmt, r, g, b)


def test_mono_and_16bit_colour_payloads_become_rgb8():
    gray = smooth_rgb()[..., 1]
    ok, data = cv2.imencode(".png", gray)
    out = decode_color("mono8; png compressed ", data.tobytes())
    assert out.shape == gray.shape + (3,) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    ok, data = cv2.imencode(".png", (RED[:, :, ::-1].astype(np.uint16) * 257))
    assert decode_color("rgb16; png compressed bgr16", data.tobytes())[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("fmt", ["16UC1; compressedDepth png", "16UC1; compressedDepth", "mono16; compressedDepth"])
def test_16uc1_compressed_depth_is_exact_millimetres_and_ignores_the_header_floats(fmt):
    mm = RNG.integers(0, 9000, (30, 40)).astype(np.uint16)
    mm[:3] = 0                                              # no reading
    # upstream leaves depthParam unset for 16UC1: garbage there must not matter
    data = upstream_depth_payload(mm, a=float("nan"), b=-3.0e38)
    out = decode_depth(fmt, data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, mm.astype(np.float32) / np.float32(1000.0))
    assert np.all(out[:3] == 0)
    # our encoder writes the same payload (and drops depths beyond depth_max, as upstream does)
    d = mm / 1000.0
    d[5, 5] = 12.0
    fmt2, data2 = encode_depth(d, "16UC1")
    assert fmt2 == "16UC1; compressedDepth png" and len(data2) > 12 and data2[12:16] == b"\x89PNG"
    expect = mm.astype(np.float32) / np.float32(1000.0)
    expect[5, 5] = 0.0
    np.testing.assert_array_equal(decode_depth(fmt2, data2), expect)


def test_plain_16bit_png_from_the_compressed_plugin_decodes_too():
    mm = RNG.integers(1, 5000, (6, 9)).astype(np.uint16)
    ok, png = cv2.imencode(".png", mm)
    np.testing.assert_array_equal(decode_depth("16UC1; png compressed ", png.tobytes()), mm / np.float32(1000.0))


def test_32fc1_is_quantised_inverse_depth_within_its_step_and_zero_is_no_reading():
    d = RNG.uniform(0.3, 9.5, (40, 50))
    d[0, :5] = [0.0, np.nan, np.inf, -1.0, 11.0]           # none, none, none, none, beyond depth_max
    # the upstream encoder: v = A / d + B stored as uint16 (truncated), 0 = no reading
    valid = np.isfinite(d) & (d > 0) & (d < 10.0)
    v = np.zeros(d.shape, np.uint16)
    v[valid] = (A / d[valid] + B).astype(np.uint16)
    out = decode_depth("32FC1; compressedDepth png", upstream_depth_payload(v, A, B))
    assert out.dtype == np.float32 and np.all(out[0, :5] == 0)
    step = d[valid] ** 2 / A                               # one quantisation step at that depth
    assert np.all(np.abs(out[valid] - d[valid]) <= step * 1.01 + 1e-5)
    # our encoder rounds instead of truncating: half a step
    fmt, data = encode_depth(d, "32FC1")
    assert fmt == "32FC1; compressedDepth png"
    _, a, b = struct.unpack("<iff", data[:12])
    assert a == pytest.approx(A) and b == pytest.approx(B)
    out = decode_depth(fmt, data)
    assert np.all(out[0, :5] == 0)
    assert np.all(np.abs(out[valid] - d[valid]) <= step * 0.51 + 1e-5)


def test_rvl_and_other_unsupported_formats_are_refused_by_name():
    data = upstream_depth_payload(np.ones((4, 4)))
    with pytest.raises(CompressedImageError, match="compressedDepth 'rvl' is not supported") as exc:
        decode_depth("16UC1; compressedDepth rvl", data)
    assert exc.value.reason == "encoding" and "png" in str(exc.value)
    with pytest.raises(CompressedImageError, match="unsupported compressed depth encoding '8UC3'") as exc:
        decode_depth("8UC3; compressedDepth png", data)
    assert exc.value.reason == "encoding"
    with pytest.raises(CompressedImageError, match="is a compressedDepth payload") as exc:
        decode_color("16UC1; compressedDepth png", data)
    assert exc.value.reason == "encoding"
    with pytest.raises(CompressedImageError, match="unsupported colour compression 'tiff'"):
        decode_color("rgb8; tiff compressed bgr8", b"II*\x00")


def _corrupt(kind: str) -> tuple[str, str, bytes]:
    """(which decoder, format, payload) of one damaged payload."""
    fmt_c, jpg = encode_color(smooth_rgb(), "jpeg")
    _, png = encode_color(smooth_rgb(), "png")
    fmt_d, dep = encode_depth(RNG.uniform(0.5, 5.0, (30, 40)), "16UC1")
    if kind == "garbage":
        return "color", fmt_c, bytes(RNG.integers(0, 256, 500, dtype=np.uint8))
    if kind == "empty":
        return "color", fmt_c, b""
    if kind == "truncated_jpeg":
        return "color", fmt_c, jpg[: len(jpg) * 2 // 3]
    if kind == "truncated_png":
        return "color", "png", png[: len(png) // 2]
    if kind == "damaged_png":                  # bytes flipped inside the image data: CRC / zlib failure
        bad = bytearray(png)
        bad[60:80] = bytes(255 - x for x in bad[60:80])
        return "color", "png", bytes(bad)
    if kind == "huge_header":                  # IHDR claims 100000 x 100000: refused before any allocation
        bad = bytearray(png)
        bad[16:24] = struct.pack(">II", 100_000, 100_000)
        return "color", "png", bytes(bad)
    if kind == "depth_header_only":
        return "depth", fmt_d, dep[:12]
    if kind == "depth_short":
        return "depth", fmt_d, dep[:7]
    if kind == "depth_truncated_png":
        return "depth", fmt_d, dep[: len(dep) // 2]
    if kind == "depth_8bit_png":
        ok, p8 = cv2.imencode(".png", np.ones((4, 4), np.uint8))
        return "depth", fmt_d, dep[:12] + p8.tobytes()
    if kind == "depth_bad_quantisation":
        _, d32 = encode_depth(np.ones((4, 4)), "32FC1")
        return "depth", "32FC1; compressedDepth png", struct.pack("<iff", 0, 0.0, 0.0) + d32[12:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated_jpeg", "truncated_png", "damaged_png", "huge_header",
                                  "depth_header_only", "depth_short", "depth_truncated_png", "depth_8bit_png",
                                  "depth_bad_quantisation"])
def test_corrupt_payloads_raise_one_clear_error(kind):
    which, fmt, data = _corrupt(kind)
    decode = decode_color if which == "color" else decode_depth
    with pytest.raises(CompressedImageError) as exc:
        decode(fmt, data)
    assert exc.value.reason == "bad_compressed"
    msg = str(exc.value)
    assert msg and "\n" not in msg and len(msg) < 300


def test_input_topic_follows_image_transport_naming():
    base, comp = "/camera/color/image_raw", "/camera/color/image_raw/compressed"
    assert input_topic(base, "auto", "color") == (base, False)
    assert input_topic(comp, "auto", "color") == (comp, True)
    assert input_topic(base, "compressed", "color") == (comp, True)
    assert input_topic(comp, "compressed", "color") == (comp, True)
    assert input_topic(comp, "raw", "color") == (comp, False)
    d = "/camera/depth/image_raw"
    assert input_topic(d, "compressed", "depth") == (d + "/compressedDepth", True)
    assert input_topic(d + "/compressedDepth", "auto", "depth") == (d + "/compressedDepth", True)
    assert input_topic(d, "auto", "depth") == (d, False)
    with pytest.raises(ValueError, match="depth_transport must be one of auto, raw, compressed"):
        input_topic(d, "theora", "depth")
