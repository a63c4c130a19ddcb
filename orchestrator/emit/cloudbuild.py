"""Plan -> a Cloud Build ``Build`` (as the dict ``gcloud builds submit --config`` reads). Pure.

One step per action, ``waitFor`` from ``needs`` (a step that needs nothing waits for nothing,
``["-"]``, so independent image builds run in parallel), plus one ``setup`` step when any
action runs this tool inside the build: it installs the orchestrator into a virtualenv under
``/workspace`` that those steps share.

Steps hand results to later steps through files under ``.orchestrator/outputs/`` in the
workspace (the image digest of each ``build_image``, for example), exactly as the local
executor does, so both executors run the same steps.

Every string a step carries is escaped for Cloud Build substitution (``$`` -> ``$$``): a path
or value containing ``$`` reaches the step unchanged.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrator import shipped
from orchestrator.artifacts import Artifacts
from orchestrator.contexts import context_path
from orchestrator.errors import ConfigError
from orchestrator.ledger import Location
from orchestrator.message import branch_of
from orchestrator.model import Action, Plan, Rules

WORKSPACE = "/workspace"
VENV = f"{WORKSPACE}/.orchestrator/venv"
OUTPUTS_DIR = ".orchestrator/outputs"
SETUP_STEP = "setup"
#: Actions that run ``python -m orchestrator step <id>`` inside the build.
TOOL_ACTIONS = ("upload_source", "compile_pipeline", "publish")


def output_file(action_id: str) -> str:
    """Where an action leaves its result for later steps (relative to the workspace)."""
    return f"{OUTPUTS_DIR}/{action_id.replace(':', '-')}.json"


def escape(value: str) -> str:
    """Make Cloud Build substitution leave ``value`` as it is."""
    return value.replace("$", "$$")


def emit_build(plan: Plan, rules: Rules, artifacts: Artifacts) -> dict[str, Any] | None:
    """The Build for ``plan``, or ``None`` when there is nothing to do."""
    if not plan.actions:
        return None
    settings = rules.build
    uses_tool = any(a.kind in TOOL_ACTIONS for a in plan.actions)
    steps: list[dict[str, Any]] = []
    if uses_tool or plan.action("deploy_function"):
        steps.append(_setup_step(rules, plan))
    for action in plan.actions:
        steps.append(_step(action, rules, artifacts, uses_setup=bool(steps and uses_tool)))

    options: dict[str, Any] = {
        "logging": settings.logging,
        "substitutionOption": "ALLOW_LOOSE",
    }
    if settings.machine_type:
        options["machineType"] = settings.machine_type
    build: dict[str, Any] = {
        "steps": [_escaped(step) for step in steps],
        "timeout": settings.timeout,
        "options": options,
        "substitutions": {
            "_HEAD_SHA": plan.head,
            "_BASE_SHA": plan.base or "",
            "_REF": artifacts.ref,  # substitution values are not themselves substituted
        },
        "tags": _tags(plan, artifacts),
    }
    if settings.service_account:
        build["serviceAccount"] = _service_account_name(rules, settings.service_account)
    return build


def _setup_step(rules: Rules, plan: Plan) -> dict[str, Any]:
    commands = [
        f"python -m venv {VENV}",
        f"{VENV}/bin/pip install --quiet --disable-pip-version-check "
        f"{shlex.quote(rules.build.install)}",
    ]
    if plan.action("deploy_function"):
        # The function validates messages with the same modules that publish them.
        commands.append(shipped.copy_command(f"{VENV}/bin/python", rules.function.dir))
    return {
        "id": SETUP_STEP,
        "name": rules.build.python_image,
        "entrypoint": "bash",
        "args": ["-euo", "pipefail", "-c", " && ".join(commands)],
        "waitFor": ["-"],
    }


def _step(
    action: Action, rules: Rules, artifacts: Artifacts, *, uses_setup: bool
) -> dict[str, Any]:
    wait = list(action.needs)
    step: dict[str, Any]
    if action.kind == "test":
        test = rules.test
        if test is None:  # the loader refuses a rule that says test without [test]
            raise ConfigError("the plan has a test step but no [test] command", file=rules.source)
        script = shlex.join(test.command)
        if test.setup:
            script = f"{test.setup} && {script}"
        step = {
            "name": test.image,
            "entrypoint": "bash",
            "args": ["-euo", "pipefail", "-c", script],
        }
    elif action.kind == "build_image":
        step = _image_step(action, rules, artifacts)
    elif action.kind == "deploy_function":
        step = {"name": rules.build.gcloud_image, "entrypoint": "gcloud"}
        step["args"] = deploy_function_args(rules, artifacts)
        wait.append(SETUP_STEP)
    else:
        step = {
            "name": rules.build.python_image,
            "entrypoint": f"{VENV}/bin/python",
            "args": tool_step_args(action.id, rules, artifacts),
        }
        if uses_setup:
            wait.append(SETUP_STEP)
    step = {"id": action.id, **step, "waitFor": wait or ["-"]}
    return step


def tool_step_args(action_id: str, rules: Rules, artifacts: Artifacts) -> list[str]:
    """``python -m orchestrator step ...``: how a build runs one action with this tool."""
    return [
        "-m",
        "orchestrator",
        "step",
        action_id,
        "--rules",
        _relative_rules(rules),
        "--artifacts",
        artifacts.to_json(),
    ]


def _relative_rules(rules: Rules) -> str:
    return rules.source if not rules.source.startswith("/") else "rules.toml"


def _image_step(action: Action, rules: Rules, artifacts: Artifacts) -> dict[str, Any]:
    component = rules.component(action.target or "")
    if component is None:
        raise ConfigError(f"unknown component {action.target!r}", file=rules.source)
    image = artifacts.image(component.name)
    build = ["docker", "build", "--network=cloudbuild", "-t", image]
    build += ["-f", context_path(component.context, component.dockerfile)]
    for name, value in component.build_args:
        build += ["--build-arg", f"{name}={value}"]
    build.append(component.context or ".")  # "" is the repository root: docker build .
    out = output_file(action.id)
    script = " && ".join(
        [
            shlex.join(build),
            shlex.join(["docker", "push", image]),
            f"mkdir -p {OUTPUTS_DIR}",
            "digest=$(docker inspect --format='{{index .RepoDigests 0}}' "
            + shlex.quote(image)
            + ")",
            f'printf \'{{"image": "%s"}}\\n\' "$digest" > {shlex.quote(out)}',
        ]
    )
    return {
        "name": rules.build.docker_image,
        "entrypoint": "bash",
        "args": ["-euo", "pipefail", "-c", script],
    }


def deploy_function_args(rules: Rules, artifacts: Artifacts) -> list[str]:
    """``gcloud functions deploy``: gen2, Pub/Sub trigger, never unauthenticated."""
    fn = rules.function
    project = rules.project
    if not project.topic:
        raise ConfigError(
            "[project] topic is required to deploy the trigger function",
            file=rules.source,
            key="project.topic",
        )
    env = {
        "CT_BUCKET": artifacts.bucket,
        "CT_BACKEND": "vertex",
        **({"CT_PROJECT": project.gcp_project} if project.gcp_project else {}),
        **({"CT_REGION": project.region} if project.region else {}),
        "CT_PIPELINE_ROOT": f"gs://{artifacts.bucket}/pipeline-root",
        # the runs registry and the deploy ledger it retrains from on new data
        "CT_STATE_PREFIX": project.prefix,
        "CT_LEDGER_URI": Location(artifacts.bucket, project.prefix, branch_of(artifacts.ref)).uri,
        **({"CT_DATA_PREFIX": rules.data.prefix} if rules.data.prefix else {}),
        **({"CT_DATA_BUCKET": rules.data.bucket} if rules.data.bucket else {}),
        **dict(fn.env),
    }
    args = ["functions", "deploy", fn.name, "--gen2", "--quiet"]
    if project.gcp_project:
        args += ["--project", project.gcp_project]
    if project.region:
        args += ["--region", project.region]
    args += [
        "--runtime",
        fn.runtime,
        "--source",
        fn.dir,
        "--entry-point",
        fn.entry_point,
        "--trigger-topic",
        project.topic,
        "--no-allow-unauthenticated",
        "--set-env-vars",
        _env_vars(env),
    ]
    if fn.service_account:
        args += ["--service-account", fn.service_account]
    return args


def _env_vars(env: dict[str, str]) -> str:
    """gcloud's KEY=VALUE list; a value with a comma switches the delimiter (gcloud escaping)."""
    pairs = [f"{k}={v}" for k, v in sorted(env.items())]
    if any("," in p for p in pairs):
        return "^@^" + "@".join(pairs)
    return ",".join(pairs)


def _service_account_name(rules: Rules, account: str) -> str:
    if account.startswith("projects/"):
        return account
    project = rules.project.gcp_project or "-"
    return f"projects/{project}/serviceAccounts/{account}"


def _tags(plan: Plan, artifacts: Artifacts) -> list[str]:
    branch = artifacts.ref.removeprefix("refs/heads/").removeprefix("refs/")
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in branch)[:100]
    tags = ["ct-orchestrator", f"commit-{plan.head[:12]}"]
    if safe and safe[0].isalnum():
        tags.append(f"ref-{safe}")
    return tags


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: (_escaped(v) if k not in ("id", "waitFor") else v) for k, v in value.items()}
    return value
