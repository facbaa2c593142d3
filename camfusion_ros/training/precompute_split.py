"""A split of ``camfusion-precompute``: which scenes, which rank computes which, what is already done, the manifest.

- Scenes come from recording paths, a folder holding one recording per subfolder, and/or a scene-list file;
  a scene's name is its recording folder's name, and its shard is ``OUT/SPLIT/<name>.safetensors``.
- Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK) rank r computes ``sorted(scenes)[r::W]``; a gloo process
  group carries only small Python objects (setup errors, per-scene results), never tensors.
- A shard is finished when it reads back (``read_shard``) and its ``precompute`` metadata equals this run's
  settings; finished shards are skipped, so a killed run restarts where it stopped.
- Rank 0 writes ``OUT/SPLIT/manifest.json`` after all ranks are done.
"""
from __future__ import annotations

import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from camfusion_ros.training.precompute_scene import PrecomputeError
from camfusion_ros.training.shards import FORMAT, TEXT_FILE, ShardError, read_shard, read_shard_metadata

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "camfusion-precompute-manifest/1"
SETTINGS_KEY = "precompute"  # shard metadata entry holding the settings (JSON) it was made with
SETTINGS_VERSION = 2  # bump when a change of this code changes the descriptors written for the same settings


@dataclass(frozen=True, order=True)
class Scene:
    name: str
    path: Path = field(compare=False)

    @property
    def shard_name(self) -> str:
        return f"{self.name}.safetensors"


def scene_name(rec: Path) -> str:
    """``scans/s0`` -> ``s0``; a bag path ``scans/s0/bag`` -> ``s0``."""
    rec = Path(os.path.normpath(rec))
    return rec.parent.name if rec.name in ("bag", "") else rec.name


def read_scene_list(path: Path) -> list[str]:
    """One entry a line; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PrecomputeError(f"cannot read scene list {path}: {e}") from None
    return [s for s in (ln.split("#", 1)[0].strip() for ln in lines) if s]


def find_scenes(recordings: list[Path], root: Path | None = None, scene_list: Path | None = None) -> list[Scene]:
    """The split's scenes sorted by name: ``recordings``, plus ``root``'s subfolders (all non-hidden ones, or those
    ``scene_list`` names), plus the paths ``scene_list`` holds when no root is given. Every scene must exist and
    names must be unique (one shard per name)."""
    paths = list(recordings)
    if root is not None and not root.is_dir():
        raise PrecomputeError(f"recordings root not found: {root}")
    listed = read_scene_list(scene_list) if scene_list is not None else None
    if root is not None:
        if listed is not None:
            paths += [root / s for s in listed]
        else:
            subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not subs:
                raise PrecomputeError(f"no recording folders in {root}")
            paths += subs
    elif listed is not None:
        paths += [Path(s) for s in listed]
    if not paths:
        raise PrecomputeError("no recordings: pass recording folders, --recordings-root and/or --scene-list")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise PrecomputeError(f"recording{'s' if len(missing) > 1 else ''} not found: {', '.join(missing[:5])}"
                              f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}")
    scenes = sorted(Scene(scene_name(p), p) for p in paths)
    names = [s.name for s in scenes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PrecomputeError(f"two recordings share the scene name {dup[0]!r} (one shard per name): "
                              + ", ".join(str(s.path) for s in scenes if s.name == dup[0]))
    bad = [n for n in names if not n or n.startswith(".") or n in (MANIFEST, TEXT_FILE)]
    if bad:
        raise PrecomputeError(f"cannot name a shard after recording folder {bad[0]!r}")
    return scenes


def assign(scenes: list[Scene], rank: int, world: int) -> list[Scene]:
    """Round-robin over the sorted scenes: the same split gives every rank the same share on every run."""
    return sorted(scenes)[rank::world]


# -- processes -------------------------------------------------------------------------------------------------

@dataclass
class Ranks:
    """This process's place under torchrun (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""

    rank: int = 0
    world: int = 1
    local: int = 0
    group: bool = False

    @classmethod
    def from_env(cls) -> "Ranks":
        try:
            r = cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
        except ValueError:
            raise PrecomputeError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
        if r.world < 1 or not 0 <= r.rank < r.world or r.local < 0:
            raise PrecomputeError(f"bad RANK/WORLD_SIZE {r.rank}/{r.world}")
        return r

    def __str__(self) -> str:
        return f"rank {self.rank}/{self.world}"

    def start(self, wait_hours: float) -> None:
        """Join the other ranks (gloo: only small objects cross; ``wait_hours`` bounds every wait for a rank)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("gloo", timeout=timedelta(hours=wait_hours))
            self.group = True

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (rank order) on every rank; waits for all of them."""
        if not self.group:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.barrier()

    def stop(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False


def rank_device(device: str | None, ranks: Ranks) -> str | None:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is there (or ``--device cuda``), else as given."""
    import torch

    if device in (None, "", "auto"):
        if not torch.cuda.is_available():
            return "cpu"
        device = "cuda"
    if device == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n and ranks.local >= n:
            raise PrecomputeError(f"LOCAL_RANK {ranks.local} but this machine has {n} CUDA device(s); "
                                  "start at most one process per GPU (--nproc_per_node)")
        if not n:
            return "cuda"   # load_vlm says CUDA is not available
        torch.cuda.set_device(ranks.local)   # no rank touches another rank's GPU, not even for a context
        return f"cuda:{ranks.local}"
    return device


# -- shards and settings -----------------------------------------------------------------------------------------

def settings_json(settings: dict) -> str:
    return json.dumps({"version": SETTINGS_VERSION, **settings}, sort_keys=True)


def finished_shard(path: Path, settings: str):
    """(the shard, "") when ``path`` is a complete shard made with ``settings``; else (None, why it is redone)."""
    if not path.is_file():
        return None, ""
    try:
        meta = read_shard_metadata(path)
        if meta.get("format") != FORMAT:
            return None, "not a descriptor shard"
        if meta.get(SETTINGS_KEY) != settings:
            return None, "made with other settings"
        return read_shard(path), ""
    except ShardError as e:
        return None, str(e)


def remove_stale_temporaries(split_dir: Path, scenes: list[Scene]) -> int:
    """Delete half-written ``.<shard or manifest>.*.tmp`` files a killed run left (call before any rank writes)."""
    n = 0
    for name in [s.shard_name for s in scenes] + [MANIFEST]:
        for p in split_dir.glob(f".{name}.*.tmp"):
            p.unlink(missing_ok=True)
            n += 1
    return n


def class_union(results: list[dict]) -> list[str]:
    """The split's classes: first appearance over the scenes sorted by name, each in its classes.json order."""
    seen: dict[str, None] = {}
    for r in sorted(results, key=lambda r: r["scene"]):
        seen.update(dict.fromkeys(r.get("class_names", [])))
    return list(seen)


def write_manifest(split_dir: Path, split: str, settings: dict, model: str, results: list[dict],
                   failures: list[dict], world: int, text_file: Path | None) -> Path:
    """``split_dir/manifest.json``: the scenes (shard, counts, written/skipped), the failures, settings, classes."""
    ok = sorted(results, key=lambda r: r["scene"])
    doc = {
        "format": MANIFEST_FORMAT, "split": split, "model": model, "settings": settings, "world_size": world,
        "class_names": class_union(ok),
        "text_embeddings": os.path.relpath(text_file, split_dir) if text_file is not None else None,
        "scenes": [{k: v for k, v in r.items() if k != "class_names"} for r in ok],
        "failed": sorted(failures, key=lambda f: f["scene"]),
        "totals": {"scenes": len(ok) + len(failures), "written": sum(r["status"] == "written" for r in ok),
                   "skipped": sum(r["status"] == "skipped" for r in ok), "failed": len(failures),
                   "instances": sum(r["instances"] for r in ok), "views": sum(r["views"] for r in ok)},
    }
    tmp = split_dir / f".{MANIFEST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "x") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, split_dir / MANIFEST)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return split_dir / MANIFEST


class Progress:
    """One line on stderr per scene: ``camfusion-precompute [rank r/W] i/n scene: ... (eta)``."""

    def __init__(self, ranks: Ranks, total: int):
        self.ranks, self.total = ranks, total
        self.done = self.computed = 0
        self.compute_s = 0.0

    def line(self, scene: str, text: str, seconds: float | None = None) -> None:
        self.done += 1
        if seconds is not None:
            self.computed += 1
            self.compute_s += seconds
        left = self.total - self.done
        eta = ""
        if self.computed and left:
            eta = f"; ~{_hms(self.compute_s / self.computed * left)} left"
        print(f"camfusion-precompute [{self.ranks}] {self.done}/{self.total} {scene}: {text}{eta}",
              file=sys.stderr, flush=True)


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
