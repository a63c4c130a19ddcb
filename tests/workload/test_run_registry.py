"""The runs registry of function/main.py: exactly one training run per state.

Each rule runs against both stores ``orchestrator/objects.py`` offers in tests: the local
directory bucket (generations in sidecar files, compare-and-swap under flock) and
fake-gcs-server (Cloud Storage's JSON API with real generation preconditions). The pipeline
is a stand-in that records that it ran (``registry_worker.StandInPipeline``): what is under
test is which deliveries start a run, not kfp. Races use real threads and real processes;
interruptions use KeyboardInterrupt, SystemExit, an exception, and real SIGTERM and SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator import message, objects, runs
from tests.workload.conftest import LocalBucket
from tests.workload.registry_worker import StandInPipeline
from tests.workload.test_function import PARAMS, SHA, encode, load_function

REPO = Path(__file__).resolve().parents[2]
IMAGES = {"validator": "r/validator:1", "evaluator": "r/evaluator:1"}


@dataclass
class Store:
    """A bucket holding a compiled spec, in one of the two stores, and the function around it."""

    kind: str
    bucket: str
    env: dict[str, str]  # storage settings and the function's configuration
    root: Path  # CT_PIPELINE_ROOT
    marks: Path  # one file per stand-in pipeline run

    @property
    def spec_uri(self) -> str:
        return f"gs://{self.bucket}/pipelines/spec.yaml"

    def message(self, **overrides: Any) -> bytes:
        data: dict[str, Any] = {
            "schema": 2,
            "commit": SHA,
            "ref": "refs/heads/main",
            "pipeline_spec_uri": self.spec_uri,
            "source_uri": f"gs://{self.bucket}/source/abc/training_src.tar.gz",
            "images": IMAGES,
            "parameters": dict(PARAMS),
            "actions": [],
            "data_uri": "",
            "data_version": "",
            "reason": "commit",
            "request_id": "request-1",
            "retry": False,
        }
        data.update(overrides)
        return encode(data)

    def runs(self) -> int:
        return len(list(self.marks.iterdir())) if self.marks.exists() else 0

    def entry_uri(self, run_id: str) -> str:
        return f"gs://{self.bucket}/ct/runs/{run_id}.json"

    def entry(self, run_id: str) -> dict[str, Any]:
        stored = objects.read(self.entry_uri(run_id), self.env)
        assert stored is not None, f"no registry entry for {run_id}"
        parsed: dict[str, Any] = json.loads(stored.data)
        return parsed

    def put_entry(self, run_id: str, **fields: Any) -> None:
        entry = {
            "run_id": run_id,
            "status": "running",
            "request_id": "earlier-request",
            "attempt": 1,
            "job_id": run_id,
            "commit": SHA,
            "data_uri": "",
            "started": "2024-05-01T12:00:00Z",
            "lease_expires": "2999-01-01T00:00:00Z",
            "host": "elsewhere#0000",
            "pid": 4242,
            "metrics": {},
            "detail": "",
            **fields,
        }
        objects.write(
            self.entry_uri(run_id), json.dumps(entry).encode(), self.env, if_generation=None
        )


@pytest.fixture(params=["local-dir", "fake-gcs"])
def store(
    request: pytest.FixtureRequest, local_bucket: LocalBucket, tmp_path: Path
) -> Iterator[Store]:
    if request.param == "local-dir":
        bucket = "ct-registry"
        storage = {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket")}
    else:
        gcs = request.getfixturevalue("gcs_server")
        bucket = gcs.create_bucket()
        storage = dict(gcs.env)
    env = {
        **storage,
        "CT_BUCKET": bucket,
        "CT_BACKEND": "local",
        "CT_PIPELINE_ROOT": str(tmp_path / "root"),
    }
    objects.write(
        f"gs://{bucket}/pipelines/spec.yaml",
        local_bucket.spec_path.read_bytes(),
        env,
        if_generation=None,
        content_type="application/yaml",
    )
    yield Store(request.param, bucket, env, tmp_path / "root", tmp_path / "marks")


@pytest.fixture
def fn() -> Any:
    return load_function()


@pytest.fixture
def pipeline(fn: Any, store: Store, monkeypatch: pytest.MonkeyPatch) -> StandInPipeline:
    stand_in = StandInPipeline(store.marks)
    monkeypatch.setattr(fn, "run_pipeline", stand_in)
    return stand_in


def deliver(fn: Any, store: Store, data: bytes) -> Any:
    return fn.handle_message(data, {}, fn.Config.from_env(store.env), store.env)


def run_id_of(fn: Any, store: Store, data: bytes) -> str:
    return str(fn.prepare(data, {}, fn.Config.from_env(store.env), store.env).run_id)


# --- the rules, one delivery at a time -------------------------------------------------------


def test_a_redelivery_starts_nothing(fn: Any, store: Store, pipeline: StandInPipeline) -> None:
    data = store.message()
    first = deliver(fn, store, data)
    again = deliver(fn, store, data)
    assert (first.status, first.attempt, first.job_id) == ("succeeded", 1, first.run_id)
    assert (again.status, again.detail, again.previous_status) == (
        "duplicate",
        "already succeeded",
        "succeeded",
    )
    assert again.run_id == first.run_id and dict(again.metrics) == {"accuracy": 0.97}
    assert store.runs() == 1
    entry = store.entry(first.run_id)
    assert (entry["status"], entry["metrics"], entry["lease_expires"]) == (
        "succeeded",
        {"accuracy": 0.97},
        "",
    )
    assert pipeline.calls == [store.root / first.run_id]


def test_the_same_state_from_another_commit_is_a_duplicate(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    first = deliver(fn, store, store.message())
    other = deliver(
        fn,
        store,
        store.message(commit="f" * 40, ref="refs/heads/other", request_id="r2", reason="manual"),
    )
    assert (first.status, other.status, other.run_id) == ("succeeded", "duplicate", first.run_id)
    assert store.runs() == 1


def test_a_new_parameter_value_starts_a_run(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    first = deliver(fn, store, store.message())
    second = deliver(fn, store, store.message(parameters={**PARAMS, "hidden_units": 32}))
    third = deliver(fn, store, store.message(data_uri="gs://data-bkt/data/new.csv"))
    assert [r.status for r in (first, second, third)] == ["succeeded"] * 3
    assert len({first.run_id, second.run_id, third.run_id}) == 3
    assert store.runs() == 3
    assert third.data_uri == "gs://data-bkt/data/new.csv"
    assert store.entry(third.run_id)["data_uri"] == "gs://data-bkt/data/new.csv"


def test_an_expired_lease_is_taken_over(fn: Any, store: Store, pipeline: StandInPipeline) -> None:
    data = store.message(request_id="request-2")
    run_id = run_id_of(fn, store, data)
    store.put_entry(run_id, lease_expires="2024-05-01T12:05:00Z")
    result = deliver(fn, store, data)
    assert (result.status, result.attempt, result.job_id) == ("succeeded", 1, run_id)
    assert result.note == "took over attempt 1: its lease expired at 2024-05-01T12:05:00Z"
    entry = store.entry(run_id)
    assert (entry["status"], entry["request_id"], entry["pid"]) == (
        "succeeded",
        "request-2",
        os.getpid(),
    )
    assert entry["host"] == fn.HOST
    assert store.runs() == 1


def test_a_live_lease_elsewhere_is_in_progress(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    data = store.message()
    run_id = run_id_of(fn, store, data)
    store.put_entry(run_id)
    result = deliver(fn, store, data)
    assert (result.status, result.previous_status) == ("duplicate", "running")
    assert result.detail == (
        "in progress: attempt 1 on elsewhere#0000 (pid 4242), lease until 2999-01-01T00:00:00Z"
    )
    assert store.runs() == 0


def test_a_dead_process_on_this_host_is_taken_over(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # exited and reaped: its pid names no process
    data = store.message()
    run_id = run_id_of(fn, store, data)
    store.put_entry(run_id, host=fn.HOST, pid=gone.pid)
    result = deliver(fn, store, data)
    assert result.status == "succeeded"
    assert result.note == f"took over attempt 1: its process {gone.pid} on {fn.HOST} is gone"
    assert store.runs() == 1


def test_a_live_process_on_this_host_is_in_progress(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    data = store.message()
    run_id = run_id_of(fn, store, data)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            store.put_entry(run_id, host=fn.HOST, pid=alive.pid)
            result = deliver(fn, store, data)
        finally:
            alive.kill()
    assert (result.status, result.previous_status) == ("duplicate", "running")
    assert store.runs() == 0


def test_failed_runs_again_only_when_retried_with_a_new_request(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    pipeline.status = "failed"
    failed = deliver(fn, store, store.message())
    assert (failed.status, failed.detail) == ("failed", "validate-data failed: 3 problems")
    assert store.entry(failed.run_id)["status"] == "failed"
    pipeline.status = "succeeded"

    again = deliver(fn, store, store.message())
    assert (again.status, again.previous_status) == ("duplicate", "failed")
    assert again.detail == (
        "already failed: validate-data failed: 3 problems (publish it with retry to run it again)"
    )
    redelivered_retry = deliver(fn, store, store.message(retry=True))  # request-1 again
    assert redelivered_retry.status == "duplicate"
    assert redelivered_retry.detail.endswith(
        "(this request already ran it; publish a new request with retry to run it again)"
    )
    assert store.runs() == 1

    retry = store.message(retry=True, request_id="request-2")
    retried = deliver(fn, store, retry)
    assert (retried.status, retried.attempt) == ("succeeded", 2)
    assert retried.job_id == f"{failed.run_id}-a2"
    assert retried.note == (
        "retry of failed attempt 1 (validate-data failed: 3 problems), request request-2"
    )
    assert pipeline.calls[-1] == store.root / f"{failed.run_id}-a2"
    assert deliver(fn, store, retry).status == "duplicate"  # that retry, redelivered
    assert deliver(fn, store, store.message(retry=True, request_id="r3")).detail == (
        "already succeeded"
    )
    assert store.runs() == 2


@pytest.mark.parametrize(
    "interruption",
    [KeyboardInterrupt(), SystemExit(143), OSError("No space left on device")],
    ids=["KeyboardInterrupt", "SystemExit", "OSError"],
)
def test_an_interrupted_run_is_taken_over_by_the_next_delivery(
    fn: Any, store: Store, pipeline: StandInPipeline, interruption: BaseException
) -> None:
    data = store.message()
    pipeline.error = interruption
    with pytest.raises(type(interruption)):
        deliver(fn, store, data)
    run_id = run_id_of(fn, store, data)
    entry = store.entry(run_id)
    assert entry["status"] == "running"  # not a verdict on the state ...
    assert entry["detail"].startswith(f"interrupted: {type(interruption).__name__}")
    lease = runs.epoch(entry["lease_expires"])
    assert lease is not None and lease <= time.time()  # ... and free to take over

    pipeline.error = None
    result = deliver(fn, store, data)  # no retry needed
    assert (result.status, result.attempt) == ("succeeded", 1)
    assert result.note.startswith("took over attempt 1: its lease expired at ")
    assert result.note.endswith(f"({entry['detail']})")
    assert store.runs() == 2


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"status": "weird"}'])
def test_an_unreadable_entry_is_replaced(
    fn: Any, store: Store, pipeline: StandInPipeline, content: bytes
) -> None:
    data = store.message()
    run_id = run_id_of(fn, store, data)
    objects.write(store.entry_uri(run_id), content, store.env, if_generation=None)
    result = deliver(fn, store, data)
    assert result.status == "succeeded"
    assert result.note.startswith(
        f"replaced the unreadable registry entry {store.entry_uri(run_id)}: the registry entry "
    )
    assert store.entry(run_id)["status"] == "succeeded"


def test_the_lease_is_renewed_while_the_run_goes_on(
    fn: Any, store: Store, pipeline: StandInPipeline
) -> None:
    store.env["CT_LEASE_SECONDS"] = "5"  # renewed every second
    data = store.message()
    run_id = run_id_of(fn, store, data)
    leases: list[str] = []

    def watch(_: Path) -> None:
        for _ in range(3):
            leases.append(store.entry(run_id)["lease_expires"])
            time.sleep(1.1)

    pipeline.during = watch
    assert deliver(fn, store, data).status == "succeeded"
    assert leases == sorted(leases) and leases[0] < leases[-1], leases


def test_decide_is_pure(fn: Any) -> None:
    msg = message.PublishMessage(
        commit=SHA,
        ref="refs/heads/main",
        pipeline_spec_uri="gs://b-1/s.yaml",
        source_uri="gs://b-1/s.tgz",
        request_id="r1",
    )
    now = 1_000_000.0
    entry = fn.RegistryEntry(
        run_id="ct-1", status="running", lease_expires=fn.iso_utc(now + 60), host="h", pid=7
    )
    assert fn.decide(None, msg, now) == fn.Decision(True, 1, "")
    assert not fn.decide(entry, msg, now, host="h", alive=lambda pid: True).claim
    assert fn.decide(entry, msg, now, host="h", alive=lambda pid: False).claim
    assert not fn.decide(entry, msg, now, host="other", alive=lambda pid: False).claim
    assert fn.decide(entry, msg, now + 61, host="other", alive=lambda pid: True).claim
    submitted = fn.RegistryEntry(run_id="ct-1", status="submitted", job_id="ct-1-a2")
    assert fn.decide(submitted, msg, now) == fn.Decision(False, 1, "already submitted as ct-1-a2")


# --- races: many deliveries at once, exactly one run -----------------------------------------


def test_racing_threads_start_one_run(fn: Any, store: Store, pipeline: StandInPipeline) -> None:
    pipeline.sleep = 0.3
    data = store.message()
    config = fn.Config.from_env(store.env)
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def one() -> None:
        barrier.wait()
        results.append(fn.handle_message(data, {}, config, store.env))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in results) == ["duplicate"] * 5 + ["succeeded"]
    assert store.runs() == 1


def _worker_spec(store: Store, tmp: Path, data: bytes, *, sleep: float, go: Path | None) -> Path:
    spec = tmp / f"worker-{time.monotonic_ns()}.json"
    spec.write_text(
        json.dumps(
            {
                "env": store.env,
                "data": data.decode(),
                "marks": str(store.marks),
                "sleep": sleep,
                "go": str(go) if go else None,
            }
        )
    )
    return spec


def _start_workers(*specs: Path) -> list[subprocess.Popen[str]]:
    """Start one worker per spec, and return once each has loaded the function (only the
    delivery is left)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workload.registry_worker", str(spec)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    for process in processes:
        assert process.stdout is not None and process.stderr is not None
        ready = process.stdout.readline()
        assert ready.startswith('{"ready"'), ready + process.stderr.read()
    return processes


def test_racing_processes_start_one_run(fn: Any, store: Store, tmp_path: Path) -> None:
    go = tmp_path / "go"
    data = store.message()
    workers = _start_workers(
        *(_worker_spec(store, tmp_path, data, sleep=0.5, go=go) for _ in range(4))
    )
    go.touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    assert sorted(r["status"] for r in results) == ["duplicate"] * 3 + ["succeeded"]
    assert len({r["run_id"] for r in results}) == 1
    assert store.runs() == 1


# --- real signals ------------------------------------------------------------------------------


def _wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_is_taken_over(
    fn: Any, store: Store, pipeline: StandInPipeline, tmp_path: Path, signum: int
) -> None:
    data = store.message()
    run_id = run_id_of(fn, store, data)
    [worker] = _start_workers(_worker_spec(store, tmp_path, data, sleep=60, go=None))
    try:
        _wait_for(lambda: store.runs() == 1)  # the run is going: the entry is claimed
        assert store.entry(run_id)["pid"] == worker.pid
        worker.send_signal(signum)
        worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    entry = store.entry(run_id)
    assert entry["status"] == "running"
    if signum == signal.SIGINT:  # KeyboardInterrupt: the entry is released
        assert entry["detail"].startswith("interrupted: KeyboardInterrupt")
    else:  # killed outright: the entry says nothing, but its process is gone
        assert entry["detail"] == ""

    result = deliver(fn, store, data)
    assert (result.status, result.attempt) == ("succeeded", 1)
    expected = (
        f"took over attempt 1: its process {worker.pid} on {fn.HOST} is gone"
        if signum == signal.SIGTERM
        else "took over attempt 1: its lease expired at "
    )
    assert result.note.startswith(expected)
    assert store.runs() == 2
