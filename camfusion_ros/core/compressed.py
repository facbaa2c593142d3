"""image_transport's compressed payloads <-> numpy, written once for the bag reader, the node and the bag writer.

Robot bags and live cameras mostly carry colour as ``sensor_msgs/CompressedImage`` from image_transport's
``compressed`` plugin (JPEG or PNG; ``format`` like ``"rgb8; jpeg compressed bgr8"``) and depth from the
``compressed_depth`` plugin (``format`` like ``"16UC1; compressedDepth png"``; payload = a 12-byte header
``int32 format, float32 A, float32 B`` then a PNG). Everything here is pure (format string + bytes in, numpy out;
OpenCV does the codecs, no ROS import), so ``core/recording.py`` and ``nodes/conversions.py`` decode identically.

Every rejection raises ``CompressedImageError`` whose ``reason`` is a drop-counter key: ``bad_compressed``
(a payload that is damaged or not what its format says) or ``encoding`` (a format this package does not decode,
such as RVL depth), so one bad message is a counted drop, never a crash.
"""
from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = ["CompressedImageError", "COMPRESSED_MSGTYPE", "TRANSPORTS", "TRANSPORT_SUFFIX", "MAX_PIXELS",
           "decode_color", "decode_depth", "encode_color", "encode_depth", "is_compressed_topic", "input_topic"]

COMPRESSED_MSGTYPE = "sensor_msgs/msg/CompressedImage"
TRANSPORTS = ("auto", "raw", "compressed")
# image_transport's topic suffix per stream: <image topic>/compressed, <depth topic>/compressedDepth
TRANSPORT_SUFFIX = {"color": "/compressed", "depth": "/compressedDepth"}
MAX_PIXELS = 1 << 26          # 67 Mpx: far above any camera; a header declaring more is refused before decoding
DEPTH_HEADER = struct.Struct("<iff")   # compressed_depth's ConfigHeader: format, depthParam[2]
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_CODECS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_RAW_DEPTH = ("16UC1", "mono16")        # millimetres
_INV_DEPTH = ("32FC1",)                 # quantised inverse depth (metres after decoding)


class CompressedImageError(ValueError):
    """A compressed payload that cannot be decoded; ``reason`` is ``bad_compressed`` or ``encoding``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _bytes(data: Any) -> bytes:
    """The payload as bytes, whatever container the message library uses (numpy, array.array, bytes, list)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).tobytes()
    try:
        return memoryview(data).cast("B").tobytes()
    except TypeError:
        return bytes(np.asarray(data, dtype=np.uint8).reshape(-1))


def _declared_size(buf: bytes) -> tuple[str, int, int]:
    """(codec, width, height) read from the PNG/JPEG header alone, so a hostile header never reaches the decoder."""
    if buf.startswith(_PNG_MAGIC):
        if len(buf) < 24 or buf[12:16] != b"IHDR":
            raise CompressedImageError("bad_compressed", "PNG payload without its IHDR header (truncated?)")
        w, h = struct.unpack(">II", buf[16:24])
        return "png", w, h
    if buf.startswith(_JPEG_MAGIC):
        i, n = 2, len(buf)
        while i + 4 <= n:
            if buf[i] != 0xFF:
                break
            marker = buf[i + 1]
            if marker == 0xFF:              # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:   # markers without a length
                i += 2
                continue
            length = int.from_bytes(buf[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn: the frame header
                if i + 9 > n:
                    break
                h, w = struct.unpack(">HH", buf[i + 5:i + 9])
                return "jpeg", w, h
            i += 2 + length
        raise CompressedImageError("bad_compressed", "JPEG payload without a frame header (truncated or damaged)")
    head = buf[:8].hex() or "nothing"
    raise CompressedImageError("bad_compressed", f"payload is neither JPEG nor PNG ({len(buf)} bytes, starts {head})")


def _decode(buf: bytes, flags: int, what: str) -> np.ndarray:
    """OpenCV's decoder behind the checks it does not do: size cap, JPEG truncation, a clear error."""
    import cv2

    codec, w, h = _declared_size(buf)
    if w <= 0 or h <= 0 or w * h > MAX_PIXELS:
        raise CompressedImageError("bad_compressed", f"{what}: {codec.upper()} header declares {w}x{h} pixels "
                                                     f"(accepted: 1 to {MAX_PIXELS})")
    # libjpeg fills a truncated JPEG with grey and only warns: refuse it rather than map a half-grey frame
    if codec == "jpeg" and not buf.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise CompressedImageError("bad_compressed", f"{what}: JPEG payload has no end-of-image marker (truncated)")
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags)
    except cv2.error as exc:
        raise CompressedImageError("bad_compressed", f"{what}: OpenCV cannot decode the {codec.upper()} payload "
                                                     f"({' '.join(str(exc).split())[-120:]})") from None
    if img is None or img.size == 0:
        raise CompressedImageError("bad_compressed", f"{what}: corrupt {codec.upper()} payload "
                                                     f"({len(buf)} bytes; OpenCV could not decode it)")
    if img.shape[:2] != (h, w):
        raise CompressedImageError("bad_compressed", f"{what}: decoded {img.shape[1]}x{img.shape[0]}, "
                                                     f"header says {w}x{h}")
    return img


def _show(fmt: str) -> str:
    """A format string quoted for an error line, cut short: it comes from whoever published the message."""
    text = repr(fmt)
    return text if len(text) <= 80 else text[:77] + "..."


def _split_format(fmt: str) -> tuple[str, str]:
    """``"rgb8; jpeg compressed bgr8"`` -> (``"rgb8"``, ``"jpeg compressed bgr8"``); no ``;`` -> ("", fmt)."""
    fmt = (fmt or "").strip()
    if ";" not in fmt:
        return "", fmt
    src, _, rest = fmt.partition(";")
    return src.strip(), rest.strip()


def decode_color(fmt: str, data: Any) -> np.ndarray:
    """uint8 (H, W, 3) RGB from a ``compressed`` plugin payload (JPEG or PNG; any bit depth, mono or colour).

    The decoded buffer is in OpenCV's BGR order. image_transport encodes colour as ``bgr8`` and says so
    (``"rgb8; jpeg compressed bgr8"``); formats without a target (``"rgb8; jpeg compressed "``, older
    publishers) hold the source encoding's order; a bare ``"jpeg"`` / ``"png"`` is an ordinary image file.
    """
    src, rest = _split_format(fmt)
    words = rest.lower().replace(";", " ").split()
    if "compresseddepth" in words:
        raise CompressedImageError("encoding", f"format {_show(fmt)} is a compressedDepth payload, not a colour image "
                                               f"(is the depth topic configured as colour?)")
    named = [w for w in words if w in _CODECS or w in ("rvl", "tiff", "webp", "bmp", "jp2")]
    if named and named[0] not in _CODECS:
        raise CompressedImageError("encoding", f"unsupported colour compression {named[0]!r} in format {_show(fmt)} "
                                               f"(supported: jpeg, png)")
    import cv2

    # 3-channel 8-bit whatever the file holds (mono, 16-bit, alpha); pixels as stored (no EXIF rotation)
    img = _decode(_bytes(data), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, "colour")
    low = rest.lower()
    target = low.split("compressed", 1)[1].strip() if "compressed" in low else ""
    order = target or src.lower() or "bgr"     # the channel order the decoded buffer holds
    return np.ascontiguousarray(img if order.startswith("rgb") else img[:, :, ::-1])


def _depth_codec(fmt: str) -> str:
    """The codec after ``compressedDepth`` ("" = png, the only codec of older publishers)."""
    low = fmt.lower()
    if "compresseddepth" not in low:
        return "png"
    return low.split("compresseddepth", 1)[1].strip() or "png"


def decode_depth(fmt: str, data: Any) -> np.ndarray:
    """float32 metres (0 = no reading) from a ``compressedDepth`` payload, or a plain 16-bit PNG (``compressed``).

    16UC1 holds millimetres. 32FC1 holds quantised inverse depth ``v``: depth = A / (v - B) with A, B from the
    header, v = 0 meaning no reading. For 16UC1 upstream never fills A and B, so the encoding named in the
    format string, not the header, decides how to decode.
    """
    enc, _ = _split_format(fmt)
    enc = enc or "16UC1"
    codec = _depth_codec(fmt)
    if codec != "png":
        hint = "; republish with compressed_depth's format png" if codec == "rvl" else ""
        raise CompressedImageError("encoding", f"compressedDepth {_show(codec)} is not supported (format {_show(fmt)}; "
                                               f"supported: png){hint}")
    if enc not in _RAW_DEPTH + _INV_DEPTH:
        raise CompressedImageError("encoding", f"unsupported compressed depth encoding {_show(enc)} in format "
                                               f"{_show(fmt)} (supported: 16UC1 mm, 32FC1 m)")
    buf = _bytes(data)
    a = b = 0.0
    if buf[DEPTH_HEADER.size:DEPTH_HEADER.size + 8] == _PNG_MAGIC:    # compressed_depth: header, then PNG
        _, a, b = DEPTH_HEADER.unpack(buf[:DEPTH_HEADER.size])
        png = buf[DEPTH_HEADER.size:]
    elif buf.startswith(_PNG_MAGIC) and enc in _RAW_DEPTH:             # compressed plugin: a bare 16-bit PNG
        png = buf
    elif len(buf) < DEPTH_HEADER.size:
        raise CompressedImageError("bad_compressed", f"compressedDepth payload of {len(buf)} bytes is shorter than "
                                                     f"its {DEPTH_HEADER.size}-byte header")
    else:
        raise CompressedImageError("bad_compressed", f"compressedDepth payload has no PNG after its "
                                                     f"{DEPTH_HEADER.size}-byte header ({len(buf)} bytes)")
    import cv2

    v = _decode(png, cv2.IMREAD_UNCHANGED, "depth")
    if v.ndim != 2 or v.dtype != np.uint16:
        raise CompressedImageError("bad_compressed", f"depth PNG holds {v.dtype} with shape {v.shape}, "
                                                     f"expected one 16-bit channel")
    if enc in _RAW_DEPTH:
        return v.astype(np.float32) / np.float32(1000.0)
    if not (np.isfinite(a) and np.isfinite(b) and a > 0):
        raise CompressedImageError("bad_compressed", f"32FC1 compressedDepth header has unusable quantisation "
                                                     f"A={a}, B={b}")
    q = v.astype(np.float32) - np.float32(b)
    out = np.zeros(v.shape, np.float32)
    ok = (v > 0) & (q > 0)
    out[ok] = np.float32(a) / q[ok]
    return out


def encode_color(rgb: np.ndarray, codec: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """(format, payload) as image_transport's compressed plugin writes an rgb8 image: converted to BGR, then encoded."""
    import cv2

    if codec not in ("jpeg", "png"):
        raise ValueError(f"colour codec must be jpeg or png, got {_show(codec)}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {codec}")
    return f"rgb8; {codec} compressed bgr8", buf.tobytes()


def encode_depth(depth_m: np.ndarray, encoding: str = "16UC1", depth_max: float = 10.0,
                 quantization: float = 100.0) -> tuple[str, bytes]:
    """(format, payload) as compressed_depth writes it: 12-byte header, then a 16-bit PNG.

    16UC1: rounded millimetres. 32FC1: v = A / depth + B with A = q (q + 1), B = 1 - A / depth_max (upstream's
    defaults q = 100, depth_max = 10 m). Missing readings and depths beyond ``depth_max`` become 0 in both.
    """
    import cv2

    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    valid = np.isfinite(d) & (d > 0) & (d < depth_max)
    if encoding in _RAW_DEPTH:
        v = np.zeros(d.shape, np.uint16)
        v[valid] = np.clip(np.rint(d[valid] * 1000.0), 0, 65535).astype(np.uint16)
        header = DEPTH_HEADER.pack(0, 0.0, 0.0)       # upstream leaves A, B unset for 16UC1
    elif encoding in _INV_DEPTH:
        a = np.float32(quantization * (quantization + 1.0))
        b = np.float32(1.0 - a / depth_max)
        v = np.zeros(d.shape, np.uint16)
        v[valid] = np.clip(np.rint(a / d[valid] + b), 1, 65535).astype(np.uint16)
        header = DEPTH_HEADER.pack(0, float(a), float(b))
    else:
        raise ValueError(f"compressed depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    ok, buf = cv2.imencode(".png", v, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {v.shape} depth image as PNG")
    return f"{encoding}; compressedDepth png", header + buf.tobytes()


def is_compressed_topic(topic: str, stream: str) -> bool:
    """Whether a topic name is an image_transport compressed topic of this stream (by its suffix)."""
    suffixes = ("/compressedDepth", "/compressed") if stream == "depth" else ("/compressed",)
    return topic.endswith(suffixes)


def input_topic(topic: str, transport: str, stream: str) -> tuple[str, bool]:
    """(topic to read, compressed?) for a configured topic and transport (``auto`` | ``raw`` | ``compressed``).

    ``auto`` goes by the topic's suffix; ``compressed`` on a base topic appends image_transport's suffix
    (``/compressed`` for colour, ``/compressedDepth`` for depth), as ``image_transport`` subscribers do.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"{stream}_transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if stream not in TRANSPORT_SUFFIX:
        raise ValueError(f"no compressed transport for stream {stream!r}")
    if transport == "raw":
        return topic, False
    if is_compressed_topic(topic, stream):
        return topic, True
    if transport == "compressed":
        return topic.rstrip("/") + TRANSPORT_SUFFIX[stream], True
    return topic, False
