"""Pub/Sub: publish one message, to real Pub/Sub or to the emulator.

When the environment mapping passed in sets ``PUBSUB_EMULATOR_HOST=host:port``, the real
google-cloud-pubsub client talks to that emulator over an insecure channel with no
credentials, and the topic is created there if it is missing (only on the emulator: on real
Pub/Sub a missing topic is a configuration error, reported as such). Otherwise real Pub/Sub with
application default credentials.

Retries are bounded: an unreachable service fails within ``timeout`` seconds with a
``ServiceUnreachable`` naming it, never after minutes. Delivery is at least once (a publish
that timed out may still have been delivered), so subscribers must tolerate duplicates.

google.cloud is imported inside ``publish``, so the planning path never pays for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import InputError, ServiceUnreachable, StepFailed

EMULATOR_HOST_VAR = "PUBSUB_EMULATOR_HOST"

DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for the whole publish, retries included."""

_ATTEMPT_TIMEOUT = 10.0


def publish(
    project: str,
    topic: str,
    data: bytes,
    attributes: Mapping[str, str],
    ordering_key: str | None,
    *,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Publish ``data`` with ``attributes`` to ``projects/{project}/topics/{topic}``.

    With an ``ordering_key``, message ordering is enabled on the publisher so that messages with
    the same key are delivered in order (the subscription must enable ordering too).
    Returns the message id the service assigned.

    Raises ``ServiceUnreachable`` (naming the service and host) if Pub/Sub cannot be reached in
    time, ``StepFailed`` if the topic does not exist or the publish is refused, and
    ``InputError`` for arguments Pub/Sub would reject.
    """
    if not isinstance(data, bytes):
        raise InputError("Pub/Sub message data must be bytes.")
    bad = [k for k, v in attributes.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise InputError(f"Pub/Sub attributes must map strings to strings; bad keys: {bad}.")

    from google.api_core import exceptions as gexc

    emulator = env.get(EMULATOR_HOST_VAR) or None
    where = f"the Pub/Sub emulator at {emulator} ({EMULATOR_HOST_VAR})" if emulator else "Pub/Sub"
    topic_path = f"projects/{project}/topics/{topic}"
    client = _client(emulator, ordering=ordering_key is not None, where=where)
    deadline = time.monotonic() + timeout
    try:
        if emulator:
            _ensure_emulator_topic(client, topic_path, where)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            per_attempt = max(1.0, min(_ATTEMPT_TIMEOUT, remaining))
            # retry=None: the client's default retry has no bound once ordering is enabled;
            # this loop is the bounded retry instead.
            future = client.publish(
                topic_path,
                data,
                ordering_key=ordering_key or "",
                retry=None,
                timeout=per_attempt,
                **dict(attributes),
            )
            try:
                message_id: str = future.result(timeout=per_attempt + 5)
                return message_id
            except gexc.NotFound:
                raise StepFailed(f"Topic {topic_path} does not exist in {where}.") from None
            except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
                raise StepFailed(
                    f"Publishing to {topic_path} was refused by {where}: {_first_line(exc)}"
                ) from exc
            except (gexc.InvalidArgument, ValueError, TypeError) as exc:
                raise InputError(f"{where} rejected the message: {_first_line(exc)}") from exc
            except Exception as exc:  # transient transport errors have many types
                if time.monotonic() + 1 >= deadline:
                    raise ServiceUnreachable(
                        f"Cannot reach {where} to publish to {topic_path} "
                        f"(gave up after {attempt} attempt(s) in {timeout:.0f}s): "
                        f"{_first_line(exc)}"
                    ) from exc
                if ordering_key:
                    client.resume_publish(topic_path, ordering_key)
                time.sleep(min(1.0 * attempt, 5.0))
    finally:
        client.stop()


def _client(emulator: str | None, *, ordering: bool, where: str) -> Any:
    from google.cloud.pubsub_v1 import PublisherClient, types

    options = types.PublisherOptions(enable_message_ordering=ordering)
    # One message per call: send it at once rather than waiting to fill a batch.
    batch = types.BatchSettings(max_messages=1, max_latency=0.0)
    if emulator:
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(emulator))
        return PublisherClient(batch_settings=batch, publisher_options=options, transport=transport)
    try:
        return PublisherClient(batch_settings=batch, publisher_options=options)
    except Exception as exc:  # google.auth raises several credential error types
        from google.auth import exceptions as auth_exc

        if isinstance(exc, auth_exc.DefaultCredentialsError):
            raise ServiceUnreachable(
                "Pub/Sub needs credentials: run `gcloud auth application-default login`, "
                f"or set {EMULATOR_HOST_VAR} for the emulator."
            ) from exc
        raise ServiceUnreachable(f"Cannot reach {where}: {_first_line(exc)}") from exc


def _ensure_emulator_topic(client: Any, topic_path: str, where: str) -> None:
    from google.api_core import exceptions as gexc

    try:
        client.create_topic(name=topic_path, retry=None, timeout=_ATTEMPT_TIMEOUT)
    except gexc.AlreadyExists:
        pass
    except gexc.InvalidArgument as exc:
        raise InputError(f"{where} rejected topic {topic_path}: {_first_line(exc)}") from exc
    except Exception as exc:  # transport errors have many types
        raise ServiceUnreachable(f"Cannot reach {where}: {_first_line(exc)}") from exc


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
