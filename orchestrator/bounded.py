"""What the CLI reads from files and arguments it is pointed at, bounded. Pure, plus one read.

A file named on the command line or in the environment (``--rules``, ``--params``, ``ledger set
--file``, ``GITHUB_EVENT_PATH``) may be anything: a device that never ends (``/dev/zero``), a
huge file, JSON nested a hundred thousand deep or holding a number of five thousand digits.
Python's own limits (the recursion limit, the integer-conversion limit) then surface as
``RecursionError`` or ``ValueError`` far from the input. Here every such input is read up to
a cap, and JSON is parsed strictly, so each becomes one sentence naming the input (exit 2).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any, NoReturn

from orchestrator.errors import InputError

MIB = 1 << 20
#: GitHub does not deliver a webhook payload larger than 25 MB ("Payloads are capped at 25 MB",
#: https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap): the event
#: file Actions writes to GITHUB_EVENT_PATH is that payload, so a larger one is not GitHub's.
MAX_EVENT_PAYLOAD_BYTES = 25 * MIB
#: rules.toml: a thousand rules take about 100 KB.
MAX_RULES_BYTES = 4 * MIB
#: A params file or a ledger record travels inside one message (message.MAX_DATA_BYTES).
MAX_MESSAGE_FILE_BYTES = MIB
#: ``step --artifacts``: the emitted build writes a few kilobytes.
MAX_ARTIFACTS_BYTES = MIB


class TooLarge(OSError):
    """The input holds more than its cap (``strerror`` says so, as an OSError's would)."""

    def __init__(self, limit: int) -> None:
        super().__init__(errno.EFBIG, f"it holds more than the {limit}-byte limit")

    def __str__(self) -> str:
        return str(self.strerror)


def read_capped(path: Path | str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``; :class:`TooLarge` (an ``OSError``) when it has
    more. A device such as ``/dev/zero`` is read up to the cap, never to its end."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit)
    return data


def load_json(data: bytes | str, what: str, *, limit: int) -> Any:
    """Strict JSON (RFC 8259: no NaN or Infinity, no repeated keys) of at most ``limit`` bytes,
    integers of at most ``message.MAX_INT_DIGITS`` digits, nested no deeper than the parser
    allows; anything else is an :class:`InputError` whose message starts with ``what``."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            _fail(what, "is not valid JSON (not UTF-8 text)")
    else:
        raw = data
    if len(raw) > limit:
        _fail(what, f"is {len(raw)} bytes, more than the {limit}-byte limit")
    try:
        text = raw.decode("utf-8-sig") if isinstance(data, bytes) else data
    except UnicodeDecodeError as error:
        _fail(what, f"is not valid JSON (not UTF-8 at byte {error.start})")
    from orchestrator.message import JSONRefused, strict_json  # the message's own rules

    try:
        return strict_json(text)
    except JSONRefused as error:
        _fail(what, str(error))
    except json.JSONDecodeError as error:
        _fail(what, f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})")
    except RecursionError:
        _fail(what, "is nested too deeply")
    except ValueError as error:  # whatever else the interpreter's limits refuse
        _fail(what, f"holds a value that cannot be read ({str(error)[:80]})")


def _fail(what: str, reason: str) -> NoReturn:
    raise InputError(f"{what} {reason}")


def shown(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: an error never echoes a megabyte of input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
