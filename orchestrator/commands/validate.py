"""``validate``: load rules.toml and check it against the repository; with ``--cloud``, also
check that the Google Cloud resources exist and the build's permissions are held."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.changes import require_head
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_STEP_FAILED, ServiceUnreachable
from orchestrator.model import Rules
from orchestrator.output import error_line
from orchestrator.trees import CommitTree, WorkingTree
from orchestrator.workflow import Target, load_contexts, open_repo, with_overrides

if TYPE_CHECKING:
    from orchestrator.adapters.iam import Access, Endpoints, Probe
    from orchestrator.gcp_setup import Need


def run(target: Target, io: CommandIO, *, cloud: bool = False, access: Access | None = None) -> int:
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
        io.stderr.write(error_line(problem))
    if problems:
        return EXIT_BAD_INPUT
    io.stdout.write(
        f"{rules.source}: ok ({len(rules.rules)} rule(s), {len(rules.components)} component(s))\n"
    )
    if not cloud:
        return EXIT_OK
    return check_cloud(with_overrides(rules, io.env), io, access)


def check_cloud(rules: Rules, io: CommandIO, access: Access | None = None) -> int:
    """Each resource a build uses exists and each permission it needs is held by the caller
    (docs/gcp-setup.md, "Checking it"). One line per missing thing (exit 2); a service that
    cannot be reached is named (exit 1, which wins: the check is incomplete)."""
    # not on the planning path: imported only when asked for
    from orchestrator.adapters import iam
    from orchestrator.gcp_setup import build_needs, cloud_values

    values = cloud_values(rules)
    access = access or iam.Access(io.env)
    missing: list[str] = []
    unreachable: list[str] = []
    checked: list[str] = []
    if values.repository is None:
        io.stdout.write(
            f"cloud: registry {values.registry} is not an Artifact Registry repository "
            "(LOCATION-docker.pkg.dev/PROJECT/REPOSITORY): not checked\n"
        )
    for need in build_needs(values):
        probe = _probe(need, access.endpoints)
        try:
            answer = access.probe(probe)
        except ServiceUnreachable as exc:
            unreachable.append(f"unreachable: {need.label}: {exc}")
            continue
        checked.append(need.label)
        if answer.exists is False:
            missing.append(f"missing: {need.label} does not exist")
            continue
        lacking = answer.missing(probe)
        if not lacking:
            continue
        held = f"{', '.join(lacking)} not held ({need.role} grants them)"
        if answer.held is None:
            missing.append(f"missing: {need.label}: {held}; the test was refused: {answer.refused}")
        elif answer.exists is None:
            missing.append(
                f"missing: {need.label}: {held}, or it does not exist (the caller may not read it)"
            )
        else:
            missing.append(f"missing: {need.label}: {held}")
    for line in (*missing, *unreachable):
        io.stderr.write(error_line(line))
    if unreachable:
        return EXIT_STEP_FAILED
    if missing:
        return EXIT_BAD_INPUT
    io.stdout.write(f"cloud: ok: every permission a build needs is held on {', '.join(checked)}\n")
    return EXIT_OK


def _probe(need: Need, endpoints: Endpoints) -> Probe:
    from orchestrator.adapters import iam

    builders = {
        "project": iam.project_probe,
        "bucket": iam.bucket_probe,
        "topic": iam.topic_probe,
        "repository": iam.repository_probe,
        "service-account": iam.service_account_probe,
    }
    return builders[need.kind](endpoints, need.name, need.permissions)
