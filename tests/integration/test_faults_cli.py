"""Faults end to end: ``python -m orchestrator run --executor local`` as a user runs it, with
every service it talks to (fake-gcs-server, the Pub/Sub emulator, a registry) behind the fault
proxy, named through the variables the tool reads (``orchestrator/services.py``:
``STORAGE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST``; ``ORCHESTRATOR_REGISTRY``).

A transient fault is ridden out and the run succeeds; a permanent one is exit 1 with one line
naming the service, nothing is published and the deploy ledger does not move; the next run,
with the service back, completes the work and publishes once.

A run killed (SIGKILL, SIGTERM) at several moments, with the directory bucket or fake-gcs-server,
leaves every object whole or absent and the ledger at the deployed state or the new one; the
next run completes the work.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fixtures.docker import LocalRegistry
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.gcs import GcsServer
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.pubsub import PubsubEmulator
from tests.integration.workload_repo import append_line, run_env, workload_repo

PROJECT = "demo-project"
LEDGER = "ct/ledger/main/default.json"


@dataclass
class Setup:
    repo: GitRepo
    bucket: str
    subscription: str
    gcs: GcsServer
    storage: FaultProxy
    pubsub: FaultProxy
    registry: FaultProxy
    admin: tuple[Any, Any]
    #: the directory bucket's root, when the run stores there instead of in fake-gcs-server
    bucket_root: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        storage = (
            {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(self.bucket_root)}
            if self.bucket_root
            else {"STORAGE_EMULATOR_HOST": self.storage.url}
        )
        return run_env(
            NO_COLOR="1",
            PUBSUB_EMULATOR_HOST=self.pubsub.address,
            ORCHESTRATOR_REGISTRY=f"{self.registry.address}/ct",
            **storage,
            **extra,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The CLI in a session of its own (its steps' processes too), printing as it goes."""
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.repo.path,
            env=self.env(PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=self.repo.path,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def ledger(self) -> tuple[int, bytes] | None:
        """(generation, content) of the deploy ledger, read from the server, not the proxy."""
        if self.bucket_root:
            path = self.bucket_root / self.bucket / LEDGER
            if not path.exists():
                return None
            generation = path.with_name(f".{path.name}.generation").read_text()
            return int(generation), path.read_bytes()
        base = f"{self.gcs.url}/storage/v1/b/{self.bucket}/o/{quote(LEDGER, safe='')}"
        try:
            with urllib.request.urlopen(base, timeout=10) as response:
                generation = int(json.load(response)["generation"])
            with urllib.request.urlopen(f"{base}?alt=media", timeout=10) as response:
                return generation, response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            raise

    def read(self, name: str) -> bytes:
        if self.bucket_root:
            return (self.bucket_root / self.bucket / name).read_bytes()
        url = f"{self.gcs.url}/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}?alt=media"
        with urllib.request.urlopen(url, timeout=10) as response:
            data: bytes = response.read()
        return data

    def objects(self) -> list[str]:
        """Every object's name; in the directory bucket, hidden files too (there are none
        but the sidecars of objects, unless a write was left half done)."""
        if self.bucket_root:
            root = self.bucket_root / self.bucket
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        url = f"{self.gcs.url}/storage/v1/b/{self.bucket}/o"
        with urllib.request.urlopen(url, timeout=10) as response:
            return sorted(item["name"] for item in json.load(response).get("items", []))

    def published(self, *, wait: float = 3) -> list[Any]:
        from tests.integration.test_pubsub import _pull

        return _pull(self.admin, self.subscription, 10, wait=wait)


@pytest.fixture
def setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_git_repo: Callable[..., GitRepo],
    gcs_server: GcsServer,
    pubsub_emulator: PubsubEmulator,
    pubsub_admin: tuple[Any, Any],
    local_registry: LocalRegistry,
    fault_proxy: Callable[..., FaultProxy],
) -> Iterator[Setup]:
    suffix = uuid.uuid4().hex[:10]
    bucket, topic = f"ct-faults-{suffix}", f"runs-{suffix}"
    repo = workload_repo(
        make_git_repo,
        rules_replace={
            'bucket = "demo-ct-artifacts"': f'bucket = "{bucket}"',
            'topic = "training-runs"': f'topic = "{topic}"',
        },
    )
    gcs_server.create_bucket(bucket)
    bucket_root = tmp_path / "buckets" if getattr(request, "param", "") == "local-dir" else None
    publisher, subscriber = pubsub_admin
    topic_path = f"projects/{PROJECT}/topics/{topic}"
    publisher.create_topic(name=topic_path, retry=None, timeout=10)
    # unordered, as Eventarc creates the function's subscription
    subscription = f"projects/{PROJECT}/subscriptions/{topic}-sub"
    subscriber.create_subscription(
        request={"name": subscription, "topic": topic_path}, retry=None, timeout=10
    )
    made = Setup(
        repo=repo,
        bucket=bucket,
        subscription=subscription,
        gcs=gcs_server,
        storage=fault_proxy(gcs_server.url.removeprefix("http://"), protocol="http"),
        pubsub=fault_proxy(pubsub_emulator.host, protocol="tcp"),
        registry=fault_proxy(local_registry.address, protocol="http"),
        admin=pubsub_admin,
        bucket_root=bucket_root,
    )
    _push_the_images(made, local_registry)
    yield made


def _push_the_images(setup: Setup, registry: LocalRegistry) -> None:
    """The component images a run wants, stored in the registry (no Docker engine here): a run
    then finds them by tag and pins their digests, as after a build. Their names are what a
    dry run says is "not built yet"."""
    append_line(setup.repo, "training_src/train.py", "# probe")
    setup.repo.commit(message="probe")
    dry = setup.cli("plan")
    setup.repo.git("reset", "--hard", "HEAD~1")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # none when an earlier test stored them: the registry lives for the session
    for image in set(re.findall(r"not built yet: (\S+:c-\w+)", dry.stdout)):
        name, tag = image.split("/", 1)[1].rsplit(":", 1)
        registry.push_manifest(name, tag)


def _commit_a_change(setup: Setup, note: str, *, pipeline: bool = False) -> str:
    """A change to the training source (and to the pipeline: a new spec to compile)."""
    append_line(setup.repo, "training_src/train.py", f"# {note}")
    if pipeline:
        append_line(setup.repo, "pipeline/definition.py", f"# {note}")
    return setup.repo.commit(message=note)


def _deployed_commit(setup: Setup) -> str:
    ledger = setup.ledger()
    assert ledger is not None
    return str(json.loads(ledger[1])["commit"])


def _succeeds(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return result.stdout


def _one_line_naming(result: subprocess.CompletedProcess[str], service: str) -> str:
    """Exit 1; stderr is one line that names ``service``; no traceback anywhere."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert service in result.stderr, result.stderr
    return result.stderr


def _deploy_a_change(setup: Setup) -> str:
    """A change run and published once: the deployed state the faults must not move."""
    deployed = _commit_a_change(setup, "deployed")
    _succeeds(setup.cli("run", "--executor", "local"))
    assert len(setup.published()) == 1
    return deployed


def _next_run_completes(setup: Setup, head: str) -> None:
    """The service is back: the next run publishes the change once and the ledger moves."""
    _succeeds(setup.cli("run", "--executor", "local"))
    [message] = setup.published()
    assert json.loads(message.data)["commit"] == head
    assert _deployed_commit(setup) == head


def test_transient_faults_on_every_service_are_ridden_out_and_the_run_publishes_once(
    setup: Setup,
) -> None:
    head = _commit_a_change(setup, "a change")
    setup.storage.inject(Fault.status(503, first=3))
    setup.registry.inject(Fault.reset(first=2))
    setup.pubsub.inject(Fault.reset(first=2))

    _succeeds(setup.cli("run", "--executor", "local", ORCHESTRATOR_RETRY_DEADLINE="20"))

    assert (setup.storage.stats.faulted, setup.registry.stats.faulted) == (3, 2)
    assert setup.pubsub.stats.faulted == 2
    [message] = setup.published()
    assert json.loads(message.data)["commit"] == head
    assert _deployed_commit(setup) == head


def test_a_storage_service_that_keeps_failing_stops_the_run_before_anything_is_published(
    setup: Setup,
) -> None:
    deployed = _deploy_a_change(setup)
    ledger, stored = setup.ledger(), setup.objects()

    head = _commit_a_change(setup, "the next change")
    setup.storage.inject(Fault.status(503))
    failed = setup.cli("run", "--executor", "local", ORCHESTRATOR_RETRY_DEADLINE="3")

    line = _one_line_naming(failed, f"the Cloud Storage emulator at {setup.storage.url}")
    assert "ORCHESTRATOR_RETRY_DEADLINE" in line
    assert setup.published(wait=2) == []
    assert setup.ledger() == ledger  # the same generation: not even rewritten
    assert setup.objects() == stored
    assert _deployed_commit(setup) == deployed

    # the service is back: the next run does the work, once
    setup.storage.clear()
    _next_run_completes(setup, head)


def test_uploads_that_keep_failing_fail_the_step_and_nothing_is_published(
    setup: Setup,
) -> None:
    deployed = _deploy_a_change(setup)
    ledger = setup.ledger()

    head = _commit_a_change(setup, "the next change")
    setup.storage.inject(Fault.status(503, match=r"^POST /upload/"))  # reads still answer
    failed = setup.cli("run", "--executor", "local", ORCHESTRATOR_RETRY_DEADLINE="3")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    [upload_line] = [
        line for line in failed.stdout.splitlines() if line.startswith("[upload_source] failed")
    ]
    assert f"the Cloud Storage emulator at {setup.storage.url}" in upload_line
    assert re.search(r"\[publish\] skipped", failed.stdout), failed.stdout
    assert setup.published(wait=2) == []
    assert setup.ledger() == ledger
    assert _deployed_commit(setup) == deployed
    assert not [name for name in setup.objects() if name.startswith("source/")][1:]

    setup.storage.clear()
    _next_run_completes(setup, head)


def test_a_pubsub_emulator_that_keeps_failing_publishes_nothing_and_the_ledger_stays(
    setup: Setup,
) -> None:
    deployed = _deploy_a_change(setup)
    ledger = setup.ledger()

    head = _commit_a_change(setup, "the next change")
    setup.pubsub.inject(Fault.reset(), drop_open=True)
    failed = setup.cli("run", "--executor", "local", ORCHESTRATOR_RETRY_DEADLINE="3")

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    [publish_line] = [
        line for line in failed.stdout.splitlines() if line.startswith("[publish] failed")
    ]
    assert f"the Pub/Sub emulator at {setup.pubsub.address}" in publish_line
    assert "ORCHESTRATOR_RETRY_DEADLINE=3" in publish_line
    assert setup.published(wait=2) == []
    assert setup.ledger() == ledger
    assert _deployed_commit(setup) == deployed

    setup.pubsub.clear()
    resumed = _succeeds(setup.cli("run", "--executor", "local"))
    [message] = setup.published()
    assert json.loads(message.data)["commit"] == head
    assert _deployed_commit(setup) == head
    assert "[upload_source] started" not in resumed  # uploaded by the failed run, complete


# --- killed runs ---------------------------------------------------------------------------

#: moments of a run, by the progress line printed just before (kills land right after it)
MOMENTS = {
    "uploading the source": "[upload_source] started",
    "compiling and uploading the spec": "[compile_pipeline] started",
    "publishing": "[publish] started",
    "between the publish and the ledger": "published the run request",
}


def _kill_at(setup: Setup, line: str, sig: signal.Signals) -> str:
    """Start a run, send ``sig`` to it and its processes once it prints ``line``; its output."""
    process = setup.start("run", "--executor", "local")
    assert process.stdout is not None
    seen: list[str] = []
    try:
        for text in process.stdout:
            seen.append(text)
            if line in text:
                os.killpg(process.pid, sig)
                break
        else:
            raise AssertionError(f"the run ended before {line!r}:\n{''.join(seen)}")
        seen.extend(process.stdout)
        assert process.wait(30) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        process.stdout.close()
    return "".join(seen)


def _complete(setup: Setup, name: str) -> None:
    """The object is whole: a tarball reads to its end, a spec parses, JSON parses."""
    data = setup.read(name)
    if name.endswith(".tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            assert tar.getnames(), name
    elif name.endswith(".yaml"):
        import yaml

        assert isinstance(yaml.safe_load(data), dict), name
    elif name.endswith(".json"):
        json.loads(data)


def _consistent(setup: Setup, deployed: str, head: str) -> None:
    """Every object is whole, no half-written file is visible, and the ledger is the deployed
    state or the new one, whole, naming objects that exist."""
    names = setup.objects()
    for name in names:
        if not name.rsplit("/", 1)[-1].startswith("."):
            _complete(setup, name)
    ledger = setup.ledger()
    assert ledger is not None
    state = json.loads(ledger[1])
    assert state["commit"] in (deployed, head)
    for uri in (state["source_uri"], state["pipeline_spec_uri"]):
        assert uri.removeprefix(f"gs://{setup.bucket}/") in names


STATE_FIELDS = ("commit", "source_uri", "pipeline_spec_uri", "images", "parameters", "ref")


@pytest.mark.parametrize(
    ("setup", "moment", "sig"),
    [
        *[("local-dir", moment, signal.SIGKILL) for moment in MOMENTS],
        *[("emulator", moment, signal.SIGKILL) for moment in MOMENTS],
        ("local-dir", "uploading the source", signal.SIGTERM),
        ("emulator", "publishing", signal.SIGTERM),
    ],
    indirect=["setup"],
    ids=lambda value: value.name if isinstance(value, signal.Signals) else str(value),
)
def test_a_killed_run_leaves_bucket_and_ledger_consistent_and_the_next_run_completes_it(
    setup: Setup, moment: str, sig: signal.Signals
) -> None:
    deployed = _deploy_a_change(setup)

    head = _commit_a_change(setup, "the next change", pipeline=True)
    _kill_at(setup, MOMENTS[moment], sig)
    _consistent(setup, deployed, head)
    early = setup.published(wait=1)

    resumed = _succeeds(setup.cli("run", "--executor", "local"))

    assert _deployed_commit(setup) == head
    _consistent(setup, head, head)
    messages = [json.loads(m.data) for m in [*early, *setup.published()]]
    # one publish, or two when the kill came after the first went out and before the ledger
    # moved: the same state both times, which the function's runs registry trains once
    assert 1 <= len(messages) <= (1 if moment in list(MOMENTS)[:2] else 2), messages
    assert {json.dumps([m[f] for m in messages[:1] for f in STATE_FIELDS])} == {
        json.dumps([m[f] for f in STATE_FIELDS]) for m in messages
    }
    assert messages[0]["commit"] == head
    assert "run succeeded" in resumed
    # nothing half written is left: the run that wrote in those directories swept them
    assert not [n for n in setup.objects() if re.search(r"/\.(write|upload)-\d+-", n)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_run_killed_mid_upload_leaves_no_object_and_the_next_run_uploads_it_whole(
    setup: Setup, sig: signal.Signals
) -> None:
    """The proxy lets half of the source tarball's upload through, then holds it: the run is
    killed with the upload in flight. Cloud Storage (and fake-gcs-server) make an object
    visible only once its upload is complete, so there is none; the next run uploads it."""
    deployed = _deploy_a_change(setup)
    ledger = setup.ledger()
    head = _commit_a_change(setup, "the next change")
    before = setup.objects()
    setup.storage.inject(Fault.stall(60, match=r"^POST /upload/"))

    process = setup.start("run", "--executor", "local")
    try:
        deadline = time.monotonic() + 60
        while setup.storage.stats.faulted == 0:
            assert time.monotonic() < deadline and process.poll() is None, "no upload started"
            time.sleep(0.05)
        time.sleep(0.5)  # half the body reaches the service, then the run dies
        os.killpg(process.pid, sig)
        assert process.wait(30) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        assert process.stdout is not None
        output = process.stdout.read()
        process.stdout.close()

    assert "[upload_source] started" in output and "[upload_source] succeeded" not in output
    assert [line for line in setup.storage.stats.log if line.endswith("-> stall")]
    assert setup.objects() == before  # the source tarball caught mid-upload is not there
    assert setup.ledger() == ledger
    assert setup.published(wait=1) == []
    _consistent(setup, deployed, head)

    setup.storage.clear()
    _succeeds(setup.cli("run", "--executor", "local"))
    [message] = setup.published()
    assert json.loads(message.data)["commit"] == head
    _consistent(setup, head, head)
    assert len(setup.objects()) > len(before)
