"""Shipped class lists and head/common/tail splits (config/vocabularies/).

Kept free of anything but the stdlib and yaml so the core's vocabulary module
can find the shipped lists without pulling in the evaluation code.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

SPLIT_KEYS = ("head", "common", "tail")


class ClassListError(ValueError):
    """A class list or split file is missing or malformed."""


def vocabulary_dirs() -> list[Path]:
    """Where shipped lists may live: $CAMFUSION_VOCAB_DIR, the source tree, an installed share/."""
    dirs = []
    env = os.environ.get("CAMFUSION_VOCAB_DIR")
    if env:
        dirs.append(Path(env))
    from camfusion_ros.resources import config_dirs

    return dirs + [d / "vocabularies" for d in config_dirs()]


def available_vocabularies() -> list[str]:
    """Names of the shipped class lists."""
    names: set[str] = set()
    for d in vocabulary_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.txt"))
    return sorted(names)


def _find(name: str, rel: str) -> Path | None:
    for d in vocabulary_dirs():
        p = d / rel
        if p.is_file():
            return p
    return None


def load_vocabulary(name_or_path: str | os.PathLike) -> list[str]:
    """Class names from a file path (one per line) or a shipped list name (e.g. 'replica')."""
    p = Path(name_or_path)
    if not p.is_file():
        found = _find(str(name_or_path), f"{name_or_path}.txt") if p.suffix == "" and len(p.parts) == 1 else None
        if found is None:
            raise ClassListError(
                f"vocabulary '{name_or_path}' is neither a file nor a shipped list "
                f"(shipped: {', '.join(available_vocabularies()) or 'none'})")
        p = found
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ClassListError(f"cannot read vocabulary {p}: {e}") from None
    names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise ClassListError(f"vocabulary {p} lists no class names")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ClassListError(f"vocabulary {p} repeats class names: {', '.join(dup)}")
    return names


def load_splits(name_or_path: str | os.PathLike) -> dict[str, list[str]]:
    """{'head','common','tail','background'} class-name lists for a shipped list name or a YAML path."""
    p = Path(name_or_path)
    if not p.is_file():
        found = _find(str(name_or_path), f"splits/{name_or_path}.yaml") if p.suffix == "" and len(p.parts) == 1 else None
        if found is None:
            raise ClassListError(f"no head/common/tail splits for '{name_or_path}'")
        p = found
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ClassListError(f"cannot read splits {p}: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in SPLIT_KEYS):
        raise ClassListError(f"splits file {p} needs lists 'head', 'common' and 'tail'")
    out = {k: [str(c) for c in doc[k]] for k in SPLIT_KEYS}
    out["background"] = [str(c) for c in doc.get("background") or []]
    return out


def frequency_splits(names: list[str], counts) -> dict[str, list[str]]:
    """Tertiles by descending count over classes with count > 0 (for scenes with no shipped split)."""
    present = [(int(c), i) for i, c in enumerate(counts) if int(c) > 0]
    present.sort(key=lambda t: (-t[0], t[1]))
    order = [names[i] for _, i in present]
    n = len(order)
    a, b = round(n / 3), round(2 * n / 3)
    return {"head": order[:a], "common": order[a:b], "tail": order[b:], "background": []}
