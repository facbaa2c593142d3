"""camfusion-bench: per-stage speed, fusion scaling, live-node rate and memory, as one JSON file."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from camfusion_ros.child_processes import stop_on_signals
from camfusion_ros.cli_errors import report_error
from camfusion_ros.bench.suites import SUITES, check_finite, sanitize


class BenchError(ValueError):
    """A benchmark request that cannot run (e.g. --device cuda without a GPU)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camfusion-bench", description=__doc__)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too (folders are created)")
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--data", type=Path, default=None,
                   help="keep / reuse the synthetic recordings in this folder (default: a temporary folder)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only write the suite's recordings into --data (e.g. before carrying them to a GPU host)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with stop_on_signals():            # SIGTERM (timeout, CI) still stops the nodes a suite started
        return _main(args)


def _main(args) -> int:
    try:
        import torch

        from camfusion_ros.bench.suites import run_suite

        dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda" and not torch.cuda.is_available():
            raise BenchError("--device cuda asked for, but torch sees no CUDA device")
        if args.out is not None and args.out.exists() and args.out.is_dir():
            raise BenchError(f"--out {args.out} is a directory; give a file name")
        if args.prepare_only:
            if args.data is None:
                raise BenchError("--prepare-only needs --data FOLDER")
            from camfusion_ros.bench.suites import prepare_recordings

            for p in prepare_recordings(SUITES[args.suite](), args.data):
                print(p)
            return 0
        result = run_suite(SUITES[args.suite](), torch.device(dev), data=args.data)
        bad = check_finite(result)
        if bad:
            print(f"warning: non-finite values replaced by null at {', '.join(bad[:5])}", file=sys.stderr)
            result = sanitize(result)
        text = json.dumps(result, indent=1, default=str, allow_nan=False)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(args.out)
        print(text)
        return 0
    except BenchError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
