"""The terminal: whether to use rich, and how errors look. Nothing else prints styled text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any


def wants_rich(stream: IO[str], env: Mapping[str, str]) -> bool:
    """Rich output only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if "NO_COLOR" in env:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(stream: IO[str]) -> Any:
    from rich.console import Console

    return Console(file=stream, highlight=False)


def error_line(message: str) -> str:
    return f"orchestrator: error: {message}\n"
