"""Continuous training on the embedded local default, as a user lives it: every change built
once, no state trained twice, new data retrains, and nothing is lost to a failure or an
interruption. Real subprocesses of the CLI against a copy of the workload; the pipeline runs
in process with kfp.local (about 10 s a run).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gitrepo import GitRepo
from tests.integration.workload_repo import append_line, run_env, workload_repo

pytestmark = pytest.mark.slow


def cli(repo: GitRepo, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=repo.path,
        env=run_env(NO_COLOR="1", **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    return result.stdout


def accuracy(text: str) -> float:
    found = re.search(r"accuracy (0\.\d+)", text)
    assert found, text
    return float(found.group(1))


def trained_runs(repo: GitRepo) -> list[dict[str, Any]]:
    registry = repo.path / ".orchestrator" / "bucket" / "demo-ct-artifacts" / "ct" / "runs"
    return [json.loads(p.read_text()) for p in sorted(registry.glob("*.json"))]


def deployed(repo: GitRepo) -> dict[str, Any]:
    shown = ok(cli(repo, "ledger", "show"))
    return dict(json.loads(shown.split(":\n", 1)[1]))


def test_commit_rerun_revert_new_data_and_an_interrupted_run(
    make_git_repo: Callable[..., GitRepo], tmp_path: Path
) -> None:
    repo = workload_repo(make_git_repo)

    # A commit, then run: one training run.
    append_line(repo, "training_src/train.py", "# first change")
    first_commit = repo.commit(message="first change")
    first = ok(cli(repo, "run"))
    assert "pipeline run succeeded" in first
    first_accuracy = accuracy(first)
    assert len(trained_runs(repo)) == 1
    assert deployed(repo)["commit"] == first_commit

    # Run again: nothing to do, and the report names the run that trained this state.
    again = ok(cli(repo, "run"))
    assert "nothing to do: this state was already trained: run ct-" in again
    assert len(trained_runs(repo)) == 1

    # A second change trains once more; reverting it builds and trains nothing.
    append_line(repo, "training_src/train.py", "# second change")
    repo.commit(message="second change")
    ok(cli(repo, "run"))
    assert len(trained_runs(repo)) == 2
    repo.git("revert", "--no-edit", "HEAD")
    reverted = ok(cli(repo, "run", "--format", "json"))
    report = json.loads(reverted)
    assert report["status"] == "nothing-to-do"
    assert report["steps"] == []
    notes = {e["id"]: e for e in report["existing"]}
    assert set(notes) == {"upload_source", "publish"}  # no upload, no second training
    assert f"accuracy {first_accuracy:.4g}" in notes["publish"]["note"]
    assert len(trained_runs(repo)) == 2
    assert deployed(repo)["commit"] == repo.rev()

    # New data: one run on it, and only one, however often it is asked for.
    csv = tmp_path / "new.csv"
    _write_digits_csv(csv, rows=900)
    data_run = ok(cli(repo, "trigger", "--data", str(csv)))
    assert "pipeline run ct-" in data_run and accuracy(data_run) > 0.9
    assert len(trained_runs(repo)) == 3
    assert deployed(repo)["data_uri"] == str(csv)
    ok(cli(repo, "trigger", "--data", str(csv)))
    assert len(trained_runs(repo)) == 3
    # later builds train on the newest data too
    append_line(repo, "training_src/train.py", "# third change")
    repo.commit(message="third change")
    ok(cli(repo, "run"))
    newest = trained_runs(repo)
    assert len(newest) == 4 and sum(r["data_uri"] == str(csv) for r in newest) == 2

    # An interrupted run leaves nothing half done: the next run trains.
    append_line(repo, "training_src/train.py", "# fourth change")
    repo.commit(message="fourth change")
    _interrupt_during_publish(repo)
    assert deployed(repo)["commit"] != repo.rev()  # the ledger did not move
    resumed = ok(cli(repo, "run"))
    assert "pipeline run succeeded" in resumed
    assert deployed(repo)["commit"] == repo.rev()


def test_a_failed_build_then_a_new_commit_plans_both_since_the_deployed_one(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    fails_if_flagged = ["python", "-c", "import os, sys; sys.exit(os.path.exists('FAIL'))"]
    repo = workload_repo(make_git_repo, test_command=fails_if_flagged)
    append_line(repo, "training_src/train.py", "# deployed")
    deployed_commit = repo.commit(message="deployed")
    ok(cli(repo, "run"))

    append_line(repo, "training_src/train.py", "# built, but the tests fail")
    repo.commit({"FAIL": "x"}, message="broken")
    broken = cli(repo, "run", "--since-deployed")
    assert broken.returncode == 1
    assert deployed(repo)["commit"] == deployed_commit  # the ledger did not move

    append_line(repo, "pipeline/definition.py", "# and a pipeline change")
    repo.commit({"FAIL": None}, message="fixed")
    planned = json.loads(ok(cli(repo, "plan", "--since-deployed", "--format", "json")))
    assert planned["base"] == deployed_commit
    assert planned["base_reason"] == "ledger"
    changed = {c["path"] for c in planned["changes"]}
    assert {"training_src/train.py", "pipeline/definition.py"} <= changed  # both commits
    assert {"upload_source", "compile_pipeline", "publish"} <= {a["id"] for a in planned["actions"]}
    # --dry-run shows exactly what run executes
    report = json.loads(ok(cli(repo, "run", "--since-deployed", "--format", "json")))
    assert [s["id"] for s in report["steps"]] == [a["id"] for a in planned["actions"]]
    assert deployed(repo)["commit"] == repo.rev()


def test_a_dependency_no_rule_names_is_rebuilt_because_its_hash_differs(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    repo = workload_repo(
        make_git_repo,
        rules_replace={'paths = ["training_src/"]': 'paths = ["training_src/*.py"]'},
        rules_extra="",
    )
    rules = (repo.path / "rules.toml").read_text().replace('do = "all"', 'do = "skip"', 1)
    repo.commit({"rules.toml": rules}, message="only python files upload the source")
    ok(cli(repo, "run", "--changed", "training_src/train.py"))

    requirements = (repo.path / "training_src" / "requirements.txt").read_text()
    repo.commit({"training_src/requirements.txt": requirements + "# pinned\n"})
    planned = json.loads(ok(cli(repo, "plan", "--format", "json")))
    (upload,) = [a for a in planned["actions"] if a["id"] == "upload_source"]
    assert "differ from the deployed one" in upload["reasons"][0]["note"]
    assert "no changed path matched a rule" in upload["reasons"][0]["note"]


def test_a_copy_without_git_plans_from_hashes_as_git_does(
    make_git_repo: Callable[..., GitRepo], tmp_path: Path
) -> None:
    repo = workload_repo(make_git_repo)
    ok(cli(repo, "run", "--changed", "pipeline/params.toml"))
    params = (repo.path / "pipeline/params.toml").read_text()
    append_line(repo, "training_src/train.py", "# a change")
    head = repo.commit({"pipeline/params.toml": params.replace("seed = 0", "seed = 3")})
    with_git = json.loads(ok(cli(repo, "plan", "--since-deployed", "--format", "json")))

    copy = tmp_path / "no-git"
    subprocess.run(["git", "-C", str(repo.path), "worktree", "add", "--detach", str(copy)],
                   check=True, capture_output=True)  # fmt: skip
    (copy / ".git").unlink()  # a worktree's .git is a file: now no git at all
    bucket = repo.path / ".orchestrator" / "bucket"
    plain = subprocess.run(
        [sys.executable, "-m", "orchestrator", "plan", "--head", head, "--format", "json"],
        cwd=copy,
        env=run_env(ORCHESTRATOR_LOCAL_BUCKET_ROOT=str(bucket), BRANCH_NAME="main"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    from_hashes = json.loads(plain.stdout)
    assert from_hashes["base_reason"] == "hashes"
    assert [a["id"] for a in from_hashes["actions"]] == [a["id"] for a in with_git["actions"]]


def _interrupt_during_publish(repo: GitRepo, sig: int = signal.SIGTERM) -> None:
    """Start a run, send ``sig`` once its training run has claimed the registry, wait."""
    before = {r["run_id"] for r in trained_runs(repo)}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run"],
        cwd=repo.path,
        env=run_env(NO_COLOR="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [r for r in trained_runs(repo) if r["run_id"] not in before]
        if running and running[0]["status"] == "running":
            break
        time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("the run never started training")
    os.killpg(process.pid, sig)
    process.wait(60)


def _write_digits_csv(path: Path, *, rows: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    lines = [",".join([*(f"pixel_{i}" for i in range(64)), "label"])]
    for features, label in list(zip(digits.data, digits.target, strict=True))[:rows]:
        lines.append(",".join([*(str(int(v)) for v in features), str(int(label))]))
    path.write_text("\n".join(lines) + "\n")


def test_interrupted_and_failed_runs_never_block_the_next_and_new_parameters_train_once(
    make_git_repo: Callable[..., GitRepo], tmp_path: Path
) -> None:
    repo = workload_repo(make_git_repo)
    append_line(repo, "training_src/train.py", "# a change")
    repo.commit(message="a change")

    # Ctrl-C while the pipeline trains: the next run trains.
    _interrupt_during_publish(repo, signal.SIGINT)
    ok(cli(repo, "run"))
    assert any(r["status"] == "succeeded" for r in trained_runs(repo))

    # New parameters on the same commit: one run, and only one.
    params = tmp_path / "params.toml"
    params.write_text("hidden_units = 32\n")
    assert re.search(
        r"pipeline run ct-\w+ succeeded", ok(cli(repo, "trigger", "--params", str(params)))
    )
    assert deployed(repo)["parameters"]["hidden_units"] == 32
    again = ok(cli(repo, "trigger", "--params", str(params)))
    assert "already ran for these inputs" in again
    assert len(trained_runs(repo)) == 2

    # A failed pipeline run does not block a retry: asked again, it runs again.
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")  # no label column: the pipeline fails
    failed = cli(repo, "trigger", "--data", str(bad))
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "failed" in failed.stderr
    retried = cli(repo, "trigger", "--data", str(bad))
    assert retried.returncode == 1
    (entry,) = [r for r in trained_runs(repo) if r["data_uri"] == str(bad)]
    assert (entry["status"], entry["attempt"]) == ("failed", 2)
    assert deployed(repo)["data_uri"] == ""  # a failed run deploys nothing
