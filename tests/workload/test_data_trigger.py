"""Retraining on new data: Cloud Storage object-finalize notifications to function/main.py.

In process (the directory bucket, a stand-in pipeline): which notifications start a run of the
deployed state in the ledger, which are ignored and which rejected, each with its exact reason.
Over HTTP (functions-framework): the one log line each ignored or rejected notification gets.
End to end (slow): fake-gcs-server publishes its own object notifications to the Pub/Sub
emulator, whose push subscription delivers them to functions-framework; a new CSV under the
data prefix trains once, on that CSV, even when the notification is published a second time,
and an object outside the prefix starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import message, objects
from tests.fixtures._services import free_port, stop_process, wait_until
from tests.fixtures.functions import FunctionServer
from tests.fixtures.gcs import _answers, _binary
from tests.fixtures.pubsub import PubsubEmulator
from tests.workload.conftest import LocalBucket
from tests.workload.registry_worker import StandInPipeline
from tests.workload.test_function import PARAMS, SHA, load_function, runs_in

REPO = Path(__file__).resolve().parents[2]
BUCKET = "ct-data-trigger"
IMAGES = {"validator": "r/validator:1", "evaluator": "r/evaluator:1"}
LEDGER_PARAMS = {**PARAMS, "hidden_units": 48, "max_iter": 80}
PROJECT = "ct-test-project"


def deployed_state(bucket: str, **overrides: Any) -> message.DeployedState:
    fields: dict[str, Any] = {
        "branch": "main",
        "pipeline": "default",
        "commit": SHA,
        "ref": "refs/heads/main",
        "pipeline_spec_uri": f"gs://{bucket}/pipelines/spec.yaml",
        "source_uri": f"gs://{bucket}/source/abc/training_src.tar.gz",
        "images": IMAGES,
        "parameters": LEDGER_PARAMS,
        "run_id": "ct-0123456789abcdef0123",
        "updated": "2024-05-01T12:00:00Z",
    }
    fields.update(overrides)
    return message.DeployedState(**fields)


def notification(
    bucket: str, name: str, generation: str = "1714564800000001", **attributes: str
) -> tuple[bytes, dict[str, str]]:
    """A Cloud Storage notification as Pub/Sub carries it: JSON_API_V1 object metadata as the
    data, the event in the attributes."""
    metadata = {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "name": name,
        "bucket": bucket,
        "generation": generation,
        "contentType": "text/csv",
        "size": "1234",
    }
    attrs = {
        "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/1",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": generation,
        "eventTime": "2024-05-01T12:00:00.000000Z",
        **attributes,
    }
    return json.dumps(metadata).encode(), attrs


@dataclass
class Setup:
    env: dict[str, str]
    root: Path
    pipeline: StandInPipeline
    fn: Any

    @property
    def ledger_uri(self) -> str:
        return f"gs://{BUCKET}/ct/ledger/main/default.json"

    def deliver(self, data: bytes, attributes: dict[str, str]) -> Any:
        return self.fn.handle_message(data, attributes, self.fn.Config.from_env(self.env), self.env)

    def registry(self) -> list[str]:
        return objects.list_keys(BUCKET, "ct/runs/", self.env)


@pytest.fixture
def setup(
    local_bucket: LocalBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Setup]:
    env = {
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket"),
        "CT_BUCKET": BUCKET,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(tmp_path / "root"),
        "CT_DATA_PREFIX": "data/",
    }
    put = {
        f"gs://{BUCKET}/pipelines/spec.yaml": local_bucket.spec_path.read_bytes(),
        f"gs://{BUCKET}/ct/ledger/main/default.json": message.encode_state(deployed_state(BUCKET)),
    }
    for uri, data in put.items():
        objects.write(uri, data, env, if_generation=None)
    fn = load_function()
    stand_in = StandInPipeline(tmp_path / "marks")
    monkeypatch.setattr(fn, "run_pipeline", stand_in)
    yield Setup(env, tmp_path / "root", stand_in, fn)


def test_new_data_trains_the_deployed_state_once(setup: Setup) -> None:
    data, attributes = notification(BUCKET, "data/2024-05/new.csv")
    first = setup.deliver(data, attributes)
    again = setup.deliver(data, attributes)  # Pub/Sub delivers at least once

    assert first.status == "succeeded"
    assert (again.status, again.run_id, again.detail) == (
        "duplicate",
        first.run_id,
        "already succeeded",
    )
    assert first.data_uri == f"gs://{BUCKET}/data/2024-05/new.csv"
    [run] = setup.pipeline.calls
    parameters = json.loads(next(p for p in (setup.root.parent / "marks").iterdir()).read_text())[
        "parameters"
    ]
    assert parameters == {
        **LEDGER_PARAMS,  # the deployed state's parameters ...
        "source_uri": f"gs://{BUCKET}/source/abc/training_src.tar.gz",
        "data_uri": f"gs://{BUCKET}/data/2024-05/new.csv",  # ... on the new data
    }
    assert run == setup.root / first.run_id
    spec_sha = hashlib.sha256(
        objects.read(f"gs://{BUCKET}/pipelines/spec.yaml", setup.env).data  # type: ignore[union-attr]
    ).hexdigest()
    assert first.run_id == message.run_identity(
        spec_sha,
        f"gs://{BUCKET}/source/abc/training_src.tar.gz",
        IMAGES,
        LEDGER_PARAMS,
        f"gs://{BUCKET}/data/2024-05/new.csv",
        "1714564800000001",
    )
    assert first.request_id == setup.fn.notification_request_id(
        BUCKET, "data/2024-05/new.csv", "1714564800000001"
    )
    assert setup.registry() == [f"ct/runs/{first.run_id}.json"]
    stored = objects.read(f"gs://{BUCKET}/ct/runs/{first.run_id}.json", setup.env)
    assert stored is not None
    assert json.loads(stored.data)["data_uri"] == f"gs://{BUCKET}/data/2024-05/new.csv"


def test_a_new_generation_of_the_same_object_trains_again(setup: Setup) -> None:
    first = setup.deliver(*notification(BUCKET, "data/new.csv", "1"))
    second = setup.deliver(*notification(BUCKET, "data/new.csv", "2"))
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.run_id != second.run_id
    assert len(setup.registry()) == 2


def test_a_late_notification_of_an_older_generation_does_not_take_the_ledger_back(
    setup: Setup,
) -> None:
    """The trigger's subscription does not order messages: generation 2 may arrive before 1.
    Each trains once; the ledger keeps the newest generation of the object."""
    newer = setup.deliver(*notification(BUCKET, "data/new.csv", "1714564800000002"))
    older = setup.deliver(*notification(BUCKET, "data/new.csv", "1714564800000001"))
    assert (newer.status, older.status) == ("succeeded", "succeeded")
    assert newer.run_id != older.run_id
    stored = objects.read(setup.ledger_uri, setup.env)
    assert stored is not None
    state = message.decode_state(stored.data, source=setup.ledger_uri)
    assert (state.data_uri, state.data_version, state.run_id) == (
        f"gs://{BUCKET}/data/new.csv",
        "1714564800000002",
        newer.run_id,
    )


def test_the_data_bucket_can_be_another_bucket(setup: Setup) -> None:
    setup.env["CT_DATA_BUCKET"] = "ct-landing"
    ignored = setup.deliver(*notification(BUCKET, "data/new.csv"))
    assert (ignored.status, ignored.detail) == (
        "ignored",
        f"gs://{BUCKET}/data/new.csv is not in the data bucket gs://ct-landing",
    )
    result = setup.deliver(*notification("ct-landing", "data/new.csv"))
    assert (result.status, result.data_uri) == ("succeeded", "gs://ct-landing/data/new.csv")


IGNORED: list[tuple[str, dict[str, str], str]] = [
    (
        "outside-prefix",
        {"objectId": "other/new.csv"},
        f"gs://{BUCKET}/other/new.csv is outside the data prefix 'data/'",
    ),
    (
        "own-registry",
        {"objectId": "ct/runs/ct-0123.json"},
        f"gs://{BUCKET}/ct/runs/ct-0123.json is outside the data prefix 'data/'",
    ),
    (
        "delete",
        {"eventType": "OBJECT_DELETE"},
        f"OBJECT_DELETE gs://{BUCKET}/data/new.csv: only OBJECT_FINALIZE (a new object) starts "
        "a run",
    ),
    (
        "metadata-update",
        {"eventType": "OBJECT_METADATA_UPDATE"},
        f"OBJECT_METADATA_UPDATE gs://{BUCKET}/data/new.csv: only OBJECT_FINALIZE (a new "
        "object) starts a run",
    ),
    (
        "other-bucket",
        {"bucketId": "someone-else"},
        f"gs://someone-else/data/new.csv is not in the data bucket gs://{BUCKET}",
    ),
    (
        "folder",
        {"objectId": "data/2024-05/"},
        f"gs://{BUCKET}/data/2024-05/ is a folder placeholder, not data",
    ),
]


@pytest.mark.parametrize(
    ("change", "reason"), [c[1:] for c in IGNORED], ids=[c[0] for c in IGNORED]
)
def test_notifications_that_ask_for_nothing_are_ignored(
    setup: Setup, change: dict[str, str], reason: str
) -> None:
    attributes = notification(BUCKET, "data/new.csv")[1] | change
    result = setup.deliver(b"", attributes)
    assert (result.status, result.detail, result.run_id) == ("ignored", reason, "")
    assert setup.pipeline.calls == [] and setup.registry() == []


def test_notifications_are_ignored_when_no_data_prefix_is_set(setup: Setup) -> None:
    del setup.env["CT_DATA_PREFIX"]
    result = setup.deliver(*notification(BUCKET, "data/new.csv"))
    assert (result.status, result.detail) == (
        "ignored",
        f"data notifications are off (CT_DATA_PREFIX is not set): OBJECT_FINALIZE "
        f"gs://{BUCKET}/data/new.csv",
    )
    assert setup.pipeline.calls == []


def test_no_ledger_yet_is_ignored(setup: Setup) -> None:
    setup.env["CT_LEDGER_URI"] = f"gs://{BUCKET}/ct/ledger/feature/x/default.json"
    result = setup.deliver(*notification(BUCKET, "data/new.csv"))
    assert (result.status, result.detail) == (
        "ignored",
        f"gs://{BUCKET}/data/new.csv: no deploy ledger at gs://{BUCKET}/ct/ledger/feature/x/"
        "default.json yet, nothing to retrain",
    )
    assert setup.pipeline.calls == [] and setup.registry() == []


REJECTED: list[tuple[str, dict[str, str], bytes | None, str]] = [
    (
        "no-object",
        {"objectId": ""},
        None,
        "a Cloud Storage notification must carry the attributes eventType, bucketId and "
        "objectId (missing: objectId)",
    ),
    (
        "generation",
        {"objectGeneration": "latest"},
        b"",
        "the notification's objectGeneration must be a generation number, not 'latest'",
    ),
    (
        "unclean-name",
        {"objectId": "data/../ct/ledger/main/default.json"},
        b"",
        "the notification names an unusable object: 'data/../ct/ledger/main/default.json': an "
        "object name must be a clean relative key",
    ),
    (
        "metadata-disagrees",
        {},
        json.dumps({"name": "data/other.csv", "bucket": BUCKET}).encode(),
        f"the notification's object metadata does not describe gs://{BUCKET}/data/new.csv",
    ),
    (
        "metadata-not-json",
        {},
        b"{not json",
        "the notification's object metadata is not JSON (Expecting property name enclosed in "
        "double quotes at char 1)",
    ),
    (
        "attributes-not-strings",
        {"objectGeneration": 7},  # type: ignore[dict-item]
        None,
        "message attribute 'objectGeneration' must be a string, not an integer",
    ),
]


@pytest.mark.parametrize(
    ("change", "data", "reason"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_unusable_notifications_are_rejected(
    setup: Setup, change: dict[str, str], data: bytes | None, reason: str
) -> None:
    default_data, attributes = notification(BUCKET, "data/new.csv")
    with pytest.raises(message.MessageError) as caught:
        setup.deliver(default_data if data is None else data, attributes | change)
    assert str(caught.value).startswith(reason), str(caught.value)
    assert setup.pipeline.calls == []


def test_a_corrupt_ledger_is_rejected_naming_it(setup: Setup) -> None:
    objects.write(
        setup.ledger_uri, b'{"schema": 1, "branch": "main"', setup.env, if_generation=None
    )
    with pytest.raises(message.StateError) as caught:
        setup.deliver(*notification(BUCKET, "data/new.csv"))
    assert str(caught.value).startswith(
        f"the deploy-ledger record {setup.ledger_uri} is unusable: the record is not JSON"
    )
    assert "python -m orchestrator ledger set" in str(caught.value)
    assert setup.pipeline.calls == []


def test_a_ledger_naming_a_missing_spec_is_rejected(setup: Setup) -> None:
    state = deployed_state(BUCKET, pipeline_spec_uri=f"gs://{BUCKET}/pipelines/gone.yaml")
    objects.write(setup.ledger_uri, message.encode_state(state), setup.env, if_generation=None)
    with pytest.raises(message.MessageError) as caught:
        setup.deliver(*notification(BUCKET, "data/new.csv"))
    assert (
        str(caught.value) == f"the pipeline spec gs://{BUCKET}/pipelines/gone.yaml does not exist"
    )


# --- one log line each, over HTTP --------------------------------------------------------------


@pytest.fixture(scope="module")
def data_function(
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[FunctionServer, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("data-function")
    env = {
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp / "bucket"),
        "CT_BUCKET": BUCKET,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(tmp / "root"),
        "CT_DATA_PREFIX": "data/",
        "CT_LEDGER_URI": f"gs://{BUCKET}/ct/ledger/main/corrupt.json",
    }
    objects.write(env["CT_LEDGER_URI"], b"", env, if_generation=None)
    server = functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )
    return server, env


@pytest.mark.parametrize(
    ("object_id", "line"),
    [
        (
            "other/x.csv",
            {
                "severity": "INFO",
                "message": f"ignored message n-other: gs://{BUCKET}/other/x.csv is outside the "
                "data prefix 'data/'",
                "message_id": "n-other",
            },
        ),
        (
            "data/x.csv",
            {
                "severity": "ERROR",
                "message": f"rejected message n-data: the deploy-ledger record gs://{BUCKET}/ct/"
                "ledger/main/corrupt.json is unusable: the record is empty; repair it with "
                "`python -m orchestrator ledger set ...` (see `python -m orchestrator ledger set "
                "--help`)",
                "message_id": "n-data",
            },
        ),
    ],
)
def test_each_notification_gets_one_log_line(
    data_function: tuple[FunctionServer, dict[str, str]], object_id: str, line: dict[str, str]
) -> None:
    server, env = data_function
    data, attributes = notification(BUCKET, object_id)
    message_id = line["message_id"]
    status, _ = server.post_pubsub(data, attributes, message_id=message_id)
    assert status == 200  # acknowledged
    logged = [json.loads(x) for x in server.log().splitlines() if f'"{message_id}"' in x]
    assert logged == [line]
    assert objects.list_keys(BUCKET, "ct/runs/", env) == []
    assert runs_in(Path(env["CT_PIPELINE_ROOT"])) == []


# --- end to end: fake-gcs-server -> Pub/Sub emulator -> functions-framework ------------------


@dataclass
class NotifyingGcs:
    url: str
    env: dict[str, str]


@pytest.fixture
def notifying_gcs(
    pubsub_emulator: PubsubEmulator, pubsub_admin: tuple[Any, Any], tmp_path: Path
) -> Iterator[tuple[NotifyingGcs, str]]:
    """A fake-gcs-server of its own that publishes an OBJECT_FINALIZE notification (as Cloud
    Storage does) to a fresh emulator topic for every object written."""
    publisher, _ = pubsub_admin
    topic = pubsub_emulator.unique_id("gcs-events")
    publisher.create_topic(name=f"projects/{PROJECT}/topics/{topic}", retry=None, timeout=10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "fake-gcs-events.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn",
             "-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", topic,
             "-event.list", "finalize"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **pubsub_emulator.env},
        )  # fmt: skip
    try:
        wait_until(lambda: _answers(url), process, log_path, name="fake-gcs-server", timeout=20)
        yield NotifyingGcs(url, {"STORAGE_EMULATOR_HOST": url}), topic
    finally:
        stop_process(process)


def digits_csv() -> bytes:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    header = ",".join([*(f"pixel_{i}" for i in range(bunch.data.shape[1])), "label"])
    rows = (
        ",".join([*(str(int(v)) for v in x), str(int(y))])
        for x, y in zip(bunch.data, bunch.target, strict=True)
    )
    return ("\n".join([header, *rows]) + "\n").encode()


@pytest.mark.slow
def test_a_notification_through_pubsub_trains_once_even_when_delivered_twice(
    notifying_gcs: tuple[NotifyingGcs, str],
    pubsub_admin: tuple[Any, Any],
    functions_framework: Callable[..., FunctionServer],
    local_bucket: LocalBucket,
    tmp_path: Path,
) -> None:
    gcs, topic = notifying_gcs
    publisher, subscriber = pubsub_admin
    topic_path = f"projects/{PROJECT}/topics/{topic}"
    request = urllib_request(gcs.url)
    request("POST", "/storage/v1/b?project=test", {"name": BUCKET})
    root = tmp_path / "pipeline-root"
    env = {
        **gcs.env,
        "CT_BUCKET": BUCKET,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(root),
        "CT_DATA_PREFIX": "data/",
    }
    function = functions_framework(
        source=REPO / "function/main.py", target="on_message", env=env, cwd=REPO
    )
    pulled = f"projects/{PROJECT}/subscriptions/{topic}-pull"
    subscriber.create_subscription(
        request={"name": pulled, "topic": topic_path}, retry=None, timeout=10
    )
    subscriber.create_subscription(
        request={
            "name": f"projects/{PROJECT}/subscriptions/{topic}-push",
            "topic": topic_path,
            "push_config": {"push_endpoint": function.url},
            "ack_deadline_seconds": 120,  # the local pipeline run takes a while
        },
        retry=None,
        timeout=10,
    )
    # What a deploy leaves behind: the spec, the source and the ledger record.
    state = deployed_state(BUCKET, source_uri=local_bucket.source_uri.replace(
        f"gs://{local_bucket.bucket}/", f"gs://{BUCKET}/"
    ))  # fmt: skip
    uploads = {
        state.pipeline_spec_uri: local_bucket.spec_path.read_bytes(),
        state.source_uri: local_bucket.path(local_bucket.source_uri).read_bytes(),
        f"gs://{BUCKET}/ct/ledger/main/default.json": message.encode_state(state),
    }
    for uri, content in uploads.items():
        objects.write(uri, content, env, if_generation=None)

    # New data lands in the bucket: Cloud Storage (here fake-gcs-server) notifies.
    data_uri = f"gs://{BUCKET}/data/2024-05/digits.csv"
    objects.write(data_uri, digits_csv(), env, if_generation=None, content_type="text/csv")
    log = _wait_for_log(function, lambda text: '"status": "succeeded"' in text, timeout=300)

    # The same notification, published a second time.
    notification_message = _pull_notification(subscriber, pulled, "data/2024-05/digits.csv")
    publisher.publish(
        topic_path, notification_message.data, **dict(notification_message.attributes)
    ).result(timeout=10)
    log = _wait_for_log(function, lambda text: '"status": "duplicate"' in text, timeout=60)

    # An object outside the prefix: acknowledged with one line, nothing runs.
    objects.write(f"gs://{BUCKET}/other/notes.csv", b"a,label\n", env, if_generation=None)
    log = _wait_for_log(function, lambda text: "other/notes.csv is outside" in text, timeout=60)

    lines = [json.loads(x) for x in log.splitlines() if x.startswith('{"severity"')]
    runs = [line["run"] for line in lines if "run" in line]
    assert [r["status"] for r in runs] == ["succeeded", "duplicate"], log[-3000:]
    first, again = runs
    assert first["data_uri"] == data_uri
    assert first["metrics"]["accuracy"] > 0.8
    assert again["run_id"] == first["run_id"] and again["metrics"] == first["metrics"]
    ignored = [line for line in lines if "other/notes.csv" in line["message"]]
    assert [line["message"].split(": ", 1)[1] for line in ignored] == [
        f"gs://{BUCKET}/other/notes.csv is outside the data prefix 'data/'"
    ]
    assert ignored[0]["severity"] == "INFO"
    assert objects.list_keys(BUCKET, "ct/runs/", env) == [f"ct/runs/{first['run_id']}.json"]
    stored = objects.read(f"gs://{BUCKET}/ct/runs/{first['run_id']}.json", env)
    assert stored is not None
    entry = json.loads(stored.data)
    assert (entry["status"], entry["data_uri"]) == ("succeeded", data_uri)
    assert [p.name for p in runs_in(root)] == [first["run_id"]]


def urllib_request(base: str) -> Callable[[str, str, dict[str, Any]], Any]:
    import urllib.request

    def send(method: str, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{base}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    return send


def _wait_for_log(server: FunctionServer, ready: Callable[[str], bool], *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()
        if ready(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"the function did not get there in {timeout}s:\n{server.log()[-5000:]}")


def _pull_notification(subscriber: Any, subscription: str, object_id: str) -> Any:
    """The notification Cloud Storage published for ``object_id`` (others are acknowledged)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 50, "return_immediately": True},
            retry=None,
            timeout=5,
        )
        if response.received_messages:
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                },
                retry=None,
                timeout=5,
            )
        for received in response.received_messages:
            if received.message.attributes.get("objectId") == object_id:
                assert received.message.attributes["eventType"] == "OBJECT_FINALIZE"
                assert json.loads(received.message.data)["name"] == object_id
                return received.message
        time.sleep(0.2)
    raise AssertionError(f"no notification for {object_id} reached {subscription}")
