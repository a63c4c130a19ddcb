"""The deploy ledger on real storage: the directory bucket and fake-gcs-server (which enforces
generation preconditions, as Cloud Storage does)."""

from __future__ import annotations

import multiprocessing
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import ledger, objects
from orchestrator.errors import InputError
from orchestrator.message import DeployedState
from tests.fixtures.gcs import GcsServer


def state(commit: str, units: int = 64) -> DeployedState:
    return DeployedState(
        branch="feature/x",
        pipeline="default",
        commit=commit,
        ref="refs/heads/feature/x",
        pipeline_spec_uri="gs://art-bucket/pipelines/p/pipeline.yaml",
        source_uri="gs://art-bucket/source/s/training_src.tar.gz",
        images={"trainer": "r.example/ct/trainer@sha256:" + "a" * 64},
        parameters={"units": units},
    )


@pytest.fixture(params=["local-dir", "fake-gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ledger.Location, dict[str, str]]:
    if request.param == "local-dir":
        env = {objects.LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets")}
        bucket = "ledger-bucket"
    else:
        server: GcsServer = request.getfixturevalue("gcs_server")
        bucket = server.create_bucket()
        env = dict(server.env)
    return ledger.Location(bucket, "ct", "feature/x"), env


def test_nothing_deployed_reads_as_none(store: tuple[ledger.Location, dict[str, str]]) -> None:
    location, env = store
    assert ledger.read(location, env) is None
    assert location.uri.endswith("/ct/ledger/feature%2Fx/default.json")


def test_record_then_read_and_history(store: tuple[ledger.Location, dict[str, str]]) -> None:
    location, env = store
    assert ledger.record(location, state("1" * 40), env) == "recorded"
    assert ledger.record(location, state("2" * 40), env) == "recorded"
    entry = ledger.read(location, env)
    assert entry is not None and entry.state.commit == "2" * 40
    assert entry.state.updated  # stamped
    assert [s.commit for s in ledger.history(location, env)] == ["1" * 40, "2" * 40]


def test_an_ancestor_never_replaces_the_recorded_commit(
    store: tuple[ledger.Location, dict[str, str]],
) -> None:
    location, env = store
    ledger.record(location, state("2" * 40), env)
    older = ledger.record(location, state("1" * 40), env, is_ancestor=lambda a, b: a < b)
    assert older == "kept"
    entry = ledger.read(location, env)
    assert entry is not None and entry.state.commit == "2" * 40


def test_a_corrupt_ledger_is_exit_2_naming_it_and_the_repair(
    store: tuple[ledger.Location, dict[str, str]],
) -> None:
    location, env = store
    objects.write(location.uri, b'{"schema": 1, "branch": ', env, if_generation=None)
    with pytest.raises(ledger.LedgerCorrupt) as raised:
        ledger.read(location, env)
    assert isinstance(raised.value, InputError)
    message = str(raised.value)
    assert location.uri in message
    assert "python -m orchestrator ledger set --branch feature/x --commit" in message
    assert "\n" not in message


def _race(env: dict[str, str], location: ledger.Location, commit: str, start: float) -> None:
    import time

    while time.time() < start:
        time.sleep(0.001)
    ledger.record(location, state(commit), env, is_ancestor=lambda a, b: a < b)


def test_two_processes_updating_together_lose_nothing_and_the_newer_wins(
    store: tuple[ledger.Location, dict[str, str]],
) -> None:
    import time

    location, env = store
    context = multiprocessing.get_context("spawn")
    for round_ in range(2):
        start = time.time() + 1.0
        commits = [f"{round_}{i}" * 20 for i in (1, 2)]  # the second is "newer"
        workers = [context.Process(target=_race, args=(env, location, c, start)) for c in commits]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        entry = ledger.read(location, env)
        assert entry is not None and entry.state.commit == commits[1]
        recorded = [s.commit for s in ledger.history(location, env)]
        assert set(commits) <= set(recorded)  # both updates are in the history


def test_ledger_cli_show_set_history(make_git_repo: Callable[..., object], tmp_path: Path) -> None:
    from tests.integration.workload_repo import run_env, workload_repo

    repo = workload_repo(make_git_repo)  # type: ignore[arg-type]
    env = run_env()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        import sys

        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "ledger", *args], cwd=repo.path,  # type: ignore[attr-defined]
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    shown = cli("show")
    assert shown.returncode == 0, shown.stderr
    assert "nothing deployed yet" in shown.stdout
    assert cli("set", "--commit", "HEAD").returncode == 0
    shown = cli("show")
    assert '"commit": "' + repo.rev() in shown.stdout  # type: ignore[attr-defined]
    assert "generation" in shown.stdout
    history = cli("history")
    assert repo.rev()[:12] in history.stdout  # type: ignore[attr-defined]
    corrupt = repo.path / ".orchestrator" / "bucket"  # type: ignore[attr-defined]
    (ledger_file,) = corrupt.rglob("ledger/*/default.json")
    ledger_file.write_text("{")
    broken = cli("show")
    assert broken.returncode == 2
    assert broken.stderr.count("\n") == 1 and "ledger set" in broken.stderr
    assert "Traceback" not in broken.stderr
