"""``step ACTION_ID --artifacts JSON``: perform one action; what the Cloud Build steps run.

The emitted build runs ``python -m orchestrator step <id> --rules rules.toml --artifacts
<json>`` for ``upload_source``, ``compile_pipeline`` and ``publish``, with the checkout as the
working directory. The steps are the local executor's (``run.steps``). ``publish`` goes to
Pub/Sub ([project].topic; the emulator when ``PUBSUB_EMULATOR_HOST`` is set). Storage is real
GCS, or the emulator / a directory bucket when their variables are set.
"""

from __future__ import annotations

from orchestrator import secrets
from orchestrator.artifacts import Artifacts
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_OK, OrchestratorError, StepFailed
from orchestrator.model import Plan
from orchestrator.run import steps
from orchestrator.workflow import Target, make_plan, with_overrides


def run(target: Target, action_id: str, artifacts_json: str, io: CommandIO) -> int:
    action = steps.action_from_id(action_id)
    artifacts = Artifacts.from_json(artifacts_json)
    rules = with_overrides(load_rules(target.rules_path), io.env)
    # a Cloud Build step's log must not show the secrets its secretEnv gave it
    io.redactor.add(secrets.values(rules, io.env))

    def log(line: str) -> None:
        io.stdout.write(f"[{action_id}] {line}\n")
        io.stdout.flush()

    ctx = steps.StepContext(
        repo=target.repo,
        rules=rules,
        artifacts=artifacts,
        env=io.env,
        publish_mode="pubsub",
        plan=_plan_for_summaries(target, artifacts, io) if action.kind == "publish" else None,
        log=log,
        redact=io.redactor.redact,
    )
    outcome = steps.run_step(action, ctx)
    if outcome.error:
        raise StepFailed(outcome.error)
    log(outcome.message or "done")
    return EXIT_OK


def _plan_for_summaries(target: Target, artifacts: Artifacts, io: CommandIO) -> Plan | None:
    """The plan again, for the message's action reasons (base from ``_BASE_SHA`` in Cloud Build).

    A build whose workspace has no git history cannot plan; the message then lists ``publish``
    alone.
    """
    try:
        _, plan = make_plan(
            Target(repo=target.repo, rules_path=target.rules_path, base=target.base,
                   head=artifacts.commit),
            io.env,
        )  # fmt: skip
    except OrchestratorError:
        return None
    return plan
