"""The Pub/Sub adapter against the official emulator."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import message
from orchestrator.adapters import pubsub
from orchestrator.errors import InputError, ServiceUnreachable
from tests.fixtures._services import free_port
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.pubsub import PubsubEmulator

PROJECT = "ct-test-project"


def _subscribe(pubsub_admin: tuple[Any, Any], topic: str, *, ordering: bool) -> str:
    publisher, subscriber = pubsub_admin
    topic_path = f"projects/{PROJECT}/topics/{topic}"
    publisher.create_topic(name=topic_path, retry=None, timeout=10)
    subscription = f"projects/{PROJECT}/subscriptions/{topic}-sub"
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic_path, "enable_message_ordering": ordering},
        retry=None,
        timeout=10,
    )
    return subscription


def _pull(
    pubsub_admin: tuple[Any, Any], subscription: str, count: int, *, wait: float = 15
) -> list[Any]:
    """Pull until ``count`` messages arrived (or ``wait`` s passed); ack them; return them in
    order."""
    _, subscriber = pubsub_admin
    received: list[Any] = []
    deadline = time.monotonic() + wait
    while len(received) < count and time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 10, "return_immediately": True},
            retry=None,
            timeout=5,
        )
        if response.received_messages:
            received.extend(m.message for m in response.received_messages)
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                },
                retry=None,
                timeout=5,
            )
        else:
            time.sleep(0.1)
    return received


def test_published_message_arrives_with_attributes_and_ordering_key(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any]
) -> None:
    topic = PubsubEmulator.unique_id("runs")
    subscription = _subscribe(pubsub_admin, topic, ordering=True)
    data = b'{"schema": 1, "commit": "abc"}'
    attributes = {"commit": "abc", "schema_version": "1"}

    message_id = pubsub.publish(
        PROJECT, topic, data, attributes, "refs/heads/main", env=pubsub_emulator.env
    )

    [message] = _pull(pubsub_admin, subscription, 1)
    assert message.message_id == message_id
    assert message.data == data
    assert dict(message.attributes) == attributes
    assert message.ordering_key == "refs/heads/main"


def test_messages_with_one_ordering_key_arrive_in_order(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any]
) -> None:
    topic = PubsubEmulator.unique_id("ordered")
    subscription = _subscribe(pubsub_admin, topic, ordering=True)
    ids = [
        pubsub.publish(PROJECT, topic, f"m{i}".encode(), {}, "main", env=pubsub_emulator.env)
        for i in range(3)
    ]
    messages = _pull(pubsub_admin, subscription, 3)
    assert [m.data for m in messages] == [b"m0", b"m1", b"m2"]
    assert [m.message_id for m in messages] == ids


def test_without_ordering_key(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any]
) -> None:
    topic = PubsubEmulator.unique_id("plain")
    subscription = _subscribe(pubsub_admin, topic, ordering=False)
    pubsub.publish(PROJECT, topic, b"x", {"a": "b"}, None, env=pubsub_emulator.env)
    [message] = _pull(pubsub_admin, subscription, 1)
    assert (message.data, dict(message.attributes), message.ordering_key) == (b"x", {"a": "b"}, "")


def test_missing_topic_is_created_on_the_emulator(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any]
) -> None:
    publisher, _ = pubsub_admin
    topic = PubsubEmulator.unique_id("fresh")
    topic_path = f"projects/{PROJECT}/topics/{topic}"
    from google.api_core import exceptions as gexc

    with pytest.raises(gexc.NotFound):
        publisher.get_topic(topic=topic_path, retry=None, timeout=10)
    assert pubsub.publish(PROJECT, topic, b"x", {}, None, env=pubsub_emulator.env)
    assert publisher.get_topic(topic=topic_path, retry=None, timeout=10).name == topic_path
    # Publishing again to the now existing topic works too.
    assert pubsub.publish(PROJECT, topic, b"y", {}, None, env=pubsub_emulator.env)


def test_unreachable_emulator_fails_quickly_naming_it() -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match="PUBSUB_EMULATOR_HOST") as info:
        pubsub.publish(
            PROJECT, "topic", b"x", {}, "main", env={"PUBSUB_EMULATOR_HOST": host}, timeout=5
        )
    assert host in str(info.value)
    assert time.monotonic() - started < 15


def test_invalid_topic_name_is_an_input_error(pubsub_emulator: PubsubEmulator) -> None:
    with pytest.raises(InputError, match="rejected topic"):
        pubsub.publish(PROJECT, "9bad", b"x", {}, None, env=pubsub_emulator.env)


def test_attributes_must_be_strings(pubsub_emulator: PubsubEmulator) -> None:
    with pytest.raises(InputError, match="strings to strings"):
        pubsub.publish(PROJECT, "topic", b"x", {"n": 1}, None, env=pubsub_emulator.env)  # type: ignore[dict-item]


def test_the_run_request_reaches_an_unordered_subscription_as_eventarc_creates_it(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any]
) -> None:
    """What the publish step sends, as the function's trigger receives it. The subscription
    behind a Cloud Functions Pub/Sub trigger is created by Eventarc without message ordering
    (its EventTrigger has no such setting, and ordering is fixed when a subscription is
    created), so the publisher enables none; the branch still travels as the ordering key,
    for anyone reading the topic through an ordered subscription of their own."""
    topic = PubsubEmulator.unique_id("runs")
    subscription = _subscribe(pubsub_admin, topic, ordering=False)
    sent = message.PublishMessage(
        commit="0123456789abcdef0123456789abcdef01234567",
        ref="refs/heads/feature/x",
        pipeline_spec_uri="gs://ct-bucket/pipelines/abc/pipeline.yaml",
        source_uri="gs://ct-bucket/source/def/training_src.tar.gz",
        parameters={"hidden_units": 64},
        request_id="request-1",
    )
    encoded = message.encode(sent)

    message_id = pubsub.publish(
        PROJECT,
        topic,
        encoded.data,
        encoded.attributes,
        encoded.ordering_key,
        env=pubsub_emulator.env,
    )

    [received] = _pull(pubsub_admin, subscription, 1)
    assert received.message_id == message_id
    assert received.data == encoded.data
    assert dict(received.attributes) == {"commit": sent.commit, "schema": "2"}
    assert received.ordering_key == "feature/x"
    assert message.decode(received.data, dict(received.attributes)) == sent


def test_a_failed_attempt_pauses_nothing(
    pubsub_emulator: PubsubEmulator,
    pubsub_admin: tuple[Any, Any],
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    """No client-side ordering: a publish whose first attempts fail (connections reset on
    the way to the emulator) goes through with backoff, once, and the next one with the same
    ordering key goes straight through (an ordering-enabled publisher pauses the key after a
    failure until ``resume_publish``)."""
    proxy = fault_proxy(pubsub_emulator.host, protocol="tcp")
    topic = PubsubEmulator.unique_id("late")
    subscription = _subscribe(pubsub_admin, topic, ordering=False)
    env = {"PUBSUB_EMULATOR_HOST": proxy.address, "ORCHESTRATOR_RETRY_DEADLINE": "20"}
    proxy.inject(Fault.reset(first=3))

    first = pubsub.publish(PROJECT, topic, b"m0", {}, "main", env=env)

    assert proxy.stats.faulted == 3
    again = pubsub.publish(PROJECT, topic, b"m1", {}, "main", env=env)
    assert again != first
    received = _pull(pubsub_admin, subscription, 2)
    assert sorted(m.data for m in received) == [b"m0", b"m1"]  # each once


def test_a_publish_that_keeps_failing_gives_up_within_the_deadline_naming_the_emulator(
    pubsub_emulator: PubsubEmulator,
    pubsub_admin: tuple[Any, Any],
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = fault_proxy(pubsub_emulator.host, protocol="tcp")
    topic = PubsubEmulator.unique_id("down")
    subscription = _subscribe(pubsub_admin, topic, ordering=False)
    env = {"PUBSUB_EMULATOR_HOST": proxy.address, "ORCHESTRATOR_RETRY_DEADLINE": "3"}
    proxy.inject(Fault.reset())
    started = time.monotonic()

    with pytest.raises(ServiceUnreachable) as raised:
        pubsub.publish(PROJECT, topic, b"never", {}, "main", env=env)

    assert time.monotonic() - started < 6
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"the Pub/Sub emulator at {proxy.address} (PUBSUB_EMULATOR_HOST)")
    assert "ORCHESTRATOR_RETRY_DEADLINE=3" in text and "gave up after " in text
    # retried: gRPC reconnects with its own backoff, so the attempts outnumber connections
    assert re.search(r"gave up after \d+ attempts", text), text
    assert proxy.stats.faulted >= 1
    assert _pull(pubsub_admin, subscription, 1, wait=2) == []
