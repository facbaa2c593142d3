"""camfusion-relabel: re-fuse and re-label a saved map from its stored views (no recording needed)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from camfusion_ros.cli.common import add_config_args, config_from_args, quiet_libraries, user_errors
from camfusion_ros.core.map_store import check_replaceable, load_map
from camfusion_ros.core.pipeline import MappingPipeline
from camfusion_ros.core.recording import exit_on_error


def relabel(map_dir: str, cfg, out: str | None = None) -> tuple[MappingPipeline, dict]:
    """Every instance re-fused with cfg's fusion and re-labelled with cfg's vocabulary."""
    t0 = time.perf_counter()
    check_replaceable(Path(out or map_dir))          # before the work: never over a user's files
    snap = load_map(map_dir)
    pipe = MappingPipeline(cfg)
    pipe.load_snapshot(snap)
    pipe.set_fuser(pipe.fuser)          # marks every instance for re-fusion
    fused = pipe.fuse_pending()
    pipe.save(out or map_dir)
    return pipe, {"map": str(out or map_dir), "instances": len(fused), "fusion": cfg.fusion.method,
                  "vocabulary_size": len(pipe.vocabulary.names), "seconds": round(time.perf_counter() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="camfusion-relabel", description=__doc__)
    p.add_argument("map", help="map folder written by camfusion-map or the node's save_map")
    p.add_argument("--out", help="write the result here instead of updating the map in place")
    add_config_args(p)
    args = p.parse_args(argv)
    quiet_libraries()
    with exit_on_error(*user_errors()):
        cfg = config_from_args(args, base=load_map(args.map).meta.get("config", {}))
        _, summary = relabel(args.map, cfg, args.out)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
