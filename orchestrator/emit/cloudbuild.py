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

Secrets (``[build] secret_env``) are named, never carried: the build lists each Secret Manager
version under ``availableSecrets.secretManager`` and the steps that get them
(``secrets.RECEIVES_SECRETS``) list their names in ``secretEnv``, so Cloud Build sets them in
those steps' environment only. Cloud Build logs what a step prints as printed, so the test step
masks each secret's value in its own output (:func:`mask_script`); the tool's steps redact
theirs themselves.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import unicodedata
from collections.abc import Mapping
from typing import Any

from orchestrator import shipped
from orchestrator.artifacts import Artifacts
from orchestrator.contexts import context_path
from orchestrator.errors import ConfigError
from orchestrator.ledger import Location
from orchestrator.message import branch_of
from orchestrator.model import Action, Plan, Rules
from orchestrator.output import MIN_LINE_MASK, REDACTED
from orchestrator.secrets import RECEIVES_SECRETS, needed

WORKSPACE = "/workspace"
VENV = f"{WORKSPACE}/.orchestrator/venv"
OUTPUTS_DIR = ".orchestrator/outputs"
SETUP_STEP = "setup"
#: Actions that run ``python -m orchestrator step <id>`` inside the build.
TOOL_ACTIONS = ("upload_source", "compile_pipeline", "publish")
#: What Cloud Build accepts as a tag: it refuses any other with 'invalid build tag ...: must
#: match format "^[\w][\w.-]{0,127}$"' (Build.tags, https://cloud.google.com/build/docs/
#: build-config-file-schema#tags). Its regexes are RE2's, where \w is ASCII [0-9A-Za-z_]
#: (https://github.com/google/re2/blob/main/doc/syntax.txt), hence re.ASCII.
TAG_PATTERN = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_TAG_LENGTH = 128
#: Delimiters tried, in order, for ``--set-env-vars``: the first that no key or value holds.
#: Never '=' (it splits a key from its value), '^' (it opens the delimiter syntax) or '$'
#: (Cloud Build substitution).
ENV_DELIMITERS = (",", "@", ":", ";", "|", "#", "~", "!", "%", "&", "+", "*")


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
    secret_names = needed(rules, plan)
    for action in plan.actions:
        uses_setup = bool(steps and uses_tool)
        steps.append(_step(action, rules, artifacts, uses_setup=uses_setup, secrets=secret_names))

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
        **({"logsBucket": settings.logs_bucket} if settings.logs_bucket else {}),
        "substitutions": {
            "_HEAD_SHA": plan.head,
            "_BASE_SHA": plan.base or "",
            "_REF": artifacts.ref,  # substitution values are not themselves substituted
        },
        "tags": _tags(plan, artifacts),
    }
    if secret_names:
        # "Secret environment variables must be unique across all of a build's secrets, and
        # must be used by at least one build step" (SecretManagerSecret.env,
        # https://cloud.google.com/build/docs/api/reference/rest/v1/projects.builds): listed
        # only when a step that gets them is planned.
        versions = dict(settings.secret_env)
        build["availableSecrets"] = {
            "secretManager": [{"versionName": versions[name], "env": name} for name in secret_names]
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
    action: Action,
    rules: Rules,
    artifacts: Artifacts,
    *,
    uses_setup: bool,
    secrets: tuple[str, ...] = (),
) -> dict[str, Any]:
    wait = list(action.needs)
    step: dict[str, Any]
    gets_secrets = bool(secrets) and action.kind in RECEIVES_SECRETS
    if action.kind == "test":
        test = rules.test
        if test is None:  # the loader refuses a rule that says test without [test]
            raise ConfigError("the plan has a test step but no [test] command", file=rules.source)
        script = shlex.join(test.command)
        if test.setup:
            script = f"{test.setup} && {script}"
        if gets_secrets:
            script = mask_script(script, secrets)
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
    if gets_secrets:
        # names only: Cloud Build sets their values in this step's environment
        step["secretEnv"] = list(secrets)
    step = {"id": action.id, **step, "waitFor": wait or ["-"]}
    return step


def mask_script(script: str, names: tuple[str, ...]) -> str:
    """``script`` with its output (stdout and stderr, merged) passed through a bash filter that
    replaces each secret's value with the redaction marker, as ``output.Redactor`` does: the
    value, and each stripped line of at least ``MIN_LINE_MASK`` characters of a value of
    several lines, longest first. Bash alone, since the step's image may have nothing else.
    ``${line//"$m"/***}`` replaces ``$m`` as a string, never as a pattern, because it is quoted
    ("Any part of the pattern may be quoted to force the quoted portion to be matched as a
    string", bash(1), Pattern Matching). The script's own exit status is the step's
    (``pipefail``).
    """
    variables = " ".join(names)  # validated variable names: nothing to quote
    return "\n".join(
        [
            # keep the masks longest first: a value is masked whole before any line of it
            "ct_masks=()",
            "ct_add() {",
            "  local i=${#ct_masks[@]}",
            '  ct_masks+=("$1")',
            "  while (( i > 0 )) && (( ${#ct_masks[i-1]} < ${#1} )); do",
            '    ct_masks[i]="${ct_masks[i-1]}"',
            "    i=$((i - 1))",
            "  done",
            '  ct_masks[i]="$1"',
            "}",
            f"for ct_name in {variables}; do",
            '  ct_value="${!ct_name}"',
            '  if [ -n "$ct_value" ]; then ct_add "$ct_value"; fi',
            "  if [[ \"$ct_value\" == *$'\\n'* ]]; then",
            "    while IFS= read -r ct_line; do",
            '      ct_line="${ct_line#"${ct_line%%[![:space:]]*}"}"',
            '      ct_line="${ct_line%"${ct_line##*[![:space:]]}"}"',
            f'      if [ "${{#ct_line}}" -ge {MIN_LINE_MASK} ]; then ct_add "$ct_line"; fi',
            '    done <<< "$ct_value"',
            "  fi",
            "done",
            "ct_mask() {",
            "  local ct_line ct_m",
            '  while IFS= read -r ct_line || [ -n "$ct_line" ]; do',
            '    for ct_m in "${ct_masks[@]}"; do',
            # the marker holds neither '&' nor '\\', which a bash replacement string treats
            # specially
            f'      ct_line="${{ct_line//"$ct_m"/{REDACTED}}}"',
            "    done",
            "    printf '%s\\n' \"$ct_line\"",
            "  done",
            "}",
            f"{{ {script}\n}} 2>&1 | ct_mask",
        ]
    )


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
    """``gcloud functions deploy``: gen2, Pub/Sub trigger with retries, never unauthenticated.

    Every flag is spelled as ``gcloud functions deploy --help`` spells it
    (https://cloud.google.com/sdk/gcloud/reference/functions/deploy).
    """
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
        # Without it a failed invocation is dropped, not redelivered ("By default, if a function
        # invocation terminates with an error, the function is not invoked again and the event
        # is dropped": https://cloud.google.com/functions/docs/bestpractices/retries). The
        # function acknowledges what a retry cannot fix and caps retries by message age.
        "--retry",
        "--no-allow-unauthenticated",
        "--memory",
        fn.memory,
        "--timeout",
        fn.timeout,
        "--max-instances",
        str(fn.max_instances),
        "--min-instances",
        str(fn.min_instances),
        # Pub/Sub and Eventarc in the function's project count as internal traffic
        # (https://cloud.google.com/run/docs/securing/ingress), so internal-only still
        # receives every message.
        "--ingress-settings",
        fn.ingress,
    ]
    if fn.vpc_connector:
        args += ["--vpc-connector", fn.vpc_connector]
        if fn.egress:
            args += ["--egress-settings", fn.egress]
    else:
        # a connector removed from rules.toml is removed from the function too: without the
        # flag, gcloud keeps the deployed one
        args.append("--clear-vpc-connector")
    args += ["--set-env-vars", set_env_vars_value(env, rules)]
    if fn.service_account:
        args += ["--service-account", fn.service_account]
    if fn.trigger_service_account:
        # the Eventarc trigger's identity, which must hold Cloud Run Invoker since the function
        # refuses unauthenticated calls (https://cloud.google.com/functions/docs/calling/eventarc)
        args += ["--trigger-service-account", fn.trigger_service_account]
    return args


def set_env_vars_value(env: Mapping[str, str], rules: Rules) -> str:
    """gcloud's ``KEY=VALUE`` list, always in its alternate-delimiter form ``^D^K=V D K=V``.

    gcloud splits the list on ``D``, then each item on its first ``=`` ("gcloud topic
    escaping": ``D`` "may not appear in any value in the list";
    https://cloud.google.com/sdk/gcloud/reference/topic/escaping), so ``D`` is the first of
    ``ENV_DELIMITERS`` that no key or value holds. A service account's ``@``, a ``,`` or an
    ``=`` in a value then reach the function as written.

    Chosen over ``--env-vars-file``: a file would have to be written by a shell step, adding
    shell and YAML quoting to Cloud Build's substitution escaping; this stays one argv element,
    under one documented rule, and readable in the emitted config.
    """
    pairs = [f"{key}={value}" for key, value in sorted(env.items())]
    held = "".join(pairs)
    for delimiter in ENV_DELIMITERS:
        if delimiter not in held:
            return f"^{delimiter}^" + delimiter.join(pairs)
    raise ConfigError(
        "the function's environment cannot be passed to gcloud: its keys and values hold every "
        "delimiter gcloud could split them on (" + " ".join(ENV_DELIMITERS) + ")",
        file=rules.source,
        key="function.env",
    )


def _service_account_name(rules: Rules, account: str) -> str:
    if account.startswith("projects/"):
        return account
    project = rules.project.gcp_project or "-"
    return f"projects/{project}/serviceAccounts/{account}"


def _tags(plan: Plan, artifacts: Artifacts) -> list[str]:
    branch = artifacts.ref.removeprefix("refs/heads/").removeprefix("refs/")
    tags = ["ct-orchestrator"]
    commit = _ascii_tag_text(plan.head)[:12]
    if commit:
        tags.append(f"commit-{commit}")
    if branch:
        tags.append(_tag("ref-", branch))
    return list(dict.fromkeys(tags))


def _ascii_tag_text(value: str) -> str:
    """``value`` in the characters a tag may hold: accents dropped (``café`` -> ``cafe``), any
    other run of characters a tag cannot hold (``/``, ``ø``, ``日本``) becomes one ``-``."""
    decomposed = unicodedata.normalize("NFKD", value)
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[^\w.-]+", "-", folded, flags=re.ASCII).strip("-.")


def _tag(prefix: str, value: str) -> str:
    """``prefix`` + ``value`` as a valid tag, at most 128 characters. A value cut short, or with
    nothing left, ends with a hash of the original, so distinct long names stay distinct."""
    text = _ascii_tag_text(value)
    if text and len(prefix) + len(text) <= _TAG_LENGTH:
        return prefix + text
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    room = _TAG_LENGTH - len(prefix) - len(digest) - 1
    head = text[:room].rstrip("-.")
    return f"{prefix}{head}-{digest}" if head else f"{prefix}{digest}"


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {k: (_escaped(v) if k not in ("id", "waitFor") else v) for k, v in value.items()}
    return value
