"""The component images, built for real from the offline base image, pushed and run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.docker import DockerEngine

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def build_and_push(engine: DockerEngine, name: str) -> tuple[str, str]:
    """Build components/<name> on the offline base, push it; return (tag ref, digest ref)."""
    repo = f"{engine.registry}/ct/{name}"
    engine.client.images.build(
        path=str(REPO / "components" / name),
        tag=f"{repo}:test",
        buildargs={"BASE_IMAGE": engine.base_image},
        network_mode="none",  # proves the build downloads nothing
        rm=True,
    )
    digest = None
    for event in engine.client.images.push(repo, tag="test", stream=True, decode=True):
        assert "error" not in event, event
        digest = event.get("aux", {}).get("Digest", digest)
    assert digest and digest.startswith("sha256:")
    return f"{repo}:test", f"{repo}@{digest}"


@pytest.fixture(scope="module")
def images(docker_engine: DockerEngine) -> Iterator[dict[str, str]]:
    yield {name: build_and_push(docker_engine, name)[1] for name in ("validator", "evaluator")}


def run(engine: DockerEngine, image: str, args: list[str], data: Path) -> tuple[int, str]:
    container = engine.client.containers.run(
        image, args, volumes={str(data): {"bind": "/data", "mode": "rw"}},
        network_mode="none", detach=True,
    )  # fmt: skip
    try:
        status = container.wait(timeout=120)["StatusCode"]
        return status, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_images_are_in_the_registry_by_digest(
    docker_engine: DockerEngine, images: dict[str, str]
) -> None:
    for ref in images.values():
        pulled = docker_engine.client.images.pull(ref)
        assert ref.split("@")[1] in pulled.attrs["RepoDigests"][0]


def test_validator_container_fails_on_a_broken_dataset(
    docker_engine: DockerEngine, images: dict[str, str], tmp_path: Path
) -> None:
    rows = ["f1,f2,label"] + [f"{i},{i},{i % 3}" for i in range(60)]
    rows[10] = "1,oops,0"
    (tmp_path / "broken.csv").write_text("\n".join(rows) + "\n")
    status, logs = run(
        docker_engine, images["validator"],
        ["--data-uri", "/data/broken.csv", "--num-classes", "3", "--report-path", "/data/r.json"],
        tmp_path,
    )  # fmt: skip
    assert status == 1, logs
    assert "row 11 column 'f2' is not a number" in logs
    assert "data rejected" in logs
    assert json.loads((tmp_path / "r.json").read_text())["valid"] is False


def test_validator_container_accepts_digits_and_evaluator_gates(
    docker_engine: DockerEngine, images: dict[str, str], tmp_path: Path
) -> None:
    status, logs = run(
        docker_engine, images["validator"], ["--report-path", "/data/r.json"], tmp_path
    )
    assert status == 0, logs
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == 1797
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 0.93}))
    status, logs = run(
        docker_engine, images["evaluator"],
        ["evaluate", "--metrics-path", "/data/metrics.json", "--threshold", "0.95",
         "--gate-path", "/data/gate"],
        tmp_path,
    )  # fmt: skip
    assert status == 0, logs
    assert (tmp_path / "gate").read_text() == "fail"
