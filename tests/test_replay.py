"""Real change histories: three public ML CI/CD repositories, replayed commit by commit.

``../shared/replay/*.jsonl`` holds, per commit, its parents and its changed paths. Each history
is rebuilt as a real git repository (same DAG, merges included; file contents made up but
unique, so git sees exactly the recorded changes), then every commit is diffed and planned:

* the changed paths this tool reads equal the recorded ones;
* every changed path is accounted for exactly once: in some action's reasons, skipped by a
  rule, or unmatched;
* a commit that only touches documentation plans nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.git import Git
from orchestrator.changes import resolve_changes
from orchestrator.config import parse_rules
from orchestrator.planning import plan_changes

REPLAY = Path(__file__).resolve().parents[2] / "shared" / "replay"
HISTORIES = sorted(REPLAY.glob("*.jsonl")) if REPLAY.is_dir() else []

RULES = """
version = 1

[unmatched]
do = "all"

[[rule]]
name = "docs"
paths = ["*.md", "*.ipynb", "figures/", "images/", "notebooks/", "LICENSE", ".gitignore",
         ".DS_Store", "*.drawio", "*.pdf", "*.png"]
do = "skip"

[[rule]]
name = "pipeline"
paths = ["build/", "tfx-pipeline/", "modules/", "components/", "example/"]
do = "compile_pipeline"

[[rule]]
name = "trigger"
paths = ["cloud_function/"]
do = "deploy_function"

[[rule]]
name = "build-config"
paths = ["cloudbuild.yaml", ".github/", "scripts/", "utils/"]
do = "test"

[test]
command = ["true"]
"""


def _load(history: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in history.read_text().splitlines() if line.strip()]


def _replay(commits: list[dict[str, Any]], root: Path) -> dict[str, str]:
    """Build the history with git fast-import; returns recorded sha -> replayed sha."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    marks: dict[str, int] = {}
    stream = bytearray()
    for number, commit in enumerate(commits, start=1):
        marks[commit["sha"]] = number
        stream += f"commit refs/heads/main\nmark :{number}\n".encode()
        stream += f"committer r <r@example.com> {1600000000 + number} +0000\n".encode()
        stream += f"data {len(commit['sha'])}\n{commit['sha']}\n".encode()
        parents = [p for p in commit["parents"] if p in marks]
        if parents:
            stream += f"from :{marks[parents[0]]}\n".encode()
            stream += b"".join(f"merge :{marks[p]}\n".encode() for p in parents[1:])
        else:
            stream += b"deleteall\n"
        for change in commit["changes"]:
            path = change["path"]
            quoted = '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if change["status"] == "D":
                stream += f"D {quoted}\n".encode()
            else:
                data = f"{commit['sha']} {path}\n".encode()
                stream += f"M 100644 inline {quoted}\ndata {len(data)}\n".encode() + data + b"\n"
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    marks_file = root / ".git" / "replay-marks"
    subprocess.run(
        ["git", "fast-import", "--quiet", f"--export-marks={marks_file}"],
        cwd=root,
        input=bytes(stream),
        check=True,
        env=env,
    )
    by_mark = dict(line.split() for line in marks_file.read_text().splitlines())
    return {sha: by_mark[f":{number}"] for sha, number in marks.items()}


@pytest.mark.skipif(
    not HISTORIES and not os.environ.get("CI"),
    reason="../shared/replay is not beside this checkout",
)
@pytest.mark.parametrize("history", HISTORIES, ids=lambda p: p.stem)
def test_replayed_histories_diff_and_plan_as_recorded(history: Path, tmp_path: Path) -> None:
    commits = _load(history)
    replayed = _replay(commits, tmp_path / "repo")
    git = Git(tmp_path / "repo", env={"PATH": os.environ["PATH"]})
    rules = parse_rules(RULES, source="replay-rules.toml")
    docs_only = 0
    for commit in commits:
        head = replayed[commit["sha"]]
        changes = resolve_changes(git, base=None, head=head, env={})
        recorded = sorted((c["status"], c["path"]) for c in commit["changes"])
        assert sorted((c.status, c.path) for c in changes.changes) == recorded, commit["sha"]

        plan = plan_changes(changes, rules, ())
        accounted = [r.path for a in plan.actions for r in a.reasons if r.path is not None]
        explained = set(accounted) | {s.path for s in plan.skipped} | set(plan.unmatched)
        assert explained == {p for _, p in recorded}, commit["sha"]
        assert not {s.path for s in plan.skipped} & set(plan.unmatched)
        if all(s.rule == "docs" for s in plan.skipped) and len(plan.skipped) == len(recorded):
            docs_only += 1
            assert plan.actions == (), commit["sha"]
    assert docs_only > 0  # each history has documentation-only commits, planned as nothing


def test_replay_data_is_beside_the_checkout_in_ci() -> None:
    if os.environ.get("CI"):
        assert HISTORIES, f"no replay histories in {REPLAY}"
