"""Secrets on a local run, through the real CLI (a subprocess running this checkout's code):
a declared secret comes from the environment, a missing one stops the run before any step
(exit 2, naming it), and its value is shown nowhere: not on stdout or stderr, not in the JSON
report, not in any file the run writes under .orchestrator/ (the directory bucket, the ledger,
the runs registry). The values hold regex characters and newlines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.output import REDACTED
from tests.fixtures.gitrepo import GitRepo
from tests.integration.workload_repo import run_env, workload_repo

PROJECT = Path(__file__).resolve().parents[2]
TOKEN = "tok$3n.*[s3cr3t]+?(x)|\\d{2}^ 'q' \"dq\""  # noqa: S105 - a test value
KEY = (
    "-----BEGIN TEST KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "  indented+line/two==\n"
    "ab\n"
    "-----END TEST KEY-----"
)
SECRETS = (
    "\n[build]\nsecret_env = { CT_TOKEN = "
    '"projects/demo-project/secrets/ct-token/versions/latest", CT_KEY = '
    '"projects/demo-project/secrets/ct-key/versions/2" }\n'
)
#: What must never be shown: each value whole, and each line of the key long enough to mask.
NEVER = [TOKEN, KEY, *(line.strip() for line in KEY.splitlines() if len(line.strip()) >= 4)]
#: The [test] command: prints both secrets (stdout and stderr, whole and one line of the key),
#: the token last, and fails. One line (workload_repo writes it through re.sub).
PRINT_AND_FAIL = "; ".join(
    [
        "import os, sys",
        "token, key = os.environ['CT_TOKEN'], os.environ['CT_KEY']",
        "print('token is', token)",
        "print(key, file=sys.stderr)",
        "print('one line of the key:', key.splitlines()[1])",
        "print(token)",
        "sys.exit(1)",
    ]
)


def orchestrator(repo: GitRepo, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m orchestrator run`` with this checkout's code (PYTHONPATH: the project)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", *args],
        cwd=repo.path,
        env=run_env(PYTHONPATH=str(PROJECT), **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def assert_never_shown(texts: list[str], state: Path) -> None:
    files = [p for p in state.rglob("*") if p.is_file()] if state.exists() else []
    shown = [*texts, *(p.read_bytes().decode("utf-8", "replace") for p in files)]
    for where, text in enumerate(shown):
        for secret in NEVER:
            assert secret not in text, (where, secret, text[:2000])


def test_a_failing_test_that_prints_the_secrets_shows_them_nowhere(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    repo = workload_repo(
        make_git_repo, test_command=["python", "-c", PRINT_AND_FAIL], rules_extra=SECRETS
    )
    env = {"CT_TOKEN": TOKEN, "CT_KEY": KEY}
    changed = ("--changed", "training_src/train.py")

    as_json = orchestrator(repo, *changed, "--format", "json", **env)
    as_table = orchestrator(repo, *changed, CI="true", **env)  # CI: every line of the steps

    assert (as_json.returncode, as_table.returncode) == (1, 1), as_json.stderr + as_table.stderr
    report = json.loads(as_json.stdout)
    assert {s["id"]: s["status"] for s in report["steps"]}["test"] == "failed"
    assert report["published"] is None
    # the steps' output is there, with the values replaced
    failed = f"failed with exit code 1: {REDACTED}"
    assert failed in as_json.stderr
    assert f"[test] token is {REDACTED}" in as_table.stdout.splitlines()
    assert f"[test] one line of the key: {REDACTED}" in as_table.stdout.splitlines()
    assert f"[test] {REDACTED}" in as_table.stdout.splitlines()  # the key's own lines
    assert failed in as_table.stdout  # the summary line
    assert "Traceback" not in as_json.stderr + as_table.stdout + as_table.stderr
    assert_never_shown(
        [as_json.stdout, as_json.stderr, as_table.stdout, as_table.stderr],
        repo.path / ".orchestrator",
    )


def test_a_missing_secret_stops_the_run_before_any_step(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    marker = "ran.txt"
    command = ["python", "-c", f"open({marker!r}, 'w').write('the test step ran')"]
    repo = workload_repo(make_git_repo, test_command=command, rules_extra=SECRETS)

    result = orchestrator(
        repo, "--changed", "training_src/train.py", "--format", "json", CT_TOKEN=TOKEN
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1  # one line, progress included
    assert result.stderr.startswith(
        "orchestrator: error: the secret CT_KEY is not set in the environment: "
    )
    assert 'CT_KEY="$(gcloud secrets versions access 2 --secret=ct-key' in result.stderr
    assert not (repo.path / marker).exists()
    assert not (repo.path / ".orchestrator" / "bucket").exists()
    assert_never_shown([result.stdout, result.stderr], repo.path / ".orchestrator")


@pytest.mark.slow
def test_a_run_that_succeeds_writes_the_secrets_into_no_artifact(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    """The whole embedded default: the test prints the secrets and passes, then upload,
    compile and the in-process pipeline run; the ledger and runs registry are written."""
    prints = PRINT_AND_FAIL.replace("sys.exit(1)", "sys.exit(0)")
    repo = workload_repo(make_git_repo, test_command=["python", "-c", prints], rules_extra=SECRETS)
    result = orchestrator(
        repo, "--changed", "training_src/train.py", CI="true", CT_TOKEN=TOKEN, CT_KEY=KEY
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "run succeeded" in result.stdout
    assert f"[test] token is {REDACTED}" in result.stdout.splitlines()
    bucket = repo.path / ".orchestrator" / "bucket"
    assert list(bucket.rglob("ledger/*/default.json")), "the run recorded its deploy"
    assert list(bucket.rglob("runs/*.json")), "the function recorded its run"
    assert_never_shown([result.stdout, result.stderr], repo.path / ".orchestrator")


def test_the_cloud_build_compile_step_shows_no_secret_in_its_error(
    make_git_repo: Callable[..., GitRepo], tmp_path: Path
) -> None:
    """``python -m orchestrator step compile_pipeline``, as the Cloud Build step runs it with
    the secrets its secretEnv set: the compile command prints one and fails."""
    from orchestrator.emit.cloudbuild import tool_step_args
    from orchestrator.services import Services
    from orchestrator.workflow import Target, name_build, plan_target

    compile_code = "; ".join(
        [
            "import os, sys",
            "print('compiling with', os.environ['CT_TOKEN'], file=sys.stderr)",
            "sys.exit(2)",
        ]
    )
    compile_line = f"\n[pipeline]\ncompile = {json.dumps(['python', '-c', compile_code])}\n"
    repo = workload_repo(make_git_repo, rules_extra=SECRETS + compile_line)
    services = Services.resolve(repo.path, run_env())
    planned = plan_target(Target(repo.path, repo.path / "rules.toml"), services.env(), services)
    artifacts = name_build(planned.tree, planned.rules, planned.plan, planned.ref)
    argv = [sys.executable, *tool_step_args("compile_pipeline", planned.rules, artifacts)]

    result = subprocess.run(
        argv,
        cwd=repo.path,
        env=run_env(
            PYTHONPATH=str(PROJECT),
            CT_TOKEN=TOKEN,
            CT_KEY=KEY,
            ORCHESTRATOR_LOCAL_BUCKET_ROOT=str(tmp_path / "bucket"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(f"failed: compiling with {REDACTED}\n"), result.stderr
    assert result.stderr.count("\n") == 1
    assert_never_shown([result.stdout, result.stderr], tmp_path)


def test_a_plan_and_the_config_it_shows_hold_names_and_never_values(git_repo: GitRepo) -> None:
    """--dry-run: the Cloud Build config names the secret; a value that turns up in the plan
    (here, as a changed path's name) is replaced there too."""
    import io

    from orchestrator.cli import main
    from tests.samples import SMALL_RULES

    git_repo.commit({"rules.toml": SMALL_RULES + SECRETS, "src/app.py": "x = 1\n"})
    value = "s3cr3t.*(v)[a]+lue"
    out, err = io.StringIO(), io.StringIO()
    argv = ["--repo", str(git_repo.path), "--dry-run", "--changed", f"src/{value}.py"]
    code = main(argv, stdout=out, stderr=err, env={"CT_TOKEN": value, "CT_KEY": KEY})
    assert (code, err.getvalue()) == (0, ""), err.getvalue()
    text = out.getvalue()
    assert f"src/{REDACTED}.py" in text
    assert value not in text
    assert 'versionName: "projects/demo-project/secrets/ct-token/versions/latest"' in text
    assert '- "CT_KEY"\n' in text and '- "CT_TOKEN"\n' in text  # the test step's secretEnv
