"""What the dataset converters share: errors, frame selection, stamps and the bag-writing loop."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from camfusion_ros.core.output_folder import claim_outputs
from camfusion_ros.datasets.bag_writer import BagWriter
from camfusion_ros.datasets.gt_writer import RECORDING_ENTRIES

__all__ = ["ConversionError", "ConvertConfig", "ConvertedFrame", "select_frames", "write_bag", "read_image",
           "read_matrix", "numbered", "fix_rotation"]

START_NS = 1_700_000_000_000_000_000


class ConversionError(ValueError):
    """A source tree that cannot be converted; the message names the file and the problem."""


@dataclass
class ConvertConfig:
    max_frames: Optional[int] = None
    stride: int = 1
    fps: float = 30.0                      # source frame rate; stamps = frame number / fps
    depth_encoding: str = "16UC1"
    compressed: bool = False               # CompressedImage JPEG colour + compressedDepth PNG depth (image_transport)
    progress: bool = True


@dataclass
class ConvertedFrame:
    number: int                            # the source frame number (sets the stamp)
    rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    instances: Optional[np.ndarray] = None     # int32 (H, W) ground-truth instance ids, 0 = none (write_bag with_instances)


def select_frames(numbers: Sequence[int], cfg: ConvertConfig) -> list[int]:
    if cfg.stride < 1:
        raise ConversionError(f"--stride must be >= 1, got {cfg.stride}")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise ConversionError(f"--max-frames must be >= 1, got {cfg.max_frames}")
    chosen = list(numbers)[:: cfg.stride]
    return chosen[: cfg.max_frames] if cfg.max_frames is not None else chosen


def write_bag(out_dir: Path, numbers: Sequence[int], load: Callable[[int], Optional[ConvertedFrame]],
              cfg: ConvertConfig, desc: str, with_instances: bool = False) -> dict:
    """Load and write the chosen frames; ``load`` returns None to skip a frame (counted).

    ``with_instances``: the bag gets the ground-truth instance topic, from each frame's ``instances``."""
    claim_outputs(out_dir, "camfusion-convert", RECORDING_ENTRIES)
    period = 1e9 / cfg.fps
    written = skipped = 0
    numbers = list(numbers)
    with BagWriter(Path(out_dir) / "bag", depth_encoding=cfg.depth_encoding, with_instances=with_instances,
                   compressed=cfg.compressed) as writer:
        for n in tqdm(numbers, desc=desc, unit="frame", disable=not cfg.progress or len(numbers) < 20, file=sys.stderr):
            frame = load(n)
            if frame is None:
                skipped += 1
                continue
            writer.write_frame(START_NS + int(round(frame.number * period)), frame.rgb, frame.depth_m, frame.K,
                               frame.T_world_cam, frame.instances)
            written += 1
    if written == 0:
        raise ConversionError(f"no frame could be converted ({skipped} skipped)")
    return {"frames": written, "skipped": skipped, "bag": str(Path(out_dir) / "bag")}


def read_image(path: Path, flags: int) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise ConversionError(f"missing image: {path}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ConversionError(f"cannot decode image: {path}")
    return img


def read_matrix(path: Path, shape=(4, 4)) -> np.ndarray:
    if not path.is_file():
        raise ConversionError(f"missing file: {path}")
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise ConversionError(f"{path}: not a numeric matrix ({exc})") from None
    if m.size != int(np.prod(shape)):
        raise ConversionError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got {m.size} numbers")
    return m.reshape(shape)


def numbered(files: Iterable[Path], prefix: str = "") -> dict[int, Path]:
    """Files named <prefix><number>.<ext> by number (sorted numerically, not lexically)."""
    out = {}
    for f in files:
        stem = f.stem[len(prefix):] if f.stem.startswith(prefix) else None
        if stem is not None and stem.isdigit():
            out[int(stem)] = f
    return dict(sorted(out.items()))


def fix_rotation(T: np.ndarray) -> np.ndarray:
    """Re-orthonormalise a pose read from text (rounded digits) so quaternions are unit."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    out = T.copy()
    out[:3, :3] = R
    out[3] = (0, 0, 0, 1)
    return out


