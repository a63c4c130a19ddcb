"""``trigger``: start a run of the deployed state, without a commit.

Reads the deploy ledger of the branch and publishes a run of exactly that state (its spec,
source and images), with new parameters (``--params FILE``) or data (``--data URI``) when
given: what Cloud Scheduler (``--reason schedule``) or a person (``manual``, the default)
asks for. The same publish as a build's (``run.steps.send``): to Pub/Sub, or on the embedded
default to ``function/`` in this process, which prints the run's result. The run's state is
then recorded as deployed, so later builds train on the newest data too.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from orchestrator import ledger, objects
from orchestrator.artifacts import Artifacts, parse_parameters
from orchestrator.bounded import MAX_MESSAGE_FILE_BYTES, read_capped
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_OK, EXIT_STEP_FAILED, ConfigError, InputError
from orchestrator.message import REASONS, ActionSummary, DeployedState, run_identity
from orchestrator.output import error_line
from orchestrator.run import steps
from orchestrator.run.report import format_metrics
from orchestrator.services import Services
from orchestrator.workflow import (
    Target,
    detect_ref,
    ledger_location,
    open_checkout,
    with_overrides,
)


def run(
    target: Target,
    io: CommandIO,
    services_choice: str,
    *,
    reason: str,
    params_file: Path | None,
    data: str | None,
    branch: str | None,
) -> int:
    if reason not in REASONS:
        raise InputError(f"--reason must be one of {', '.join(REASONS)}, not {reason!r}")
    services = Services.resolve(target.repo, io.env, services_choice)
    env = services.env()
    rules = with_overrides(load_rules(target.rules_path), io.env)
    ref = f"refs/heads/{branch}" if branch else detect_ref(io.env, open_checkout(target.repo))
    location = ledger_location(rules, ref)
    if location is None:
        raise ConfigError("[project] bucket is required to find the deploy ledger",
                          file=rules.source, key="project.bucket")  # fmt: skip
    entry = ledger.read(location, env)
    if entry is None:
        raise InputError(
            f"nothing is deployed for {location.branch} yet ({location.uri} does not exist): "
            "run a build first"
        )
    state = entry.state
    parameters = dict(state.parameters)
    if params_file is not None:
        try:
            text = read_capped(params_file, MAX_MESSAGE_FILE_BYTES).decode("utf-8")
        except OSError as exc:
            raise InputError(f"--params {params_file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"--params {params_file}: not UTF-8 (byte {exc.start})") from None
        parameters.update(parse_parameters(text, source=str(params_file)))
    data_uri, data_version = _data(data, state, services)
    artifacts = Artifacts(
        commit=state.commit,
        ref=state.ref,
        bucket=location.bucket,
        images=tuple(sorted(state.images.items())),
        source_uri=state.source_uri,
        spec_uri=state.pipeline_spec_uri,
        parameters=tuple(sorted(parameters.items())),
        function_input=state.hashes.get("function", ""),
        data_uri=data_uri,
        data_version=data_version,
    )

    def log(line: str) -> None:
        if services.publish == "in-process":
            return  # the pipeline's own output; the result line says what matters
        io.stdout.write(f"[trigger] {line}\n")

    ctx = steps.StepContext(
        repo=target.repo,
        rules=rules,
        artifacts=artifacts,
        env=env,
        publish_mode="in-process" if services.publish == "in-process" else "pubsub",
        log=log,
        reason=reason,
    )
    summary = f"{reason} run of {state.branch}'s deployed state" + (
        f" on {data_uri}" if data_uri else ""
    )
    message = replace(steps.build_message(ctx), actions=(ActionSummary("trigger", summary),))
    io.stdout.write(f"Triggering a {summary} ({state.commit[:12]}).\n")
    outcome = steps.send(ctx, message)
    io.stdout.write(outcome.message + "\n")
    if outcome.pipeline_run is not None and outcome.pipeline_run.metrics:
        metrics = format_metrics(outcome.pipeline_run.metrics)
        io.stdout.write(f"pipeline run {outcome.pipeline_run.run_id}: {metrics}\n")
    if outcome.error:
        io.stderr.write(error_line(outcome.error))
        return EXIT_STEP_FAILED
    spec = objects.read(state.pipeline_spec_uri, env)
    run_id = ""
    if spec is not None:
        run_id = run_identity(
            hashlib.sha256(spec.data).hexdigest(),
            state.source_uri,
            dict(state.images),
            parameters,
            data_uri,
            data_version,
        )
    ran = replace(
        state,
        parameters=parameters,
        data_uri=data_uri,
        data_version=data_version,
        run_id=run_id,
    )
    if ran.run_id != state.run_id or dict(ran.parameters) != dict(state.parameters):
        ledger.record(location, ran, env, is_ancestor=None)
    return EXIT_OK


def _data(data: str | None, deployed: DeployedState, services: Services) -> tuple[str, str]:
    """``--data``: a ``gs://`` URI (its version: the object's generation), or on the embedded
    default a local file (its version: a hash of its content). The same data again is the
    same run; a file changed in place is new data."""
    if data is None:
        return deployed.data_uri, deployed.data_version
    if data.startswith("gs://"):
        try:
            version = objects.generation(data, services.env())
        except objects.BadUri as exc:
            raise InputError(f"--data {data}: {exc}") from None
        if version is None:
            raise InputError(f"--data {data}: no such object")
        return data, str(version)
    if services.publish != "in-process":
        raise InputError(
            f"--data {data}: a run in the cloud reads gs:// URIs only; upload the file to the "
            "bucket (under [data] prefix, which starts a run by itself) or pass its gs:// URI"
        )
    path = Path(data).expanduser()
    if not path.is_file():
        raise InputError(f"--data {data}: no such file")
    resolved = str(path.resolve())
    if any(c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in resolved):
        raise InputError(
            f"--data {data}: a path that is not UTF-8 or holds control characters cannot "
            "travel in a run request; rename the file"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    return resolved, f"sha256:{digest}"
