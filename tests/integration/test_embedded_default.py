"""``python -m orchestrator run`` on the embedded local default: no cloud, emulator or Docker.

A temporary git repository holds a copy of the workload. Each run is a real subprocess; the
publish step hands the message to function/main.py in process, which runs the pipeline with
kfp.local (two pipeline runs here, ~5-10 s each).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.fixtures.gitrepo import GitRepo
from tests.integration.workload_repo import append_line, run_env, workload_repo


def orchestrator(repo: GitRepo, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", *args],
        cwd=repo.path,
        env=run_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_run_builds_publishes_in_process_and_retrains_with_new_parameters(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    repo = workload_repo(make_git_repo)
    append_line(repo, "training_src/train.py", "# a change to the training code")
    append_line(repo, "pipeline/source.py", "# a change to the pipeline")
    head = repo.commit(message="change training code and pipeline")

    first = orchestrator(repo)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "pipeline run succeeded: accuracy 0.9" in first.stdout
    assert "run succeeded" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr
    bucket = repo.path / ".orchestrator" / "bucket" / "demo-ct-artifacts"
    assert len(list((bucket / "source").glob("*/training_src.tar.gz"))) == 1
    assert len(list((bucket / "pipelines").glob("*/pipeline.yaml"))) == 1
    assert repo.git("status", "--porcelain") == ""  # .orchestrator/ is ignored

    # The same commit again: no second pipeline run, but the result of the one that ran.
    rerun = orchestrator(repo)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    accuracy = re.search(r"pipeline run succeeded: accuracy (\S+)", first.stdout)
    assert accuracy, first.stdout
    assert "nothing to do: this state was already trained: run ct-" in rerun.stdout, rerun.stdout
    assert f"accuracy {accuracy.group(1)}" in rerun.stdout
    assert len(list((repo.path / ".orchestrator" / "pipeline-root").glob("ct-*"))) == 1

    # A new hyper-parameter value: publish alone, with the spec compiled by the first run.
    params = (repo.path / "pipeline/params.toml").read_text()
    repo.commit({"pipeline/params.toml": params.replace("hidden_units = 64", "hidden_units = 32")})

    second = orchestrator(repo, "--format", "json")

    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(second.stdout)
    assert report["status"] == "succeeded"
    assert [(s["id"], s["status"]) for s in report["steps"]] == [
        ("test", "succeeded"),
        ("publish", "succeeded"),
    ]
    published = report["published"]
    assert published["commit"] == repo.rev()
    assert published["commit"] != head
    assert published["parameters"]["hidden_units"] == 32
    assert len(list((bucket / "pipelines").glob("*/pipeline.yaml"))) == 1  # no recompile
    assert published["pipeline_spec_uri"].endswith("/pipeline.yaml")
    assert report["pipeline_run"]["status"] == "succeeded"
    assert report["pipeline_run"]["metrics"]["accuracy"] > 0.9
    assert "[publish] succeeded" in second.stderr  # progress goes to stderr with --format json


def test_a_retrain_on_a_fresh_bucket_first_builds_what_the_run_needs(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    repo = workload_repo(make_git_repo)
    params = (repo.path / "pipeline/params.toml").read_text()
    repo.commit({"pipeline/params.toml": params.replace("seed = 0", "seed = 1")})

    result = orchestrator(repo, "--format", "json")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [step["id"] for step in report["steps"]] == [
        "test",
        "upload_source",
        "compile_pipeline",
        "publish",
    ]
    assert report["published"]["parameters"]["seed"] == 1
    assert report["pipeline_run"]["metrics"]["accuracy"] > 0.9


def test_a_failing_test_command_stops_the_run(make_git_repo: Callable[..., GitRepo]) -> None:
    repo = workload_repo(
        make_git_repo, test_command=["python", "-c", "raise SystemExit('3 tests failed')"]
    )
    append_line(repo, "training_src/train.py", "# change")
    append_line(repo, "pipeline/source.py", "# change")
    repo.commit()

    result = orchestrator(repo, "--format", "json")

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {s["id"]: s["status"] for s in report["steps"]} == {
        "test": "failed",
        "upload_source": "skipped",
        "compile_pipeline": "skipped",
        "publish": "skipped",
    }
    assert report["published"] is None
    assert "3 tests failed" in result.stderr
    assert not (repo.path / ".orchestrator" / "bucket").exists()


def test_nothing_to_do(make_git_repo: Callable[..., GitRepo]) -> None:
    repo = workload_repo(make_git_repo)
    repo.commit({"docs/notes.md": "words\n"})

    result = orchestrator(repo, "--format", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": "nothing-to-do",
        "steps": [],
        "published": None,
        "pipeline_run": None,
        "existing": [],
    }
