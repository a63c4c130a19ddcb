"""A temporary git repository holding a copy of this project's workload, for executor tests.

``workload_repo(make_git_repo, test_command=[...])`` copies the working tree of the workload
folders (pipeline/, function/, training_src/, components/) with rules.toml, pyproject.toml and
.gitignore into a new repository and commits it once. rules.toml's ``[test] command`` is
replaced (the real one runs this project's workload tests, which are not copied); extra
``rules.toml`` lines can be appended (component build args, for example).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.fixtures.gitrepo import GitRepo, git_env

PROJECT = Path(__file__).resolve().parents[2]
WORKLOAD = ("pipeline", "function", "training_src", "components")
FILES = ("rules.toml", "pyproject.toml", ".gitignore")
#: environment variables that would move a run off the embedded local default
SERVICE_VARS = (
    "STORAGE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "ORCHESTRATOR_LOCAL_BUCKET_ROOT",
    "DOCKER_HOST",
    "CI",
)

QUICK_TEST = ["python", "-m", "compileall", "-q", "training_src"]


def workload_repo(
    make_git_repo: Callable[..., GitRepo],
    *,
    name: str = "repo",
    test_command: Sequence[str] = QUICK_TEST,
    rules_extra: str = "",
    rules_replace: Mapping[str, str] | None = None,
) -> GitRepo:
    repo = make_git_repo(name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "ct_*.py")
    for folder in WORKLOAD:
        shutil.copytree(PROJECT / folder, repo.path / folder, ignore=ignore)
    for file in FILES:
        shutil.copyfile(PROJECT / file, repo.path / file)
    rules = (repo.path / "rules.toml").read_text()
    rules, count = re.subn(
        r"(?m)^command = .*$", f"command = {json.dumps(list(test_command))}", rules
    )
    assert count == 1, "rules.toml has no [test] command line to replace"
    for old, new in (rules_replace or {}).items():
        assert old in rules
        rules = rules.replace(old, new)
    (repo.path / "rules.toml").write_text(rules + rules_extra)
    repo.commit({}, message="the workload")
    return repo


def run_env(**extra: str) -> dict[str, str]:
    """The process environment for a CLI subprocess: isolated git, no service variables."""
    env = {k: v for k, v in git_env().items() if k not in SERVICE_VARS}
    env.update(extra)
    return env


def append_line(repo: GitRepo, rel: str, line: str) -> None:
    path = repo.path / rel
    path.write_text(path.read_text() + line + "\n")
