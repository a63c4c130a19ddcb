"""rules.toml's usual shape, read without tomllib; anything else goes to tomllib. Pure.

``tomllib`` is a pure-Python parser: a thousand rules take it about 30 ms, more than the rest
of planning them. Rules files use a small part of TOML, one statement per line: table headers
(``[components.trainer]``, ``[[rule]]``), and keys set to a string without escapes, a decimal
integer, a boolean, a one-line array of such strings, or a one-line inline table of such
strings. :func:`loads` reads exactly that, and returns what ``tomllib.loads`` returns for it;
at the first line or construct outside it (an escape, a float, a date, a dotted key, a
multi-line value, a header that reopens a table, anything it is not sure of) it hands the
whole text to ``tomllib``, which also gives every error its message and line.

``tests/test_toml_subset.py`` checks it against ``tomllib`` on generated documents, inside the
subset and just outside it. The grammar: https://toml.io/en/v1.0.0.
"""

from __future__ import annotations

import re
from typing import Any

_WS = "[ \t]*"
_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"[^"\\\x00-\x1f\x7f]*"'  # a basic string without escapes or control characters
_LITERAL = r"'[^'\x00-\x1f\x7f]*'"
_KEY = f"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_STRING = f"(?:{_BASIC}|{_LITERAL})"
_COMMENT = "(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?"
_END = f"{_WS}{_COMMENT}$"

_HEADER = re.compile(f"{_WS}\\[{_WS}({_KEY}(?:{_WS}\\.{_WS}{_KEY})*){_WS}\\]{_END}")
_ARRAY_HEADER = re.compile(f"{_WS}\\[\\[{_WS}({_KEY}(?:{_WS}\\.{_WS}{_KEY})*){_WS}\\]\\]{_END}")
_BLANK = re.compile(f"{_WS}{_COMMENT}$")
_INTEGER = r"[+-]?(?:0|[1-9][0-9]{0,17})"  # longer ones: tomllib decides
#: a float with a fraction, an exponent or both, no underscores, inf or nan (those: tomllib);
#: tomllib reads these with ``float`` too (tomllib/_re.py RE_NUMBER, _parser.py)
_FLOAT = r"[+-]?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,20}(?:[eE][+-]?[0-9]{1,3})?|[eE][+-]?[0-9]{1,3})"
_ARRAY = f"\\[{_WS}(?:{_STRING}{_WS},{_WS})*(?:{_STRING}{_WS},?{_WS})?\\]"
_INLINE = (
    f"\\{{{_WS}(?:{_KEY}{_WS}={_WS}{_STRING}(?:{_WS},{_WS}{_KEY}{_WS}={_WS}{_STRING})*)?{_WS}\\}}"
)
#: ``key = value``: each kind of value is its own group, and the line must end after it
_ASSIGNMENT = re.compile(
    f"{_WS}({_KEY}){_WS}={_WS}"
    f"(?:({_STRING})|(true|false)|({_FLOAT})|({_INTEGER})|({_ARRAY})|({_INLINE})){_END}"
)
_STRINGS = re.compile(_STRING)
_KEY_PART = re.compile(_KEY)
_PAIR = re.compile(f"({_KEY}){_WS}={_WS}({_STRING})")


class _Outside(Exception):
    """The text leaves the subset: tomllib reads it."""


def loads(text: str) -> dict[str, Any]:
    """``tomllib.loads(text)``, faster for the usual rules file (see the module's docstring);
    raises ``tomllib.TOMLDecodeError`` as tomllib does."""
    try:
        return _read(text)
    except _Outside:
        import tomllib

        return tomllib.loads(text)


def _read(text: str) -> dict[str, Any]:
    if "\r" in text and "\r" in text.replace("\r\n", ""):
        raise _Outside  # a lone CR
    root: dict[str, Any] = {}
    table = root
    #: tables a header has opened; tables created on the way to one (which a later header
    #: may still open); arrays of tables. Any other reuse of a name leaves the subset.
    opened: set[tuple[str, ...]] = {()}
    implicit: set[tuple[str, ...]] = set()
    arrays: set[tuple[str, ...]] = set()
    for line in text.replace("\r\n", "\n").split("\n"):
        first = line.lstrip(" \t")[:1]
        if first == "[":
            pass  # a header, below
        elif not first or first == "#":
            if not _BLANK.match(line):
                raise _Outside  # a control character in a comment
            continue
        else:
            assignment = _ASSIGNMENT.match(line)
            if assignment is None:
                raise _Outside
            key = _key(assignment.group(1))
            if key in table:
                raise _Outside
            table[key] = _value(assignment)
            continue
        header = _ARRAY_HEADER.match(line)
        if header:
            path = _path(header.group(1))
            parent = _walk(root, path[:-1], implicit, opened, arrays)
            if path in arrays:
                parent[path[-1]].append(table := {})
            elif path[-1] in parent:
                raise _Outside
            else:
                parent[path[-1]] = [table := {}]
                arrays.add(path)
            continue
        header = _HEADER.match(line)
        if header:
            path = _path(header.group(1))
            if path in opened or path in arrays:
                raise _Outside
            parent = _walk(root, path[:-1], implicit, opened, arrays)
            if path in implicit:
                implicit.discard(path)
                table = parent[path[-1]]
            elif path[-1] in parent:
                raise _Outside
            else:
                parent[path[-1]] = table = {}
            opened.add(path)
            continue
        raise _Outside
    return root


def _walk(
    root: dict[str, Any],
    path: tuple[str, ...],
    implicit: set[tuple[str, ...]],
    opened: set[tuple[str, ...]],
    arrays: set[tuple[str, ...]],
) -> dict[str, Any]:
    """The table at ``path``, creating what is missing as implicit tables; only tables this
    reader made, never a value, an inline table or an array of tables."""
    table = root
    for depth in range(1, len(path) + 1):
        prefix = path[:depth]
        name = prefix[-1]
        if name not in table:
            table[name] = {}
            implicit.add(prefix)
        elif prefix not in implicit and prefix not in opened:
            raise _Outside  # a value, an inline table, or an array of tables
        table = table[name]
    return table


def _path(text: str) -> tuple[str, ...]:
    return tuple(_key(part) for part in _KEY_PART.findall(text))


def _key(text: str) -> str:
    return text[1:-1] if text[0] in "\"'" else text


def _value(assignment: re.Match[str]) -> Any:
    string, boolean, number, integer, array, inline = assignment.groups()[1:]
    if string is not None:
        return string[1:-1]
    if boolean is not None:
        return boolean == "true"
    if number is not None:
        return float(number)
    if integer is not None:
        return int(integer)
    if array is not None:
        return [s[1:-1] for s in _STRINGS.findall(array)]
    table: dict[str, str] = {}
    for key, value in _PAIR.findall(inline):
        name = _key(key)
        if name in table:
            raise _Outside
        table[name] = value[1:-1]
    return table
