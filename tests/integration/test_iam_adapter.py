"""The IAM adapter's existence checks against the real local services, and what they lack.

fake-gcs-server and the official Pub/Sub emulator serve the same resource reads as Cloud
Storage (``GET /storage/v1/b/BUCKET``) and Pub/Sub (``GET /v1/projects/P/topics/T``), so
``validate --cloud``'s existence checks run against them here. Neither implements
``testIamPermissions`` (the last two tests record how each answers it), which is why the
permission checks are tested against stand-ins of the documented API in
tests/test_validate_cloud.py.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from orchestrator.adapters import iam
from orchestrator.errors import ServiceUnreachable
from tests.fixtures.gcs import GcsServer
from tests.fixtures.pubsub import PubsubEmulator

PROJECT = "ct-iam-project"


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_bucket_existence_on_fake_gcs_server(gcs_server: GcsServer) -> None:
    bucket = gcs_server.create_bucket()
    access = iam.Access(gcs_server.env)
    perms = ("storage.objects.get",)
    assert access.exists(iam.bucket_probe(access.endpoints, bucket, perms)) is True
    assert access.exists(iam.bucket_probe(access.endpoints, f"{bucket}-gone", perms)) is False


def test_topic_existence_on_the_pubsub_emulator(pubsub_emulator: PubsubEmulator) -> None:
    topic = f"projects/{PROJECT}/topics/{PubsubEmulator.unique_id('validate')}"
    status, _ = _http("PUT", f"http://{pubsub_emulator.host}/v1/{topic}", {})
    assert status == 200
    access = iam.Access(pubsub_emulator.env)
    perms = ("pubsub.topics.publish",)
    assert access.exists(iam.topic_probe(access.endpoints, topic, perms)) is True
    assert access.exists(iam.topic_probe(access.endpoints, f"{topic}-gone", perms)) is False


def test_fake_gcs_server_does_not_implement_test_iam_permissions(gcs_server: GcsServer) -> None:
    bucket = gcs_server.create_bucket()
    query = "permissions=storage.objects.get"
    status, body = _http(
        "GET", f"{gcs_server.url}/storage/v1/b/{bucket}/iam/testPermissions?{query}"
    )
    # an unknown route, not the API's answer for a missing bucket (that one is JSON)
    assert (status, body.strip()) == (404, b"Not Found")


def test_the_pubsub_emulator_does_not_implement_test_iam_permissions(
    pubsub_emulator: PubsubEmulator,
) -> None:
    topic = f"projects/{PROJECT}/topics/{PubsubEmulator.unique_id('noiam')}"
    assert _http("PUT", f"http://{pubsub_emulator.host}/v1/{topic}", {})[0] == 200
    status, body = _http(
        "POST",
        f"http://{pubsub_emulator.host}/v1/{topic}:testIamPermissions",
        {"permissions": ["pubsub.topics.publish"]},
    )
    assert status == 501
    assert json.loads(body)["error"]["status"] == "UNIMPLEMENTED"
    # and validate --cloud would say so, as a service it cannot use, not as a missing grant
    access = iam.Access(pubsub_emulator.env)
    with pytest.raises(
        ServiceUnreachable, match=r"Pub/Sub \(http://127\.0\.0\.1:\d+\) answered 501"
    ):
        access.probe(iam.topic_probe(access.endpoints, topic, ("pubsub.topics.publish",)))
