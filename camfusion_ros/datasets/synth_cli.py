"""camfusion-synth: render a synthetic posed RGB-D recording with exact ground truth."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from camfusion_ros.core.output_folder import OutputFolderError
from camfusion_ros.core.recording import exit_on_error
from camfusion_ros.datasets.bag_writer import DEPTH_ENCODINGS, BagWriterError
from camfusion_ros.datasets.synth import SynthConfig, SynthError, run


def _parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    p = argparse.ArgumentParser(prog="camfusion-synth", description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="output directory (gets bag/ and gt/)")
    p.add_argument("--frames", type=int, default=d.frames)
    p.add_argument("--objects", type=int, default=d.objects)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--fps", type=float, default=d.fps)
    p.add_argument("--classes", type=Path, help="text file, one class name per line (default: built-in indoor list)")
    p.add_argument("--depth-encoding", choices=DEPTH_ENCODINGS, default=d.depth_encoding)
    p.add_argument("--compressed", action="store_true",
                   help="write colour as CompressedImage JPEG on <colour topic>/compressed and depth as "
                        "compressedDepth PNG on <depth topic>/compressedDepth, as image_transport records them")
    return p


def read_class_file(path: Path) -> list[str]:
    if not path.is_file():
        raise SynthError(f"class file not found: {path}")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SynthError(f"cannot read class file {path}: {exc}") from None
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise SynthError(f"class file {path} lists no classes")
    return names


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with exit_on_error(SynthError, BagWriterError, OutputFolderError, OSError):
        classes = read_class_file(args.classes) if args.classes else None
        cfg = SynthConfig(frames=args.frames, objects=args.objects, width=args.width, height=args.height,
                          seed=args.seed, classes=classes, depth_encoding=args.depth_encoding, fps=args.fps,
                          compressed=args.compressed)
        summary = run(args.out, cfg)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
