"""The Vertex AI backend against a local HTTP server standing in for the Vertex API.

The real ``google-cloud-aiplatform`` client sends real REST requests (``CT_VERTEX_ENDPOINT``
is an ``http://`` URL); the test checks what it sent: the compiled spec, the parameter values,
the job id and the labels. The server answers a second create with the same job id with 409,
as Vertex does, so a redelivered message is a duplicate.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.fixtures.gcs import GcsServer
from tests.workload.conftest import LocalBucket
from tests.workload.test_function import PARAMS, SHA, encode, load_function, valid_message


@dataclass
class VertexStandIn:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


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
    config = fn.Config.from_env(
        {
            "CT_BUCKET": local_bucket.bucket,
            "CT_BACKEND": "vertex",
            "CT_PROJECT": "ct-project",
            "CT_REGION": "europe-west4",
            "CT_PIPELINE_ROOT": "gs://ct-pipeline-root/runs",
            "CT_SERVICE_ACCOUNT": "runner@ct-project.iam.gserviceaccount.com",
            "CT_VERTEX_ENDPOINT": vertex.url,
        }
    )
    env = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(local_bucket.root)}
    data = encode(valid_message(local_bucket, ref="refs/heads/Feature/X"))

    first = fn.handle_message(data, {}, config, env)
    again = fn.handle_message(data, {}, config, env)

    spec_bytes = local_bucket.spec_path.read_bytes()
    expected_id = fn.run_id_for(SHA, spec_bytes)
    assert first.status == "submitted" and first.run_id == expected_id
    assert first.detail == f"projects/ct-project/locations/europe-west4/pipelineJobs/{expected_id}"
    assert again.status == "duplicate"
    assert [r["job_id"] for r in vertex.requests] == [expected_id, expected_id]
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
    assert body["labels"] == {"ct-commit": SHA, "ct-branch": "feature-x"}
    assert body["serviceAccount"] == "runner@ct-project.iam.gserviceaccount.com"
    runtime = body["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://ct-pipeline-root/runs"
    values = runtime["parameterValues"]
    assert values["source_uri"] == local_bucket.source_uri
    assert {k: values[k] for k in PARAMS} == PARAMS
