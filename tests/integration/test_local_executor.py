"""The local executor end to end against real local services, and its failure paths.

Services (all started by the fixtures on 127.0.0.1): a Docker engine and registry, fake-gcs-server,
the Pub/Sub emulator, and functions-framework serving function/ behind an emulator push
subscription, which launches the local pipeline run. The orchestrator runs in process through
``cli.main`` with an explicit environment mapping.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator.message import decode
from tests.fixtures._services import free_port
from tests.fixtures.docker import DockerEngine
from tests.fixtures.functions import FunctionServer
from tests.fixtures.gcs import GcsServer
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.pubsub import PubsubEmulator
from tests.integration.workload_repo import append_line, run_env, workload_repo

PROJECT = "ct-test-project"


def run_cli(repo: GitRepo, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["run", "--repo", str(repo.path), "--format", "json"], stdout=out,
                    stderr=err, env=env)  # fmt: skip
    return code, json.loads(out.getvalue()), err.getvalue()


def with_base_image(image: str) -> dict[str, str]:
    """rules.toml edits: build both components FROM ``image`` (offline)."""
    return {
        f'context = "components/{name}"\n': (
            f'context = "components/{name}"\nbuild_args = {{ BASE_IMAGE = "{image}" }}\n'
        )
        for name in ("validator", "evaluator")
    }


def change_everything_but_the_evaluator(repo: GitRepo) -> None:
    append_line(repo, "components/validator/main.py", "# a change to the validator")
    append_line(repo, "training_src/train.py", "# a change to the training code")
    repo.commit(message="change the validator and the training code")


def registry_digest(registry: str, repository: str, tag: str) -> str | None:
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Docker-Content-Digest")


@pytest.mark.docker
@pytest.mark.slow
def test_local_executor_with_docker_gcs_pubsub_and_the_function(
    make_git_repo: Callable[..., GitRepo],
    docker_engine: DockerEngine,
    gcs_server: GcsServer,
    pubsub_emulator: PubsubEmulator,
    pubsub_admin: tuple[Any, Any],
    functions_framework: Callable[..., FunctionServer],
    tmp_path: Path,
) -> None:
    repo = workload_repo(make_git_repo, rules_replace=with_base_image(docker_engine.base_image))
    change_everything_but_the_evaluator(repo)
    bucket = gcs_server.create_bucket()
    topic = pubsub_emulator.unique_id("runs")
    publisher, subscriber = pubsub_admin
    topic_path = f"projects/{PROJECT}/topics/{topic}"
    publisher.create_topic(name=topic_path, retry=None, timeout=10)
    pulled = f"projects/{PROJECT}/subscriptions/{topic}-pull"
    subscriber.create_subscription(
        request={"name": pulled, "topic": topic_path}, retry=None, timeout=10
    )
    pipeline_root = tmp_path / "function-pipeline-root"
    function = functions_framework(
        source=repo.path / "function" / "main.py",
        target="on_message",
        env={
            "CT_BUCKET": bucket,
            "CT_BACKEND": "local",
            "CT_PIPELINE_ROOT": str(pipeline_root),
            **gcs_server.env,
        },
    )
    subscriber.create_subscription(
        request={
            "name": f"projects/{PROJECT}/subscriptions/{topic}-push",
            "topic": topic_path,
            "push_config": {"push_endpoint": function.url},
            "ack_deadline_seconds": 120,  # the local pipeline run takes several seconds
        },
        retry=None,
        timeout=10,
    )
    env = run_env(
        DOCKER_HOST=docker_engine.host,
        ORCHESTRATOR_DOCKER_NETWORK="none",
        ORCHESTRATOR_REGISTRY=f"{docker_engine.registry}/ct",
        ORCHESTRATOR_BUCKET=bucket,
        ORCHESTRATOR_PROJECT=PROJECT,
        ORCHESTRATOR_TOPIC=topic,
        **gcs_server.env,
        **pubsub_emulator.env,
    )

    code, report, progress = run_cli(repo, env)

    assert code == 0, progress
    # the evaluator was never pushed to this registry: the run needs it, so it is built too
    assert [(s["id"], s["status"]) for s in report["steps"]] == [
        ("test", "succeeded"),
        ("build_image:evaluator", "succeeded"),
        ("build_image:validator", "succeeded"),
        ("upload_source", "succeeded"),
        ("compile_pipeline", "succeeded"),
        ("publish", "succeeded"),
    ]
    assert report["pipeline_run"] is None  # the function runs it, not this process
    published = report["published"]

    # The image was pushed, and the message pins it by the registry's digest.
    validator = published["images"]["validator"]
    repository, digest = validator.split("@")
    assert repository == f"{docker_engine.registry}/ct/validator"
    served = registry_digest(docker_engine.registry, "ct/validator", _tag_of(repo, env))
    assert served == digest
    assert "@sha256:" in published["images"]["evaluator"]  # every image by digest

    # Uploads went to fake-gcs-server under immutable, content-addressed prefixes.
    names = _object_names(gcs_server, bucket)
    assert published["source_uri"] == f"gs://{bucket}/{_one(names, 'source/')}"
    assert published["pipeline_spec_uri"] == f"gs://{bucket}/{_one(names, 'pipelines/')}"
    spec = _download(gcs_server, bucket, _one(names, "pipelines/"))
    assert validator.encode() in spec  # compiled with the digest built in this run

    # Exactly one message with the documented schema reached the pull subscription.
    messages = _pull(subscriber, pulled, wait=10)
    assert len(messages) == 1
    received = messages[0].message
    decoded = decode(received.data, dict(received.attributes))
    assert decoded.commit == repo.rev()
    assert dict(received.attributes) == {"commit": repo.rev(), "schema": "2"}
    assert received.ordering_key == "main"
    assert json.loads(received.data) == published
    assert [a["id"] for a in published["actions"]][-1] == "publish"

    # The push subscription delivered it to the function, which ran the pipeline locally.
    log = _wait_for(lambda: "run ct-" in function.log(), function, timeout=180)
    result = next(
        json.loads(line)["run"] for line in log.splitlines() if line.startswith("{") and
        '"run"' in line
    )  # fmt: skip
    assert result["status"] == "succeeded", log
    assert result["metrics"]["accuracy"] > 0.9
    assert re.fullmatch(r"ct-[0-9a-f]{20}", result["run_id"])  # the state's identity


def _tag_of(repo: GitRepo, env: dict[str, str]) -> str:
    from orchestrator.workflow import Target, name_build, plan_target

    target = Target(repo=repo.path, rules_path=repo.path / "rules.toml")
    planned = plan_target(target, env, None)
    names = name_build(planned.tree, planned.rules, planned.plan, planned.ref)
    return names.image("validator").rsplit(":", 1)[1]


def _object_names(gcs: GcsServer, bucket: str) -> list[str]:
    with urllib.request.urlopen(f"{gcs.url}/storage/v1/b/{bucket}/o", timeout=10) as response:
        return sorted(item["name"] for item in json.load(response).get("items", []))


def _download(gcs: GcsServer, bucket: str, name: str) -> bytes:
    url = f"{gcs.url}/download/storage/v1/b/{bucket}/o/{urllib.request.quote(name, safe='')}"
    with urllib.request.urlopen(f"{url}?alt=media", timeout=10) as response:
        data: bytes = response.read()
    return data


def _one(names: list[str], prefix: str) -> str:
    found = [n for n in names if n.startswith(prefix)]
    assert len(found) == 1, names
    return found[0]


def _pull(subscriber: Any, subscription: str, *, wait: float) -> list[Any]:
    received: list[Any] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 10, "return_immediately": True},
            retry=None,
            timeout=5,
        )
        if response.received_messages:
            received.extend(response.received_messages)
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                },
                retry=None,
                timeout=5,
            )
        elif received:
            time.sleep(2)  # anything more would be a duplicate: give it a moment to show
            break
        else:
            time.sleep(0.2)
    return received


def _wait_for(ready: Callable[[], bool], server: FunctionServer, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return server.log()
        time.sleep(0.5)
    raise AssertionError(f"the function did not finish a run in {timeout}s:\n{server.log()}")


# --- failure paths ---------------------------------------------------------------------------


@pytest.mark.docker
def test_a_failing_image_build_skips_its_dependents_and_publishes_nothing(
    make_git_repo: Callable[..., GitRepo], docker_engine: DockerEngine
) -> None:
    repo = workload_repo(make_git_repo, rules_replace=with_base_image("ct-missing-base:none"))
    change_everything_but_the_evaluator(repo)
    env = run_env(
        DOCKER_HOST=docker_engine.host,
        ORCHESTRATOR_DOCKER_NETWORK="none",
        ORCHESTRATOR_REGISTRY=f"{docker_engine.registry}/ct",
    )

    code, report, progress = run_cli(repo, env)

    assert code == 1
    assert {s["id"]: s["status"] for s in report["steps"]} == {
        "test": "succeeded",
        "build_image:validator": "failed",
        "upload_source": "succeeded",  # independent of the image: it still ran
        "compile_pipeline": "skipped",
        "publish": "skipped",
    }
    assert report["published"] is None
    failed = "[build_image:validator] failed"
    failure = next(line for line in progress.splitlines() if failed in line)
    assert "docker build of" in failure and "/ct/validator:c-" in failure, progress
    assert not (repo.path / ".orchestrator" / "outputs").exists()
    assert not (repo.path / ".orchestrator" / "pipeline-root").exists()


def test_an_unreachable_docker_engine_is_named(make_git_repo: Callable[..., GitRepo]) -> None:
    repo = workload_repo(make_git_repo)
    change_everything_but_the_evaluator(repo)
    env = run_env(DOCKER_HOST=f"unix://{repo.path}/no-docker.sock")

    code, report, progress = run_cli(repo, env)

    assert code == 1
    assert report["published"] is None
    assert report["steps"][1]["id"] == "build_image:validator"
    assert report["steps"][1]["status"] == "failed"
    assert "build_image:validator needs a Docker engine" in progress
    assert "DOCKER_HOST" in progress and "no-docker.sock" in progress
    assert "Traceback" not in progress


def test_an_unreachable_storage_emulator_is_named(make_git_repo: Callable[..., GitRepo]) -> None:
    repo = workload_repo(make_git_repo)
    append_line(repo, "training_src/train.py", "# change")
    repo.commit()
    closed = f"http://127.0.0.1:{free_port()}"

    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["run", "--repo", str(repo.path), "--format", "json"], stdout=out,
                    stderr=err, env=run_env(STORAGE_EMULATOR_HOST=closed))  # fmt: skip

    # The deploy ledger is read before anything runs: nothing is built, uploaded or published.
    assert code == 1
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert f"cannot reach the Cloud Storage emulator at {closed}" in err.getvalue()
    assert "Traceback" not in err.getvalue()
