"""A small YAML writer for build configs: block style, every string double-quoted.

YAML's double-quoted scalars accept JSON's escapes, so each scalar is written with
``json.dumps``: no YAML library on the planning path, and no value can change meaning
(``"on"``, ``"0755"``, ``"null"`` all stay strings).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any


def dump(value: Any) -> str:
    return "\n".join(_lines(value, 0)) + "\n"


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            head = f"{pad}{_key(str(key))}:"
            if _is_collection(item) and item:
                out.append(head)
                out += _lines(item, indent + 2)
            else:
                out.append(f"{head} {_inline(item)}")
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if _is_collection(item) and item:
                nested = _lines(item, indent + 2)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out += nested[1:]
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _scalar(value)]


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _key(key: str) -> str:
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _SPECIAL:
        return key
    return _scalar(key)


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[]"
    return _scalar(value)


def _is_collection(value: Any) -> bool:
    return isinstance(value, Mapping) or (
        isinstance(value, Sequence) and not isinstance(value, str)
    )
