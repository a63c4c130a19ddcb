"""The planning path as one composition: rules.toml + git -> ``Plan``.

Shared by every command that needs a plan (plan, --dry-run, emit, run), so they all plan the
same way. Imports nothing heavy: no kfp, google-cloud or docker on this path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.adapters.git import Git
from orchestrator.changes import resolve_changes
from orchestrator.config import load_rules
from orchestrator.errors import InputError
from orchestrator.model import Plan, Rules
from orchestrator.planning import plan_changes


@dataclass(frozen=True, slots=True)
class Target:
    """What the user pointed the tool at: a repository, its rules file, a range."""

    repo: Path
    rules_path: Path
    base: str | None = None
    head: str = "HEAD"
    working_tree: bool = False


def open_repo(repo: Path) -> Git:
    if not repo.is_dir():
        raise InputError(f"--repo {repo}: no such directory")
    return Git(repo)


def make_plan(target: Target, env: Mapping[str, str]) -> tuple[Rules, Plan]:
    rules = load_rules(target.rules_path)
    git = open_repo(target.repo)
    changes = resolve_changes(
        git, base=target.base, head=target.head, working_tree=target.working_tree, env=env
    )
    contexts = [c.context for c in rules.components]
    existing = git.existing_dirs(changes.head, contexts, target.working_tree) if contexts else ()
    return rules, plan_changes(changes, rules, existing)
