"""``explain PATH...``: which rules and patterns match each path, and what it would cause."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator import render
from orchestrator.changes import require_head
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_OK
from orchestrator.matching import Matcher, RuleExplanation
from orchestrator.model import ChangedPath, ChangeSet
from orchestrator.planning import UnmatchedPathsError, plan_changes
from orchestrator.workflow import Target, open_repo


def run(target: Target, paths: Sequence[str], io: CommandIO) -> int:
    rules = load_rules(target.rules_path)
    matcher = Matcher(rules.rules)
    contexts = [c.context for c in rules.components]
    existing: frozenset[str] = frozenset()
    # Git is asked only when the answer depends on it: the components' contexts, or a --head
    # that must name a commit (not "nothing" for a ref that does not exist).
    if contexts or target.head != "HEAD":
        git = open_repo(target.repo)
        head = require_head(git, target.head).sha
        if contexts:
            existing = git.existing_dirs(head, contexts, target.working_tree)
    explained: list[tuple[str, Sequence[RuleExplanation], Sequence[str], str]] = []
    for path in paths:
        one = ChangeSet(None, target.head, "explain", (ChangedPath("M", path),))
        try:
            plan = plan_changes(one, rules, existing, matcher=matcher)
        except UnmatchedPathsError:
            explained.append((path, (), [], '[unmatched] do = "error": the plan would stop here'))
            continue
        if plan.actions:
            outcome = "would plan"
        elif plan.skipped:
            outcome = f"skipped (rule {plan.skipped[0].rule})"
        else:
            outcome = "nothing"
        if plan.unmatched:
            outcome = f'matches no rule; [unmatched] do = "{rules.unmatched}": ' + outcome
        explained.append((path, matcher.explain(path), [a.id for a in plan.actions], outcome))
    io.stdout.write(render.render_explanations(explained))
    return EXIT_OK
