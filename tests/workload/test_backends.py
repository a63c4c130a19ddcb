"""The Vertex AI and Kubeflow backends against local HTTP servers standing in for those APIs.

Vertex: the real ``google-cloud-aiplatform`` client sends real REST requests
(``CT_VERTEX_ENDPOINT`` is an ``http://`` URL); the test checks what it sent: the compiled spec,
the parameter values, the job id (the run identity; ``-a2`` for a retry) and the labels. A
redelivered message stops at the runs registry; when the registry has lost the entry, the
server answers a second create with the same job id with 409, as Vertex does, and that is a
duplicate too. A 400 is a failed run, recorded so.

Kubeflow: the real ``kfp.Client`` talks to a server implementing the KFP v2beta1 REST calls the
function makes (healthz, experiments list/create, runs list/create, with the API's filter
predicates); the test checks the create-run request and that a redelivery creates no run,
whether the registry or the run name stops it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from orchestrator import objects
from tests.fixtures.gcs import GcsServer
from tests.workload.conftest import LocalBucket
from tests.workload.test_function import (
    PARAMS,
    SHA,
    encode,
    expected_run_id,
    load_function,
    valid_message,
)

#: A hidden_units value the Vertex stand-in refuses with 400 INVALID_ARGUMENT.
REFUSED_HIDDEN_UNITS = 13


@dataclass
class VertexStandIn:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free 127.0.0.1 port in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def vertex() -> Iterator[VertexStandIn]:
    state = VertexStandIn(url="")
    jobs: dict[str, dict[str, Any]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            url = urlparse(self.path)
            job_id = parse_qs(url.query).get("pipelineJobId", [""])[0]
            state.requests.append({"path": url.path, "job_id": job_id, "body": body})
            values = body.get("runtimeConfig", {}).get("parameterValues", {})
            if values.get("hidden_units") == REFUSED_HIDDEN_UNITS:
                error = {
                    "error": {
                        "code": 400,
                        "message": "hidden_units out of range",
                        "status": "INVALID_ARGUMENT",
                    }
                }
                return self._reply(400, error)
            if job_id in jobs:
                error = {
                    "error": {
                        "code": 409,
                        "message": f"{job_id} exists",
                        "status": "ALREADY_EXISTS",
                    }
                }
                return self._reply(409, error)
            name = f"{url.path.removeprefix('/v1/')}/{job_id}"
            jobs[job_id] = {**body, "name": name, "state": "PIPELINE_STATE_PENDING"}
            return self._reply(200, jobs[job_id])

        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            out = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        state.url = url
        yield state


def test_vertex_backend_sends_the_expected_pipeline_job(
    vertex: VertexStandIn,
    local_bucket: LocalBucket,
    gcs_server: GcsServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # aiplatform makes sure the pipeline root bucket exists (google-cloud-storage): the emulator.
    for name, value in gcs_server.env.items():
        monkeypatch.setenv(name, value)
    # Its bucket-ownership check then asks the real Resource Manager, with default credentials
    # (the function gives the anonymous ones to the job only): make sure there are none, so the
    # check fails at once (aiplatform logs and ignores it) instead of reaching for the cloud.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    fn = load_function()
    state_prefix = f"ct-{uuid.uuid4().hex[:10]}"
    config = fn.Config.from_env(
        {
            "CT_BUCKET": local_bucket.bucket,
            "CT_BACKEND": "vertex",
            "CT_PROJECT": "ct-project",
            "CT_REGION": "europe-west4",
            "CT_PIPELINE_ROOT": "gs://ct-pipeline-root/runs",
            "CT_SERVICE_ACCOUNT": "runner@ct-project.iam.gserviceaccount.com",
            "CT_VERTEX_ENDPOINT": vertex.url,
            "CT_STATE_PREFIX": state_prefix,
        }
    )
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}
    sent_message = valid_message(local_bucket, ref="refs/heads/Feature/X")
    data = encode(sent_message)

    first = fn.handle_message(data, {}, config, env)
    again = fn.handle_message(data, {}, config, env)

    spec_bytes = local_bucket.spec_path.read_bytes()
    expected_id = expected_run_id(local_bucket, sent_message)
    assert (first.status, first.run_id, first.job_id) == ("submitted", expected_id, expected_id)
    assert first.detail == f"projects/ct-project/locations/europe-west4/pipelineJobs/{expected_id}"
    # The redelivery stops at the registry: Vertex sees one request.
    assert (again.status, again.previous_status) == ("duplicate", "submitted")
    assert again.detail == f"already submitted as {expected_id}"
    assert [r["job_id"] for r in vertex.requests] == [expected_id]
    entry_uri = config.registry_uri(expected_id)
    entry = json.loads(_stored(entry_uri, env))
    assert (entry["status"], entry["job_id"], entry["detail"]) == (
        "submitted",
        expected_id,
        first.detail,
    )

    # A registry that lost the entry: Vertex's 409 on the same job id keeps it one job.
    objects.local_path(entry_uri, env).unlink()
    lost = fn.handle_message(data, {}, config, env)
    assert (lost.status, lost.detail, lost.job_id) == (
        "duplicate",
        "job id already exists",
        expected_id,
    )
    assert [r["job_id"] for r in vertex.requests] == [expected_id, expected_id]
    assert json.loads(_stored(entry_uri, env))["status"] == "submitted"

    # A failed run, retried on request: attempt 2, a new job id.
    failed = fn.RegistryEntry(
        run_id=expected_id, status="failed", request_id="request-1", job_id=expected_id
    )
    objects.write(entry_uri, failed.to_bytes(), env, if_generation=None)
    retry = encode({**sent_message, "retry": True, "request_id": "request-2"})
    retried = fn.handle_message(retry, {}, config, env)
    assert (retried.status, retried.attempt, retried.job_id) == (
        "submitted",
        2,
        f"{expected_id}-a2",
    )
    assert vertex.requests[-1]["job_id"] == f"{expected_id}-a2"

    # Vertex refusing the job (400) is a failed run, not a redelivery.
    refused_message = valid_message(
        local_bucket, parameters={**PARAMS, "hidden_units": REFUSED_HIDDEN_UNITS}
    )
    refused = fn.handle_message(encode(refused_message), {}, config, env)
    assert refused.status == "failed"
    assert refused.detail.startswith(f"Vertex AI refused {refused.run_id}: 400 ")
    assert json.loads(_stored(config.registry_uri(refused.run_id), env))["status"] == "failed"

    sent = vertex.requests[0]
    assert sent["path"] == "/v1/projects/ct-project/locations/europe-west4/pipelineJobs"
    body = sent["body"]
    spec = yaml.safe_load(spec_bytes)  # the template, as compiled (images included)
    for key in ("deploymentSpec", "components", "pipelineInfo", "sdkVersion"):
        assert body["pipelineSpec"][key] == spec[key], key
    # (aiplatform sets each task's cachingOptions from enable_caching; the graph is the same)
    assert (
        body["pipelineSpec"]["root"]["dag"]["tasks"].keys() == spec["root"]["dag"]["tasks"].keys()
    )
    assert body["labels"] == {
        "ct-commit": SHA,
        "ct-branch": "feature-x",
        "ct-run": expected_id,
        "ct-reason": "commit",
    }
    assert body["serviceAccount"] == "runner@ct-project.iam.gserviceaccount.com"
    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://ct-pipeline-root/runs"
    values = runtime["parameterValues"]
    assert values["source_uri"] == local_bucket.source_uri
    assert {k: values[k] for k in PARAMS} == PARAMS


# ---------------------------------------------------------------------------
# Kubeflow Pipelines
# ---------------------------------------------------------------------------


@dataclass
class KfpStandIn:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def sent(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if (r["method"], r["path"]) == (method, path)]


def _matches(item: dict[str, Any], encoded_filter: str) -> bool:
    """The API's filter (a JSON ``Filter`` proto): EQUALS on string fields is all we need.

    Field names are accepted in both proto JSON spellings, as the server's parser does."""
    if not encoded_filter:
        return True
    for predicate in json.loads(encoded_filter).get("predicates", []):
        if predicate.get("operation") not in ("EQUALS", 1):
            raise ValueError(f"unsupported operation in {predicate}")
        value = predicate.get("stringValue", predicate.get("string_value"))
        if predicate.get("key") != "display_name" or value is None:
            raise ValueError(f"unsupported predicate {predicate}")
        if item.get("display_name") != value:
            return False
    return True


@pytest.fixture
def kfp_server() -> Iterator[KfpStandIn]:
    state = KfpStandIn(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _handle(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            with lock:
                state.requests.append(
                    {"method": method, "path": url.path, "query": query, "body": body}
                )
                try:
                    code, payload = self._route(method, url.path, query, body)
                except ValueError as error:
                    code, payload = 400, {"error": str(error), "code": 3}
            out = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def _route(
            self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
        ) -> tuple[int, dict[str, Any]]:
            if (method, path) == ("GET", "/apis/v2beta1/healthz"):
                return 200, {"multi_user": False}
            if (method, path) == ("GET", "/apis/v2beta1/experiments"):
                found = [e for e in state.experiments if _matches(e, query.get("filter", ""))]
                return 200, {"experiments": found, "total_size": len(found)} if found else {}
            if (method, path) == ("POST", "/apis/v2beta1/experiments"):
                experiment = {**body, "experiment_id": str(uuid.uuid4())}
                state.experiments.append(experiment)
                return 200, experiment
            if (method, path) == ("GET", "/apis/v2beta1/runs"):
                found = [
                    r
                    for r in state.runs
                    if r["experiment_id"] == query.get("experiment_id", r["experiment_id"])
                    and _matches(r, query.get("filter", ""))
                ][: int(query.get("page_size", 0)) or None]
                return 200, {"runs": found, "total_size": len(found)} if found else {}
            if (method, path) == ("POST", "/apis/v2beta1/runs"):
                run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
                state.runs.append(run)
                return 200, run
            return 404, {"error": f"no stand-in for {method} {path}", "code": 5}

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        state.url = url
        yield state


# kfp.Client warns on every construction that it needs a KFP 2.0.0-beta.2+ server.
@pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")
def test_kfp_backend_creates_one_run_with_the_compiled_spec(
    kfp_server: KfpStandIn, local_bucket: LocalBucket
) -> None:
    fn = load_function()
    config = fn.Config.from_env(
        {
            "CT_BUCKET": local_bucket.bucket,
            "CT_BACKEND": "kfp",
            "CT_KFP_HOST": kfp_server.url,
            "CT_KFP_EXPERIMENT": "ct-digits",
            "CT_PIPELINE_ROOT": "gs://ct-pipeline-root/kfp",
            "CT_SERVICE_ACCOUNT": "pipeline-runner",
            "CT_ENABLE_CACHING": "false",
            "CT_STATE_PREFIX": f"ct-{uuid.uuid4().hex[:10]}",
        }
    )
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}
    sent_message = valid_message(local_bucket, ref="refs/heads/Feature/X")
    data = encode(sent_message)

    first = fn.handle_message(data, {}, config, env)
    again = fn.handle_message(data, {}, config, env)  # stopped by the registry
    entry_uri = config.registry_uri(first.run_id)
    objects.local_path(entry_uri, env).unlink()
    lost = fn.handle_message(data, {}, config, env)  # stopped by the run name

    spec_bytes = local_bucket.spec_path.read_bytes()
    expected_name = expected_run_id(local_bucket, sent_message)
    assert kfp_server.sent("GET", "/apis/v2beta1/healthz")
    # One experiment, created once, by its configured name; both messages that reached Kubeflow
    # looked for the run in it.
    assert [e["display_name"] for e in kfp_server.experiments] == ["ct-digits"]
    assert len(kfp_server.sent("POST", "/apis/v2beta1/experiments")) == 1
    experiment_id = kfp_server.experiments[0]["experiment_id"]
    lookups = kfp_server.sent("GET", "/apis/v2beta1/runs")
    assert len(lookups) == 2
    assert all(r["query"]["experiment_id"] == experiment_id for r in lookups)

    created = kfp_server.sent("POST", "/apis/v2beta1/runs")
    assert len(created) == 1, "a redelivered message must not create a second run"
    run_id = kfp_server.runs[0]["run_id"]
    assert (first.status, first.run_id, first.detail) == ("submitted", expected_name, run_id)
    assert (again.status, again.detail) == ("duplicate", f"already submitted as {expected_name}")
    assert (lost.status, lost.run_id, lost.detail) == ("duplicate", expected_name, run_id)
    assert json.loads(_stored(entry_uri, env))["status"] == "submitted"

    # A failed run, retried on request: a second Kubeflow run named for attempt 2.
    failed = fn.RegistryEntry(run_id=expected_name, status="failed", request_id="request-1")
    objects.write(entry_uri, failed.to_bytes(), env, if_generation=None)
    retried = fn.handle_message(
        encode({**sent_message, "retry": True, "request_id": "request-2"}), {}, config, env
    )
    assert (retried.status, retried.job_id) == ("submitted", f"{expected_name}-a2")
    assert [r["display_name"] for r in kfp_server.runs] == [expected_name, f"{expected_name}-a2"]

    body = created[0]["body"]
    assert body["display_name"] == expected_name
    assert body["experiment_id"] == experiment_id
    assert body["service_account"] == "pipeline-runner"
    spec = yaml.safe_load(spec_bytes)  # the compiled spec, images included
    sent_spec = body["pipeline_spec"]
    for key in ("deploymentSpec", "components", "pipelineInfo", "sdkVersion"):
        assert sent_spec[key] == spec[key], key
    tasks = sent_spec["root"]["dag"]["tasks"]
    assert tasks.keys() == spec["root"]["dag"]["tasks"].keys()
    # CT_ENABLE_CACHING=false reaches every task (the client rewrites the compiled default).
    assert {name: task["cachingOptions"] for name, task in tasks.items()} == {
        name: {} for name in tasks
    }
    runtime = body["runtime_config"]
    assert runtime["pipeline_root"] == "gs://ct-pipeline-root/kfp"
    values = runtime["parameters"]
    assert values["source_uri"] == local_bucket.source_uri
    assert {k: values[k] for k in PARAMS} == PARAMS


def _stored(uri: str, env: dict[str, str]) -> bytes:
    stored = objects.read(uri, env)
    assert stored is not None, uri
    return stored.data
