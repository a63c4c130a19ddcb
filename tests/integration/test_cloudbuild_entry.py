"""cloudbuild.yaml's entry step under a GitHub-app trigger, whose /workspace has the files
and no ``.git`` (GoogleCloudPlatform/cloud-builders#351: "only the files from the git
repository appear in the workspace directory").

The step's command is taken from this repository's cloudbuild.yaml and run as Cloud Build runs
it: its ``env`` and its script with the trigger's substitutions made (``$COMMIT_SHA``,
``$BRANCH_NAME``, ``$PROJECT_ID``, ``$_BASE_SHA``; ``$$`` is a literal ``$``:
https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values), in bash,
in a copy of a repository without ``.git``. The deploy ledger lives in a directory bucket
(``ORCHESTRATOR_LOCAL_BUCKET_ROOT``) and the build goes to the local Cloud Build API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from orchestrator.adapters.storage import LOCAL_BUCKET_ROOT_VAR
from tests.fixtures.cloudbuild_server import LocalCloudBuild
from tests.fixtures.gitrepo import GitRepo
from tests.integration.workload_repo import run_env
from tests.samples import SMALL_RULES

PROJECT = Path(__file__).resolve().parents[2]


def entry_step() -> tuple[list[str], str]:
    """cloudbuild.yaml's ``orchestrate`` step: its env, and its ``python -m orchestrator``
    line."""
    config = yaml.safe_load((PROJECT / "cloudbuild.yaml").read_text())
    [step] = [s for s in config["steps"] if s.get("id") == "orchestrate"]
    [line] = [
        line.strip()
        for line in step["args"][-1].splitlines()
        if line.strip().startswith("python -m orchestrator ")
    ]
    return list(step["env"]), line


def substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: ``$NAME`` and ``${NAME}`` for known names, ``$$`` -> ``$``."""

    def one(found: re.Match[str]) -> str:
        if found.group(0) == "$$":
            return "$"
        name = found.group(1) or found.group(2)
        return values[name] if name in values else found.group(0)

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", one, text)


def _repo_and_copy(git_repo: GitRepo, tmp_path: Path) -> tuple[GitRepo, Path, str]:
    git_repo.commit(
        {
            "rules.toml": SMALL_RULES,
            "README.md": "# demo\n",
            ".gitignore": "*.pyc\n",
            "src/app.py": "x = 1\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
        },
        message="deployed",
    )
    head = git_repo.commit({"components/trainer/Dockerfile": "FROM x\n"}, message="pushed")
    workspace = tmp_path / "workspace"
    shutil.copytree(git_repo.path, workspace, ignore=shutil.ignore_patterns(".git"))
    (workspace / "src" / "app.cpython-311.pyc").write_bytes(b"left by pip install")
    return git_repo, workspace, head


def _run_entry(workspace: Path, env: dict[str, str], head: str) -> subprocess.CompletedProcess[str]:
    step_env, line = entry_step()
    values = {"COMMIT_SHA": head, "BRANCH_NAME": "main", "PROJECT_ID": "demo-project",
              "_BASE_SHA": ""}  # fmt: skip
    for item in step_env:
        name, _, value = substitute(item, values).partition("=")
        env[name] = value
    # "python" in the step is this interpreter, with the tool installed
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", substitute(line, values)],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _env(api: LocalCloudBuild, buckets: Path) -> dict[str, str]:
    return run_env(
        **api.env,
        ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS="0.01",
        NO_COLOR="1",
        **{LOCAL_BUCKET_ROOT_VAR: str(buckets)},
    )


def test_the_entry_command_plans_from_hashes_and_submits_the_build(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo, workspace, head = _repo_and_copy(git_repo, tmp_path)
    buckets = tmp_path / "buckets"
    deployed = repo.rev("HEAD~1")
    recorded = subprocess.run(
        [sys.executable, "-m", "orchestrator", "ledger", "set", "--commit", deployed],
        cwd=repo.path, env=_env(cloudbuild_api, buckets) | {"BRANCH_NAME": "main"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr

    result = _run_entry(workspace, _env(cloudbuild_api, buckets), head)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{deployed[:12]}..{head[:12]} (hashes)" in result.stdout
    assert "its files differ from the deployed image" in result.stdout  # hashes decided
    [request] = cloudbuild_api.requests
    assert request.parent == "projects/demo-project/locations/us-central1"
    # the image's files differ from the deployed one's; the source and spec were never built
    assert [s.id for s in request.build.steps] == ["setup", "test", "build_image:trainer",
                                                   "upload_source", "compile_pipeline",
                                                   "publish"]  # fmt: skip
    source = request.build.source.storage_source
    with tarfile.open(buckets / source.bucket / source.object_) as tar:
        members = tar.getnames()
    # every file of the workspace but what gcloud's default .gcloudignore leaves out
    # (.gitignore itself, and the *.pyc it ignores)
    assert members == [
        "README.md",
        "components",
        "components/trainer",
        "components/trainer/Dockerfile",
        "rules.toml",
        "src",
        "src/app.py",
    ]
    # the successful run is recorded: the next build plans from this commit
    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "ledger", "show"],
        cwd=repo.path, env=_env(cloudbuild_api, buckets) | {"BRANCH_NAME": "main"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(shown.split(":\n", 1)[1])["commit"] == head


def test_with_nothing_deployed_yet_it_says_what_to_do_and_exits_2(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    _, workspace, head = _repo_and_copy(git_repo, tmp_path)
    result = _run_entry(workspace, _env(cloudbuild_api, tmp_path / "empty-buckets"), head)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("orchestrator: error: ")
    assert "nothing is deployed yet" in line
    assert "gs://demo-bucket/ct/ledger/main/default.json" in line
    assert line.endswith("run the first build in a clone with history")
    assert "Traceback" not in result.stdout + result.stderr
    assert cloudbuild_api.requests == []


def test_the_substitution_is_cloud_builds() -> None:
    values = {"COMMIT_SHA": "abc", "_BASE_SHA": ""}
    assert substitute('--head "$COMMIT_SHA" ${COMMIT_SHA} $$PWD $_BASE_SHA $OTHER', values) == (
        '--head "abc" abc $PWD  $OTHER'
    )
    env, line = entry_step()
    assert line == (
        'python -m orchestrator run --executor cloudbuild --since-deployed --head "$COMMIT_SHA"'
    )
    assert "BRANCH_NAME=$BRANCH_NAME" in env and "CI=true" in env
