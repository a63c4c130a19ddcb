"""``validate --cloud``: each resource exists, each permission a build needs is held.

Neither fake-gcs-server nor the Pub/Sub emulator implements ``testIamPermissions``
(tests/integration/test_iam_adapter.py shows it, and tests their existence checks), and there
is no emulator of Artifact Registry, IAM or Resource Manager. So these tests run the command
against small local HTTP stand-ins of the five REST APIs, one per API, each answering as the
API's reference says (``permissions`` held, 404 for a missing resource, 403 with an error
message) and recording every request, and assert the exact requests; and they run the same
checks against Google's real endpoint URLs through a recording transport that sends nothing.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.iam import Access
from orchestrator.cli import main
from orchestrator.commands.io import CommandIO
from orchestrator.commands.validate import check_cloud
from orchestrator.config import load_rules
from orchestrator.output import Redactor
from tests.fixtures._services import free_port
from tests.fixtures.gitrepo import GitRepo, git_env

BUILD_ACCOUNT = "ct-build@demo-project.iam.gserviceaccount.com"
RULES = f"""\
version = 1
[project]
gcp_project = "demo-project"
region = "us-central1"
bucket = "demo-ct"
registry = "us-central1-docker.pkg.dev/demo-project/ct"
topic = "training-runs"
[function]
service_account = "ct-function@demo-project.iam.gserviceaccount.com"
[build]
service_account = "projects/demo-project/serviceAccounts/{BUILD_ACCOUNT}"
[[rule]]
name = "all"
paths = ["*"]
do = "all"
"""

BUCKET = "/storage/v1/b/demo-ct"
BUCKET_TEST = (
    f"{BUCKET}/iam/testPermissions?permissions=storage.objects.create"
    "&permissions=storage.objects.delete&permissions=storage.objects.get"
    "&permissions=storage.objects.list"
)
TOPIC = "/v1/projects/demo-project/topics/training-runs"
REPOSITORY = "/v1/projects/demo-project/locations/us-central1/repositories/ct"
FUNCTION_SA = "/v1/projects/-/serviceAccounts/ct-function@demo-project.iam.gserviceaccount.com"
BUILD_SA = "/v1/projects/-/serviceAccounts/ct-build@demo-project.iam.gserviceaccount.com"
PROJECT = "/v1/projects/demo-project"
PROJECT_PERMISSIONS = [
    "cloudbuild.builds.create",
    "cloudbuild.builds.get",
    "cloudfunctions.functions.create",
    "cloudfunctions.functions.get",
    "cloudfunctions.functions.update",
    "logging.logEntries.create",
]
STORAGE_PERMISSIONS = [
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
]
REPOSITORY_PERMISSIONS = [
    "artifactregistry.repositories.downloadArtifacts",
    "artifactregistry.repositories.uploadArtifacts",
]


@dataclass
class StandIn:
    """One API's stand-in: ``answers`` maps (method, path) to (status, JSON body); anything
    else is 404. ``requests`` records (method, path with query, JSON body or None, headers)."""

    url: str
    answers: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)

    def calls(self) -> list[tuple[str, str, Any]]:
        return [(m, p, b) for m, p, b, _ in self.requests]


def _serve(stand_in: StandIn, server: ThreadingHTTPServer) -> None:
    server.serve_forever(poll_interval=0.05)


@pytest.fixture
def apis() -> Iterator[dict[str, StandIn]]:
    """Five stand-ins on 127.0.0.1: storage, pubsub, artifactregistry, iam,
    cloudresourcemanager."""
    stand_ins: dict[str, StandIn] = {}
    servers = []
    for name in ("storage", "pubsub", "artifactregistry", "iam", "cloudresourcemanager"):
        stand_in = StandIn(url="")

        class Handler(BaseHTTPRequestHandler):
            target = stand_in

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                self.target.requests.append((self.command, self.path, body, dict(self.headers)))
                status, data = self.target.answers.get(
                    (self.command, self.path),
                    (404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}),
                )
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=_serve, args=(stand_in, server), daemon=True).start()
        servers.append(server)
        stand_ins[name] = stand_in
    try:
        yield stand_ins
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _env(apis: dict[str, StandIn]) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": apis["storage"].url,
        "PUBSUB_EMULATOR_HOST": apis["pubsub"].url.removeprefix("http://"),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_ARTIFACTREGISTRY": apis["artifactregistry"].url + "/",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM": apis["iam"].url + "/",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER": apis["cloudresourcemanager"].url,
    }


def _everything_held(apis: dict[str, StandIn]) -> None:
    def held(permissions: list[str]) -> tuple[int, dict[str, Any]]:
        return 200, {"permissions": permissions}

    apis["storage"].answers = {
        ("GET", BUCKET): (200, {"kind": "storage#bucket", "name": "demo-ct"}),
        ("GET", BUCKET_TEST): (
            200,
            {"kind": "storage#testIamPermissionsResponse", "permissions": STORAGE_PERMISSIONS},
        ),
    }
    apis["pubsub"].answers = {
        ("GET", TOPIC): (200, {"name": TOPIC.removeprefix("/v1/")}),
        ("POST", f"{TOPIC}:testIamPermissions"): held(["pubsub.topics.publish"]),
    }
    apis["artifactregistry"].answers = {
        ("GET", REPOSITORY): (200, {"name": REPOSITORY.removeprefix("/v1/"), "format": "DOCKER"}),
        ("POST", f"{REPOSITORY}:testIamPermissions"): held(REPOSITORY_PERMISSIONS),
    }
    apis["iam"].answers = {
        **{("GET", sa): (200, {"email": sa.rsplit("/", 1)[1]}) for sa in (FUNCTION_SA, BUILD_SA)},
        **{
            ("POST", f"{sa}:testIamPermissions"): held(["iam.serviceAccounts.actAs"])
            for sa in (FUNCTION_SA, BUILD_SA)
        },
    }
    apis["cloudresourcemanager"].answers = {
        ("GET", PROJECT): (200, {"projectId": "demo-project"}),
        ("POST", f"{PROJECT}:testIamPermissions"): held(PROJECT_PERMISSIONS),
    }


def _validate(repo: GitRepo, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(
        ["validate", "--repo", str(repo.path), "--cloud", *args],
        stdout=stdout,
        stderr=stderr,
        env=env,
    )
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit({"rules.toml": RULES})
    return git_repo


def test_everything_present_and_held(repo: GitRepo, apis: dict[str, StandIn]) -> None:
    _everything_held(apis)
    code, out, err = _validate(repo, _env(apis))
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == (
        "cloud: ok: every permission a build needs is held on project demo-project, bucket "
        "gs://demo-ct, topic projects/demo-project/topics/training-runs, repository "
        "projects/demo-project/locations/us-central1/repositories/ct, service account "
        "ct-function@demo-project.iam.gserviceaccount.com, service account "
        "ct-build@demo-project.iam.gserviceaccount.com"
    )
    # the exact requests, as each API's reference spells them
    assert apis["storage"].calls() == [("GET", BUCKET, None), ("GET", BUCKET_TEST, None)]
    assert apis["pubsub"].calls() == [
        ("GET", TOPIC, None),
        ("POST", f"{TOPIC}:testIamPermissions", {"permissions": ["pubsub.topics.publish"]}),
    ]
    assert apis["artifactregistry"].calls() == [
        ("GET", REPOSITORY, None),
        ("POST", f"{REPOSITORY}:testIamPermissions", {"permissions": REPOSITORY_PERMISSIONS}),
    ]
    actas = {"permissions": ["iam.serviceAccounts.actAs"]}
    assert apis["iam"].calls() == [
        ("GET", FUNCTION_SA, None),
        ("POST", f"{FUNCTION_SA}:testIamPermissions", actas),
        ("GET", BUILD_SA, None),
        ("POST", f"{BUILD_SA}:testIamPermissions", actas),
    ]
    assert apis["cloudresourcemanager"].calls() == [
        ("GET", PROJECT, None),
        ("POST", f"{PROJECT}:testIamPermissions", {"permissions": PROJECT_PERMISSIONS}),
    ]
    # plain-HTTP endpoints (emulators, stand-ins) never get credentials
    for stand_in in apis.values():
        assert all("Authorization" not in headers for *_, headers in stand_in.requests)


def test_each_missing_thing_is_one_line_and_exit_2(repo: GitRepo, apis: dict[str, StandIn]) -> None:
    _everything_held(apis)
    # the bucket: two permissions short
    apis["storage"].answers[("GET", BUCKET_TEST)] = (
        200,
        {"kind": "storage#testIamPermissionsResponse", "permissions": STORAGE_PERMISSIONS[::2]},
    )
    # the topic: the caller may not read it, and Pub/Sub answers {} for a missing topic
    forbidden = (403, {"error": {"code": 403, "message": "User not authorized to perform\n"
                                 "this action.", "status": "PERMISSION_DENIED"}})  # fmt: skip
    apis["pubsub"].answers[("GET", TOPIC)] = forbidden
    apis["pubsub"].answers[("POST", f"{TOPIC}:testIamPermissions")] = (200, {})
    # the repository does not exist
    del apis["artifactregistry"].answers[("GET", REPOSITORY)]
    # the function's account: the permission test itself is refused
    apis["iam"].answers[("POST", f"{FUNCTION_SA}:testIamPermissions")] = forbidden
    code, out, err = _validate(repo, _env(apis))
    assert code == 2
    assert out.count("\n") == 1  # only the rules.toml line
    assert err.splitlines() == [
        "orchestrator: error: missing: bucket gs://demo-ct: storage.objects.delete, "
        "storage.objects.list not held (roles/storage.objectAdmin grants them)",
        "orchestrator: error: missing: topic projects/demo-project/topics/training-runs: "
        "pubsub.topics.publish not held (roles/pubsub.publisher grants them), or it does not "
        "exist (the caller may not read it)",
        "orchestrator: error: missing: repository "
        "projects/demo-project/locations/us-central1/repositories/ct does not exist",
        "orchestrator: error: missing: service account "
        "ct-function@demo-project.iam.gserviceaccount.com: iam.serviceAccounts.actAs not held "
        "(roles/iam.serviceAccountUser grants them); the test was refused: 403: User not "
        "authorized to perform this action.",
    ]
    # a missing repository is not asked about its permissions
    assert [m for m, *_ in apis["artifactregistry"].calls()] == ["GET"]


def test_a_service_that_cannot_be_reached_is_named_and_exit_1(
    repo: GitRepo, apis: dict[str, StandIn]
) -> None:
    _everything_held(apis)
    env = {**_env(apis), "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}
    del apis["artifactregistry"].answers[("GET", REPOSITORY)]
    code, _, err = _validate(repo, env)
    assert code == 1  # the check is incomplete: unreachable wins over missing
    lines = err.splitlines()
    assert lines[0].endswith("does not exist")
    assert lines[1].startswith(
        "orchestrator: error: unreachable: topic projects/demo-project/topics/training-runs: "
        f"Pub/Sub ({env['PUBSUB_EMULATOR_HOST'].join(['http://', ''])}) cannot be reached: "
    )
    assert len(lines) == 2
    # every other service was still asked
    assert apis["iam"].calls() and apis["cloudresourcemanager"].calls()


def test_a_server_error_counts_as_unreachable(repo: GitRepo, apis: dict[str, StandIn]) -> None:
    _everything_held(apis)
    apis["cloudresourcemanager"].answers[("GET", PROJECT)] = (
        503,
        {"error": {"code": 503, "message": "The service is currently unavailable."}},
    )
    code, _, err = _validate(repo, _env(apis))
    assert code == 1
    assert err == (
        "orchestrator: error: unreachable: project demo-project: Resource Manager "
        f"({apis['cloudresourcemanager'].url}) answered 503: The service is currently "
        "unavailable.\n"
    )


def test_without_cloud_nothing_is_asked(repo: GitRepo, apis: dict[str, StandIn]) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(
        ["validate", "--repo", str(repo.path)], stdout=stdout, stderr=stderr, env=_env(apis)
    )
    assert code == 0
    assert all(not stand_in.requests for stand_in in apis.values())


def test_an_endpoint_override_must_be_http(repo: GitRepo) -> None:
    env = {"CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM": "file:///etc/passwd"}
    code, _, err = _validate(repo, env)
    assert code == 2
    assert err == (
        "orchestrator: error: CLOUDSDK_API_ENDPOINT_OVERRIDES_IAM='file:///etc/passwd': not an "
        "http:// or https:// URL\n"
    )


def test_the_real_endpoints_get_the_same_requests_with_credentials(tmp_path: Path) -> None:
    """Against Google's own URLs, through a transport that records and sends nothing."""
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    rules = load_rules(tmp_path / "rules.toml")
    sent: list[tuple[str, str, Any, str]] = []
    tokens = []

    def transport(
        method: str, url: str, body: bytes | None, headers: Any
    ) -> tuple[int, dict[str, Any]]:
        sent.append((method, url, json.loads(body) if body else None, headers["Authorization"]))
        if url.endswith(("testIamPermissions", ":testIamPermissions")) or "testPermissions" in url:
            wanted = json.loads(body)["permissions"] if body else STORAGE_PERMISSIONS
            return 200, {"permissions": wanted}
        return 200, {}

    def token() -> str:
        tokens.append(1)
        return "ya29.test-token"

    stdout, stderr = io.StringIO(), io.StringIO()
    access = Access({}, transport=transport, token=token)
    code = check_cloud(rules, CommandIO(stdout, stderr, {}, Redactor()), access)
    assert (code, stderr.getvalue()) == (0, "")
    assert len(tokens) == 1  # one token for every request
    assert {auth for *_, auth in sent} == {"Bearer ya29.test-token"}
    assert [(m, u) for m, u, *_ in sent] == [
        ("GET", "https://cloudresourcemanager.googleapis.com/v1/projects/demo-project"),
        ("POST", "https://cloudresourcemanager.googleapis.com/v1/projects/demo-project"
                 ":testIamPermissions"),
        ("GET", "https://storage.googleapis.com/storage/v1/b/demo-ct"),
        ("GET", f"https://storage.googleapis.com{BUCKET_TEST}"),
        ("GET", f"https://pubsub.googleapis.com{TOPIC}"),
        ("POST", f"https://pubsub.googleapis.com{TOPIC}:testIamPermissions"),
        ("GET", f"https://artifactregistry.googleapis.com{REPOSITORY}"),
        ("POST", f"https://artifactregistry.googleapis.com{REPOSITORY}:testIamPermissions"),
        ("GET", f"https://iam.googleapis.com{FUNCTION_SA}"),
        ("POST", f"https://iam.googleapis.com{FUNCTION_SA}:testIamPermissions"),
        ("GET", f"https://iam.googleapis.com{BUILD_SA}"),
        ("POST", f"https://iam.googleapis.com{BUILD_SA}:testIamPermissions"),
    ]  # fmt: skip


def test_planning_and_plain_validate_import_no_cloud_client(repo: GitRepo) -> None:
    """``python -X importtime``: google-auth, the IAM adapter and the setup module load only
    for ``validate --cloud`` (and ``setup-gcp``), never on the planning path."""
    repo.commit({"src/a.py": "x = 1\n"})
    for argv in (["--dry-run"], ["validate"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "orchestrator", *argv, "--repo",
             str(repo.path)],
            capture_output=True, text=True, env={**git_env(), "NO_COLOR": "1"}, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "orchestrator.cli" in imported  # the listing is real
        heavy = {m for m in imported if m.startswith(("google.auth", "google.cloud."))} | (
            imported & {"orchestrator.adapters.iam", "orchestrator.gcp_setup", "urllib.request"}
        )
        assert heavy == set(), argv


def test_validate_cloud_against_local_endpoints_needs_no_google_auth(
    repo: GitRepo, apis: dict[str, StandIn]
) -> None:
    _everything_held(apis)
    script = (
        "import sys, io\n"
        "from orchestrator.cli import main\n"
        f"code = main(['validate', '--cloud', '--repo', {str(repo.path)!r}], "
        f"stdout=io.StringIO(), stderr=io.StringIO(), env={_env(apis)!r})\n"
        # (the bare google and google.cloud namespace packages load at startup, from .pth files)
        "loaded = [m for m in sys.modules if m.startswith(('google.auth', 'google.cloud.'))]\n"
        "print(code, sorted(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=git_env(), check=True
    )
    assert done.stdout.strip() == "0 []"


def test_a_registry_that_is_not_artifact_registry_is_not_checked(
    git_repo: GitRepo, apis: dict[str, StandIn]
) -> None:
    _everything_held(apis)
    rules = RULES.replace("us-central1-docker.pkg.dev/demo-project/ct", "localhost:5000/ct")
    git_repo.commit({"rules.toml": rules})
    code, out, err = _validate(git_repo, _env(apis))
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == (
        "cloud: registry localhost:5000/ct is not an Artifact Registry repository "
        "(LOCATION-docker.pkg.dev/PROJECT/REPOSITORY): not checked"
    )
    assert apis["artifactregistry"].requests == []
