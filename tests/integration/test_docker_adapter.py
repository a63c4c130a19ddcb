"""The Docker adapter against a real Docker engine and a local registry.

The engine and the registry come from the ``docker_engine`` fixture of
``tests/fixtures/docker.py`` (owned by the workload tests), which skips these tests when
dockerd cannot run here (and fails them under ``CI=true``). The images here are
``FROM scratch``, so they need no base image. The unreachable-engine and
input tests need no engine at all.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.adapters import docker as docker_adapter
from orchestrator.errors import InputError, ServiceUnreachable, StepFailed
from tests.fixtures._services import free_port
from tests.fixtures.faultproxy import Fault, FaultProxy

if TYPE_CHECKING:
    from tests.fixtures.docker import DockerEngine

_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@pytest.fixture
def engine(docker_engine: DockerEngine) -> tuple[dict[str, str], str]:
    """(env with DOCKER_HOST, registry host:port) from the shared Docker fixture."""
    return {"DOCKER_HOST": docker_engine.host}, docker_engine.registry


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "docker").mkdir(parents=True)
    (root / "hello.txt").write_text(f"hello {uuid.uuid4()}\n")  # a fresh layer every test
    (root / "docker" / "Dockerfile").write_text(
        "FROM scratch\nARG GREETING=none\nLABEL greeting=$GREETING\nCOPY hello.txt /hello.txt\n"
    )
    return root


def _registry_digest(registry: str, repository: str, tag: str) -> str | None:
    """The digest the registry itself serves for repository:tag (None when absent)."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": _MANIFEST_TYPES},
        method="HEAD",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


@pytest.mark.docker
def test_build_and_push_returns_the_registry_digest(
    engine: tuple[dict[str, str], str], context: Path
) -> None:
    env, registry = engine
    lines: list[str] = []
    image = f"{registry}/ct/hello:t-{uuid.uuid4().hex[:8]}"

    pinned = docker_adapter.build_and_push(
        context, "docker/Dockerfile", image, {"GREETING": "hi there"}, env=env, on_log=lines.append
    )

    repository, tag = image.rsplit(":", 1)
    served = _registry_digest(registry, "ct/hello", tag)
    assert served is not None and served.startswith("sha256:")
    assert pinned == f"{repository}@{served}"
    assert any(line.startswith("Step 1/4 : FROM scratch") for line in lines)
    assert all("\n" not in line for line in lines)
    assert any(served in line for line in lines)  # the push's "digest: ..." line

    client = docker_adapter.engine(env)
    try:
        labels = client.images.get(image).labels
    finally:
        client.close()
    assert labels == {"greeting": "hi there"}


@pytest.mark.docker
def test_failed_build_pushes_nothing(engine: tuple[dict[str, str], str], context: Path) -> None:
    env, registry = engine
    (context / "docker" / "Dockerfile").write_text("FROM scratch\nCOPY missing.txt /\n")
    tag = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(
        StepFailed,
        match=r"docker build of .*/ct/broken:t-\w+ failed at Step 2/2 : COPY missing\.txt /: ",
    ):
        docker_adapter.build_and_push(
            context, "docker/Dockerfile", f"{registry}/ct/broken:{tag}", {}, env=env
        )
    assert _registry_digest(registry, "ct/broken", tag) is None


@pytest.mark.docker
def test_missing_base_image_is_named(engine: tuple[dict[str, str], str], context: Path) -> None:
    env, registry = engine
    (context / "docker" / "Dockerfile").write_text("ARG BASE_IMAGE=none\nFROM ${BASE_IMAGE}\n")
    with pytest.raises(StepFailed, match=r"failed at Step 2/2 : FROM ct-no-such-base:v0: "):
        docker_adapter.build_and_push(
            context,
            "docker/Dockerfile",
            f"{registry}/ct/nobase:t1",
            {"BASE_IMAGE": "ct-no-such-base:v0"},
            env=env,
        )


@pytest.mark.docker
def test_push_to_an_unreachable_registry_fails(
    engine: tuple[dict[str, str], str], context: Path
) -> None:
    env, _ = engine
    image = f"127.0.0.1:{free_port()}/ct/hello:t1"
    with pytest.raises(StepFailed, match=r"docker push of 127\.0\.0\.1:\d+/ct/hello:t1 failed"):
        docker_adapter.build_and_push(context, "docker/Dockerfile", image, {}, env=env)


@pytest.mark.parametrize(
    "docker_host",
    ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"],
)
def test_unreachable_engine_names_docker_host(
    tmp_path: Path, context: Path, docker_host: str
) -> None:
    env = {"DOCKER_HOST": docker_host.format(port=free_port())}
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match="DOCKER_HOST") as info:
        docker_adapter.build_and_push(
            context, "docker/Dockerfile", "127.0.0.1:5000/ct/x:t1", {}, env=env
        )
    assert env["DOCKER_HOST"] in str(info.value)
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "image",
    ["ct/hello", "127.0.0.1:5000/ct/hello", "ct/hello@sha256:" + "0" * 64, ":tag", "repo:"],
)
def test_image_must_be_repository_and_tag(context: Path, image: str) -> None:
    with pytest.raises(InputError, match="Image"):
        docker_adapter.build_and_push(context, "docker/Dockerfile", image, {}, env={})


def test_missing_context_or_dockerfile(context: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        docker_adapter.build_and_push(context / "nope", "Dockerfile", "r/x:t", {}, env={})
    with pytest.raises(InputError, match="Dockerfile Dockerfile not found"):
        docker_adapter.build_and_push(context, "Dockerfile", "r/x:t", {}, env={})


@pytest.mark.docker
def test_the_registry_adapter_finds_a_pushed_tag_by_digest_and_a_missing_one_not(
    engine: tuple[dict[str, str], str], context: Path
) -> None:
    from orchestrator.adapters import registry

    env, host = engine
    image = f"{host}/ct/hello:t-{uuid.uuid4().hex[:8]}"
    pinned = docker_adapter.build_and_push(context, "docker/Dockerfile", image, {}, env=env)
    served = _registry_digest(host, "ct/hello", image.rsplit(":", 1)[1])
    assert registry.manifest_digest(image, env) == served == pinned.split("@")[1]
    assert registry.manifest_digest(f"{host}/ct/hello:never-pushed", env) is None
    assert registry.manifest_digest(f"{host}/ct/nothing-here:t", env) is None


# --- faults: the registry behind the fault proxy ------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize(
    "fault",
    [Fault.status(503, first=1, match=r"^PUT .*/manifests/"),
     Fault.reset(first=1, match=r"^PUT .*/manifests/")],
    ids=["503", "reset"],
)  # fmt: skip
def test_a_push_that_meets_a_transient_fault_is_pushed_again(
    engine: tuple[dict[str, str], str],
    context: Path,
    fault_proxy: Callable[..., FaultProxy],
    fault: Fault,
) -> None:
    """The engine retries a layer upload itself, not the manifest: the adapter pushes again
    (the layers are there already: only the manifest is put again)."""
    env, registry = engine
    proxy = fault_proxy(registry, protocol="http")
    proxy.inject(fault)
    lines: list[str] = []
    tag = f"t-{uuid.uuid4().hex[:8]}"

    pinned = docker_adapter.build_and_push(
        context, "docker/Dockerfile", f"{proxy.address}/ct/hello:{tag}", {},
        env={**env, "ORCHESTRATOR_RETRY_DEADLINE": "20"}, on_log=lines.append,
    )  # fmt: skip

    served = _registry_digest(registry, "ct/hello", tag)
    assert served is not None and pinned == f"{proxy.address}/ct/hello@{served}"
    assert proxy.stats.faulted == 1
    assert any("pushing again in" in line for line in lines)
    manifests = [line for line in proxy.stats.log if line.startswith("PUT") and "manifests" in line]
    assert len(manifests) == 2


@pytest.mark.docker
def test_a_registry_that_keeps_failing_the_push_is_named_within_the_deadline(
    engine: tuple[dict[str, str], str], context: Path, fault_proxy: Callable[..., FaultProxy]
) -> None:
    env, registry = engine
    proxy = fault_proxy(registry, protocol="http")
    proxy.inject(Fault.status(503, match=r"^PUT .*/manifests/"))
    image = f"{proxy.address}/ct/hello:t-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()

    with pytest.raises(ServiceUnreachable) as raised:
        docker_adapter.build_and_push(
            context, "docker/Dockerfile", image, {},
            env={**env, "ORCHESTRATOR_RETRY_DEADLINE": "3"},
        )  # fmt: skip

    assert time.monotonic() - started < 15  # the build, then pushes for at most 3 s
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"the registry {proxy.address} kept failing the push of {image}: ")
    assert "503 Service Unavailable" in text and "ORCHESTRATOR_RETRY_DEADLINE=3" in text
    assert _registry_digest(registry, "ct/hello", image.rsplit(":", 1)[1]) is None
