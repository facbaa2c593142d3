"""Claiming names in an output folder a user chose, so no tool ever replaces what it did not write.

Every folder-writing tool (`camfusion-eval --out`, `camfusion-train --out`, `camfusion-synth --out`, the
converters, `camfusion-precompute --out`, the node's autosave folder) writes *beside* whatever the folder
already holds. Before writing, it claims the top-level names it is about to write: a name that already exists
is replaced only if the folder's record (``.camfusion_outputs.json``) says this package wrote it; otherwise the
tool stops with an error naming the files. Maps have their own, stricter rule (``map_store.check_replaceable``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

RECORD = ".camfusion_outputs.json"
RECORD_FORMAT = "camfusion_ros outputs v1"


class OutputFolderError(ValueError):
    """An output folder this tool may not write into; the message names the folder and the files in the way."""


def written_here(folder: str | os.PathLike) -> dict[str, str]:
    """Name -> tool for every top-level entry the folder's record says this package wrote ({} if none)."""
    record = Path(folder) / RECORD
    if not os.path.lexists(record):
        return {}
    try:
        doc = json.loads(record.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT or not isinstance(doc.get("entries"), dict):
        raise OutputFolderError(f"refusing to write into {folder}: {RECORD} there was not written by camfusion_ros")
    return {str(k): str(v) for k, v in doc["entries"].items()}


def claim_outputs(folder: str | os.PathLike, tool: str, names: Iterable[str]) -> Path:
    """Create ``folder`` if needed and record ``names`` as written by ``tool``; refuse names a user's files hold.

    Call it before writing anything, with every top-level name the tool will write."""
    out = Path(folder)
    names = list(dict.fromkeys(names))
    bad = [n for n in names if not n or "/" in n or n in (".", "..", RECORD)]
    if bad:
        raise ValueError(f"not top-level output names: {bad}")
    if os.path.lexists(out) and not out.is_dir():
        raise OutputFolderError(f"refusing to write {tool} output to {out}: it exists and is not a folder")
    ours = written_here(out) if out.is_dir() else {}
    foreign = [n for n in names if os.path.lexists(out / n) and n not in ours]
    if foreign:
        raise OutputFolderError(
            f"refusing to write {tool} output into {out}: {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}"
            f" already exist{'s' if len(foreign) == 1 else ''} there and {'was' if len(foreign) == 1 else 'were'} not "
            "written by camfusion_ros; choose another output folder or move them away")
    out.mkdir(parents=True, exist_ok=True)
    entries = {**ours, **{n: tool for n in names}}
    if entries != ours:
        _write_record(out, entries)
    return out


def _write_record(out: Path, entries: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{RECORD}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"format": RECORD_FORMAT, "entries": dict(sorted(entries.items()))}, f, indent=1)
        os.replace(tmp, out / RECORD)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_replaceable_folder(target: str | os.PathLike, files: Iterable[str], record: str, format_key: str,
                      what: str, error: type[Exception] = OutputFolderError) -> None:
    """Raise ``error`` unless ``target`` is absent, empty, or a ``what`` folder this package wrote.

    Ours means: nothing but ``files`` in it, and ``record`` (one of them, JSON) carrying ``format_key``."""
    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise error(f"refusing to write a {what} to {target}: it exists and is not a {what} folder")
    names = {p.name for p in target.iterdir()}
    foreign = sorted(names - set(files))
    if foreign:
        raise error(f"refusing to replace {target}: it holds files this package did not write "
                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); choose a new or empty folder")
    if names:
        try:
            ours = format_key in json.loads((target / record).read_text())
        except (OSError, ValueError, UnicodeDecodeError, TypeError):
            ours = False
        if not ours:
            raise error(f"refusing to replace {target}: its {record} is not one this package wrote")


@contextmanager
def fresh_folder(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to write a whole new version into: swapped in (``swap_in``) when the
    block ends, removed if it fails. Its name is one ``recover_swap`` knows. Check ``target`` replaceable first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(tmp: Path, target: Path) -> None:
    """Put the finished folder ``tmp`` at ``target``, replacing a previous one (checked replaceable by the caller).

    The old folder is moved aside first and removed only after the new one is in place, so a failure leaves one of
    the two complete on disk."""
    old = None
    if os.path.lexists(target):
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_swap(target: Path) -> bool:
    """Repair what a kill during ``swap_in`` (or while its ``tmp`` was written) left beside ``target``.

    Killed between moving the old folder aside and moving the new one in, ``target`` is missing and the old
    one lies at ``.<name>.old.<pid>``: it is moved back (True is returned). Leftover hidden ``.<name>.*``
    siblings (half-written temporaries, old folders) are removed. Call it only while nothing else writes
    ``target``."""
    target = Path(target)
    # exactly the names fresh_folder and swap_in make: mkdtemp(prefix=".<name>.") and ".<name>.old.<pid>"
    ours = re.compile(rf"\.{re.escape(target.name)}\.([a-z0-9_]{{8}}|old\.\d+)")
    leftovers = [p for p in target.parent.glob(f".{target.name}.*") if ours.fullmatch(p.name)]
    olds = [p for p in leftovers if p.name.startswith(f".{target.name}.old.")]
    restored = False
    if not os.path.lexists(target) and olds:
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, target)
        leftovers.remove(newest)
        restored = True
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return restored

