"""camfusion-convert: turn Replica (NICE-SLAM renders), ScanNet (exported) or ScanNet++ scenes into rosbag2 + gt/."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from camfusion_ros.core.output_folder import OutputFolderError
from camfusion_ros.core.recording import exit_on_error
from camfusion_ros.resources import config_file
from camfusion_ros.datasets.bag_writer import DEPTH_ENCODINGS, BagWriterError
from camfusion_ros.datasets.converter import ConversionError, ConvertConfig


def _parser() -> argparse.ArgumentParser:
    d = ConvertConfig()
    p = argparse.ArgumentParser(prog="camfusion-convert", description=__doc__)
    sub = p.add_subparsers(dest="dataset", required=True)
    for name in ("replica", "scannet"):
        s = sub.add_parser(name, help=f"convert one {name} scene folder")
        s.add_argument("src", type=Path, help="scene folder (see camfusion_ros/datasets/%s.py for the layout)" % name)
        s.add_argument("--out", required=True, type=Path, help="output directory (gets bag/ and gt/)")
        s.add_argument("--max-frames", type=int, default=d.max_frames)
        s.add_argument("--stride", type=int, default=d.stride)
        s.add_argument("--fps", type=float, default=d.fps, help="source frame rate (sets the stamps)")
        s.add_argument("--depth-encoding", choices=DEPTH_ENCODINGS, default=d.depth_encoding)
        s.add_argument("--compressed", action="store_true",
                       help="write colour as CompressedImage JPEG (<colour topic>/compressed) and depth as "
                            "compressedDepth PNG (<depth topic>/compressedDepth), as image_transport records them")
        s.add_argument("--no-progress", action="store_true")
        if name == "replica":
            s.add_argument("--mesh", type=Path, help="scene mesh (default SRC/../<scene>_mesh.ply)")
            s.add_argument("--semantic-gt", type=Path, help="per-vertex class ids (default SRC/../semantic_gt/<scene>.txt)")
            s.add_argument("--eval-info", type=Path, default=REPLICA_EVAL_INFO,
                           help="OVO's replica_eval_info.yaml mapping Replica class ids to its 51 evaluated classes "
                                "(default: the copy shipped in config/datasets/); 'none' keeps raw ids")
        if name == "scannet":
            s.add_argument("--axis-align", action="store_true",
                           help="apply the axisAlignment of SRC/<scene>.txt to the poses and gt/ alike (the frame "
                                "ScanNet200's preprocessing gives its GT meshes); default: the unaligned frame "
                                "the exported poses live in")
            s.add_argument("--label-map", type=Path, metavar="TSV",
                           help="scannetv2-labels.combined.tsv: label instances by their aggregation.json raw "
                                "category through it (default: majority NYU40 label of *_vh_clean_2.labels.ply)")
            s.add_argument("--label-set", choices=("scannet200", "nyu40"),
                           help="with --label-map: ScanNet200 ('id' column, the 200 benchmark classes; default) "
                                "or NYU40 ('nyu40id'); instances outside the set are left unlabelled")
    from camfusion_ros.datasets.scannetpp import add_parser as add_scannetpp_parser

    add_scannetpp_parser(sub)                # its options: camfusion_ros/datasets/scannetpp.py
    return p


# OVO's class list for Replica (MIT licence, unchanged), so converted scenes use the paper's classes.
REPLICA_EVAL_INFO = config_file("datasets", "replica_eval_info.yaml")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dataset == "scannetpp":
        from camfusion_ros.datasets.scannetpp import run_cli

        return run_cli(args)
    cfg = ConvertConfig(max_frames=args.max_frames, stride=args.stride, fps=args.fps,
                        depth_encoding=args.depth_encoding, compressed=args.compressed,
                        progress=not args.no_progress)
    with exit_on_error(ConversionError, BagWriterError, OutputFolderError, OSError):
        if not args.src.is_dir():
            raise ConversionError(f"source folder not found: {args.src}")
        if args.fps <= 0:
            raise ConversionError(f"--fps must be positive, got {args.fps}")
        if args.dataset == "replica":
            from camfusion_ros.datasets.replica import convert_replica

            summary = convert_replica(args.src, args.out, cfg, mesh=args.mesh, semantic_gt=args.semantic_gt,
                                      eval_info=None if str(args.eval_info) == "none" else args.eval_info)
        else:
            from camfusion_ros.datasets.scannet import convert_scannet

            summary = convert_scannet(args.src, args.out, cfg, axis_align=args.axis_align,
                                      label_map=args.label_map, label_set=args.label_set)
    if summary["skipped"]:
        print(f"warning: skipped {summary['skipped']} frame(s) with invalid (non-finite) poses", file=sys.stderr)
    dropped = summary.get("gt_unlabelled_instances") or {}
    if any(dropped.values()):
        print("warning: left unlabelled: " + ", ".join(f"{n} instance(s) ({why})" for why, n in dropped.items() if n),
              file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
