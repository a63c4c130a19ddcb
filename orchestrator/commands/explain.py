"""``explain PATH...``: which rules and patterns match each path, and what it would cause."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator import render
from orchestrator.changes import require_head
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.contexts import BuildContext
from orchestrator.errors import EXIT_OK
from orchestrator.matching import Matcher, RuleExplanation
from orchestrator.model import ChangedPath, ChangeSet
from orchestrator.planning import UnmatchedPathsError, plan_changes
from orchestrator.trees import CommitTree, WorkingTree
from orchestrator.workflow import Target, load_contexts, open_repo


def run(target: Target, paths: Sequence[str], io: CommandIO) -> int:
    rules = load_rules(target.rules_path)
    matcher = Matcher(rules.rules)
    contexts: dict[str, BuildContext] = {}
    # Git is asked only when the answer depends on it: the components' contexts, or a --head
    # that must name a commit (not "nothing" for a ref that does not exist).
    if rules.components or target.head != "HEAD":
        git = open_repo(target.repo)
        head = require_head(git, target.head).sha
        tree = WorkingTree(git) if target.working_tree else CommitTree(git, head)
        contexts = load_contexts(tree, rules)
    existing = [c.component.context for c in contexts.values() if c.exists]
    explained: list[tuple[str, Sequence[RuleExplanation], Sequence[str], str]] = []
    for path in paths:
        one = ChangeSet(None, target.head, "explain", (ChangedPath("M", path),))
        try:
            plan = plan_changes(one, rules, existing, matcher=matcher, contexts=contexts)
        except UnmatchedPathsError:
            explained.append((path, (), [], '[unmatched] do = "error": the plan would stop here'))
            continue
        if plan.actions:
            outcome = "would plan"
        elif plan.skipped:
            skipped = plan.skipped[0]
            outcome = f"skipped (rule {skipped.rule}" + (
                f": {skipped.note})" if skipped.note else ")"
            )
        else:
            outcome = "nothing"
        if plan.unmatched:
            outcome = f'matches no rule; [unmatched] do = "{rules.unmatched}": ' + outcome
        explained.append((path, matcher.explain(path), [a.id for a in plan.actions], outcome))
    io.stdout.write(render.render_explanations(explained))
    return EXIT_OK
