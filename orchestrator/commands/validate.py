"""``validate``: load rules.toml and check it against the repository."""

from __future__ import annotations

from orchestrator.changes import require_head
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_BAD_INPUT, EXIT_OK
from orchestrator.trees import CommitTree, WorkingTree
from orchestrator.workflow import Target, load_contexts, open_repo


def run(target: Target, io: CommandIO) -> int:
    rules = load_rules(target.rules_path)
    problems = []
    # Git is asked only when the answer depends on it: the components' contexts (and their
    # ignore files, which must parse), or a --head that must name a commit (its own error,
    # the one plan gives, not a missing context).
    if rules.components or target.head != "HEAD":
        git = open_repo(target.repo)
        head = require_head(git, target.head).sha
        tree = WorkingTree(git) if target.working_tree else CommitTree(git, head)
        contexts = load_contexts(tree, rules)
        for context in contexts.values():
            if not context.exists:
                component = context.component
                problems.append(
                    f"{rules.source}: [components.{component.name}] context "
                    f"'{component.context or '.'}' does not exist at {target.head}"
                )
    for problem in problems:
        io.stderr.write(f"orchestrator: error: {problem}\n")
    if problems:
        return EXIT_BAD_INPUT
    io.stdout.write(
        f"{rules.source}: ok ({len(rules.rules)} rule(s), {len(rules.components)} component(s))\n"
    )
    return EXIT_OK
