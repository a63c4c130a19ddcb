"""The ambient state a command needs, passed in (never read from globals inside commands)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class CommandIO:
    stdout: IO[str]
    stderr: IO[str]
    env: Mapping[str, str]
