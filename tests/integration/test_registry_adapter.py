"""Registry lookups (``adapters/registry``) against a real ``docker-registry``, through the
fault proxy: transient faults are ridden out, a permanent one is named within the deadline."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from orchestrator.adapters import registry
from orchestrator.errors import ServiceUnreachable, StepFailed
from tests.fixtures._services import free_port
from tests.fixtures.docker import LocalRegistry
from tests.fixtures.faultproxy import Fault, FaultProxy


@pytest.fixture
def pushed(local_registry: LocalRegistry) -> tuple[str, str]:
    """(repository, digest) of a tag stored in the registry."""
    digest = local_registry.push_manifest("ct/trainer", "c-1")
    return "ct/trainer", digest


def _lookup(proxy: FaultProxy, name: str, deadline: str = "20") -> str | None:
    env = {"ORCHESTRATOR_RETRY_DEADLINE": deadline}
    return registry.manifest_digest(f"{proxy.address}/{name}", env)


def test_the_lookup_names_the_digest_or_none(
    local_registry: LocalRegistry, pushed: tuple[str, str]
) -> None:
    repository, digest = pushed
    assert digest.startswith("sha256:")
    assert registry.manifest_digest(f"{local_registry.address}/{repository}:c-1", {}) == digest
    assert registry.manifest_digest(f"{local_registry.address}/{repository}:nope", {}) is None


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503, first=2), Fault.status(429, first=1), Fault.reset(first=2),
     Fault.close(first=1), Fault.delay(1.5, first=1)],
    ids=["503", "429", "reset", "closed", "slow"],
)  # fmt: skip
def test_transient_faults_are_retried(
    local_registry: LocalRegistry,
    pushed: tuple[str, str],
    fault_proxy: Callable[..., FaultProxy],
    fault: Fault,
) -> None:
    repository, digest = pushed
    proxy = fault_proxy(local_registry.address, protocol="http")
    proxy.inject(fault)

    assert _lookup(proxy, f"{repository}:c-1") == digest
    assert proxy.stats.faulted == fault.count
    assert proxy.stats.events == fault.count + (0 if fault.kind == "delay" else 1)


def test_a_missing_tag_behind_a_blip_is_still_missing(
    local_registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(local_registry.address, protocol="http")
    proxy.inject(Fault.status(502, first=1))
    assert _lookup(proxy, "ct/trainer:never-pushed") is None
    assert proxy.stats.events == 2


def test_a_registry_that_keeps_failing_gives_up_within_the_deadline_naming_it(
    local_registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(local_registry.address, protocol="http")
    proxy.inject(Fault.status(503))
    started = time.monotonic()

    with pytest.raises(ServiceUnreachable) as raised:
        _lookup(proxy, "ct/trainer:c-1", deadline="3")

    assert time.monotonic() - started < 6
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"the registry {proxy.address} kept failing to look up ")
    assert "HTTP 503 Service Unavailable" in text
    assert re.search(r"gave up after \d+ attempts in [\d.]+ s \(ORCHESTRATOR_RETRY_DEADLINE=3\)",
                     text), text  # fmt: skip
    assert proxy.stats.faulted >= 2


def test_an_answer_that_is_not_transient_fails_at_once(
    local_registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(local_registry.address, protocol="http")
    proxy.inject(Fault.status(403))
    with pytest.raises(StepFailed, match=f"the registry {proxy.address} answered 403"):
        _lookup(proxy, "ct/trainer:c-1")
    assert proxy.stats.events == 1


def test_nothing_listening_on_this_machine_fails_at_once() -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match=f"cannot reach the registry {host}"):
        registry.manifest_digest(f"{host}/ct/trainer:c-1", {})
    assert time.monotonic() - started < 2
