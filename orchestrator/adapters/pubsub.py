"""Pub/Sub: publish one message, to real Pub/Sub or to the emulator.

When the environment mapping passed in sets ``PUBSUB_EMULATOR_HOST=host:port``, the real
google-cloud-pubsub client talks to that emulator over an insecure channel with no
credentials, and the topic is created there if it is missing (only on the emulator: on real
Pub/Sub a missing topic is a configuration error, reported as such). Otherwise real Pub/Sub with
application default credentials.

One message is one ``Publish`` call of the generated client (``google.pubsub_v1``), not the
batching ``google.cloud.pubsub_v1.PublisherClient``: nothing here needs batches, flow control or
client-side ordering. Client-side ordering (``enable_message_ordering``) would buy nothing:
the function's trigger delivers in any order (see ``publish``), and it has costs: a failed
publish pauses the ordering key until ``resume_publish``, and the default retry deadline
becomes unbounded (``PublisherClient.publish`` in google-cloud-pubsub 2.x).

Retries are bounded (``orchestrator.retrying``): the codes the generated client itself
retries for ``Publish`` (ABORTED, CANCELLED, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED,
UNAVAILABLE, UNKNOWN: ``google/pubsub_v1/services/publisher/transports/base.py``,
``_prep_wrapped_messages``) are retried with backoff, for at most ``ORCHESTRATOR_RETRY_DEADLINE``
seconds (60 against Pub/Sub, 10 against the emulator), each attempt waiting at most 10 s; a
refused connection to an emulator on this machine fails at once. A service that keeps failing
is a ``ServiceUnreachable`` naming it, never a wait of minutes (the client's own default
deadline is 600 s). Delivery is at least once (a publish whose answer was lost may have been
delivered, and is repeated): the message carries one request id, and the runs registry starts
one run per state whatever the number of deliveries.

google.pubsub_v1 is imported inside ``publish``, so the planning path never pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator import retrying
from orchestrator.errors import InputError, ServiceUnreachable, StepFailed

EMULATOR_HOST_VAR = "PUBSUB_EMULATOR_HOST"

#: Seconds one Publish attempt may wait for an answer.
ATTEMPT_TIMEOUT = 10.0


def publish(
    project: str,
    topic: str,
    data: bytes,
    attributes: Mapping[str, str],
    ordering_key: str | None,
    *,
    env: Mapping[str, str],
    timeout: float | None = None,
) -> str:
    """Publish ``data`` with ``attributes`` to ``projects/{project}/topics/{topic}``.

    ``ordering_key`` is set on the message as it is, as information: it orders nothing unless
    a subscription was created with message ordering enabled, and the subscription behind a
    Cloud Functions Pub/Sub trigger is created by Eventarc, without it (README, "Artifacts and
    the published message"). Returns the message id the service assigned. ``timeout`` is the
    whole publish's deadline, retries included (default: ``ORCHESTRATOR_RETRY_DEADLINE``).

    Raises ``ServiceUnreachable`` (naming the service and host) if Pub/Sub cannot be reached,
    or keeps failing, until the deadline; ``StepFailed`` if the topic does not exist or the
    publish is refused; and ``InputError`` for arguments Pub/Sub would reject.
    """
    if not isinstance(data, bytes):
        raise InputError("Pub/Sub message data must be bytes.")
    bad = [k for k, v in attributes.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise InputError(f"Pub/Sub attributes must map strings to strings; bad keys: {bad}.")

    from google.api_core import exceptions as gexc
    from google.pubsub_v1.types import PubsubMessage

    emulator = env.get(EMULATOR_HOST_VAR) or None
    where = f"the Pub/Sub emulator at {emulator} ({EMULATOR_HOST_VAR})" if emulator else "Pub/Sub"
    total = timeout if timeout is not None else retrying.deadline(env, local=bool(emulator))
    local = emulator is not None and retrying.is_loopback(emulator)
    topic_path = f"projects/{project}/topics/{topic}"
    client = _client(emulator, where=where)
    message = PubsubMessage(data=data, attributes=dict(attributes), ordering_key=ordering_key or "")
    retried = (
        gexc.Aborted,
        gexc.Cancelled,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.ResourceExhausted,
        gexc.ServiceUnavailable,
        gexc.Unknown,
    )
    topic_ready = not emulator

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, retried) and not (local and retrying.refused(exc))

    def attempt(seconds: float) -> str:
        nonlocal topic_ready
        if not topic_ready:
            _ensure_emulator_topic(client, topic_path, where, seconds)
            topic_ready = True
        # retry=None: retrying.call is the retry, bounded by the deadline
        response = client.publish(topic=topic_path, messages=[message], retry=None, timeout=seconds)
        message_id: str = response.message_ids[0]
        return message_id

    try:
        return retrying.call(attempt, transient=transient, total=total, cap=ATTEMPT_TIMEOUT)
    except retrying.GaveUp as exc:
        raise ServiceUnreachable(
            f"{where} kept failing to take the message for {topic_path}: "
            f"{_first_line(exc.last)} ({exc.summary})"
        ) from exc
    except InputError:
        raise
    except gexc.NotFound:
        raise StepFailed(f"Topic {topic_path} does not exist in {where}.") from None
    except (gexc.PermissionDenied, gexc.Unauthenticated) as exc:
        raise StepFailed(
            f"Publishing to {topic_path} was refused by {where}: {_first_line(exc)}"
        ) from exc
    except (gexc.InvalidArgument, ValueError, TypeError) as exc:
        raise InputError(f"{where} rejected the message: {_first_line(exc)}") from exc
    except retried as exc:  # a refused connection to a local emulator: nothing listens there
        raise ServiceUnreachable(
            f"Cannot reach {where} to publish to {topic_path}: {_first_line(exc)}"
        ) from exc
    except gexc.GoogleAPICallError as exc:
        raise StepFailed(
            f"{where} refused the message for {topic_path}: {_first_line(exc)}"
        ) from exc
    finally:
        client.transport.close()


def _client(emulator: str | None, *, where: str) -> Any:
    from google.pubsub_v1 import PublisherClient

    if emulator:
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(emulator))
        return PublisherClient(transport=transport)
    try:
        return PublisherClient()
    except Exception as exc:  # google.auth raises several credential error types
        from google.auth import exceptions as auth_exc

        if isinstance(exc, auth_exc.DefaultCredentialsError):
            raise ServiceUnreachable(
                "Pub/Sub needs credentials: run `gcloud auth application-default login`, "
                f"or set {EMULATOR_HOST_VAR} for the emulator."
            ) from exc
        raise ServiceUnreachable(f"Cannot reach {where}: {_first_line(exc)}") from exc


def _ensure_emulator_topic(client: Any, topic_path: str, where: str, timeout: float) -> None:
    """Create the topic on the emulator unless it exists; transport errors propagate (the
    caller retries them)."""
    from google.api_core import exceptions as gexc

    try:
        client.create_topic(name=topic_path, retry=None, timeout=timeout)
    except gexc.AlreadyExists:
        pass
    except gexc.InvalidArgument as exc:
        raise InputError(f"{where} rejected topic {topic_path}: {_first_line(exc)}") from exc


_first_line = retrying.first_line
