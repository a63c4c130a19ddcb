"""``run --executor cloudbuild`` against the local Cloud Build API (fixtures/cloudbuild_server).

Driven through ``main`` in real temporary git repositories; the build source goes through the
real storage adapter to its local directory backend.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from orchestrator.adapters.cloudbuild import build_from_dict
from orchestrator.adapters.storage import LOCAL_BUCKET_ROOT_VAR
from orchestrator.cli import main
from tests.fixtures._services import free_port
from tests.fixtures.cloudbuild_server import LocalCloudBuild
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.gitrepo import GitRepo, git_env
from tests.samples import SMALL_RULES as RULES


def _repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit(
        {
            "rules.toml": RULES,
            "README.md": "# demo\n",
            "src/app.py": "x = 1\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
        },
        message="root",
    )
    git_repo.commit({"src/a$HOME b.py": "y = 1\n", "components/trainer/Dockerfile": "FROM x\n"})
    return git_repo


def _env(api: LocalCloudBuild, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **api.env,
        "ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS": "0.01",
        LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets"),
        **extra,
    }


def _run(repo: GitRepo, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--repo", str(repo.path), "--executor", "cloudbuild", *args]
    code = main(argv, stdout=out, stderr=err, env=env)
    return code, out.getvalue(), err.getvalue()


def test_a_successful_build_exits_0_and_prints_its_id(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    code, out, err = _run(repo, _env(cloudbuild_api, tmp_path))
    assert (code, err) == (0, ""), out + err
    [request] = cloudbuild_api.requests
    build_id = out.split("Cloud Build build ", 1)[1].split()[0]
    assert cloudbuild_api.polls(build_id) >= 2  # the id the server gave, followed to the end
    lines = out.splitlines()
    assert lines[0].startswith("Plan for ")  # the plan comes first
    at = lines.index(f"Cloud Build build {build_id} in demo-project/us-central1")
    assert lines[at + 1] == f"logs: http://{cloudbuild_api.address}/builds/{build_id}/log"
    assert "[build_image:trainer] SUCCESS" in lines
    assert "[build_image:trainer] QUEUED" not in lines  # steps not started yet are not news
    assert lines[-1] == "run succeeded"
    assert request.parent == "projects/demo-project/locations/us-central1"
    assert request.project_id == "demo-project"


def test_the_submitted_steps_are_the_emitted_ones(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    env = _env(cloudbuild_api, tmp_path)
    assert _run(repo, env, "--format", "json")[0] == 0
    emitted = io.StringIO()
    assert main(["emit", "--repo", str(repo.path)], stdout=emitted, env=env) == 0
    expected = build_from_dict(yaml.safe_load(emitted.getvalue()))
    [request] = cloudbuild_api.requests
    assert list(request.build.steps) == list(expected.steps)
    assert [s.id for s in expected.steps][-1] == "publish"
    assert request.build.substitutions == expected.substitutions
    assert request.build.options == expected.options
    # the source: this checkout, uploaded through the storage adapter
    storage = request.build.source.storage_source
    assert storage.bucket == "demo-bucket"
    assert storage.object_.startswith("cloudbuild-source/")
    tarball = tmp_path / "buckets" / storage.bucket / storage.object_
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"rules.toml", "src/a$HOME b.py", "components/trainer/Dockerfile"} <= names
    assert not any(n == ".git" or n.startswith(".git/") for n in names)


def test_a_failed_build_exits_1_and_reports_the_failed_step(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    cloudbuild_api.finish_next_builds_with("FAILURE", failed_step="build_image:trainer")
    code, out, err = _run(repo, _env(cloudbuild_api, tmp_path), "--format", "json")
    assert code == 1, err
    report = json.loads(out)
    assert report["status"] == "failed"
    statuses = {s["id"]: s["status"] for s in report["steps"]}
    assert statuses["build_image:trainer"] == "failed"
    assert statuses["publish"] == "skipped"
    assert cloudbuild_api.polls(report["build"]["id"]) >= 2
    assert "[build_image:trainer] FAILURE" in err  # progress goes to stderr with --format json
    assert 'Build step failure: build step 2 "gcr.io/cloud-builders/docker" failed' in err


def test_flags_and_environment_override_project_and_region(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    env = _env(cloudbuild_api, tmp_path, ORCHESTRATOR_PROJECT="env-project")
    assert _run(repo, env)[0] == 0
    assert _run(repo, env, "--project", "flag-project", "--region", "europe-west4")[0] == 0
    parents = [r.parent for r in cloudbuild_api.requests]
    assert parents == [
        "projects/env-project/locations/us-central1",
        "projects/flag-project/locations/europe-west4",
    ]


def test_an_unreachable_endpoint_is_a_clear_error_naming_it(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "ORCHESTRATOR_CLOUDBUILD_ENDPOINT": address,
        LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets"),
    }
    started = time.monotonic()
    code, _, err = _run(repo, env)
    assert time.monotonic() - started < 15
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(f"orchestrator: error: Cannot reach the Cloud Build API at {address}")
    assert "Traceback" not in err


def test_a_checkout_not_at_head_is_refused_before_anything_is_submitted(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    head = repo.rev()
    repo.git("checkout", "-q", "HEAD~1")
    code, _, err = _run(repo, _env(cloudbuild_api, tmp_path), "--head", head)
    assert code == 2
    assert f"is not at {head[:12]}" in err
    assert cloudbuild_api.requests == []


def test_nothing_to_do_submits_nothing(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    repo.commit({"README.md": "# more docs\n"})
    code, out, _ = _run(repo, _env(cloudbuild_api, tmp_path), "--format", "json")
    assert code == 0
    assert json.loads(out)["status"] == "nothing-to-do"
    assert cloudbuild_api.requests == []


def test_on_a_fresh_bucket_the_build_makes_what_its_publish_needs(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    env = _env(cloudbuild_api, tmp_path)
    dry = io.StringIO()
    assert main(["plan", "--repo", str(repo.path), "--format", "json"], stdout=dry, env=env) == 0
    planned = [a["id"] for a in json.loads(dry.getvalue())["actions"]]
    emitted = io.StringIO()
    assert main(["emit", "--repo", str(repo.path)], stdout=emitted, env=env) == 0
    emitted_ids = [s["id"] for s in yaml.safe_load(emitted.getvalue())["steps"]]
    assert _run(repo, env, "--format", "json")[0] == 0
    [request] = cloudbuild_api.requests
    submitted = [s.id for s in request.build.steps]
    # nothing was ever uploaded or compiled: the publish needs both, and says why
    assert {"upload_source", "compile_pipeline", "publish"} <= set(planned)
    # plan (--dry-run), emit and run show and run exactly the same actions
    assert emitted_ids == submitted == ["setup", *planned]


class _CtrlCOnce(io.StringIO):
    """A terminal on which the user presses Ctrl-C as soon as ``text`` is printed."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.pressed = False

    def write(self, s: str) -> int:
        written = super().write(s)
        if self.text in s and not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt
        return written


def test_ctrl_c_while_following_cancels_the_build_and_exits_130(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=10_000)
    out, err = _CtrlCOnce("build WORKING"), io.StringIO()
    argv = ["run", "--repo", str(repo.path), "--executor", "cloudbuild"]
    code = main(argv, stdout=out, stderr=err, env=_env(cloudbuild_api, tmp_path))
    [request] = cloudbuild_api.requests
    [cancel] = cloudbuild_api.cancels
    build_id = cancel.request.id
    assert out.pressed and code == 130
    assert out.getvalue().count(f"Cloud Build build {build_id} in ") == 1  # the build followed
    assert cancel.request.name == f"{request.parent}/builds/{build_id}"
    assert cancel.request.project_id == "demo-project"
    assert cloudbuild_api.status(build_id) == "CANCELLED"
    assert (
        err.getvalue()
        == f"orchestrator: error: interrupted: cancelled Cloud Build build {build_id}\n"
    )
    # an interrupted run records nothing in the deploy ledger
    assert not list((tmp_path / "buckets").rglob("ledger/*"))


def test_sigint_to_a_real_run_cancels_the_build_and_exits_130(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=10_000)
    env = {**git_env(), **_env(cloudbuild_api, tmp_path), "NO_COLOR": "1"}
    env.pop("CI", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--executor", "cloudbuild"],
        cwd=repo.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not cloudbuild_api.requests or cloudbuild_api.polls(_only_build(cloudbuild_api)) < 3:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    build_id = _only_build(cloudbuild_api)
    [cancel] = cloudbuild_api.cancels
    assert process.returncode == 130, out + err
    assert (cancel.request.id, cancel.request.project_id) == (build_id, "demo-project")
    assert cancel.request.name == f"projects/demo-project/locations/us-central1/builds/{build_id}"
    assert cancel.routing == "location=us-central1"
    assert cloudbuild_api.status(build_id) == "CANCELLED"
    assert err == f"orchestrator: error: interrupted: cancelled Cloud Build build {build_id}\n"
    assert f"Cloud Build build {build_id} in demo-project/us-central1" in out


def _only_build(api: LocalCloudBuild) -> str:
    [build_id] = api.build_ids
    return build_id


def test_connections_reset_on_the_way_to_cloud_build_are_ridden_out(
    git_repo: GitRepo,
    cloudbuild_api: LocalCloudBuild,
    tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    repo = _repo(git_repo)
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.reset(first=2))
    env = _env(cloudbuild_api, tmp_path, ORCHESTRATOR_CLOUDBUILD_ENDPOINT=proxy.address,
               ORCHESTRATOR_RETRY_DEADLINE="20")  # fmt: skip

    code, out, err = _run(repo, env)

    assert (code, err) == (0, ""), out + err
    assert proxy.stats.faulted == 2
    assert len(cloudbuild_api.build_ids) == 1  # one build, whatever the retries
    assert out.splitlines()[-1] == "run succeeded"


def test_a_cloud_build_api_that_keeps_failing_is_exit_1_naming_it_and_nothing_is_built(
    git_repo: GitRepo,
    cloudbuild_api: LocalCloudBuild,
    tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    repo = _repo(git_repo)
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.reset())
    env = _env(cloudbuild_api, tmp_path, ORCHESTRATOR_CLOUDBUILD_ENDPOINT=proxy.address,
               ORCHESTRATOR_RETRY_DEADLINE="3")  # fmt: skip
    started = time.monotonic()

    code, _, err = _run(repo, env)

    assert time.monotonic() - started < 15
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(
        f"orchestrator: error: the Cloud Build API at {proxy.address} "
        "(ORCHESTRATOR_CLOUDBUILD_ENDPOINT) kept failing to create the build: "
    ), line
    assert "ORCHESTRATOR_RETRY_DEADLINE=3" in line
    assert cloudbuild_api.requests == []  # nothing was started: nothing publishes
    ledgers = list((tmp_path / "buckets").rglob("ledger/**/*.json"))
    assert ledgers == []  # the deploy ledger did not move
