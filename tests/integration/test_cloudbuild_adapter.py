"""The Cloud Build adapter: config parsing, and builds submitted to the local Cloud Build API."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.adapters import cloudbuild
from orchestrator.errors import InputError, ServiceUnreachable, StepFailed
from tests.fixtures._services import free_port
from tests.fixtures.cloudbuild_server import LocalCloudBuild
from tests.fixtures.faultproxy import Fault, FaultProxy

CONFIG: dict[str, Any] = {
    "steps": [
        {
            "id": "test",
            "name": "python:3.11",
            "entrypoint": "python",
            "args": ["-m", "pytest", "-q"],
            "waitFor": ["-"],
        },
        {
            "id": "build_image:trainer",
            "name": "gcr.io/cloud-builders/docker",
            "args": ["build", "-t", "r/trainer:abc", "components/trainer"],
            "waitFor": ["test"],
            "env": ["DOCKER_BUILDKIT=1"],
        },
        {
            "id": "publish",
            "name": "python:3.11",
            "args": ["-m", "orchestrator", "publish"],
            "waitFor": ["build_image:trainer"],
        },
    ],
    "options": {"logging": "CLOUD_LOGGING_ONLY", "machineType": "E2_HIGHCPU_8"},
    "timeout": "1200s",
    "tags": ["commit-abc123"],
    "substitutions": {"_BASE_SHA": "0123abcd"},
}


# --- build_from_dict ----------------------------------------------------------------------


def test_camel_case_config_parses_into_a_build() -> None:
    build = cloudbuild.build_from_dict(CONFIG)
    assert [s.id for s in build.steps] == ["test", "build_image:trainer", "publish"]
    assert [list(s.wait_for) for s in build.steps] == [["-"], ["test"], ["build_image:trainer"]]
    assert build.steps[0].entrypoint == "python"
    assert list(build.steps[1].env) == ["DOCKER_BUILDKIT=1"]
    assert build.timeout.total_seconds() == 1200
    assert build.options.machine_type.name == "E2_HIGHCPU_8"
    assert build.options.logging.name == "CLOUD_LOGGING_ONLY"
    assert list(build.tags) == ["commit-abc123"]
    assert dict(build.substitutions) == {"_BASE_SHA": "0123abcd"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stepz": []}, 'no field named "stepz"'),
        ({"steps": [{"name": "x", "wait_four": ["a"]}]}, 'no field named "wait_four"'),
        ({"steps": [{"name": "x"}], "options": {"machineType": "HUGE"}}, "Invalid enum value HUGE"),
        ({"timeout": "twenty minutes"}, "timeout"),
        ({"steps": [{"name": "x", "args": "not-a-list"}]}, "args"),
    ],
)
def test_invalid_configs_are_rejected(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match="The Cloud Build config is invalid") as info:
        cloudbuild.build_from_dict(config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_non_json_values_are_rejected() -> None:
    with pytest.raises(InputError, match="not JSON-serializable"):
        cloudbuild.build_from_dict({"tags": [object()]})


# --- submit_build against the local Cloud Build API ---------------------------------------


def test_successful_build_is_followed_to_the_end(cloudbuild_api: LocalCloudBuild) -> None:
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=2)
    submitted: list[cloudbuild.BuildRecord] = []
    seen: list[cloudbuild.BuildRecord] = []

    record = cloudbuild.submit_build(
        "demo-project",
        "us-central1",
        CONFIG,
        env=cloudbuild_api.env,
        on_submitted=submitted.append,
        on_status=seen.append,
        poll_interval=0.01,
    )

    [request] = cloudbuild_api.requests
    assert request.parent == "projects/demo-project/locations/us-central1"
    assert request.project_id == "demo-project"
    # exactly what was emitted, and the tag that finds this submission again
    *emitted_tags, request_tag = request.build.tags
    assert request_tag.startswith(cloudbuild.REQUEST_TAG_PREFIX)
    assert emitted_tags == CONFIG["tags"]
    sent = cloudbuild.build_from_dict(CONFIG)
    sent.tags.append(request_tag)
    assert request.build == sent

    assert record.succeeded and record.finished
    assert record.status == "SUCCESS"
    assert record.build_id and cloudbuild_api.polls(record.build_id) == 3
    assert record.log_url == f"http://{cloudbuild_api.address}/builds/{record.build_id}/log"
    assert [(s.id, s.status, s.seconds) for s in record.steps] == [
        ("test", "SUCCESS", 2.0),
        ("build_image:trainer", "SUCCESS", 2.0),
        ("publish", "SUCCESS", 2.0),
    ]
    assert [r.status for r in submitted] == ["QUEUED"]
    assert submitted[0].build_id == record.build_id
    # Every change is reported once: QUEUED, WORKING (two identical polls), SUCCESS.
    assert [r.status for r in seen] == ["QUEUED", "WORKING", "SUCCESS"]


def test_failed_build_returns_a_failure_record(cloudbuild_api: LocalCloudBuild) -> None:
    cloudbuild_api.finish_next_builds_with("FAILURE", failed_step="build_image:trainer")
    record = cloudbuild.submit_build(
        "demo-project", "europe-west1", CONFIG, env=cloudbuild_api.env, poll_interval=0.01
    )
    assert record.status == "FAILURE" and not record.succeeded and record.finished
    assert [(s.id, s.status) for s in record.steps] == [
        ("test", "SUCCESS"),
        ("build_image:trainer", "FAILURE"),
        ("publish", "CANCELLED"),
    ]
    assert record.steps[2].seconds is None
    assert 'build step 1 "gcr.io/cloud-builders/docker" failed' in record.status_detail
    [request] = cloudbuild_api.requests
    assert request.parent == "projects/demo-project/locations/europe-west1"


@pytest.mark.parametrize("status", ["INTERNAL_ERROR", "TIMEOUT", "CANCELLED"])
def test_other_final_statuses_end_the_wait(cloudbuild_api: LocalCloudBuild, status: str) -> None:
    cloudbuild_api.finish_next_builds_with(status)
    record = cloudbuild.submit_build(
        "p-1", "us-central1", CONFIG, env=cloudbuild_api.env, poll_interval=0.01
    )
    assert record.status == status and not record.succeeded


def test_a_build_that_does_not_finish_in_time(cloudbuild_api: LocalCloudBuild) -> None:
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=10_000)
    with pytest.raises(StepFailed, match=r"did not finish within .* may still be running: http"):
        cloudbuild.submit_build(
            "p-1",
            "us-central1",
            CONFIG,
            env=cloudbuild_api.env,
            poll_interval=0.01,
            wait_timeout=0.3,
        )


def test_invalid_config_is_not_submitted(cloudbuild_api: LocalCloudBuild) -> None:
    with pytest.raises(InputError):
        cloudbuild.submit_build(
            "p-1", "us-central1", {"stepz": []}, env=cloudbuild_api.env, poll_interval=0.01
        )
    assert cloudbuild_api.requests == []


def test_request_the_api_rejects_is_an_input_error(cloudbuild_api: LocalCloudBuild) -> None:
    with pytest.raises(InputError, match=r"rejected the build: .*project_id is required"):
        cloudbuild.submit_build("", "us-central1", CONFIG, env=cloudbuild_api.env)


def test_unreachable_endpoint_fails_quickly_naming_it() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match="ORCHESTRATOR_CLOUDBUILD_ENDPOINT") as info:
        cloudbuild.submit_build(
            "p-1", "us-central1", CONFIG, env={cloudbuild.ENDPOINT_VAR: endpoint}
        )
    assert endpoint in str(info.value)
    assert time.monotonic() - started < 10


def test_the_real_client_can_wait_on_the_operation(cloudbuild_api: LocalCloudBuild) -> None:
    """The local server also speaks google.longrunning, so ``operation.result()`` works."""
    import grpc
    from google.cloud.devtools import cloudbuild_v1
    from google.cloud.devtools.cloudbuild_v1.services.cloud_build.transports import (
        CloudBuildGrpcTransport,
    )

    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=1)
    client = cloudbuild_v1.CloudBuildClient(
        transport=CloudBuildGrpcTransport(channel=grpc.insecure_channel(cloudbuild_api.address))
    )
    operation = client.create_build(
        project_id="p-1",
        parent="projects/p-1/locations/us-central1",
        build=cloudbuild.build_from_dict(CONFIG),
        retry=None,
        timeout=10,
    )
    build = operation.result(timeout=30, retry=None)
    assert build.status == cloudbuild_v1.Build.Status.SUCCESS
    assert build.id == operation.metadata.build.id
    client.transport.close()


# --- Ctrl-C while following: CancelBuild ---------------------------------------------------


def _interrupt_when(status: str) -> Any:
    def on_status(record: cloudbuild.BuildRecord) -> None:
        if record.status == status:
            raise KeyboardInterrupt

    return on_status


@pytest.mark.parametrize("region", ["us-central1", "global"])
def test_ctrl_c_while_following_cancels_that_build_once(
    cloudbuild_api: LocalCloudBuild, region: str
) -> None:
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=10_000)
    with pytest.raises(cloudbuild.Cancelled) as info:
        cloudbuild.submit_build(
            "demo-project",
            region,
            CONFIG,
            env=cloudbuild_api.env,
            on_status=_interrupt_when("WORKING"),
            poll_interval=0.01,
        )
    [cancel] = cloudbuild_api.cancels
    build_id = cancel.request.id
    assert cancel.request.name == f"projects/demo-project/locations/{region}/builds/{build_id}"
    assert cancel.request.project_id == "demo-project"
    assert cancel.routing == f"location={region}"  # what routes a regional build's cancel
    assert cloudbuild_api.status(build_id) == "CANCELLED"
    assert str(info.value) == f"interrupted: cancelled Cloud Build build {build_id}"
    assert info.value.exit_code == 130


def test_a_build_that_cannot_be_cancelled_is_named_with_its_log(
    cloudbuild_api: LocalCloudBuild,
) -> None:
    """Ctrl-C as the build finishes: the API refuses to cancel a finished build."""
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=1)
    with pytest.raises(cloudbuild.Cancelled) as info:
        cloudbuild.submit_build(
            "demo-project",
            "us-central1",
            CONFIG,
            env=cloudbuild_api.env,
            on_status=_interrupt_when("SUCCESS"),
            poll_interval=0.01,
        )
    [cancel] = cloudbuild_api.cancels
    message = str(info.value)
    assert message.startswith(f"interrupted; Cloud Build build {cancel.request.id} could not be")
    assert "is SUCCESS, not running" in message
    assert message.endswith(f"/builds/{cancel.request.id}/log")
    assert "\n" not in message and info.value.exit_code == 130


def test_the_stand_in_cancels_only_what_the_api_would(cloudbuild_api: LocalCloudBuild) -> None:
    """CancelBuild as the API documents it: project and id required, the regional name must
    be the build's own, and it returns the cancelled build."""
    import grpc
    from google.api_core import exceptions as gexc
    from google.cloud.devtools import cloudbuild_v1
    from google.cloud.devtools.cloudbuild_v1.services.cloud_build.transports import (
        CloudBuildGrpcTransport,
    )

    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=10_000)
    client = cloudbuild_v1.CloudBuildClient(
        transport=CloudBuildGrpcTransport(channel=grpc.insecure_channel(cloudbuild_api.address))
    )
    operation = client.create_build(
        project_id="p-1",
        parent="projects/p-1/locations/europe-west1",
        build=cloudbuild.build_from_dict(CONFIG),
        retry=None,
        timeout=10,
    )
    build_id = operation.metadata.build.id
    with pytest.raises(gexc.InvalidArgument):
        client.cancel_build(project_id="p-1", retry=None, timeout=10)
    with pytest.raises(gexc.NotFound):
        client.cancel_build(
            request=cloudbuild_v1.CancelBuildRequest(
                name=f"projects/p-1/locations/us-central1/builds/{build_id}",
                project_id="p-1",
                id=build_id,
            ),
            retry=None,
            timeout=10,
        )
    cancelled = client.cancel_build(project_id="p-1", id=build_id, retry=None, timeout=10)
    assert cancelled.id == build_id
    assert cancelled.status == cloudbuild_v1.Build.Status.CANCELLED
    assert {s.status for s in cancelled.steps} == {cloudbuild_v1.Build.Status.CANCELLED}
    with pytest.raises(gexc.FailedPrecondition):
        client.cancel_build(project_id="p-1", id=build_id, retry=None, timeout=10)
    client.transport.close()


# --- faults, through the fault proxy in front of the stand-in ------------------------------


def _through(proxy: FaultProxy, deadline: str) -> dict[str, str]:
    return {cloudbuild.ENDPOINT_VAR: proxy.address, "ORCHESTRATOR_RETRY_DEADLINE": deadline}


def test_reset_connections_are_retried_and_one_build_is_created(
    cloudbuild_api: LocalCloudBuild, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.reset(first=3))

    record = cloudbuild.submit_build(
        "p-1", "us-central1", CONFIG, env=_through(proxy, "20"), poll_interval=0.01
    )

    assert record.succeeded
    assert proxy.stats.faulted == 3
    assert cloudbuild_api.build_ids == [record.build_id]  # one build, whatever the retries


def test_polls_ride_out_connections_reset_while_the_build_runs(
    cloudbuild_api: LocalCloudBuild, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    cloudbuild_api.finish_next_builds_with("SUCCESS", working_polls=3)

    def break_the_line(record: cloudbuild.BuildRecord) -> None:
        if record.status == "WORKING":  # mid-build: the open connection and the next two go
            proxy.inject(Fault.reset(first=2), drop_open=True)

    record = cloudbuild.submit_build(
        "p-1", "us-central1", CONFIG, env=_through(proxy, "20"), poll_interval=0.01,
        on_status=break_the_line,
    )  # fmt: skip

    assert record.succeeded
    assert proxy.stats.faulted == 2
    assert cloudbuild_api.build_ids == [record.build_id]


def test_a_slow_endpoint_is_waited_for(
    cloudbuild_api: LocalCloudBuild, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.delay(1.5, first=1))
    started = time.monotonic()

    record = cloudbuild.submit_build(
        "p-1", "us-central1", CONFIG, env=_through(proxy, "20"), poll_interval=0.01
    )

    assert record.succeeded
    assert time.monotonic() - started >= 1.5
    assert len(cloudbuild_api.build_ids) == 1


def test_a_lost_create_answer_finds_the_build_by_its_tag_instead_of_starting_another(
    cloudbuild_api: LocalCloudBuild,
) -> None:
    """CreateBuild is not idempotent: the build that a lost answer created is the one
    followed (found with ListBuilds by the submission's tag), and no second one starts."""
    cloudbuild_api.lose_next_create_answers(1)
    env = {**cloudbuild_api.env, "ORCHESTRATOR_RETRY_DEADLINE": "20"}

    record = cloudbuild.submit_build("p-1", "us-central1", CONFIG, env=env, poll_interval=0.01)

    assert record.succeeded
    [request] = cloudbuild_api.requests  # created once
    assert cloudbuild_api.build_ids == [record.build_id]
    [listed] = cloudbuild_api.lists
    tag = request.build.tags[-1]
    assert tag.startswith(cloudbuild.REQUEST_TAG_PREFIX)
    assert listed.filter == f'tags="{tag}"'
    assert listed.parent == "projects/p-1/locations/us-central1"


def test_a_create_that_never_arrived_is_sent_again(
    cloudbuild_api: LocalCloudBuild, fault_proxy: Callable[..., FaultProxy]
) -> None:
    """The tag lookup finds nothing when the request never reached the service: create."""
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.reset(first=1))

    record = cloudbuild.submit_build(
        "p-1", "us-central1", CONFIG, env=_through(proxy, "20"), poll_interval=0.01
    )

    assert record.succeeded
    assert len(cloudbuild_api.requests) == 1
    assert len(cloudbuild_api.lists) == 1


def test_an_endpoint_that_keeps_failing_gives_up_within_the_deadline_naming_it(
    cloudbuild_api: LocalCloudBuild, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy = fault_proxy(cloudbuild_api.address, protocol="tcp")
    proxy.inject(Fault.reset())
    started = time.monotonic()

    with pytest.raises(ServiceUnreachable) as raised:
        cloudbuild.submit_build(
            "p-1", "us-central1", CONFIG, env=_through(proxy, "3"), poll_interval=0.01
        )

    assert time.monotonic() - started < 6
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(
        f"the Cloud Build API at {proxy.address} (ORCHESTRATOR_CLOUDBUILD_ENDPOINT) kept failing"
    )
    assert re.search(r"gave up after \d+ attempts? in [\d.]+ s \(ORCHESTRATOR_RETRY_DEADLINE=3\)",
                     text), text  # fmt: skip
    assert cloudbuild_api.requests == []


def test_errors_that_are_not_transient_are_not_retried(cloudbuild_api: LocalCloudBuild) -> None:
    config = {**CONFIG, "availableSecrets": {"secretManager": [{"versionName": "bad", "env": "X"}]}}
    with pytest.raises(InputError, match="rejected the build"):
        cloudbuild.submit_build("p-1", "us-central1", config, env=cloudbuild_api.env)
    assert len(cloudbuild_api.requests) == 0
    assert cloudbuild_api.lists == []
