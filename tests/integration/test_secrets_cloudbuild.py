"""Secrets on Cloud Build: ``run --executor cloudbuild`` submits them to the local Cloud Build
API (fixtures/cloudbuild_server) by name only, and the stand-in refuses what the API documents
as invalid. Driven through ``main`` in real temporary git repositories."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters import cloudbuild
from orchestrator.adapters.storage import LOCAL_BUCKET_ROOT_VAR
from orchestrator.cli import main
from orchestrator.errors import InputError
from tests.fixtures.cloudbuild_server import LocalCloudBuild
from tests.fixtures.gitrepo import GitRepo
from tests.samples import SMALL_RULES

VERSION = "projects/demo-project/secrets/api-token/versions/2"
RULES = SMALL_RULES + f'\n[build]\nsecret_env = {{ API_TOKEN = "{VERSION}" }}\n'
VALUE = "tok-3n.*[secret]+?\\d$\nsecond line of it"


def _repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit({"rules.toml": RULES, "src/app.py": "x = 1\n",
                     "components/trainer/Dockerfile": "FROM scratch\n"})  # fmt: skip
    git_repo.commit({"src/app.py": "x = 2\n", "components/trainer/Dockerfile": "FROM x\n"})
    return git_repo


def test_the_submitted_build_names_the_secret_and_never_carries_it(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    env = {
        **cloudbuild_api.env,
        "ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS": "0.01",
        LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets"),
        "API_TOKEN": VALUE,  # in this process's environment too: it must not travel
    }
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--repo", str(repo.path), "--executor", "cloudbuild", "--format", "json"]
    code = main(argv, stdout=out, stderr=err, env=env)
    assert code == 0, err.getvalue()
    [request] = cloudbuild_api.requests
    build = request.build
    assert [(s.env, s.version_name) for s in build.available_secrets.secret_manager] == [
        ("API_TOKEN", VERSION)
    ]
    # the steps that run the repository's commands get it by name; no other step does
    assert {s.id: list(s.secret_env) for s in build.steps if s.secret_env} == {
        "test": ["API_TOKEN"],
        "compile_pipeline": ["API_TOKEN"],
    }
    assert not [e for s in build.steps for e in s.env if e.startswith("API_TOKEN=")]
    sent = type(request).serialize(request)
    for part in (VALUE, *VALUE.splitlines()):
        assert part.encode() not in sent
        assert part not in out.getvalue() + err.getvalue()
    assert json.loads(out.getvalue())["status"] == "succeeded"


CONFIG: dict[str, Any] = {
    "steps": [{"id": "test", "name": "python:3.11-slim", "secretEnv": ["A"]}],
    "availableSecrets": {"secretManager": [{"versionName": VERSION, "env": "A"}]},
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c["steps"][0].update(secretEnv=["B"]),
         "step 0 uses secretEnv 'B', which no secret defines"),
        (lambda c: c["steps"][0].pop("secretEnv"), "secret env 'A' is not used by any build step"),
        (lambda c: c["availableSecrets"]["secretManager"].append(
            {"versionName": VERSION, "env": "A"}), "secret env 'A' is defined more than once"),
        (lambda c: c["availableSecrets"]["secretManager"][0].update(
            versionName="projects/p/secrets/s:latest"),
         "versionName 'projects/p/secrets/s:latest' is not projects/*/secrets/*/versions/*"),
    ],
    ids=["undefined", "unused", "duplicate", "short-form"],
)  # fmt: skip
def test_the_stand_in_refuses_what_cloud_build_documents_as_invalid(
    cloudbuild_api: LocalCloudBuild, change: Any, problem: str
) -> None:
    cloudbuild.submit_build("demo-project", "global", CONFIG, env=cloudbuild_api.env,
                            poll_interval=0.01)  # fmt: skip
    config = json.loads(json.dumps(CONFIG))
    change(config)
    with pytest.raises(InputError) as caught:
        cloudbuild.submit_build("demo-project", "global", config, env=cloudbuild_api.env)
    assert str(caught.value).endswith(f"rejected the build: 400 invalid build: {problem}")
    assert len(cloudbuild_api.requests) == 1  # only the valid one was recorded
