"""Real change histories: three public ML CI/CD repositories, replayed commit by commit with
rules files written for their layouts (``bench/replay/<name>.toml``).

For every commit of every history, through the same entry point as ``plan``:

* the changed paths this tool reads equal the recorded ones;
* every changed path is accounted for exactly once: in some action's reasons, skipped by a
  rule, or unmatched;
* the planned actions equal what an independent reading of the README gives (with git
  itself deciding what each pattern matches; see ``tests/replaying.py``);
* a commit that only touches documentation plans nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.workflow import Target, make_plan
from tests.gitcheck import GitIgnoreOracle
from tests.replaying import (
    HISTORIES,
    REPLAY,
    RULES_DIR,
    ReadmeRules,
    everything,
    files_at,
    load,
    pattern_verdicts,
    readme_actions,
    replay,
    touched,
)


@pytest.mark.skipif(
    not HISTORIES and not os.environ.get("CI"),
    reason="../shared/replay is not beside this checkout",
)
@pytest.mark.parametrize("history", HISTORIES, ids=lambda p: p.stem)
def test_replayed_histories_plan_as_the_readme_says(history: Path, tmp_path: Path) -> None:
    commits = load(history)
    repo = tmp_path / "repo"
    replayed = replay(commits, repo)
    rules_path = RULES_DIR / f"{history.stem}.toml"
    readme = ReadmeRules.read(rules_path)
    all_paths = sorted({p for c in commits for p in touched(c)})
    verdicts = pattern_verdicts(GitIgnoreOracle(tmp_path), readme.patterns, all_paths)
    docs_only = planned = 0
    for commit in commits:
        head = replayed[commit["sha"]]
        _, plan = make_plan(Target(repo=repo, rules_path=rules_path, head=head), env={})
        recorded = sorted((c["status"], c["path"]) for c in commit["changes"])
        assert sorted((c.status, c.path) for c in plan.changes) == recorded, commit["sha"]

        accounted = [r.path for a in plan.actions for r in a.reasons if r.path is not None]
        explained = set(accounted) | {s.path for s in plan.skipped} | set(plan.unmatched)
        # what an `all` rule gave every action is one reason per pattern with its path count:
        # the paths it does not name are the others that pattern matches, as many as it says
        counted = {(r.rule, r.pattern): r.path_count for a in plan.actions for r in a.reasons
                   if r.path_count > 1 and r.pattern is not None}  # fmt: skip
        for (_, pattern), count in counted.items():
            hit = {p for p in touched(commit) if verdicts[pattern][p]}
            assert len(hit) >= count, commit["sha"]
            explained |= hit
        assert explained == set(touched(commit)), commit["sha"]
        assert not {s.path for s in plan.skipped} & set(plan.unmatched)

        files = files_at(repo, head)
        expected = readme_actions(readme, touched(commit), verdicts, files)
        assert {a.id for a in plan.actions} == expected, (commit["sha"], commit["changes"])
        assert expected <= everything(readme, files)
        planned += len(plan.actions)
        docs = [s for s in plan.skipped if s.rule == "docs"]
        if docs and len(docs) == len(touched(commit)):
            docs_only += 1
            assert plan.actions == (), commit["sha"]
    assert docs_only > 0  # each history has documentation-only commits, planned as nothing
    assert planned > 0


def test_every_history_has_a_rules_file() -> None:
    for history in HISTORIES:
        assert (RULES_DIR / f"{history.stem}.toml").is_file(), history.stem


def test_replay_data_is_beside_the_checkout_in_ci() -> None:
    if os.environ.get("CI"):
        assert HISTORIES, f"no replay histories in {REPLAY}"
