"""The retry rules (orchestrator/retrying.py) with literals: deadlines, backoff, giving up."""

from __future__ import annotations

import errno
import urllib.error

import pytest

from orchestrator import retrying
from orchestrator.errors import InputError


def test_the_deadline_comes_from_the_environment_or_the_kind_of_service() -> None:
    assert retrying.deadline({}, local=False) == 60
    assert retrying.deadline({}, local=True) == 10
    assert retrying.deadline({"ORCHESTRATOR_RETRY_DEADLINE": "2.5"}, local=False) == 2.5
    for bad in ("0", "-1", "soon", "nan", "1e9"):
        with pytest.raises(InputError, match="ORCHESTRATOR_RETRY_DEADLINE must be") as raised:
            retrying.deadline({"ORCHESTRATOR_RETRY_DEADLINE": bad}, local=True)
        assert isinstance(raised.value, ValueError)


def test_one_attempt_waits_at_most_half_the_deadline() -> None:
    assert retrying.attempt_timeout(60, 120) == 30
    assert retrying.attempt_timeout(600, 120) == 120
    assert retrying.attempt_timeout(1, 120) == 1  # never under a second


def test_backoff_is_exponential_with_full_jitter_and_truncated() -> None:
    ceilings = []
    delays = retrying.delays(uniform=lambda low, high: ceilings.append((low, high)) or high)
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert all(low == 0 for low, _ in ceilings)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_transient_failures_are_retried_until_an_attempt_succeeds() -> None:
    clock = _Clock()
    answers: list[object] = [ConnectionResetError(), TimeoutError(), "done"]
    timeouts = []

    def attempt(timeout: float) -> str:
        timeouts.append(timeout)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    result = retrying.call(
        attempt, transient=lambda e: isinstance(e, OSError), total=20, cap=60,
        clock=lambda: clock.now, sleep=clock.sleep,
    )  # fmt: skip
    assert result == "done"
    assert len(clock.slept) == 2
    assert timeouts[0] == 10  # half the deadline


def test_a_permanent_fault_gives_up_within_the_deadline_with_the_last_error() -> None:
    clock = _Clock()

    def attempt(timeout: float) -> None:
        clock.now += 0.1
        raise ConnectionResetError(errno.ECONNRESET, "reset by peer")

    with pytest.raises(retrying.GaveUp) as raised:
        retrying.call(attempt, transient=lambda e: True, total=5, clock=lambda: clock.now,
                      sleep=clock.sleep)  # fmt: skip
    gave_up = raised.value
    assert clock.now <= 5
    assert isinstance(gave_up.last, ConnectionResetError)
    assert gave_up.attempts == len(clock.slept) + 1 > 2
    assert gave_up.summary.startswith(f"gave up after {gave_up.attempts} attempts in ")
    assert gave_up.summary.endswith("(ORCHESTRATOR_RETRY_DEADLINE=5)")


def test_what_is_not_transient_fails_at_once() -> None:
    calls = []

    def attempt(timeout: float) -> None:
        calls.append(timeout)
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        retrying.call(attempt, transient=lambda e: isinstance(e, TimeoutError), total=60)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("http://localhost:4443", True),
        ("[::1]:9000", True),
        ("127.0.0.2", True),
        ("gcs:4443", False),
        ("https://storage.googleapis.com", False),
        ("us-central1-docker.pkg.dev", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert retrying.is_loopback(host) is loopback


def test_a_refused_connection_is_found_however_it_is_wrapped() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    wrapped = urllib.error.URLError(refused)
    try:
        try:
            raise refused
        except OSError as inner:
            raise RuntimeError("the client's own wrapper") from inner
    except RuntimeError as outer:
        chained = outer
    assert retrying.refused(refused)
    assert retrying.refused(wrapped)
    assert retrying.refused(chained)
    assert retrying.refused(Exception("failed to connect to all addresses; Connection refused"))
    assert not retrying.refused(ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not retrying.refused(TimeoutError())
