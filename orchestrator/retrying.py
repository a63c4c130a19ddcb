"""Bounded retries with backoff: how every call to a service rides out a transient fault.

Used by the bucket layer (``objects.py``) and the adapters (storage, Pub/Sub, Cloud Build, the
container registry, Docker), so the tool and the trigger function follow the same rules.
Standard library only: the deploy step copies this file next to the function as
``ct_retrying.py`` (``orchestrator.shipped``).

The rules:

* **What is transient**: a connection reset, dropped or timed out; HTTP 408, 429, 500, 502,
  503, 504; gRPC ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` and the other codes the client
  libraries retry themselves (each adapter names its list and where it comes from).
  Everything else (403, 404, a bad request) fails at once.
* **Backoff**: truncated exponential with full jitter, starting at 0.5 s, doubling, at most 8 s
  between attempts, as Google asks of clients of its APIs
  (https://cloud.google.com/storage/docs/retry-strategy, "exponential backoff";
  ``google.api_core.retry.exponential_sleep_generator`` draws the same way).
* **A deadline per call**: no attempt starts after ``ORCHESTRATOR_RETRY_DEADLINE`` seconds
  (default 60 against Google Cloud, 10 against an emulator or endpoint the environment names),
  and one attempt waits at most half of it for an answer (:func:`attempt_timeout`), so a
  service that hangs still leaves time for another try. A permanent fault therefore fails
  within the deadline, with one line naming the service.
* **Nothing listening on this machine is not transient**: a refused connection to a loopback
  address (an emulator that is not running) fails at once; no retry makes it listen.
* **Only what is safe to repeat is repeated**: reads, create-only and compare-and-swap writes,
  a publish whose duplicate the runs registry absorbs. ``CreateBuild`` is made safe first (a
  tag to find the build by: ``adapters/cloudbuild``).
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

try:  # inside the repository: a bad setting is bad input (exit 2)
    from orchestrator.errors import InputError

    class _SettingError(InputError, ValueError):
        pass

except ImportError:  # deployed next to the function

    class _SettingError(ValueError):  # type: ignore[no-redef]
        pass


DEADLINE_VAR = "ORCHESTRATOR_RETRY_DEADLINE"
#: seconds spent on one call, retries included, against Google Cloud
CLOUD_DEADLINE = 60.0
#: the same against an emulator or a local endpoint: a fault there is rarely a blip
LOCAL_DEADLINE = 10.0
MAX_DEADLINE = 3600.0

INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
MULTIPLIER = 2.0

_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")

T = TypeVar("T")


class BadSetting(_SettingError):
    """``ORCHESTRATOR_RETRY_DEADLINE`` is not a number of seconds (an ``InputError``: exit 2)."""


class GaveUp(Exception):
    """Every attempt failed with a transient fault until the deadline; ``last`` is the last."""

    def __init__(self, last: BaseException, attempts: int, seconds: float, deadline: float):
        self.last = last
        self.attempts = attempts
        self.seconds = seconds
        self.deadline = deadline
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        tries = "1 attempt" if self.attempts == 1 else f"{self.attempts} attempts"
        return f"gave up after {tries} in {self.seconds:.1f} s ({DEADLINE_VAR}={self.deadline:g})"


def deadline(env: Mapping[str, str], *, local: bool) -> float:
    """The seconds one call may take, retries included (see the module docstring)."""
    raw = env.get(DEADLINE_VAR, "").strip()
    if not raw:
        return LOCAL_DEADLINE if local else CLOUD_DEADLINE
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_DEADLINE:
        raise BadSetting(
            f"{DEADLINE_VAR} must be a number of seconds in (0, {MAX_DEADLINE:g}], not {raw!r}"
        )
    return value


def attempt_timeout(total: float, cap: float) -> float:
    """How long one attempt waits for an answer: at most half the deadline (so a hung answer
    leaves time for another attempt), at most ``cap``, at least one second."""
    return max(1.0, min(cap, total / 2))


def delays(
    *,
    initial: float = INITIAL_DELAY,
    maximum: float = MAX_DELAY,
    multiplier: float = MULTIPLIER,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Iterator[float]:
    """Truncated exponential backoff with full jitter: uniform(0, 0.5), (0, 1), (0, 2), ..."""
    ceiling = min(initial, maximum)
    while True:
        yield uniform(0.0, ceiling)
        ceiling = min(ceiling * multiplier, maximum)


def call(
    attempt: Callable[[float], T],
    *,
    transient: Callable[[BaseException], bool],
    total: float,
    cap: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``attempt(timeout)`` until it returns or raises what is not ``transient``; after
    ``total`` seconds of transient failures, :class:`GaveUp` (from the last one). ``timeout``
    is what the attempt may wait for an answer (:func:`attempt_timeout`, and never past the
    deadline by more than a second)."""
    start = clock()
    end = start + total
    for attempts, pause in enumerate(delays(), start=1):
        remaining = end - clock()
        try:
            return attempt(max(1.0, min(attempt_timeout(total, cap), remaining)))
        except Exception as exc:
            if not transient(exc):
                raise
            now = clock()
            if now + pause >= end:
                raise GaveUp(exc, attempts, now - start, total) from exc
            if on_retry is not None:
                on_retry(exc, pause)
            sleep(pause)
    raise AssertionError("unreachable: delays() never ends")  # pragma: no cover


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``name``, ``name:port``, ``[v6]:port`` or a URL) is this machine."""
    name = host.split("://", 1)[-1].split("/", 1)[0]
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    return name in _LOOPBACK or name.startswith("127.")


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was caused by, a refused connection (nothing listening).

    Clients wrap it in layers (requests over urllib3, urllib, gRPC's status text), so the
    chain, the arguments and a ``reason`` are searched; gRPC says it in words."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionRefusedError):
            return True
        if isinstance(item, OSError) and item.errno == errno.ECONNREFUSED:
            return True
        if isinstance(item, BaseException):
            if "Connection refused" in str(item) and not isinstance(item, OSError):
                return True  # grpc: "failed to connect to all addresses; ... Connection refused"
            pending += [item.__cause__, item.__context__, getattr(item, "reason", None)]
            pending += [a for a in item.args if isinstance(a, BaseException)]
    return False


def first_line(value: object) -> str:
    """The first line of ``str(value)``, or the type's name when it says nothing."""
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
