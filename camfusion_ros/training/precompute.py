"""``camfusion-precompute``: descriptor shards from recordings, with ground-truth instance masks.

For every frame of a recording (a bag from ``camfusion-synth`` / ``camfusion-convert``,
read with ``core.recording.read_frames``) the ground-truth instance image gives
one mask per instance; the descriptor extractor (TextRegion on the VLM by
default) turns each (image, mask) into a view descriptor. With
``--augment-copies N`` each frame is also extracted N more times after the
paper's augmentation (random crop, hue and saturation changes), each copy adding
one more view per instance. Classes come from the recording's ``gt/`` folder
(``instances.json``, ``classes.json``). Visibility = the mask's share of the
image (used to pick the best views at evaluation). One shard per recording,
plus the class text embeddings of the data root.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from camfusion_ros.cli_errors import report_error
from camfusion_ros.training.shards import TEXT_FILE, ShardError, read_text_embeddings, write_shard, write_text_embeddings


class PrecomputeError(ValueError):
    """A recording or ground-truth folder that cannot be turned into shards."""


@dataclass
class AugmentConfig:
    crop_min_scale: float = 0.7  # each side keeps at least this fraction
    hue: float = 0.05  # hue shift in [-hue, hue] (fraction of a turn)
    saturation: tuple[float, float] = (0.7, 1.3)  # saturation factor range


def augment(rgb: np.ndarray, masks: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()):
    """The same random crop on image and masks, then a hue and saturation change of the image."""
    import torchvision.transforms.v2.functional as TF

    h, w = rgb.shape[:2]
    ch = max(1, int(round(h * rng.uniform(cfg.crop_min_scale, 1.0))))
    cw = max(1, int(round(w * rng.uniform(cfg.crop_min_scale, 1.0))))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    rgb = rgb[y0 : y0 + ch, x0 : x0 + cw]
    masks = masks[:, y0 : y0 + ch, x0 : x0 + cw]
    img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    img = TF.adjust_hue(img, float(rng.uniform(-cfg.hue, cfg.hue)))
    img = TF.adjust_saturation(img, float(rng.uniform(*cfg.saturation)))
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy()), np.ascontiguousarray(masks)


def read_gt_classes(gt_dir: Path) -> tuple[list[str], dict[int, int], set[str]]:
    """(class names, instance id -> class id, background class names) from a gt/ folder."""
    try:
        classes = json.loads((gt_dir / "classes.json").read_text())
        inst = json.loads((gt_dir / "instances.json").read_text())
        names = list(classes["names"])
        mapping = {int(k): int(v["class_id"]) for k, v in inst.items()}
    except FileNotFoundError as e:
        raise PrecomputeError(f"ground truth incomplete: {e.filename} not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrecomputeError(f"cannot read ground truth in {gt_dir}: {e}") from None
    bad = [i for i, c in mapping.items() if not 0 <= c < len(names)]
    if bad:
        raise PrecomputeError(f"{gt_dir}/instances.json: class_id out of range for instance {bad[0]}")
    return names, mapping, set(classes.get("background", []))


def precompute_recording(
    bag: Path, gt_dir: Path, extractor, augment_copies: int = 0, max_views: int = 32, frame_stride: int = 1,
    min_pixels: int = 100, skip_background: bool = False, seed: int = 0, max_frames: int | None = None,
    aug_cfg: AugmentConfig = AugmentConfig(),
) -> dict:
    """Per instance: class id and up to ``max_views`` (highest visibility) view descriptors."""
    from camfusion_ros.core.recording import read_frames
    from camfusion_ros.core.view_bank import ViewBankConfig, visibility_score

    border_margin = ViewBankConfig().border_margin

    names, inst_class, background = read_gt_classes(gt_dir)
    rng = np.random.default_rng(seed)
    views: dict[int, list[tuple[float, np.ndarray]]] = {}
    for fi, frame in enumerate(read_frames(bag, max_frames=max_frames)):
        if fi % frame_stride or frame.gt_instances is None:
            continue
        ids = [int(i) for i in np.unique(frame.gt_instances) if i != 0 and int(i) in inst_class]
        if skip_background:
            ids = [i for i in ids if names[inst_class[i]] not in background]
        if not ids:
            continue
        masks = frame.gt_instances[None] == np.asarray(ids)[:, None, None]
        # the online view bank's score, so training ranks views the way mapping does
        # (augmented copies are the same views: they keep the original's score)
        scores = np.array([visibility_score(mk, frame.depth, border_margin) for mk in masks], np.float32)
        for copy in range(augment_copies + 1):
            rgb, m = (frame.rgb, masks) if copy == 0 else augment(frame.rgb, masks, rng, aug_cfg)
            area = m.reshape(len(ids), -1).sum(1)
            ok = (area >= min_pixels) & (scores > 0)   # score 0: the mask lies in the border band
            if not ok.any():
                continue
            desc, keep = extractor.extract(rgb, m[ok])
            vis = scores[ok]
            for iid, d, k, v in zip(np.asarray(ids)[ok], desc, keep, vis):
                if k:
                    views.setdefault(int(iid), []).append((float(v), d.astype(np.float32)))
    if not views:
        raise PrecomputeError(f"{bag}: no instance mask with at least {min_pixels} pixels in any frame")
    order = sorted(views)
    v = min(max_views, max(len(views[i]) for i in order))
    dim = next(iter(views.values()))[0][1].shape[0]
    desc = np.zeros((len(order), v, dim), np.float32)
    valid = np.zeros((len(order), v), bool)
    visibility = np.zeros((len(order), v), np.float32)
    for r, iid in enumerate(order):
        best = sorted(views[iid], key=lambda t: -t[0])[:v]
        for c, (vis, d) in enumerate(best):
            desc[r, c], valid[r, c], visibility[r, c] = d, True, vis
    return {
        "class_ids": np.array([inst_class[i] for i in order], np.int64), "descriptors": desc, "view_valid": valid,
        "visibility": visibility, "class_names": names, "instance_ids": order,
    }


def _locate(rec: Path, gt: Path | None) -> tuple[Path, Path]:
    bag = rec / "bag" if (rec / "bag").exists() else rec
    gt_dir = gt or (rec / "gt" if (rec / "gt").is_dir() else rec.parent / "gt")
    if not bag.exists():
        raise PrecomputeError(f"recording not found: {rec}")
    if not gt_dir.is_dir():
        raise PrecomputeError(f"no ground-truth folder for {rec} (looked for {gt_dir}; pass --gt)")
    return bag, gt_dir


def update_text_embeddings(root: Path, names: list[str], vlm, model_name: str) -> Path:
    """Text embeddings for the union of the root's known classes and ``names`` (same model only)."""
    from camfusion_ros.core.vocabulary import Vocabulary

    path = root / TEXT_FILE
    known: list[str] = []
    if path.is_file():
        known, _ = read_text_embeddings(path)
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            old_model = (f.metadata() or {}).get("model", "")
        if old_model != model_name:
            raise PrecomputeError(f"{path} was made with {old_model!r}, not {model_name!r}; use another --out")
    allnames = known + [n for n in dict.fromkeys(names) if n not in known]
    emb = Vocabulary(allnames, vlm).embeddings
    return write_text_embeddings(path, allnames, emb, model_name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="camfusion-precompute", description=__doc__.split("\n\n")[0])
    ap.add_argument("recordings", nargs="+", type=Path, help="recording directories (with bag/ and gt/) or bag paths")
    ap.add_argument("--out", required=True, type=Path, help="data root; shards go to OUT/SPLIT/<name>.safetensors")
    ap.add_argument("--split", default="train")
    ap.add_argument("--gt", type=Path, help="ground-truth folder (default: RECORDING/gt)")
    ap.add_argument("--model", default="PE-Core-L-14-336")
    ap.add_argument("--pretrained", default="meta", help="open_clip tag, weights file, or 'random'")
    ap.add_argument("--method", default="textregion", help="descriptor method (textregion | maskcrop | bboxcrop | hovsg)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-tiling", action="store_true", help="TextRegion: one pass on the resized image")
    ap.add_argument("--augment-copies", type=int, default=0, help="augmented copies per frame (each adds a view)")
    ap.add_argument("--max-views", type=int, default=32)
    ap.add_argument("--frame-stride", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--min-pixels", type=int, default=100)
    ap.add_argument("--skip-background", action="store_true")
    ap.add_argument("--fp16", action="store_true", help="store descriptors as float16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from camfusion_ros.core.descriptors import DescriptorConfig, DescriptorError, make_extractor
    from camfusion_ros.core.output_folder import OutputFolderError, claim_outputs
    from camfusion_ros.core.recording import RecordingError
    from camfusion_ros.core.vlm import VLMConfig, VLMError, load_vlm
    from camfusion_ros.core.vocabulary import VocabularyError

    try:
        if args.augment_copies < 0 or args.max_views < 1 or args.frame_stride < 1:
            raise PrecomputeError("--augment-copies must be >= 0, --max-views and --frame-stride >= 1")
        claim_outputs(args.out, "camfusion-precompute", [args.split, TEXT_FILE])
        vlm = load_vlm(VLMConfig(model_name=args.model, pretrained=args.pretrained, device=args.device))
        extractor = make_extractor(DescriptorConfig(method=args.method, tiling=not args.no_tiling), vlm)
        model_name = f"{args.model}:{args.pretrained}:{args.method}"
        all_names: list[str] = []
        for i, rec in enumerate(args.recordings):
            bag, gt_dir = _locate(rec, args.gt)
            res = precompute_recording(
                bag, gt_dir, extractor, args.augment_copies, args.max_views, args.frame_stride, args.min_pixels,
                args.skip_background, args.seed + i, args.max_frames,
            )
            d = res["descriptors"].astype(np.float16) if args.fp16 else res["descriptors"]
            name = rec.name if rec.name not in ("bag", "") else rec.parent.name
            claim_outputs(args.out / args.split, "camfusion-precompute", [f"{name}.safetensors"])
            out = write_shard(args.out / args.split / f"{name}.safetensors", res["class_ids"], d, res["view_valid"],
                              res["visibility"], res["class_names"], model_name)
            all_names += res["class_names"]
            print(json.dumps({"recording": str(rec), "shard": str(out), "instances": len(res["class_ids"]),
                              "views": int(res["view_valid"].sum())}))
        update_text_embeddings(args.out, all_names, vlm, model_name)
    except (PrecomputeError, ShardError, RecordingError, VLMError, DescriptorError, VocabularyError,
            OutputFolderError) as e:
        return report_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
