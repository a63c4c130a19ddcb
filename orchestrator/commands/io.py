"""The ambient state a command needs, passed in (never read from globals inside commands)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, NamedTuple

from orchestrator.output import Redactor


class CommandIO(NamedTuple):
    stdout: IO[str]
    stderr: IO[str]
    env: Mapping[str, str]
    #: the secret values never to show; ``main`` passes both streams and every error through
    #: it, and a command adds the values of the secrets its rules.toml declares
    redactor: Redactor
