"""Diff proposes, hash confirms: the one place planning ends, for every command and executor.

The diff says what *may* need building. Finishing checks it against what already exists and
what is deployed, so that ``plan``, ``--dry-run``, ``emit`` and both ``run`` executors show
and run exactly the same actions:

* an action whose artifact already exists (the source tarball or the compiled spec in the
  bucket, the image tag in the registry) is dropped and listed under ``existing``;
* with a deploy ledger, an artifact whose content differs from the deployed one is built
  even if no changed path matched a rule (a rule that missed a dependency), and the
  function is deployed when its files differ from the deployed ones;
* a publish is planned exactly when the state it would run differs from the deployed one,
  or the deployed state's last run failed or was interrupted; a state that was already
  trained (a revert, a re-run) is not trained again, and the plan names that run;
* what a publish needs but no build has made (a fresh bucket) is added, "not built yet";
* every image the run uses is pinned to a digest: by this build's push, or by the
  registry's manifest; an image that is needed, missing and cannot be built is an error
  naming it.

Pure: every lookup goes through the :class:`Probe` the caller passes (the bucket, the
registry, the runs registry), so the rules are tested with literals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from orchestrator.artifacts import Artifacts
from orchestrator.errors import InputError, OrchestratorError
from orchestrator.model import Existing, Plan, Reason, Rules
from orchestrator.planning import TEST_RULE, assemble, test_reason

if TYPE_CHECKING:
    from orchestrator.message import DeployedState

NOT_BUILT = "not built yet"


class Probe(Protocol):
    """The lookups finishing needs. Each may raise ``OrchestratorError`` when it cannot tell
    (a service is unreachable); finishing then keeps the action, which is always safe."""

    def object_exists(self, uri: str) -> bool: ...

    def read_object(self, uri: str) -> bytes | None: ...

    def image_digest(self, image: str) -> str | None: ...

    def run_status(self, run_id: str) -> RunStatus | None: ...


class RunStatus(NamedTuple):
    """What the runs registry says of one run identity."""

    status: str  # succeeded | submitted | running | failed
    live: bool = False  # running, and its lease has not expired
    metrics: Mapping[str, float] | None = None

    @property
    def trained(self) -> bool:
        return self.status in ("succeeded", "submitted") or (self.status == "running" and self.live)


class Finished(NamedTuple):
    """The plan every executor runs, and the artifact names it runs with (images pinned)."""

    plan: Plan
    artifacts: Artifacts
    #: the run identity the publish (or the deployed state) has, when the spec is known
    run_id: str | None = None
    #: the content-addressed names (images by tag), which the ledger compares
    names: Artifacts | None = None


def finish(
    plan: Plan,
    rules: Rules,
    names: Artifacts,
    probe: Probe,
    *,
    deployed: DeployedState | None = None,
    images_required: bool = True,
    buildable: frozenset[str] | None = None,
) -> Finished:
    """See the module docstring. ``names`` are the content-addressed names at the plan's head;
    ``buildable`` the components whose context exists there (default: all)."""
    return _Finisher(plan, rules, names, probe, deployed, images_required, buildable).run()


class _Finisher:
    def __init__(
        self,
        plan: Plan,
        rules: Rules,
        names: Artifacts,
        probe: Probe,
        deployed: DeployedState | None,
        images_required: bool,
        buildable: frozenset[str] | None,
    ) -> None:
        self.plan = plan
        self.rules = rules
        self.names = names
        self.probe = probe
        self.deployed = deployed
        self.images_required = images_required
        self.buildable = buildable if buildable is not None else frozenset(dict(names.images))
        # [test]'s own reason is derived again at the end, from what remains
        self.drafts: dict[str, dict[Reason, None]] = {
            a.id: {r: None for r in a.reasons if r.rule != TEST_RULE} for a in plan.actions
        }
        self.existing: list[Existing] = []
        self.pinned: dict[str, str] = {}

    # -- lookups that may not be able to answer: then the action stays, which is safe -------

    def _exists(self, uri: str) -> bool | None:
        try:
            return self.probe.object_exists(uri)
        except OrchestratorError:
            return None

    def _digest(self, image: str) -> str | None:
        try:
            return self.probe.image_digest(image)
        except OrchestratorError:
            return None

    def _read(self, uri: str) -> bytes | None:
        try:
            return self.probe.read_object(uri)
        except OrchestratorError:
            return None

    def _status(self, run_id: str) -> RunStatus | None:
        try:
            return self.probe.run_status(run_id)
        except OrchestratorError:
            return None

    # -- the steps --------------------------------------------------------------------------

    def run(self) -> Finished:
        self._images()
        self._file_artifacts()
        self._function()
        run_id = self._publish()
        if "publish" in self.drafts:
            self._needed_by_publish()
        self._test()
        artifacts = self.names._replace(
            images=tuple((name, self.pinned.get(name, ref)) for name, ref in self.names.images),
        )
        finished = self.plan._replace(actions=assemble(self.drafts), existing=tuple(self.existing))
        return Finished(finished, artifacts, run_id, self.names)

    def _add(self, action_id: str, note: str) -> None:
        self.drafts.setdefault(action_id, {})[Reason(note=note)] = None

    def _drop(self, action_id: str, artifact: str, note: str) -> None:
        if self.drafts.pop(action_id, None) is not None:
            self.existing.append(Existing(action_id, artifact, note))

    def _deployed_hash(self, key: str) -> str | None:
        return self.deployed.hashes.get(key) if self.deployed is not None else None

    def _images(self) -> None:
        for name, tag in self.names.images:
            action_id = f"build_image:{name}"
            planned = action_id in self.drafts
            deployed = self._deployed_hash(f"image:{name}")
            differs = deployed is not None and deployed != tag
            if not (planned or differs):
                continue  # looked up only if the publish needs it (_needed_by_publish)
            digest = self._digest(tag)
            if digest is not None:
                self.pinned[name] = f"{tag.rpartition(':')[0]}@{digest}"
                if planned:
                    self._drop(action_id, self.pinned[name], "the image is in the registry")
            elif differs and not planned and name in self.buildable:
                self._add(
                    action_id,
                    f"its files differ from the deployed image ({deployed}) though no changed "
                    "path matched a rule",
                )

    def _file_artifacts(self) -> None:
        for action_id, key, uri in (
            ("upload_source", "source", self.names.source_uri),
            ("compile_pipeline", "spec", self.names.spec_uri),
        ):
            planned = action_id in self.drafts
            deployed = self._deployed_hash(key)
            differs = deployed is not None and deployed != uri
            if not (planned or differs):
                continue
            if self._exists(uri):
                self._drop(action_id, uri, "already in the bucket")
            elif differs and not planned:
                self._add(
                    action_id,
                    f"its files differ from the deployed one ({deployed}) though no changed "
                    "path matched a rule",
                )

    def _function(self) -> None:
        deployed = self._deployed_hash("function")
        current = self.names.function_input
        if deployed is None or not current:
            return
        if deployed == current:
            self._drop("deploy_function", current, "the deployed function has these files")
        elif "deploy_function" not in self.drafts:
            self._add("deploy_function", "its files differ from the deployed function")

    def _publish(self) -> str | None:
        """Decide the publish; return the run identity of the state when it can be known."""
        building = any(
            a in ("upload_source", "compile_pipeline") or a.startswith("build_image:")
            for a in self.drafts
        )
        if self.images_required:
            self._pin_images()  # the run's identity names the images as the message will
        run_id = None
        spec = None if "compile_pipeline" in self.drafts else self._read(self.names.spec_uri)
        if spec is not None:
            from orchestrator.message import run_identity  # loaded only when it runs

            run_id = run_identity(
                hashlib.sha256(spec).hexdigest(),
                self.names.source_uri,
                self._image_refs(),
                dict(self.names.parameters),
                self.names.data_uri,
                self.names.data_version,
            )
        status = self._status(run_id) if run_id else None
        changed = self._state_differs()
        if not ("publish" in self.drafts or building or changed):
            # nothing differs from what is deployed: run it only if its last run did not finish
            if self.deployed is not None and run_id and not (status and status.trained):
                what = f"{status.status}" if status else "never started"
                self._add("publish", f"the last run of this state ({run_id}) {what}: run it again")
            return run_id
        if "publish" not in self.drafts:
            self._add(
                "publish",
                f"differs from the deployed state: {changed}" if changed else "runs this build",
            )
        if status is not None and status.trained and run_id:
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted((status.metrics or {}).items()))
            self._drop(
                "publish",
                run_id,
                f"this state was already trained: run {run_id} {status.status}"
                + (f", {metrics}" if metrics else ""),
            )
        return run_id

    def _image_refs(self) -> dict[str, str]:
        return {name: self.pinned.get(name, ref) for name, ref in self.names.images}

    def _state_differs(self) -> str:
        """What differs from the deployed state ("" when nothing, or nothing is deployed)."""
        if self.deployed is None:
            return ""
        deployed = self.deployed
        names = self.names
        differences = []
        if deployed.pipeline_spec_uri != names.spec_uri:
            differences.append("the pipeline spec")
        if deployed.source_uri != names.source_uri:
            differences.append("the training source")
        if any(deployed.hashes.get(f"image:{n}") != ref for n, ref in names.images):
            differences.append("the images")
        if dict(deployed.parameters) != dict(names.parameters):
            differences.append("the parameters")
        if (deployed.data_uri, deployed.data_version) != (names.data_uri, names.data_version):
            differences.append("the data")
        return ", ".join(differences)

    def _pin_images(self) -> None:
        for name, tag in self.names.images:
            if name not in self.pinned and f"build_image:{name}" not in self.drafts:
                digest = self._digest(tag)
                if digest is not None:
                    self.pinned[name] = f"{tag.rpartition(':')[0]}@{digest}"

    def _needed_by_publish(self) -> None:
        """What the publish reads must exist: add what no build has made yet."""
        for action_id, uri in (
            ("upload_source", self.names.source_uri),
            ("compile_pipeline", self.names.spec_uri),
        ):
            if action_id not in self.drafts and self._exists(uri) is False:
                self._add(action_id, f"{NOT_BUILT}: {uri}")
        if not self.images_required:
            return
        for name, tag in self.names.images:
            action_id = f"build_image:{name}"
            if name in self.pinned or action_id in self.drafts:
                continue
            if name not in self.buildable:
                raise InputError(
                    f"the run needs the image {tag} for component '{name}', which is not in "
                    "the registry and cannot be built: its context does not exist at head"
                )
            self._add(action_id, f"{NOT_BUILT}: {tag}")
            if "compile_pipeline" not in self.drafts:
                self._add("compile_pipeline", f"{NOT_BUILT}: pins the image {tag}")

    def _test(self) -> None:
        """A rule's test stays; [test]'s own runs before whatever else remains, if anything."""
        if self.drafts.get("test"):
            return
        self.drafts.pop("test", None)
        if self.drafts and self.rules.test is not None:
            self.drafts["test"] = {test_reason(self.drafts): None}
