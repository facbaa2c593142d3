"""A vector-level synthetic multiview benchmark where single views are partial and contaminated.

Why it is hard for naive fusion (and how real VLM descriptors behave):
- classes come in groups of similar classes (prototype = group centre + own part);
- each view sees only a random subset of the instance's semantic *parts*
  (components in a random basis), so one view is a partial description;
- each view carries the scene's surroundings: a strong background vector
  (wall/floor-like directions that lie close to some object groups, mixed with
  per-view weights) and, often, a neighbouring object of the same scene (often a
  class of the same group), plus noise.
- view quality varies within an instance (per-view signal and noise levels),
  and some views are *distractors*: mostly another object of the scene, with a
  visibility score that does not give them away;
- classes outnumber what one view separates: fine-grained classes inside groups.
Averaging keeps the consistent scene background and the neighbour leakage; a
medoid keeps one partial, contaminated view; telling a distractor from a good
view needs the views to be compared with each other. Text embeddings are the
class prototypes. Splits are by scene (no test scene is seen in training);
shards are written per scene and split.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from camfusion_ros.core.output_folder import check_replaceable_folder, fresh_folder, recover_swap
from camfusion_ros.training.shards import TEXT_FILE, ShardError, write_shard, write_text_embeddings

SPLITS = ("train", "val", "test")


@dataclass
class SyntheticConfig:
    dim: int = 64
    n_classes: int = 40
    n_groups: int = 8
    group_spread: float = 0.8  # class own part vs group centre
    n_background: int = 6
    n_parts: int = 8
    part_visible: float = 0.5
    instance_noise: float = 0.3
    background_strength: tuple[float, float] = (0.3, 0.9)
    neighbour_prob: float = 0.6
    neighbour_strength: tuple[float, float] = (0.3, 1.0)
    neighbour_same_group: float = 0.6
    view_noise: float = 0.25
    quality_spread: float = 0.0  # per-view quality q = exp(-quality_spread*|N(0,1)|): signal x q, noise / q
    distractor_prob: float = 0.0  # a view is mostly another object of the scene with this probability
    distractor_strength: tuple[float, float] = (1.0, 1.5)  # that object's weight; the view keeps 0.3 x its own
    unseen_class_fraction: float = 0.0  # these classes never appear in train/val shards: tested zero-shot
    split_by: str = "scene"  # "scene": whole scenes per split (held out); "instance": the older random split
    n_scenes: int = 300
    instances_per_scene: int = 16
    views: int = 12
    min_views: int = 2
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split_by not in ("scene", "instance"):
            raise ValueError(f"split_by must be 'scene' or 'instance', got {self.split_by!r}")
        if self.n_scenes < 3 and self.split_by == "scene":
            raise ValueError("split_by: scene needs n_scenes >= 3 (one per split)")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def generate(cfg: SyntheticConfig) -> dict:
    """All instances: class ids, per-view descriptors/validity/visibility, split, scene; plus prototypes."""
    rng = np.random.default_rng(cfg.seed)
    d = cfg.dim
    groups = _unit(rng.normal(size=(cfg.n_groups, d)))
    class_group = np.arange(cfg.n_classes) % cfg.n_groups
    protos = _unit(groups[class_group] + cfg.group_spread * _unit(rng.normal(size=(cfg.n_classes, d))))
    # Background directions (wall, floor, ...) lie close to some object groups.
    bg = _unit(groups[rng.integers(0, cfg.n_groups, cfg.n_background)] + 0.7 * _unit(rng.normal(size=(cfg.n_background, d))))
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    part_of = np.arange(d) % cfg.n_parts  # which part each basis direction belongs to

    n_inst = cfg.n_scenes * cfg.instances_per_scene
    scene = np.repeat(np.arange(cfg.n_scenes), cfg.instances_per_scene)
    cls = rng.integers(0, cfg.n_classes, n_inst)
    inst = _unit(protos[cls] + cfg.instance_noise * rng.normal(size=(n_inst, d)) / np.sqrt(d))
    # Each scene has its own mix of background directions.
    scene_bg_w = rng.dirichlet(np.full(cfg.n_background, 0.5), cfg.n_scenes)

    v = cfg.views
    # Partial views: each view sees a random subset of parts (at least one).
    vis_parts = rng.random((n_inst, v, cfg.n_parts)) < cfg.part_visible
    none = ~vis_parts.any(-1)
    vis_parts[none, rng.integers(0, cfg.n_parts, none.sum())] = True
    coef = inst @ basis  # (N, d) coordinates in the part basis
    partial = (coef[:, None, :] * vis_parts[:, :, part_of]) @ basis.T  # (N, V, d)

    w = scene_bg_w[scene][:, None, :] * rng.uniform(0.5, 1.5, (n_inst, v, cfg.n_background))
    background = _unit(w @ bg) * rng.uniform(*cfg.background_strength, (n_inst, v, 1))

    # Neighbours: another instance of the same scene, preferably a class of the same group.
    nb = np.empty(n_inst, np.int64)
    for s in range(cfg.n_scenes):
        ids = np.flatnonzero(scene == s)
        for i in ids:
            others = ids[ids != i]
            same = others[class_group[cls[others]] == class_group[cls[i]]]
            same = same[cls[same] != cls[i]]
            pool = same if len(same) and rng.random() < cfg.neighbour_same_group else others
            nb[i] = rng.choice(pool)
    has_nb = rng.random((n_inst, v, 1)) < cfg.neighbour_prob
    neighbour = inst[nb][:, None, :] * rng.uniform(*cfg.neighbour_strength, (n_inst, v, 1)) * has_nb

    noise = cfg.view_noise * rng.normal(size=(n_inst, v, d)) / np.sqrt(d)
    quality = np.exp(-cfg.quality_spread * np.abs(rng.normal(size=(n_inst, v, 1))))
    distractor = rng.random((n_inst, v, 1)) < cfg.distractor_prob
    own = partial * quality * np.where(distractor, 0.3, 1.0)
    other = inst[nb][:, None, :] * rng.uniform(*cfg.distractor_strength, (n_inst, v, 1)) * distractor
    desc = _unit(own + background + neighbour + other + noise / quality).astype(np.float32)

    n_valid = rng.integers(cfg.min_views, v + 1, n_inst)
    valid = np.arange(v)[None, :] < n_valid[:, None]
    # Visibility: how much of the object the view sees and how well, observed with noise (blind to distractors).
    visibility = (vis_parts.mean(-1) * quality[..., 0] + 0.15 * rng.normal(size=(n_inst, v))).astype(np.float32)
    desc[~valid] = 0.0
    visibility[~valid] = 0.0

    p_split = np.asarray(cfg.split_fractions) / sum(cfg.split_fractions)
    if cfg.split_by == "scene":   # contiguous cuts of a scene permutation; every split gets a scene
        n_val = max(1, int(round(cfg.n_scenes * p_split[1])))
        n_test = max(1, int(round(cfg.n_scenes * p_split[2])))
        scene_split = np.zeros(cfg.n_scenes, np.int64)
        perm = rng.permutation(cfg.n_scenes)
        scene_split[perm[:n_val]] = 1
        scene_split[perm[n_val : n_val + n_test]] = 2
        split = scene_split[scene]
    else:
        split = rng.choice(len(SPLITS), n_inst, p=p_split)
    unseen = rng.permutation(cfg.n_classes)[: int(round(cfg.unseen_class_fraction * cfg.n_classes))]
    return {
        "trainable": ~np.isin(cls, unseen), "unseen_classes": np.sort(unseen),
        "class_ids": cls, "descriptors": desc, "view_valid": valid, "visibility": visibility,
        "split": split, "scene": scene, "prototypes": protos.astype(np.float32),
    }


def class_names(cfg: SyntheticConfig) -> list[str]:
    return [f"class_{c:03d}" for c in range(cfg.n_classes)]


RECORD = "synthetic.json"
UNSEEN_FILE = "unseen_classes.json"  # class names kept out of train/val (tested zero-shot)
DATA_FILES = frozenset({*SPLITS, TEXT_FILE, RECORD, UNSEEN_FILE})


def write_synthetic(out_dir: str | Path, cfg: SyntheticConfig) -> Path:
    """Write ``out_dir/{train,val,test}/scene_XXXX.safetensors`` and the text embeddings, as one fresh folder.

    The data is written into a temporary sibling and swapped in whole, so a regeneration never mixes in
    shards of an earlier config; a folder holding anything else is refused (it is not ours)."""
    out = Path(out_dir)
    check_replaceable_folder(out, DATA_FILES, RECORD, "n_classes", "synthetic data folder", ShardError)
    data = generate(cfg)
    names = class_names(cfg)
    model = f"synthetic-{cfg.dim}d"
    with fresh_folder(out) as tmp:
        for si, split in enumerate(SPLITS):
            for s in range(cfg.n_scenes):
                m = (data["scene"] == s) & (data["split"] == si) & (data["trainable"] | (split == "test"))
                if not m.any():
                    continue
                write_shard(
                    tmp / split / f"scene_{s:04d}.safetensors", data["class_ids"][m], data["descriptors"][m],
                    data["view_valid"][m], data["visibility"][m], names, model,
                )
        write_text_embeddings(tmp / TEXT_FILE, names, data["prototypes"], model)
        (tmp / UNSEEN_FILE).write_text(json.dumps([names[c] for c in data["unseen_classes"]]))
        (tmp / RECORD).write_text(json.dumps(asdict(cfg), indent=2))
        os.chmod(tmp, 0o755)
    return out


def ensure_synthetic(out_dir: str | Path, cfg: SyntheticConfig) -> Path:
    """Generate once; regenerate when the recorded config differs."""
    out = Path(out_dir)
    recover_swap(out)
    rec = out / RECORD
    want = json.loads(json.dumps(asdict(cfg)))
    if rec.is_file() and (out / TEXT_FILE).is_file():
        try:
            if json.loads(rec.read_text()) == want:
                return out
        except json.JSONDecodeError:
            pass
    return write_synthetic(out, cfg)
