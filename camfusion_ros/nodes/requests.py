"""Checks on service requests: any participant of the ROS graph may call the node's services.

DDS has no authentication by default, so a request is validated before any
work: sizes are bounded (a request can exhaust neither memory nor the node's
time) and map paths are confined to one root folder (the node is no remote
file tool). Every refusal is a ``RequestError`` whose message the service
returns with ``success: false``.
"""
from __future__ import annotations

import os
from pathlib import Path

MAX_VOCABULARY = 300           # terms in a QueryLabels vocabulary (ScanNet200 has 200)
MAX_TERM_CHARS = 200           # characters per vocabulary term
MAX_TEXT_CHARS = 1000          # characters of a QueryText query
MAX_TOP_K = 1000               # top_k of either query
MAX_PATH_CHARS = 4096
DEFAULT_MAP_ROOT = "~/.ros/camfusion_maps"


class RequestError(ValueError):
    """A request refused before any work; the message says why."""


def check_top_k(top_k: int) -> int:
    if not 0 <= int(top_k) <= MAX_TOP_K:
        raise RequestError(f"top_k must lie in [0, {MAX_TOP_K}], got {top_k}")
    return int(top_k)


def check_vocabulary(terms: list[str]) -> list[str]:
    if len(terms) > MAX_VOCABULARY:
        raise RequestError(f"vocabulary has {len(terms)} terms; at most {MAX_VOCABULARY} are accepted")
    for i, t in enumerate(terms):
        if len(t) > MAX_TERM_CHARS:
            raise RequestError(f"vocabulary term {i} has {len(t)} characters; at most {MAX_TERM_CHARS}")
        if not t.strip():
            raise RequestError(f"vocabulary term {i} is empty")
    return list(terms)


def check_text(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise RequestError(f"query text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if not text.strip():
        raise RequestError("query text is empty")
    return text


def map_root(configured: str, autosave_folder: str) -> Path:
    """The folder save_map / load_map requests are confined to: map_root, else the autosave folder, else
    ``~/.ros/camfusion_maps``."""
    return Path(os.path.expanduser(configured or autosave_folder or DEFAULT_MAP_ROOT)).absolute()


def confined_path(path: str, root: Path) -> Path:
    """``path`` (relative to ``root``, or absolute inside it) with every symlink resolved, inside ``root``."""
    if len(path) > MAX_PATH_CHARS or "\0" in path:
        raise RequestError("path is too long or holds a NUL character")
    real_root = Path(os.path.realpath(root))
    candidate = Path(path) if os.path.isabs(path) else root / path
    real = Path(os.path.realpath(candidate))
    if real != real_root and real_root not in real.parents:
        raise RequestError(f"path {path!r} lies outside the node's map_root {root}; "
                           "give a path inside it (relative paths are taken from it)")
    if real == real_root:
        raise RequestError(f"path {path!r} is map_root itself; name a folder inside it")
    return real
