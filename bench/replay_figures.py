"""Replay three public ML CI/CD histories and count what the tool would have run.

    python bench/replay_figures.py

For each history in ../shared/replay (one JSON object per commit), rebuild it as a git
repository, plan every commit with the rules written for its layout (bench/replay/*.toml)
through the same entry point as ``plan``, and compare with a CI that rebuilds everything on
every commit (every image, the upload, the compile, the function, the tests and a run).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.workflow import Target, make_plan
from tests.replaying import (
    HISTORIES,
    RULES_DIR,
    ReadmeRules,
    everything,
    files_at,
    load,
    replay,
)


def main() -> int:
    if not HISTORIES:
        print("no histories: ../shared/replay is not beside this checkout")
        return 1
    header = (
        f"{'repository':<36} {'commits':>7} {'planned':>8} {'rebuild-all':>11} "
        f"{'saved':>6} {'no-op commits':>13} {'ms/plan':>8}"
    )
    print(header)
    print("-" * len(header))
    for history in HISTORIES:
        commits = load(history)
        rules_path = RULES_DIR / f"{history.stem}.toml"
        readme = ReadmeRules.read(rules_path)
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            replayed = replay(commits, repo)
            planned = baseline = idle = 0
            kinds: Counter[str] = Counter()
            started = time.perf_counter()
            for commit in commits:
                head = replayed[commit["sha"]]
                _, plan = make_plan(Target(repo=repo, rules_path=rules_path, head=head), env={})
                planned += len(plan.actions)
                idle += not plan.actions
                kinds.update(a.id.partition(":")[0] for a in plan.actions)
            elapsed = (time.perf_counter() - started) / len(commits) * 1000
            for commit in commits:
                baseline += len(everything(readme, files_at(repo, replayed[commit["sha"]])))
        saved = 1 - planned / baseline if baseline else 0.0
        print(
            f"{history.stem:<36} {len(commits):>7} {planned:>8} {baseline:>11} "
            f"{saved:>6.0%} {idle:>13} {elapsed:>8.1f}"
        )
        print(f"{'':<36} planned by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
