"""Finishing the plan (diff proposes, hash confirms), with literals: what exists, what is
deployed and what was trained decide the actions every executor runs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from orchestrator.artifacts import Artifacts, name_artifacts
from orchestrator.config import parse_rules
from orchestrator.errors import InputError, ServiceUnreachable
from orchestrator.finishing import RunStatus, finish
from orchestrator.message import DeployedState, run_identity
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules
from orchestrator.planning import plan_changes

RULES = """\
version = 1
[project]
bucket = "b"
registry = "r.example/ct"
[test]
command = ["true"]
[components.trainer]
context = "comp/trainer"

[[rule]]
name = "images"
paths = ["comp/"]
do = "build_image"
[[rule]]
name = "source"
paths = ["src/"]
do = "upload_source"
[[rule]]
name = "params"
paths = ["params.toml"]
do = "retrain"
[[rule]]
name = "tool"
paths = ["tool/"]
do = "test"
"""
HEAD = "c" * 40
SPEC = b"pipeline spec"


@dataclass
class Store:
    """What the bucket, the registry and the runs registry hold (a literal probe)."""

    objects: dict[str, bytes] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    runs: dict[str, RunStatus] = field(default_factory=dict)
    unreachable: bool = False

    def _check(self) -> None:
        if self.unreachable:
            raise ServiceUnreachable("down")

    def object_exists(self, uri: str) -> bool:
        self._check()
        return uri in self.objects

    def read_object(self, uri: str) -> bytes | None:
        self._check()
        return self.objects.get(uri)

    def image_digest(self, image: str) -> str | None:
        self._check()
        return self.images.get(image)

    def run_status(self, run_id: str) -> RunStatus | None:
        self._check()
        return self.runs.get(run_id)


def rules() -> Rules:
    return parse_rules(RULES)


def names(
    source: str = "s1", image: str = "i1", params: Mapping[str, int] | None = None
) -> Artifacts:
    return name_artifacts(
        rules(),
        commit=HEAD,
        ref="refs/heads/main",
        image_inputs={"trainer": image},
        source_input=source,
        pipeline_inputs="p",
        parameters=params or {"units": 64},
    )


def plan(*paths: str) -> Plan:
    changes = ChangeSet("b" * 40, HEAD, "explicit", tuple(ChangedPath("M", p) for p in paths))
    return plan_changes(changes, rules(), {"comp/trainer"})


def identity(art: Artifacts, images: Mapping[str, str] | None = None) -> str:
    return run_identity(
        hashlib.sha256(SPEC).hexdigest(),
        art.source_uri,
        images if images is not None else dict(art.images),
        dict(art.parameters),
        art.data_uri,
    )


def deployed_from(art: Artifacts, **changes: object) -> DeployedState:
    state = DeployedState(
        branch="main",
        pipeline="default",
        commit="d" * 40,
        ref="refs/heads/main",
        pipeline_spec_uri=art.spec_uri,
        source_uri=art.source_uri,
        images=dict(art.images),
        parameters=dict(art.parameters),
        hashes={"source": art.source_uri, "spec": art.spec_uri}
        | {f"image:{n}": t for n, t in art.images},
        run_id=identity(art),
    )
    from dataclasses import replace

    return replace(state, **changes)  # type: ignore[arg-type]


def ids(p: Plan) -> list[str]:
    return [a.id for a in p.actions]


def built(art: Artifacts) -> Store:
    """Everything of ``art`` is in the bucket; its run is unknown."""
    return Store(objects={art.source_uri: b"tar", art.spec_uri: SPEC})


def test_an_upload_whose_object_exists_is_dropped_and_listed() -> None:
    art = names()
    store = Store(objects={art.source_uri: b"tar"})
    finished = finish(plan("src/a.py"), rules(), art, store, images_required=False)
    assert "upload_source" not in ids(finished.plan)
    assert ("upload_source", art.source_uri) in {(e.id, e.artifact) for e in finished.plan.existing}
    # the publish still needs its spec, which no build made yet
    assert ids(finished.plan) == ["test", "compile_pipeline", "publish"]
    compile_reason = finished.plan.action("compile_pipeline").reasons  # type: ignore[union-attr]
    assert compile_reason[0].note == f"not built yet: {art.spec_uri}"


def test_a_fresh_bucket_gets_the_upload_and_the_compile_a_publish_needs() -> None:
    finished = finish(plan("params.toml"), rules(), names(), Store(), images_required=False)
    assert ids(finished.plan) == ["test", "upload_source", "compile_pipeline", "publish"]


def test_a_state_already_trained_is_not_trained_again_and_the_run_is_named() -> None:
    art = names()
    store = built(art)
    store.runs[identity(art)] = RunStatus("succeeded", metrics={"accuracy": 0.97})
    finished = finish(plan("src/a.py"), rules(), art, store, images_required=False)
    assert ids(finished.plan) == []
    publish = next(e for e in finished.plan.existing if e.id == "publish")
    assert publish.artifact == identity(art)
    assert "already trained" in publish.note and "accuracy 0.97" in publish.note


def test_a_revert_to_a_trained_state_builds_uploads_and_trains_nothing() -> None:
    old, new = names(source="s1"), names(source="s2")
    store = built(old)
    store.objects[new.source_uri] = b"tar2"
    store.runs[identity(old)] = RunStatus("succeeded")
    finished = finish(plan("src/a.py"), rules(), old, store, deployed=deployed_from(new),
                      images_required=False)  # fmt: skip
    assert ids(finished.plan) == []
    assert {e.id for e in finished.plan.existing} == {"upload_source", "publish"}


def test_a_re_run_of_the_deployed_state_does_nothing() -> None:
    art = names()
    store = built(art)
    store.runs[identity(art)] = RunStatus("succeeded")
    finished = finish(plan(), rules(), art, store, deployed=deployed_from(art),
                      images_required=False)  # fmt: skip
    assert ids(finished.plan) == []


@pytest.mark.parametrize(
    ("status", "planned"),
    [
        (RunStatus("failed"), True),
        (RunStatus("running", live=False), True),  # interrupted: its lease ran out
        (RunStatus("running", live=True), False),  # still going
        (None, True),  # never started (interrupted before the function claimed it)
    ],
)
def test_the_deployed_state_runs_again_when_its_last_run_did_not_finish(
    status: RunStatus | None, planned: bool
) -> None:
    art = names()
    store = built(art)
    if status is not None:
        store.runs[identity(art)] = status
    finished = finish(plan(), rules(), art, store, deployed=deployed_from(art),
                      images_required=False)  # fmt: skip
    assert ("publish" in ids(finished.plan)) is planned


def test_new_parameters_on_the_same_commit_train_once() -> None:
    deployed = names(params={"units": 64})
    art = names(params={"units": 128})
    store = built(deployed)
    store.objects[art.spec_uri] = SPEC
    finished = finish(plan(), rules(), art, store, deployed=deployed_from(deployed),
                      images_required=False)  # fmt: skip
    assert ids(finished.plan) == ["test", "publish"]
    reason = finished.plan.action("publish").reasons[0]  # type: ignore[union-attr]
    assert reason.note == "differs from the deployed state: the parameters"
    store.runs[finished.run_id or ""] = RunStatus("succeeded")  # it trained: not again
    again = finish(plan(), rules(), art, store, deployed=deployed_from(deployed),
                   images_required=False)  # fmt: skip
    assert ids(again.plan) == []


def test_files_that_differ_from_the_deployed_ones_are_built_though_no_rule_matched() -> None:
    deployed = names(source="s1")
    art = names(source="s2")  # a file no rule names changed the source
    finished = finish(plan(), rules(), art, built(deployed), deployed=deployed_from(deployed),
                      images_required=False)  # fmt: skip
    assert ids(finished.plan) == ["test", "upload_source", "publish"]
    reason = finished.plan.action("upload_source").reasons[0]  # type: ignore[union-attr]
    assert reason.note is not None and "differ from the deployed one" in reason.note


def test_an_image_the_registry_has_is_not_built_and_is_pinned_by_digest() -> None:
    art = names()
    tag = art.image("trainer")
    digest = "sha256:" + "a" * 64
    store = built(art)
    store.images[tag] = digest
    finished = finish(plan("comp/trainer/main.py"), rules(), art, store)
    assert "build_image:trainer" not in ids(finished.plan)
    assert finished.artifacts.image("trainer") == f"{tag.rpartition(':')[0]}@{digest}"


def test_an_image_the_run_needs_but_no_build_made_is_added() -> None:
    art = names()
    finished = finish(plan("src/a.py"), rules(), art, Store(objects={art.spec_uri: SPEC}))
    assert "build_image:trainer" in ids(finished.plan)
    assert "compile_pipeline" in ids(finished.plan)  # the spec pins the image


def test_a_needed_image_that_cannot_be_built_is_an_error_naming_it() -> None:
    art = names()
    with pytest.raises(InputError, match=r"needs the image r\.example/ct/trainer:c-"):
        finish(plan("src/a.py"), rules(), art, Store(), buildable=frozenset())


def test_lookups_that_cannot_answer_keep_the_actions() -> None:
    finished = finish(
        plan("src/a.py", "comp/trainer/x"), rules(), names(), Store(unreachable=True),
        images_required=False,
    )  # fmt: skip
    assert ids(finished.plan) == [
        "test", "build_image:trainer", "upload_source", "compile_pipeline", "publish",
    ]  # fmt: skip


def test_a_test_a_rule_asked_for_stays_and_tests_implied_by_nothing_go() -> None:
    art = names()
    store = built(art)
    store.runs[identity(art)] = RunStatus("succeeded")
    asked = finish(plan("tool/x.py"), rules(), art, store, deployed=deployed_from(art),
                   images_required=False)  # fmt: skip
    assert ids(asked.plan) == ["test"]
