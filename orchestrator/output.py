"""The terminal: whether to use rich, how errors look, and what is never shown (secrets)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
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


# C0 and C1 control characters (C1 holds NEL, U+0085, and CSI, U+009B, which some terminals
# take as an escape sequence) and the Unicode line and paragraph separators: what
# str.splitlines() and terminals may break a line at or act on
# (https://docs.python.org/3/library/stdtypes.html#str.splitlines).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with control characters and line separators escaped as Python writes them
    in a string literal (``\\n``, ``\\t``, ``\\x1b``, ``\\x85``, ``\\u2028``) and lone
    surrogates as :func:`undecodable` does."""
    if _CONTROL.search(text):
        text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    return undecodable(text)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def undecodable(text: str, backslash: str = "\\") -> str:
    """``text`` with each byte of a path that is not UTF-8 (decoded with ``surrogateescape``)
    written ``\\xNN``, as Python's ``backslashreplace`` writes it, and any other lone
    surrogate ``\\uNNNN``: text every strict UTF-8 writer accepts. ``backslash`` is what
    stands for the backslash (``\\\\`` inside JSON text)."""
    if text.isascii() or not _LONE_SURROGATE.search(text):  # isascii: one fast pass in C
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


# --- secrets: never shown -------------------------------------------------------------------

#: What a secret's value is replaced by, wherever it would be shown.
REDACTED = "***"
#: A line of a multi-line secret (a key file) is masked on its own when it holds at least this
#: many characters, stripped: as GitHub Actions masks each line of a multi-line secret, but
#: without making every ``{`` or ``-----END ...-----`` line of the output disappear.
MIN_LINE_MASK = 4
#: the whitespace bash's [[:space:]] strips in the Cloud Build test step's mask (C locale)
MASK_STRIP = " \t\n\v\f\r"


def secret_masks(value: str) -> tuple[str, ...]:
    """The strings masked for one secret ``value``: the value itself, and, for a value of
    several lines, each line of at least :data:`MIN_LINE_MASK` characters, stripped (a tool
    that prints one line of it, or indents it, must not show that line either)."""
    masks = [value] if value else []
    if "\n" in value:
        for line in value.split("\n"):
            stripped = line.strip(MASK_STRIP)
            if len(stripped) >= MIN_LINE_MASK:
                masks.append(stripped)
    return tuple(dict.fromkeys(masks))


def _shown_forms(mask: str) -> set[str]:
    """``mask`` as the tool may write it: as is, inside a JSON string (ASCII-escaped or not),
    and as :func:`one_line` escapes it for an error line."""
    return {
        mask,
        json.dumps(mask)[1:-1],
        json.dumps(mask, ensure_ascii=False)[1:-1],
        one_line(mask),
    }


class Redactor:
    """Replaces secret values with :data:`REDACTED` in text and in data.

    Values are added as the commands learn them (from rules.toml's ``[build] secret_env`` and
    the environment); the CLI's streams pass everything they write through :meth:`redact`.
    Thread-safe: steps log from worker threads.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        forms = {form for value in values for mask in secret_masks(value)
                 for form in _shown_forms(mask) if form}  # fmt: skip
        with self._lock:
            if forms <= self._forms:
                return
            self._forms |= forms
            # longest first: a value is replaced whole before any line or part of it
            ordered = sorted(self._forms, key=lambda form: (-len(form), form))
            self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(REDACTED, text)

    def redact_data(self, data: Any) -> Any:
        """``data`` (JSON-like: dicts, lists, tuples, strings, numbers) with every string,
        key or value, redacted."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, Mapping):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, tuple) and hasattr(data, "_fields"):  # a NamedTuple record
            return type(data)(*(self.redact_data(v) for v in data))
        if isinstance(data, list | tuple):
            return type(data)(self.redact_data(v) for v in data)
        return data


class RedactingStream:
    """A text stream that writes everything with the redactor's secrets replaced: the last
    line of defence for whatever a command writes (each write is redacted whole, and the
    tool writes whole lines)."""

    def __init__(self, stream: IO[str] | SafeStream, redactor: Redactor) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
