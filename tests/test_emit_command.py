"""``emit`` and the config ``--dry-run`` shows, through ``main`` in real temporary repositories."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.adapters.cloudbuild import build_from_dict
from orchestrator.cli import main
from tests.fixtures.gitrepo import GitRepo, git_env
from tests.samples import SMALL_RULES as RULES


def _repo(git_repo: GitRepo, rules: str = RULES) -> GitRepo:
    git_repo.commit(
        {
            "rules.toml": rules,
            "README.md": "# demo\n",
            "src/app.py": "x = 1\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
        },
        message="root",
    )
    return git_repo


def _cli(repo: GitRepo, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--repo", str(repo.path), *args], stdout=out, stderr=err, env=env or {})
    return code, out.getvalue(), err.getvalue()


def test_emit_writes_yaml_that_parses_into_a_build(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n", "components/trainer/Dockerfile": "FROM busybox\n"})
    code, out, err = _cli(repo, "emit")
    assert (code, err) == (0, "")
    assert out.startswith("# Cloud Build config emitted by ct-orchestrator for ")
    config = yaml.safe_load(out)
    build = build_from_dict(config)
    planned = [a["id"] for a in json.loads(_cli(repo, "plan", "--format", "json")[1])["actions"]]
    assert {"test", "build_image:trainer", "publish"} <= set(planned)
    assert [s.id for s in build.steps] == ["setup", *planned]
    assert config["substitutions"]["_HEAD_SHA"] == repo.rev()


def test_emit_output_file(git_repo: GitRepo, tmp_path: Path) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n"})
    target = tmp_path / "cloudbuild.generated.yaml"
    code, out, err = _cli(repo, "emit", "--output", str(target))
    assert (code, out) == (0, "")
    assert str(target) in err
    assert [s["id"] for s in yaml.safe_load(target.read_text())["steps"]] == ["test"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_emit_output_into_a_missing_directory_is_one_clear_error(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    repo = _repo(git_repo)
    code, _, err = _cli(repo, "emit", "--output", str(tmp_path / "nope" / "b.yaml"))
    assert code == 2
    assert err.startswith("orchestrator: error: cannot write --output ")
    assert "Traceback" not in err


def test_empty_plan_emits_nothing_and_says_so(git_repo: GitRepo, tmp_path: Path) -> None:
    repo = _repo(git_repo)
    repo.commit({"README.md": "# changed docs\n"})
    target = tmp_path / "b.yaml"
    code, out, err = _cli(repo, "emit", "-o", str(target))
    assert (code, out) == (0, "")
    assert "no build was emitted" in err
    assert not target.exists()


def test_dry_run_shows_the_config_after_the_plan(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"components/trainer/Dockerfile": "FROM busybox\n"})
    code, out, err = _cli(repo, "--dry-run")
    assert (code, err) == (0, "")
    plan_text, marker, config_text = out.partition(
        "Cloud Build config (python -m orchestrator emit):"
    )
    assert marker, out
    assert "build_image:trainer" in plan_text
    steps = yaml.safe_load(config_text)["steps"]
    assert "build_image:trainer" in [s["id"] for s in steps]
    # the same text `emit` writes
    assert config_text.strip() == _cli(repo, "emit")[1].strip()


def test_dry_run_markdown_fences_the_config(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n"})
    code, out, _ = _cli(repo, "--dry-run", "--format", "markdown")
    assert code == 0
    _, _, fenced = out.partition("### Cloud Build config\n\n```yaml\n")
    body, fence, rest = fenced.partition("```\n")
    assert fence and rest == ""
    assert yaml.safe_load(body)["steps"][0]["id"] == "test"


def test_plan_without_dry_run_shows_no_config(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n"})
    code, out, _ = _cli(repo, "plan")
    assert code == 0
    assert "Cloud Build config" not in out
    assert "Cloud Build config" in _cli(repo, "--dry-run", "plan")[1]


def test_dry_run_json_keeps_the_plan_schema(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n"})
    code, out, _ = _cli(repo, "--dry-run", "--format", "json")
    assert code == 0
    assert json.loads(out) == json.loads(_cli(repo, "plan", "--format", "json")[1])


def test_dry_run_github_adds_nothing(git_repo: GitRepo, tmp_path: Path) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n"})
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "sum")}
    code, out, _ = _cli(repo, "--dry-run", "--format", "github", env=env)
    assert code == 0
    assert "Cloud Build config" not in out
    assert "Cloud Build config" not in (tmp_path / "sum").read_text()
    assert "has_work=true" in (tmp_path / "out").read_text()


def test_dry_run_of_an_empty_plan_says_there_is_no_config(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"README.md": "# changed\n"})
    code, out, _ = _cli(repo, "--dry-run")
    assert code == 0
    assert out.endswith("Cloud Build config: none (the plan has no actions)\n")


def test_dry_run_without_project_settings_prints_the_plan_and_a_note(git_repo: GitRepo) -> None:
    rules = RULES.replace('bucket = "demo-bucket"\n', "")
    repo = _repo(git_repo, rules)
    repo.commit({"src/app.py": "x = 2\n"})
    code, out, err = _cli(repo, "--dry-run")
    assert (code, err) == (0, "")
    plan_text, _, note = out.partition("\nCloud Build config: not shown: ")
    assert "1. test" in plan_text
    assert note.count("\n") == 1
    assert "[project.bucket] [project] bucket is required" in note
    # emit itself refuses, with the same sentence
    code, out, err = _cli(repo, "emit")
    assert (code, out) == (2, "")
    assert "[project] bucket is required" in err


def test_dry_run_imports_no_cloud_library(git_repo: GitRepo) -> None:
    repo = _repo(git_repo)
    repo.commit({"src/app.py": "x = 2\n", "components/trainer/Dockerfile": "FROM busybox\n"})
    script = (
        "import sys, io\n"
        "from orchestrator.cli import main\n"
        f"argv = ['--repo', {str(repo.path)!r}, '--dry-run']\n"
        "code = main(argv, stdout=io.StringIO(), env={})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('kfp', 'docker', 'yaml', 'grpc') or m.startswith('google.cloud.'))\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=git_env(), check=True
    )
    assert done.stdout.strip() == "0 []"


FUNCTION_SETTINGS = """
[[rule]]
name = "function"
paths = ["function/"]
do = "deploy_function"

[function]
memory = "1Gi"
ingress = "internal-and-gclb"

[function.env]
RUN_AS = "runner@demo-project.iam.gserviceaccount.com"
PRICE = "$5, with a comma"
"""
FUNCTION_RULES = RULES + FUNCTION_SETTINGS


def test_emit_deploys_the_function_with_its_settings(git_repo: GitRepo) -> None:
    repo = _repo(git_repo, FUNCTION_RULES)
    repo.commit({"function/main.py": "def on_message(event):\n    pass\n"})
    code, out, err = _cli(repo, "emit")
    assert (code, err) == (0, "")
    config = yaml.safe_load(out)
    build_from_dict(config)
    [deploy] = [s for s in config["steps"] if s["id"] == "deploy_function"]
    args = deploy["args"]
    assert args[args.index("--memory") + 1] == "1Gi"
    assert args[args.index("--ingress-settings") + 1] == "internal-and-gclb"
    assert args[args.index("--timeout") + 1] == "540s"
    assert "--retry" in args
    env_vars = args[args.index("--set-env-vars") + 1]
    # ',' and '@' are in values, ':' in gs:// URIs: ';' splits the list
    assert env_vars.startswith("^;^")
    assert ";PRICE=$$5, with a comma;" in env_vars
    assert ";RUN_AS=runner@demo-project.iam.gserviceaccount.com" in env_vars


def test_emit_refuses_a_service_account_cloud_build_would_refuse(git_repo: GitRepo) -> None:
    account = 'service_account = "b@p.iam.gserviceaccount.com"'
    rules = RULES + f'\n[build]\nlogging = "LEGACY"\n{account}\n'
    repo = _repo(git_repo, rules)
    repo.commit({"src/app.py": "x = 2\n"})
    code, out, err = _cli(repo, "emit")
    assert (code, out) == (2, "")
    line = rules.splitlines().index(account) + 1
    assert err.startswith(f"orchestrator: error: {repo.path / 'rules.toml'}:{line}: ")
    assert "[build.service_account] Cloud Build refuses a build with its own service account" in err
