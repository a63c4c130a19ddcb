"""Three quick pushes to main, one workflow run: nothing is dropped (issue 10, item 3).

``.github/workflows/ct.yml`` runs in a concurrency group without cancel-in-progress. GitHub
keeps at most one running and one pending run per group, and a newer run cancels the pending
one ("Using concurrency": https://docs.github.com/en/actions/using-jobs/using-concurrency). So
after pushes B, C and D in quick succession, the run for C can be cancelled and the one run
left for the later pushes gets D's push event alone (``before`` = C, ``after`` = D). Planned
from that event, C's change would never be built.

The workflow plans with ``--since-deployed`` (and in CI that is the default): the base is the
commit the deploy ledger records, so the one run covers every push since the last successful
deploy. These tests play the sequence on a real repository, a fresh clone as actions/checkout
makes it (``fetch-depth: 0``), the ledger in a directory bucket and GitHub's push event file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.gitrepo import GitRepo, git_env

RULES = """\
version = 1
[project]
bucket = "ct-sequence"

[unmatched]
do = "skip"

[[rule]]
name = "training-source"
paths = ["training_src/"]
do = "upload_source"

[[rule]]
name = "pipeline-definition"
paths = ["pipeline/", "!pipeline/params.toml"]
do = "compile_pipeline"

[[rule]]
name = "hyper-parameters"
paths = ["pipeline/params.toml"]
do = "retrain"
"""

#: what each push changes, and the action only that change asks for
PUSHES = {
    "B": ("training_src/model.py", "upload_source"),
    "C": ("pipeline/pipeline.py", "compile_pipeline"),
    "D": ("pipeline/params.toml", "publish"),
}


def _cli(
    cwd: Path, *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True,
        text=True, check=False, timeout=120,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _history(git_repo: GitRepo, bucket: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A deployed at A (the ledger says so), then three pushes B, C, D; the shas, and the
    environment the CLI runs with."""
    env = {**git_env(), "NO_COLOR": "1", "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(bucket)}
    env = {k: v for k, v in env.items() if not k.startswith(("GITHUB_", "CI", "_BASE_SHA"))}
    shas = {
        "A": git_repo.commit(
            {
                "rules.toml": RULES,
                "training_src/model.py": "A\n",
                "pipeline/pipeline.py": "A\n",
                "pipeline/params.toml": "learning_rate = 0.1\n",
            },
            message="A",
        )
    }
    _cli(git_repo.path, "ledger", "set", "--commit", "HEAD", env=env)  # the deploy of A
    for name, (path, _) in PUSHES.items():
        content = "learning_rate = 0.2\n" if path.endswith(".toml") else f"{name}\n"
        shas[name] = git_repo.commit({path: content}, message=name)
    return shas, env


def _push_event_run(
    clone: GitRepo, event: Path, env: dict[str, str], *flags: str, ci: bool = True
) -> dict[str, Any]:
    """``plan --format json`` as the workflow's one run for the last push would plan it."""
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_REF": "refs/heads/main",
    }
    run_env = {**env, **github, **({"CI": "true"} if ci else {})}
    done = _cli(clone.path, "plan", "--format", "json", *flags, env=run_env)
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _changed(plan: dict[str, Any]) -> set[str]:
    return {change["path"] for change in plan["changes"]}


@pytest.mark.parametrize(
    "flags",
    [("--since-deployed",), ()],
    ids=["as-ct.yml-runs-it", "ci-default"],
)
def test_one_run_after_three_quick_pushes_covers_all_three(
    git_repo: GitRepo, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    shas, env = _history(git_repo, tmp_path / "bucket")
    clone = git_repo.clone(tmp_path / "checkout")  # actions/checkout, fetch-depth: 0
    # the only run left: GitHub's event for the last push (C's pending run was cancelled)
    event = GitRepo.write_event(
        tmp_path / "event.json",
        {"before": shas["C"], "after": shas["D"], "ref": "refs/heads/main", "forced": False,
         "repository": {"default_branch": "main"}},
    )  # fmt: skip
    plan = _push_event_run(clone, event, env, *flags)
    assert (plan["base"], plan["head"], plan["base_reason"]) == (shas["A"], shas["D"], "ledger")
    assert _changed(plan) == {path for path, _ in PUSHES.values()}
    planned = {action["id"] for action in plan["actions"]}
    assert {action for _, action in PUSHES.values()} <= planned
    for path, action in PUSHES.values():
        [planned_action] = [a for a in plan["actions"] if a["id"] == action]
        if action != "publish":  # publish is implied by the others too
            assert [r["path"] for r in planned_action["reasons"]] == [path]


def test_without_the_ledger_the_push_event_alone_would_drop_the_cancelled_push(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    """What the ledger base fixes: the push event's own range holds only the last push."""
    shas, env = _history(git_repo, tmp_path / "bucket")
    clone = git_repo.clone(tmp_path / "checkout")
    event = GitRepo.write_event(
        tmp_path / "event.json",
        {"before": shas["C"], "after": shas["D"], "ref": "refs/heads/main", "forced": False,
         "repository": {"default_branch": "main"}},
    )  # fmt: skip
    plan = _push_event_run(clone, event, env, ci=False)  # outside CI, no --since-deployed
    assert (plan["base"], plan["base_reason"]) == (shas["C"], "github-push")
    assert _changed(plan) == {"pipeline/params.toml"}  # B's and C's changes are not there


def test_after_the_first_push_deploys_the_next_run_starts_from_it(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    """B's run succeeded (the ledger moves to B) while C and D were pushed: the run for D
    still covers C, whose own run was cancelled."""
    shas, env = _history(git_repo, tmp_path / "bucket")
    _cli(git_repo.path, "ledger", "set", "--commit", shas["B"], env=env)
    clone = git_repo.clone(tmp_path / "checkout")
    event = GitRepo.write_event(
        tmp_path / "event.json",
        {"before": shas["C"], "after": shas["D"], "ref": "refs/heads/main", "forced": False,
         "repository": {"default_branch": "main"}},
    )  # fmt: skip
    plan = _push_event_run(clone, event, env, "--since-deployed")
    assert (plan["base"], plan["base_reason"]) == (shas["B"], "ledger")
    assert _changed(plan) == {"pipeline/pipeline.py", "pipeline/params.toml"}


def test_the_workflow_runs_with_the_ledger_base() -> None:
    """The sequence above is what ct.yml runs: --since-deployed, in a non-cancelling group."""
    import yaml

    workflow = yaml.safe_load(
        (Path(__file__).parent.parent / ".github" / "workflows" / "ct.yml").read_text("utf-8")
    )
    assert workflow["concurrency"]["cancel-in-progress"] is False
    [job] = workflow["jobs"].values()
    assert job["steps"][-1]["run"].endswith("--since-deployed")
