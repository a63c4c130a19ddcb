"""The runs registry: one record per run identity, and the rules that decide a delivery.

Shared by the trigger function (which claims, renews and finishes entries) and the
orchestrator (whose plan asks whether a state was already trained). Standard library only,
plus :mod:`orchestrator.message`; the deploy step copies it next to the function as
``ct_runs.py``.

``gs://<bucket>/<prefix>/runs/<run_id>.json`` holds a :class:`RegistryEntry`. :func:`decide`
says what a new delivery of a run does (see ``function/main.py`` for the whole protocol), and
:func:`live` whether a ``running`` entry is still being worked on: its lease has not expired
and, on this machine, its process is still there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

try:  # inside the repository
    from orchestrator import message
except ImportError:  # deployed next to the function
    import ct_message as message  # type: ignore[import-not-found, no-redef]

MessageError = message.MessageError

RunStatus = Literal["running", "succeeded", "failed", "submitted"]
_RUN_STATUSES = ("running", "succeeded", "failed", "submitted")


def _host_identity() -> str:
    """This machine: the hostname, and the kernel's boot id when it can be read (two
    containers or a rebooted machine with the same name are different hosts)."""
    import socket  # not at import: the planning path never needs it

    name = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{name}#{boot}" if boot else name


HOST = _host_identity()


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` on this host still running? Unknown counts as alive."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def iso_utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RegistryEntry:
    """One run identity's registry object (see the module docstring)."""

    run_id: str
    status: RunStatus
    request_id: str = ""
    attempt: int = 1
    job_id: str = ""
    commit: str = ""
    data_uri: str = ""
    started: str = ""
    lease_expires: str = ""
    host: str = ""
    pid: int = 0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""

    def to_bytes(self) -> bytes:
        return (
            json.dumps(
                {
                    "run_id": self.run_id,
                    "status": self.status,
                    "request_id": self.request_id,
                    "attempt": self.attempt,
                    "job_id": self.job_id,
                    "commit": self.commit,
                    "data_uri": self.data_uri,
                    "started": self.started,
                    "lease_expires": self.lease_expires,
                    "host": self.host,
                    "pid": self.pid,
                    "metrics": dict(self.metrics),
                    "detail": self.detail,
                },
                sort_keys=True,
                indent=2,
            )
            + "\n"
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RegistryEntry:
        """Parse an entry; MessageError saying why when it is not one."""
        raw = message.load_json(data, "the registry entry")
        if not isinstance(raw, dict):
            raise MessageError("the registry entry is not a JSON object")
        strings = ("run_id", "request_id", "job_id", "commit", "data_uri", "started",
                   "lease_expires", "host", "detail")  # fmt: skip
        if raw.get("status") not in _RUN_STATUSES:
            raise MessageError(f"the registry entry has no known status ({raw.get('status')!r})")
        for name in strings:
            if not isinstance(raw.get(name, ""), str):
                raise MessageError(f"the registry entry's {name!r} is not a string")
        attempt, pid = raw.get("attempt", 1), raw.get("pid", 0)
        if type(attempt) is not int or attempt < 1 or type(pid) is not int:
            raise MessageError("the registry entry's attempt or pid is not a number")
        metrics = raw.get("metrics", {})
        if not isinstance(metrics, dict):
            raise MessageError("the registry entry's metrics are not an object")
        return cls(
            status=raw["status"],
            attempt=attempt,
            pid=pid,
            metrics=metrics,
            **{name: raw.get(name, "") for name in strings},
        )


@dataclass(frozen=True)
class Decision:
    """What the registry entry says about a new delivery: claim (and with which attempt), or
    not; ``note`` is the reason (a takeover or retry, or the duplicate's detail)."""

    claim: bool
    attempt: int = 1
    note: str = ""


def decide(
    entry: RegistryEntry | None,
    msg: message.PublishMessage,
    now: float,
    *,
    host: str = HOST,
    alive: Callable[[int], bool] = pid_alive,
) -> Decision:
    """The registry rules (see the module docstring). Pure: the clock and the process table
    come in as parameters."""
    if entry is None:
        return Decision(True, 1)
    if entry.status == "succeeded":
        return Decision(False, note="already succeeded")
    if entry.status == "submitted":
        return Decision(False, note=f"already submitted as {entry.job_id or entry.run_id}")
    if entry.status == "running":
        lease = epoch(entry.lease_expires)
        if lease is None or now >= lease:
            return Decision(
                True,
                entry.attempt,
                f"took over attempt {entry.attempt}: its lease expired at "
                f"{entry.lease_expires or '(none)'}"
                + (f" ({entry.detail})" if entry.detail.startswith("interrupted") else ""),
            )
        if entry.host == host and not alive(entry.pid):
            return Decision(
                True,
                entry.attempt,
                f"took over attempt {entry.attempt}: its process {entry.pid} on {entry.host} "
                "is gone",
            )
        return Decision(
            False,
            note=f"in progress: attempt {entry.attempt} on {entry.host or '?'} (pid {entry.pid}),"
            f" lease until {entry.lease_expires}",
        )
    failure = entry.detail or "no detail"
    if msg.retry and msg.request_id and msg.request_id != entry.request_id:
        return Decision(
            True,
            entry.attempt + 1,
            f"retry of failed attempt {entry.attempt} ({failure}), request {msg.request_id}",
        )
    hint = (
        "this request already ran it; publish a new request with retry to run it again"
        if msg.retry
        else "publish it with retry to run it again"
    )
    return Decision(False, note=f"already failed: {failure} ({hint})")


def live(entry: RegistryEntry, now: float, *, host: str = HOST,
         alive: Callable[[int], bool] = pid_alive) -> bool:  # fmt: skip
    """Whether a ``running`` entry is still being worked on (its lease holds and, on this
    host, its process exists)."""
    if entry.status != "running":
        return False
    lease = epoch(entry.lease_expires)
    if lease is None or now >= lease:
        return False
    return not (entry.host == host and not alive(entry.pid))
