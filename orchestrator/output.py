"""The terminal: whether to use rich, and how errors look. Nothing else prints styled text."""

from __future__ import annotations

import re
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
    """``message`` as one line: newlines and other control characters a path, key or value
    brought in are escaped (``\\n``), and bytes that are not UTF-8 written ``\\xNN``."""
    return f"orchestrator: error: {one_line(message)}\n"


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters escaped as Python writes them in a string literal
    (``\\n``, ``\\t``, ``\\x1b``) and lone surrogates as :func:`undecodable` does."""
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return undecodable(text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def undecodable(text: str, backslash: str = "\\") -> str:
    """``text`` with each byte of a path that is not UTF-8 (decoded with ``surrogateescape``)
    written ``\\xNN``, as Python's ``backslashreplace`` writes it, and any other lone
    surrogate ``\\uNNNN``: text every strict UTF-8 writer accepts. ``backslash`` is what
    stands for the backslash (``\\\\`` inside JSON text)."""
    if not _LONE_SURROGATE.search(text):
        return text

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        if 0xDC80 <= code <= 0xDCFF:
            return f"{backslash}x{code - 0xDC00:02x}"
        return f"{backslash}u{code:04x}"

    return _LONE_SURROGATE.sub(escape, text)


class SafeStream:
    """A text stream that never fails on what it is given: undecodable path bytes are
    escaped (:func:`undecodable`), and characters the stream's encoding cannot hold (an
    ASCII locale) are written with ``backslashreplace``."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        text = undecodable(text)
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            safe = text.encode(encoding, "backslashreplace").decode(encoding)
            return self._stream.write(safe)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
