"""The Cloud Build emitter over a table of plans (planned from literal change sets)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from orchestrator.adapters.cloudbuild import build_from_dict
from orchestrator.artifacts import Artifacts, name_artifacts
from orchestrator.config import parse_rules
from orchestrator.emit import yaml_text
from orchestrator.emit.cloudbuild import SETUP_STEP, TOOL_ACTIONS, emit_build
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules
from orchestrator.planning import plan_changes

HEAD = "c" * 40
BASE = "b" * 40

RULES = """\
version = 1

[project]
gcp_project = "demo-project"
region = "us-central1"
bucket = "demo-bucket"
registry = "us-central1-docker.pkg.dev/demo-project/ct"
topic = "training-runs"

[unmatched]
do = "all"

[test]
command = ["python", "-m", "pytest", "-k", "not $slow"]
setup = "pip install -e ."

[build]
machine_type = "E2_HIGHCPU_8"

[components.trainer]
context = "components/trainer"
build_args = { GREETING = "cost: $5" }

[components.dollar]
context = "components/$odd dir"

[[rule]]
name = "docs"
paths = ["*.md"]
do = "skip"

[[rule]]
name = "code"
paths = ["src/"]
do = "test"

[[rule]]
name = "images"
paths = ["components/"]
do = "build_image"

[[rule]]
name = "source"
paths = ["training_src/"]
do = "upload_source"

[[rule]]
name = "pipeline"
paths = ["pipeline/", "!pipeline/params.toml"]
do = "compile_pipeline"

[[rule]]
name = "params"
paths = ["pipeline/params.toml"]
do = "retrain"

[[rule]]
name = "function"
paths = ["function/"]
do = "deploy_function"
"""

CONTEXTS = ("components/trainer", "components/$odd dir")


def _rules(text: str = RULES) -> Rules:
    return parse_rules(text)


def _artifacts(rules: Rules) -> Artifacts:
    return name_artifacts(
        rules,
        commit=HEAD,
        ref="refs/heads/feature/$x",
        image_inputs={c.name: "files-" + c.context for c in rules.components},
        source_input="files-src",
        pipeline_inputs="p",
        parameters={"learning_rate": 0.1},
    )


def _plan(rules: Rules, *paths: str) -> Plan:
    changes = ChangeSet(
        base=BASE,
        head=HEAD,
        base_reason="explicit",
        changes=tuple(ChangedPath("M", p) for p in paths),
    )
    return plan_changes(changes, rules, CONTEXTS)


PLANS = {
    "test": ("src/app.py",),
    "one image": ("components/trainer/main.py",),
    "two images": ("components/trainer/main.py", "components/$odd dir/Dockerfile"),
    "source": ("training_src/train.py",),
    "pipeline": ("pipeline/definition.py",),
    "retrain": ("pipeline/params.toml",),
    "function": ("function/main.py",),
    "everything (unmatched)": ("unknown.txt",),
    "mixed": ("src/app.py", "components/trainer/x", "function/main.py", "pipeline/params.toml"),
}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.fixture(scope="module")
def rules() -> Rules:
    return _rules()


@pytest.mark.parametrize("paths", PLANS.values(), ids=PLANS.keys())
def test_emitted_config(rules: Rules, paths: tuple[str, ...]) -> None:
    plan = _plan(rules, *paths)
    assert plan.actions, "every plan in the table has work"
    config = emit_build(plan, rules, _artifacts(rules))
    assert config is not None

    # parses into a Build, with no unknown field
    build = build_from_dict(config)
    assert build.options.machine_type.name == "E2_HIGHCPU_8"
    assert build.timeout.total_seconds() == 3600

    # one step per action, in plan order, after the setup step when a step needs the tool
    ids = [s["id"] for s in config["steps"]]
    action_ids = [a.id for a in plan.actions]
    needs_tool = any(a.kind in (*TOOL_ACTIONS, "deploy_function") for a in plan.actions)
    assert ids == ([SETUP_STEP] if needs_tool else []) + action_ids
    assert len(set(ids)) == len(ids)

    # waitFor is needs (+ setup for tool steps); a step that needs nothing waits for nothing
    steps = {s["id"]: s for s in config["steps"]}
    for action in plan.actions:
        expected = list(action.needs)
        if action.kind in (*TOOL_ACTIONS, "deploy_function"):
            expected.append(SETUP_STEP)
        assert steps[action.id]["waitFor"] == (expected or ["-"]), action.id
        assert set(steps[action.id]["waitFor"]) <= {"-", *ids[: ids.index(action.id)]}
    if needs_tool:
        assert steps[SETUP_STEP]["waitFor"] == ["-"]

    # publish, when planned, is the last step
    if plan.action("publish"):
        assert ids[-1] == "publish"

    # no unescaped `$` reaches Cloud Build's substitution, except references it should expand
    for text in _strings(config["steps"]):
        assert "$" not in text.replace("$$", ""), text

    # the YAML writer's text loads back to the same dict
    assert yaml.safe_load(yaml_text.dump(config)) == config


def test_independent_images_run_in_parallel(rules: Rules) -> None:
    plan = _plan(rules, *PLANS["two images"])
    config = emit_build(plan, rules, _artifacts(rules))
    assert config is not None
    waits = {s["id"]: s["waitFor"] for s in config["steps"]}
    image_waits = [waits["build_image:trainer"], waits["build_image:dollar"]]
    assert image_waits[0] == image_waits[1]
    assert "build_image:trainer" not in image_waits[1]
    assert "build_image:dollar" not in image_waits[0]
    compile_waits = waits["compile_pipeline"]
    assert {"build_image:trainer", "build_image:dollar"} <= set(compile_waits)


def test_dollar_in_paths_and_args_is_escaped(rules: Rules) -> None:
    plan = _plan(rules, *PLANS["mixed"], "components/$odd dir/x")
    config = emit_build(plan, rules, _artifacts(rules))
    assert config is not None
    steps = {s["id"]: s for s in config["steps"]}
    image_script = steps["build_image:dollar"]["args"][-1]
    assert "'components/$$odd dir'" in image_script
    assert "'components/$$odd dir/Dockerfile'" in image_script
    assert "GREETING=cost: $$5" in steps["build_image:trainer"]["args"][-1]
    assert "'not $$slow'" in steps["test"]["args"][-1]
    # the shell's own `$(...)` and `"$digest"` are escaped too, so Cloud Build leaves them
    assert "digest=$$(docker inspect" in image_script
    assert '"$$digest"' in image_script
    # ids and waitFor are Cloud Build's own references: never escaped
    assert steps["build_image:dollar"]["id"] == "build_image:dollar"


def test_deploy_function_is_never_public(rules: Rules) -> None:
    plan = _plan(rules, "function/main.py")
    config = emit_build(plan, rules, _artifacts(rules))
    assert config is not None
    [deploy] = [s for s in config["steps"] if s["id"] == "deploy_function"]
    assert deploy["entrypoint"] == "gcloud"
    args = deploy["args"]
    assert args[:2] == ["functions", "deploy"]
    assert "--no-allow-unauthenticated" in args
    assert not any(a.startswith("--allow-unauthenticated") for a in args)
    assert "--gen2" in args
    assert args[args.index("--trigger-topic") + 1] == "training-runs"


def test_an_empty_plan_emits_nothing(rules: Rules) -> None:
    plan = _plan(rules, "README.md", "docs.md")
    assert plan.actions == ()
    assert emit_build(plan, rules, _artifacts(rules)) is None
    assert emit_build(_plan(rules), rules, _artifacts(rules)) is None


def test_substitutions_tags_and_options(rules: Rules) -> None:
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    assert config["substitutions"]["_HEAD_SHA"] == HEAD
    assert config["substitutions"]["_BASE_SHA"] == BASE
    assert f"commit-{HEAD[:12]}" in config["tags"]
    assert "ref-feature--x" in config["tags"]  # "/" and "$" are not allowed in a tag
    assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    build = build_from_dict(config)
    assert list(build.tags) == config["tags"]


def test_service_account_and_test_image_settings() -> None:
    text = RULES.replace(
        'machine_type = "E2_HIGHCPU_8"',
        'machine_type = "E2_HIGHCPU_8"\n'
        'service_account = "builder@demo-project.iam.gserviceaccount.com"',
    )
    rules = _rules(text)
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    assert config["serviceAccount"] == (
        "projects/demo-project/serviceAccounts/builder@demo-project.iam.gserviceaccount.com"
    )
    build_from_dict(config)


@pytest.mark.parametrize(
    "value",
    ["on", "0755", "null", "~", "yes", "1e3", "- item", "a: b", "#x", "'q'", '"dq"', "multi\nline",
     "tab\there", "ünïcødé", "", "   padded  ", "{brace}", "[list]", "*alias", "&anchor", "!tag"],
)  # fmt: skip
def test_yaml_text_keeps_every_string_a_string(value: str) -> None:
    data = {"steps": [{"id": value, "args": [value, value]}], value or "k": {"nested": [value]}}
    assert yaml.safe_load(yaml_text.dump(data)) == data


def test_yaml_text_empty_collections_and_scalars() -> None:
    data = {"a": [], "b": {}, "c": [[], {}], "d": 3, "e": True, "f": None, "g": 1.5}
    assert yaml.safe_load(yaml_text.dump(data)) == data


def test_a_root_context_builds_the_whole_checkout() -> None:
    rules = _rules(RULES + '\n[components.app]\ncontext = "."\ndockerfile = "docker/Dockerfile"\n')
    changes = ChangeSet(base=BASE, head=HEAD, base_reason="explicit",
                        changes=(ChangedPath("M", "components/trainer/main.py"),))  # fmt: skip
    plan = plan_changes(changes, rules, ("", *CONTEXTS))
    # the root context holds every path: a nested context builds both images
    assert {"build_image:app", "build_image:trainer"} <= {a.id for a in plan.actions}
    build = emit_build(plan, rules, _artifacts(rules))
    assert build is not None
    step = next(s for s in build["steps"] if s["id"] == "build_image:app")
    script = step["args"][-1]
    assert "-f docker/Dockerfile" in script
    assert script.split(" && ")[0].endswith(" .")  # docker build ... . from /workspace
