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
whether the registry or the run name stops it. The server can also stand in front of an
authenticating proxy (every call needs the expected ``Authorization`` header, else 401, as IAP
and Kubeflow's Istio gateway answer) and play multi-user Kubeflow (experiments live in profile
namespaces: listing or creating one needs the namespace, and runs are listed by experiment or
namespace; https://www.kubeflow.org/docs/components/pipelines/user-guides/core-functions/connect-api/
and the v2beta1 API reference's ``/apis/v2beta1/runs?namespace=team-1`` example). For IAP, no
client is mocked: google-auth signs a JWT with a service-account key the test generates and
trades it at a local stand-in of Google's token endpoint for an ID token, which IAP checks.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
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
    #: The proxy in front: the ``Authorization`` header -> None (let through) or why not (401).
    authorize: Callable[[str | None], str | None] | None = None
    #: Multi-user Kubeflow: the profile namespaces the caller may use.
    namespaces: frozenset[str] | None = None

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
            authorization = self.headers.get("Authorization")
            with lock:
                state.requests.append(
                    {"method": method, "path": url.path, "query": query, "body": body,
                     "authorization": authorization}
                )  # fmt: skip
                refused = state.authorize(authorization) if state.authorize else None
                try:
                    if refused:
                        code, payload = 401, {"error": refused, "code": 16}
                    else:
                        code, payload = self._route(method, url.path, query, body)
                except ValueError as error:
                    code, payload = 400, {"error": str(error), "code": 3}
                except PermissionError as error:
                    code, payload = 403, {"error": str(error), "code": 7}
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
                return 200, {"multi_user": state.namespaces is not None}
            if (method, path) == ("GET", "/apis/v2beta1/experiments"):
                namespace = self._namespace(query.get("namespace"), "listing experiments")
                found = [
                    e
                    for e in state.experiments
                    if _matches(e, query.get("filter", ""))
                    and e.get("namespace", "") == (namespace or e.get("namespace", ""))
                ]
                return 200, {"experiments": found, "total_size": len(found)} if found else {}
            if (method, path) == ("POST", "/apis/v2beta1/experiments"):
                self._namespace(body.get("namespace"), "creating an experiment")
                experiment = {**body, "experiment_id": str(uuid.uuid4())}
                state.experiments.append(experiment)
                return 200, experiment
            if (method, path) == ("GET", "/apis/v2beta1/runs"):
                if "experiment_id" in query:
                    self._namespace(self._experiment(query["experiment_id"]), "listing runs")
                else:
                    self._namespace(query.get("namespace"), "listing runs")
                found = [
                    r
                    for r in state.runs
                    if r["experiment_id"] == query.get("experiment_id", r["experiment_id"])
                    and _matches(r, query.get("filter", ""))
                ][: int(query.get("page_size", 0)) or None]
                return 200, {"runs": found, "total_size": len(found)} if found else {}
            if (method, path) == ("POST", "/apis/v2beta1/runs"):
                self._namespace(self._experiment(body.get("experiment_id")), "creating a run")
                run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
                state.runs.append(run)
                return 200, run
            return 404, {"error": f"no stand-in for {method} {path}", "code": 5}

        def _experiment(self, experiment_id: object) -> str | None:
            """The namespace of an experiment (runs belong to their experiment's)."""
            for experiment in state.experiments:
                if experiment["experiment_id"] == experiment_id:
                    return str(experiment.get("namespace") or "") or None
            raise ValueError(f"no experiment {experiment_id!r}")

        def _namespace(self, namespace: object, what: str) -> str | None:
            """Multi-user mode: a namespace is required, and must be one the caller may use."""
            if state.namespaces is None:
                return None
            if not namespace:
                raise ValueError(f"{what} needs a namespace in multi-user mode")
            if namespace not in state.namespaces:
                raise PermissionError(f"not authorized in namespace {namespace!r}")
            return str(namespace)

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


# ---------------------------------------------------------------------------
# Kubeflow behind a proxy: a bearer token, IAP, multi-user namespaces
# ---------------------------------------------------------------------------


def _kfp_config(fn: Any, bucket: LocalBucket, url: str, **settings: str) -> Any:
    return fn.Config.from_env(
        {
            "CT_BUCKET": bucket.bucket,
            "CT_BACKEND": "kfp",
            "CT_KFP_HOST": url,
            "CT_KFP_EXPERIMENT": "ct-digits",
            "CT_STATE_PREFIX": f"ct-{uuid.uuid4().hex[:10]}",
            **settings,
        }
    )


@pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")
def test_kfp_backend_sends_the_bearer_token_and_the_namespace(
    kfp_server: KfpStandIn, local_bucket: LocalBucket
) -> None:
    """CT_KFP_TOKEN reaches every call as ``Authorization: Bearer``; CT_KFP_NAMESPACE puts the
    experiment (and so its runs) in that profile namespace of a multi-user Kubeflow."""
    kfp_server.authorize = lambda header: (
        None if header == "Bearer kfp-token-1" else f"bad credentials: {header!r}"
    )
    kfp_server.namespaces = frozenset({"team-ml"})
    fn = load_function()
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}
    data = encode(valid_message(local_bucket))

    settings = {"CT_KFP_TOKEN": "kfp-token-1", "CT_KFP_NAMESPACE": "team-ml"}
    config = _kfp_config(fn, local_bucket, kfp_server.url, **settings)
    assert "kfp-token-1" not in repr(config)  # never in a log line or a traceback
    result = fn.handle_message(data, {}, config, env)

    assert result.status == "submitted", result.detail
    assert {r["authorization"] for r in kfp_server.requests} == {"Bearer kfp-token-1"}
    lookup, create = (
        kfp_server.sent("GET", "/apis/v2beta1/experiments"),
        kfp_server.sent("POST", "/apis/v2beta1/experiments"),
    )
    assert [r["query"]["namespace"] for r in lookup] == ["team-ml"]
    assert [r["body"]["namespace"] for r in create] == ["team-ml"]
    # With a namespace the client skips its healthz probe (it would retry 5 times, 5 s apart,
    # behind a proxy that refuses it).
    assert not kfp_server.sent("GET", "/apis/v2beta1/healthz")
    [run] = kfp_server.runs
    assert run["experiment_id"] == kfp_server.experiments[0]["experiment_id"]

    # Without the token the proxy refuses the call: transient for the function (raised, so
    # Pub/Sub redelivers until the deployment is fixed or the message is too old).
    unauthenticated = _kfp_config(fn, local_bucket, kfp_server.url, CT_KFP_NAMESPACE="team-ml")
    other = encode(valid_message(local_bucket, parameters={**PARAMS, "hidden_units": 48}))
    with pytest.raises(Exception, match=r"\(401\)"):
        fn.handle_message(other, {}, unauthenticated, env)
    assert len(kfp_server.runs) == 1


#: The ``aud`` of the assertion (not a secret: Google's token endpoint's address).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105


@dataclass
class GoogleTokenEndpoint:
    """A stand-in of Google's OAuth 2.0 token endpoint for the service-account JWT-bearer grant
    that asks for an ID token (a ``target_audience`` claim): google-auth's
    ``oauth2._client.id_token_jwt_grant``, which ``id_token.fetch_id_token`` uses with a key
    file."""

    url: str
    verifying_key: str  # the service account's public key (PEM): checks the assertion
    signer: Any  # Google's key: signs the ID tokens it returns
    public_key: str  # ... and verifies them, as IAP does
    grants: list[dict[str, Any]] = field(default_factory=list)


def _rsa_key() -> tuple[str, str]:
    """A fresh 2048-bit RSA key: (private PKCS#8 PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def service_account_key(tmp_path: Path) -> tuple[Path, str, str]:
    """(key file, its private key, its public key), the JSON a service-account key download is."""
    private, public = _rsa_key()
    key_file = tmp_path / "ct-trigger-key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "ct-project",
                "private_key_id": uuid.uuid4().hex,
                "private_key": private,
                "client_email": "ct-trigger@ct-project.iam.gserviceaccount.com",
                "client_id": "109876543210987654321",
                "token_uri": "set by the token endpoint fixture",
            }
        )
    )
    return key_file, private, public


@pytest.fixture
def google_token_endpoint(
    service_account_key: tuple[Path, str, str],
) -> Iterator[GoogleTokenEndpoint]:
    from urllib.parse import parse_qsl

    from google.auth import crypt, jwt

    key_file, _, sa_public = service_account_key
    google_private, google_public = _rsa_key()
    state = GoogleTokenEndpoint(
        url="",
        verifying_key=sa_public,
        signer=crypt.RSASigner.from_string(google_private, key_id="google-1"),
        public_key=google_public,
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = dict(
                parse_qsl(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
            )
            state.grants.append(form)
            try:
                if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                    raise ValueError(f"unsupported grant_type {form.get('grant_type')!r}")
                # google-auth addresses the assertion to Google's endpoint whatever the key
                # file's token_uri (service_account.IDTokenCredentials), as Google requires.
                claims = jwt.decode(
                    form["assertion"], certs=state.verifying_key, audience=GOOGLE_TOKEN_AUDIENCE
                )
                audience = claims["target_audience"]
            except (KeyError, ValueError) as error:
                return self._reply(400, {"error": "invalid_grant", "error_description": str(error)})
            now = int(time.time())
            id_token = jwt.encode(
                state.signer,
                {
                    "iss": "https://accounts.google.com",
                    "aud": audience,
                    "azp": claims["iss"],
                    "email": claims["iss"],
                    "email_verified": True,
                    "sub": "109876543210987654321",
                    "iat": now,
                    "exp": now + 3600,
                },
            ).decode()
            return self._reply(200, {"id_token": id_token})

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
        info = json.loads(key_file.read_text())
        key_file.write_text(json.dumps({**info, "token_uri": f"{url}/token"}))
        yield state


IAP_CLIENT_ID = "123456789012-ct0kubeflow0iap.apps.googleusercontent.com"


@pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")
def test_kfp_backend_behind_iap_sends_an_id_token_for_the_iap_client_id(
    kfp_server: KfpStandIn,
    google_token_endpoint: GoogleTokenEndpoint,
    service_account_key: tuple[Path, str, str],
    local_bucket: LocalBucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CT_KFP_IAP_CLIENT_ID: google-auth's fetch_id_token (with a key file here; the metadata
    server when deployed) gets a Google-signed ID token whose audience is the IAP client id, and
    kfp sends it as ``Authorization: Bearer`` on every call, which IAP checks."""
    from google.auth import jwt

    def iap(header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return "Invalid IAP credentials: empty token"
        try:
            jwt.decode(
                header.removeprefix("Bearer "),
                certs=google_token_endpoint.public_key,
                audience=IAP_CLIENT_ID,
            )
        except ValueError as error:
            return f"Invalid IAP credentials: {error}"
        return None

    kfp_server.authorize = iap
    key_file, _, _ = service_account_key
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    fn = load_function()
    config = _kfp_config(fn, local_bucket, kfp_server.url, CT_KFP_IAP_CLIENT_ID=IAP_CLIENT_ID)
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}

    result = fn.handle_message(encode(valid_message(local_bucket)), {}, config, env)

    assert result.status == "submitted", result.detail
    [grant] = google_token_endpoint.grants  # one token for the whole delivery
    assertion = jwt.decode(grant["assertion"], verify=False)
    assert assertion["target_audience"] == IAP_CLIENT_ID
    assert assertion["iss"] == "ct-trigger@ct-project.iam.gserviceaccount.com"
    headers = {r["authorization"] for r in kfp_server.requests}
    assert len(headers) == 1 and iap(headers.pop()) is None
    assert [r["display_name"] for r in kfp_server.runs] == [result.run_id]

    # A token for another audience is refused, as IAP refuses it. (With a namespace, so that
    # the refusal comes at the first call, not after kfp's 5 healthz attempts 5 s apart.)
    wrong = fn.Config.from_env(
        {
            **_env_of(config),
            "CT_KFP_IAP_CLIENT_ID": "999-other.apps.googleusercontent.com",
            "CT_KFP_NAMESPACE": "team-ml",
        }
    )
    other = encode(valid_message(local_bucket, parameters={**PARAMS, "hidden_units": 40}))
    with pytest.raises(Exception, match=r"\(401\)"):
        fn.handle_message(other, {}, wrong, env)
    assert len(kfp_server.runs) == 1


def _env_of(config: Any) -> dict[str, str]:
    return {
        "CT_BUCKET": config.bucket,
        "CT_BACKEND": "kfp",
        "CT_KFP_HOST": config.kfp_host,
        "CT_KFP_EXPERIMENT": config.kfp_experiment,
        "CT_STATE_PREFIX": config.state_prefix,
    }
