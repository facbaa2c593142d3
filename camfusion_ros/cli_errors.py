"""The command-line error contract: one line ``error: ...`` on stderr, exit status 2, no traceback.

Standard library only, so every tool (core, nodes, eval, training, bench) reports alike.
"""
from __future__ import annotations

import sys


def one_line(exc: BaseException | str) -> str:
    """The message with its whitespace (newlines too) collapsed; the type name if it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def report_error(exc: BaseException | str) -> int:
    """Print ``error: <message>`` on stderr; returns the exit status (2) for ``return report_error(e)``."""
    print(f"error: {one_line(exc)}", file=sys.stderr)
    return 2
