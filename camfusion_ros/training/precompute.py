"""``camfusion-precompute``: descriptor shards from recordings, with ground-truth instance masks.

For every frame of a recording (a folder with ``bag/`` and ``gt/`` from ``camfusion-synth`` /
``camfusion-convert``) the ground-truth instance image gives one mask per instance; the descriptor extractor
(TextRegion on the VLM by default) turns each (image, mask) into a view descriptor; the ``--max-views`` most
visible views of each instance are kept (training/precompute_scene.py). With ``--augment-copies N`` each frame
is also extracted N more times after the paper's augmentation (random crop, hue and saturation changes); every
view records its source frame (``view_source``), so the trainer keeps a frame's copies on one side. One shard
per recording, ``OUT/SPLIT/<scene>.safetensors``; then ``OUT/SPLIT/manifest.json`` (scenes, shards, counts,
failures, settings, the split's classes) and ``OUT/text_embeddings.safetensors`` (the classes of every split
written to OUT, same model only).

Scenes: recording folders as arguments, and/or ``--recordings-root DIR`` (every subfolder is a recording, or
only those ``--scene-list FILE`` names; without a root, the list holds recording paths). A scene is named
after its folder; scenes are sorted by name.

Scale, restarts, failures:

- Under ``torchrun`` each process (rank r of W) computes every W-th scene of the sorted list
  (``scenes[r::W]``) on ``cuda:LOCAL_RANK`` (CPU without CUDA); a gloo process group only exchanges small
  results. The augmentation's random draws depend on the seed and the scene's name alone, so any number of
  processes writes the same descriptors as one.
- Shards are written atomically. A shard that exists, reads back and was made with the same settings (model,
  weights, method, augmentation, view and frame options; kept in the shard's metadata) is skipped, so a killed
  run restarted with the same command only computes the rest.
- A scene that fails (unreadable bag, missing ground truth, no usable mask) is reported on stderr and in the
  manifest, and the others go on; the exit status is 1 when scenes failed, 2 for errors that stop the run
  before any scene (bad options, an output folder holding a user's files, a model that cannot be loaded).

Commands (all processes must see the output folder and the recordings at the same paths: a shared file system
across machines; give every restart the same options, or finished shards count as made with other settings)::

    # one process
    camfusion-precompute --recordings-root scans --scene-list splits/train.txt --out out/descriptors/scannetpp \\
        --split train --augment-copies 2
    # one machine, 8 GPUs (one process per GPU)
    torchrun --standalone --nproc_per_node 8 -m camfusion_ros.training.precompute --recordings-root scans \\
        --scene-list splits/train.txt --out out/descriptors/scannetpp --split train --augment-copies 2
    # 4 machines x 8 GPUs: the same command on every machine (HOST: one of them, reachable from all)
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 --rdzv_id precompute \\
        -m camfusion_ros.training.precompute --recordings-root scans --scene-list splits/train.txt \\
        --out out/descriptors/scannetpp --split train --augment-copies 2

The processes talk over gloo (TCP; set ``GLOO_SOCKET_IFNAME`` to the network interface when a machine's host
name resolves to loopback). Rank r always gets the same scenes for the same split and world size; a restart
with another world size is still correct (finished shards are skipped wherever they were made). Ranks that
finish early wait for the others (at most ``--wait-hours``) before rank 0 writes the manifest and the text
embeddings; under torchrun a run with failed scenes ends with torchrun's own failure report (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from camfusion_ros.cli_errors import one_line, report_error
from camfusion_ros.training.precompute_scene import (  # noqa: F401 - the module's public names, kept here
    AugmentConfig, PrecomputeError, augment, locate_recording, precompute_recording, read_gt_classes, scene_seed)
from camfusion_ros.training.precompute_split import (
    MANIFEST, SETTINGS_KEY, Progress, Ranks, assign, class_union, find_scenes, finished_shard, rank_device,
    remove_stale_temporaries, settings_json, write_manifest)
from camfusion_ros.training.shards import TEXT_FILE, ShardError, read_text_embeddings, write_shard, write_text_embeddings

TOOL = "camfusion-precompute"


def text_embeddings_model(path: Path) -> str | None:
    """The model a text-embeddings file was made with (None: no file)."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return (f.metadata() or {}).get("model", "")
    except (SafetensorError, OSError) as e:
        raise ShardError(f"corrupt text embeddings {path}: {e}") from None


def check_text_model(root: Path, model_name: str) -> None:
    old = text_embeddings_model(root / TEXT_FILE)
    if old is not None and old != model_name:
        raise PrecomputeError(f"{root / TEXT_FILE} was made with {old!r}, not {model_name!r}; use another --out")


def update_text_embeddings(root: Path, names: list[str], vlm, model_name: str) -> Path:
    """Text embeddings for the union of the root's known classes and ``names`` (same model only)."""
    from camfusion_ros.core.vocabulary import Vocabulary

    path = root / TEXT_FILE
    check_text_model(root, model_name)
    known: list[str] = read_text_embeddings(path)[0] if path.is_file() else []
    allnames = known + [n for n in dict.fromkeys(names) if n not in known]
    emb = Vocabulary(allnames, vlm).embeddings
    return write_text_embeddings(path, allnames, emb, model_name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n\n")[0],
                                 epilog="Run under torchrun to share the scenes among processes (see the module "
                                        "docstring of camfusion_ros.training.precompute).")
    ap.add_argument("recordings", nargs="*", type=Path, help="recording directories (with bag/ and gt/) or bag paths")
    ap.add_argument("--recordings-root", type=Path, help="a folder holding one recording per subfolder")
    ap.add_argument("--scene-list", type=Path, help="file with one scene a line: subfolder names of "
                    "--recordings-root, or recording paths without it (# comments)")
    ap.add_argument("--out", required=True, type=Path, help="data root; shards go to OUT/SPLIT/<scene>.safetensors")
    ap.add_argument("--split", default="train")
    ap.add_argument("--gt", type=Path, help="ground-truth folder (default: RECORDING/gt)")
    ap.add_argument("--model", default="PE-Core-L-14-336")
    ap.add_argument("--pretrained", default="meta", help="open_clip tag, weights file, or 'random'")
    ap.add_argument("--method", default="textregion", help="descriptor method (textregion | maskcrop | bboxcrop | hovsg)")
    ap.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is there, else cpu")
    ap.add_argument("--no-tiling", action="store_true", help="TextRegion: one pass on the resized image")
    ap.add_argument("--augment-copies", type=int, default=0, help="augmented copies per frame (each adds a view)")
    ap.add_argument("--max-views", type=int, default=32)
    ap.add_argument("--frame-stride", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--min-pixels", type=int, default=100)
    ap.add_argument("--skip-background", action="store_true")
    ap.add_argument("--fp16", action="store_true", help="store descriptors as float16")
    ap.add_argument("--seed", type=int, default=0, help="augmentation seed (combined with each scene's name)")
    ap.add_argument("--wait-hours", type=float, default=72.0,
                    help="under torchrun: how long a rank that is done waits for the others")
    return ap.parse_args(argv)


def settings_of(args: argparse.Namespace) -> dict:
    """Everything that changes the descriptors written (a shard made with other settings is redone)."""
    return {
        "model": args.model, "pretrained": args.pretrained, "method": args.method, "tiling": not args.no_tiling,
        "augment_copies": args.augment_copies, "augment": asdict(AugmentConfig()), "max_views": args.max_views,
        "frame_stride": args.frame_stride, "max_frames": args.max_frames, "min_pixels": args.min_pixels,
        "skip_background": args.skip_background, "fp16": args.fp16, "seed": args.seed,
        "gt": str(args.gt) if args.gt else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        ranks = Ranks.from_env()
    except PrecomputeError as e:
        return report_error(e)
    ranks.start(args.wait_hours)
    try:
        return _run(args, ranks)
    finally:
        ranks.stop()


def _setup(args: argparse.Namespace, ranks: Ranks):
    from camfusion_ros.core.descriptors import DescriptorConfig, make_extractor
    from camfusion_ros.core.output_folder import claim_outputs
    from camfusion_ros.core.vlm import VLMConfig, load_vlm

    if args.augment_copies < 0 or args.max_views < 1 or args.frame_stride < 1:
        raise PrecomputeError("--augment-copies must be >= 0, --max-views and --frame-stride >= 1")
    if args.wait_hours <= 0:
        raise PrecomputeError("--wait-hours must be > 0")
    scenes = find_scenes(args.recordings, args.recordings_root, args.scene_list)
    model_name = f"{args.model}:{args.pretrained}:{args.method}"
    split_dir = args.out / args.split
    if ranks.rank == 0:   # the only writer of the folder records; the other ranks wait for it (gather)
        claim_outputs(args.out, TOOL, [args.split, TEXT_FILE])
        check_text_model(args.out, model_name)
        claim_outputs(split_dir, TOOL, [s.shard_name for s in scenes] + [MANIFEST])
        remove_stale_temporaries(split_dir, scenes)
        others = sorted(set(p.name for p in split_dir.glob("*.safetensors")) - {s.shard_name for s in scenes})
        if others:
            print(f"{TOOL}: note: {split_dir} also holds {len(others)} shard(s) of scenes not in this run "
                  f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); training reads every shard there",
                  file=sys.stderr, flush=True)
    vlm = load_vlm(VLMConfig(model_name=args.model, pretrained=args.pretrained, device=rank_device(args.device, ranks)))
    extractor = make_extractor(DescriptorConfig(method=args.method, tiling=not args.no_tiling), vlm)
    return scenes, model_name, vlm, extractor


def _run(args: argparse.Namespace, ranks: Ranks) -> int:
    from camfusion_ros.core.descriptors import DescriptorError
    from camfusion_ros.core.output_folder import OutputFolderError
    from camfusion_ros.core.recording import RecordingError
    from camfusion_ros.core.vlm import VLMError
    from camfusion_ros.core.vocabulary import VocabularyError

    expected = (PrecomputeError, ShardError, RecordingError, VLMError, DescriptorError, VocabularyError,
                OutputFolderError)
    err = None
    try:
        scenes, model_name, vlm, extractor = _setup(args, ranks)
    except expected as e:
        err = one_line(e)
    errs = ranks.gather(err)   # every rank waits here until rank 0 has claimed the output folder
    if any(errs):
        if ranks.rank == 0:
            for msg in dict.fromkeys(e for e in errs if e):
                who = [r for r, e in enumerate(errs) if e == msg]
                report_error(msg if len(who) == ranks.world else f"rank {', '.join(map(str, who))}: {msg}")
        return 2

    settings = settings_of(args)
    sjson = settings_json(settings)
    split_dir = args.out / args.split
    mine = assign(scenes, ranks.rank, ranks.world)
    progress = Progress(ranks, len(mine))
    results, failures = [], []
    for sc in mine:
        t0 = time.perf_counter()
        path = split_dir / sc.shard_name
        entry = {"scene": sc.name, "recording": str(sc.path), "shard": sc.shard_name, "rank": ranks.rank}
        shard, why = finished_shard(path, sjson)
        if shard is not None:
            entry.update(status="skipped", instances=len(shard), views=int(shard.view_valid.sum()),
                         class_names=shard.class_names)
            progress.line(sc.name, f"finished before ({entry['instances']} instances), skipped")
        else:
            try:
                bag, gt_dir = locate_recording(sc.path, args.gt)
                res = precompute_recording(
                    bag, gt_dir, extractor, args.augment_copies, args.max_views, args.frame_stride, args.min_pixels,
                    args.skip_background, scene_seed(args.seed, sc.name), args.max_frames,
                )
                d = res["descriptors"].astype(np.float16) if args.fp16 else res["descriptors"]
                write_shard(path, res["class_ids"], d, res["view_valid"], res["visibility"], res["class_names"],
                            model_name, view_source=res["view_source"], metadata={SETTINGS_KEY: sjson})
            except Exception as e:  # noqa: BLE001 - one scene's failure (any kind) must not stop the split
                msg = one_line(e) if isinstance(e, expected) else f"{type(e).__name__}: {one_line(e)}"
                if why and path.is_file():   # an old shard this run was to replace would poison the split
                    path.unlink()
                    msg += f" (its old shard, {why}, was removed)"
                failures.append({"scene": sc.name, "recording": str(sc.path), "error": msg, "rank": ranks.rank})
                progress.line(sc.name, f"failed: {msg}")
                _free_device_memory()
                continue
            secs = time.perf_counter() - t0
            entry.update(status="written", instances=len(res["class_ids"]), views=int(res["view_valid"].sum()),
                         frames=res["frames"], seconds=round(secs, 3), class_names=res["class_names"])
            progress.line(sc.name, f"{entry['instances']} instances, {entry['views']} views from {res['frames']} "
                                   f"frames in {secs:.1f} s" + (f" (redone: {why})" if why else ""), secs)
        results.append(entry)
        print(json.dumps({**{k: v for k, v in entry.items() if k != "class_names"}, "shard": str(path)}), flush=True)

    gathered = ranks.gather((results, failures))   # waits for the slowest rank
    status = _finish_split(args, ranks, gathered, settings, model_name, vlm, expected) if ranks.rank == 0 else 0
    ranks.barrier()   # nobody leaves while rank 0 writes: a gloo peer that exits early can abort the others
    return status


def _finish_split(args, ranks, gathered, settings, model_name, vlm, expected) -> int:
    """Rank 0: text embeddings, manifest, summary; the exit status."""
    split_dir = args.out / args.split
    results = [r for rs, _ in gathered for r in rs]
    failures = [f for _, fs in gathered for f in fs]
    try:
        classes = class_union(results)
        text = update_text_embeddings(args.out, classes, vlm, model_name) if classes else None
        manifest = write_manifest(split_dir, args.split, settings, model_name, results, failures, ranks.world, text)
    except expected as e:
        return report_error(e)
    written = sum(r["status"] == "written" for r in results)
    done = (f"{written} written, {len(results) - written} finished before; {sum(r['instances'] for r in results)} "
            f"instances, {sum(r['views'] for r in results)} views; {manifest}")
    total = len(results) + len(failures)
    if failures:
        names = sorted(f["scene"] for f in failures)
        print(f"{TOOL}: split {args.split}: {len(failures)} of {total} scenes failed ({', '.join(names[:10])}"
              f"{', ...' if len(names) > 10 else ''}); {done}", file=sys.stderr, flush=True)
        return 1
    print(f"{TOOL}: split {args.split}: {total} scenes, {done}", file=sys.stderr, flush=True)
    return 0


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
