"""The deploy ledger: what is deployed, per branch and pipeline, kept in the bucket.

One object per branch and pipeline, ``gs://<bucket>/<prefix>/ledger/<branch>/<pipeline>.json``
(the branch percent-encoded, so ``feature/x`` is one path segment), holding a
:class:`~orchestrator.message.DeployedState`: the deployed commit, every artifact's URI (images
by digest) and content hash, the parameters, the data URI and the run identity last
published. The directory bucket under ``.orchestrator/`` holds it for the embedded default.

Every change is a compare-and-swap on the object's generation, retried on conflict: two
builds that finish together both land, in some order, and a commit that is an ancestor of
the recorded one never replaces it (an older build finishing late). Each recorded state is
also written, immutably, under ``<pipeline>.history/``, which ``ledger history`` lists.

Faults: each read and write rides out transient faults within the retry deadline
(``objects``); a write that still fails leaves the record as it was, and the run that wanted
it exits 1 naming the service. The record is one object, written whole, so a process killed
at any moment leaves the old state or the new one, never a mix: the next run then plans from
the old one and records the new one. Both writes are safe to repeat: the history entry is
created only if absent (a repeat whose first attempt landed finds it there), the record is a
compare-and-swap.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from orchestrator import objects
from orchestrator.errors import InputError, StepFailed
from orchestrator.message import DeployedState, StateError, decode_state, encode_state

DEFAULT_PIPELINE = "default"
_ATTEMPTS = 20


class LedgerCorrupt(InputError):
    """The ledger object cannot be read as a deployed state (exit 2, naming it)."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where one branch's ledger for one pipeline lives."""

    bucket: str
    prefix: str
    branch: str
    pipeline: str = DEFAULT_PIPELINE

    @property
    def _base(self) -> str:
        branch = urllib.parse.quote(self.branch, safe="")
        return f"{self.prefix.strip('/')}/ledger/{branch}/{self.pipeline}"

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self._base}.json"

    @property
    def history_prefix(self) -> str:
        return f"{self._base}.history/"


@dataclass(frozen=True, slots=True)
class Entry:
    state: DeployedState
    generation: int


Outcome = str  # "recorded" | "kept" (an older commit did not replace a newer one)


def read(location: Location, env: Mapping[str, str]) -> Entry | None:
    """The recorded state, or ``None`` when nothing was ever deployed here."""
    stored = _read(location.uri, env)
    if stored is None:
        return None
    return Entry(_decode(stored.data, location.uri), stored.generation)


def record(
    location: Location,
    state: DeployedState,
    env: Mapping[str, str],
    *,
    is_ancestor: Callable[[str, str], bool] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    """Record ``state`` as deployed. ``is_ancestor(a, b)`` tells whether commit ``a`` is an
    ancestor of ``b`` (``None``: no history to ask, every state replaces the last)."""
    state = replace(state, updated=now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    data = encode_state(state)
    stamp = state.updated.replace(":", "").replace("-", "").replace(".", "")
    history = f"gs://{location.bucket}/{location.history_prefix}{stamp}-{state.commit[:12]}.json"
    # created only if absent: a repeated request whose first attempt landed finds it there
    with contextlib.suppress(objects.PreconditionFailed):
        _write(history, data, env, if_generation=0)
    for _ in range(_ATTEMPTS):
        current = read(location, env)
        if current is not None and is_ancestor is not None:
            recorded = current.state.commit
            if recorded != state.commit and is_ancestor(state.commit, recorded):
                return "kept"
        try:
            _write(location.uri, data, env, if_generation=current.generation if current else 0)
        except objects.PreconditionFailed:
            continue  # another build recorded meanwhile: read again and decide again
        return "recorded"
    raise StepFailed(f"could not update the deploy ledger {location.uri}: it kept changing")


def overwrite(location: Location, state: DeployedState, env: Mapping[str, str]) -> None:
    """``ledger set``: replace whatever is recorded (a repair), keeping the history."""
    record(location, state, env, is_ancestor=None)


def history(location: Location, env: Mapping[str, str]) -> list[DeployedState]:
    """Every state ever recorded here, oldest first."""
    try:
        keys = objects.list_keys(location.bucket, location.history_prefix, env)
    except objects.BadUri as exc:
        raise InputError(str(exc)) from exc
    except objects.ObjectError as exc:
        raise StepFailed(f"listing the deploy ledger's history failed: {exc}") from exc
    states = []
    for key in keys:
        uri = f"gs://{location.bucket}/{key}"
        stored = _read(uri, env)
        if stored is not None:
            states.append(_decode(stored.data, uri))
    return states


def repair_hint(location: Location) -> str:
    return (
        f"repair it with: python -m orchestrator ledger set --branch {location.branch} "
        "--commit <the deployed commit>"
    )


def _decode(data: bytes, uri: str) -> DeployedState:
    try:
        return decode_state(data, source=uri)
    except StateError as exc:
        location = _location_of(uri)
        hint = repair_hint(location) if location else "rewrite it with ledger set"
        raise LedgerCorrupt(f"{str(exc).rstrip('.')}; {hint}") from None


def _location_of(uri: str) -> Location | None:
    try:
        target = objects.parse_uri(uri)
    except objects.BadUri:
        return None
    parts = target.key.split("/")
    if len(parts) < 4 or parts[-3] != "ledger":
        return None
    pipeline = parts[-1].removesuffix(".json")
    return Location(target.bucket, "/".join(parts[:-3]), urllib.parse.unquote(parts[-2]), pipeline)


def _read(uri: str, env: Mapping[str, str]) -> objects.Stored | None:
    try:
        return objects.read(uri, env)
    except objects.BadUri as exc:
        raise InputError(str(exc)) from exc
    except objects.ObjectError as exc:
        raise StepFailed(f"reading the deploy ledger failed: {exc}") from exc


def _write(uri: str, data: bytes, env: Mapping[str, str], *, if_generation: int | None) -> None:
    try:
        objects.write(uri, data, env, if_generation=if_generation)
    except objects.PreconditionFailed:
        raise
    except objects.BadUri as exc:  # as _read: the name, not the service, is at fault
        raise InputError(str(exc)) from exc
    except objects.ObjectError as exc:
        raise StepFailed(f"writing the deploy ledger failed: {exc}") from exc
