"""What a successful run leaves in the deploy ledger.

After a run succeeds, the state it deployed is recorded for its branch (``ledger``): the
commit, every artifact by URI and content name (images pinned by digest), the parameters,
the data and the run identity. A failed or interrupted run records nothing, so the next run
still plans everything since the last deploy. A run that published nothing records the state
only when that state is known to be trained (it was already, or it is what is deployed):
the ledger never claims a state that no run trained.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace

from orchestrator import ledger, objects
from orchestrator.artifacts import Artifacts
from orchestrator.errors import OrchestratorError, ServiceUnreachable
from orchestrator.message import DeployedState, branch_of, encode_state, run_identity
from orchestrator.run.report import RunReport
from orchestrator.services import STATE_DIR
from orchestrator.workflow import Prepared, StoreProbe


def deployed_state(prepared: Prepared) -> DeployedState | None:
    """The state a successful run of ``prepared`` deployed, or ``None`` when it deployed none
    (nothing published, and the state is not known to be trained)."""
    plan = prepared.plan
    deployed = prepared.planned.deployed
    published = plan.action("publish") is not None
    trained = any(e.id == "publish" for e in plan.existing)
    if not (published or trained or deployed is not None):
        return None
    names = prepared.finished.names or prepared.artifacts
    state = state_of(names, _images(prepared), prepared.services.env())
    # nothing ran: only advance the deployed commit if the state is the deployed one
    same = deployed is not None and bool(state.run_id) and state.run_id == deployed.state.run_id
    if not (published or trained or same):
        return None
    return state


def state_of(names: Artifacts, images: Mapping[str, str], env: Mapping[str, str]) -> DeployedState:
    """The ledger record for artifacts named ``names`` and run with ``images`` (by digest)."""
    spec = _read(names.spec_uri, env)
    run_id = ""
    if spec is not None:
        run_id = run_identity(
            hashlib.sha256(spec).hexdigest(),
            names.source_uri,
            images,
            dict(names.parameters),
            names.data_uri,
            names.data_version,
        )
    hashes = {"source": names.source_uri, "spec": names.spec_uri}
    hashes |= {f"image:{name}": tag for name, tag in names.images}
    if names.function_input:
        hashes["function"] = names.function_input
    return DeployedState(
        branch=branch_of(names.ref),
        pipeline=ledger.DEFAULT_PIPELINE,
        commit=names.commit,
        ref=names.ref,
        pipeline_spec_uri=names.spec_uri,
        source_uri=names.source_uri,
        images=dict(images),
        parameters=dict(names.parameters),
        data_uri=names.data_uri,
        data_version=names.data_version,
        hashes=hashes,
        run_id=run_id,
    )


def record_deploy(prepared: Prepared, report: RunReport) -> str:
    """Record the deployed state after a successful run; returns one line for the user."""
    location = prepared.planned.location
    if not report.ok or location is None:
        return ""
    state = deployed_state(prepared)
    if state is None:
        return "deploy ledger: unchanged (nothing was published)"
    deployed = prepared.planned.deployed
    if deployed is not None and _same(deployed.state, state):
        return f"deploy ledger: {state.branch} unchanged at {state.commit[:12]}"
    git = prepared.planned.git
    outcome = ledger.record(
        location,
        state,
        prepared.services.env(),
        is_ancestor=git.is_ancestor if git is not None else None,
    )
    if outcome == "kept":
        return (
            f"deploy ledger: kept the newer deployed commit; {state.commit[:12]} is an ancestor "
            "of it"
        )
    return f"deploy ledger: {state.branch} deployed at {state.commit[:12]} ({location.uri})"


def _same(a: DeployedState, b: DeployedState) -> bool:
    """The same record but for when it was written."""
    return encode_state(replace(a, updated="")) == encode_state(replace(b, updated=""))


def _images(prepared: Prepared) -> dict[str, str]:
    """Every component's image as the run used it: built here (the push's digest), else the
    registry's digest for the content tag, else the tag."""
    images = dict(prepared.artifacts.images)
    outputs = prepared.target.repo / STATE_DIR / "outputs"
    probe = StoreProbe(prepared.services, prepared.rules)
    for name, ref in images.items():
        if "@" in ref:
            continue
        built = outputs / f"build_image-{name}.json"
        try:
            if built.is_file():
                images[name] = str(json.loads(built.read_text())["image"])
                continue
            digest = probe.image_digest(ref)
        except (OrchestratorError, ValueError, KeyError, OSError):
            continue
        if digest is not None:
            images[name] = f"{ref.rpartition(':')[0]}@{digest}"
    return images


def pinned_images(names: Artifacts, probe: StoreProbe) -> dict[str, str]:
    """Each image by the registry's digest for its content tag, where the registry can tell."""
    images = {}
    for name, tag in names.images:
        try:
            digest = probe.image_digest(tag) if "@" not in tag else None
        except OrchestratorError:
            digest = None
        images[name] = f"{tag.rpartition(':')[0]}@{digest}" if digest else tag
    return images


def _read(uri: str, env: Mapping[str, str]) -> bytes | None:
    try:
        stored = objects.read(uri, env)
    except objects.ObjectError as exc:
        raise ServiceUnreachable(str(exc)) from exc
    return stored.data if stored is not None else None
