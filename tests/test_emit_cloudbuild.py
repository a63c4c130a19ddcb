"""The Cloud Build emitter over a table of plans (planned from literal change sets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapters.cloudbuild import build_from_dict
from orchestrator.artifacts import Artifacts, name_artifacts
from orchestrator.config import parse_rules
from orchestrator.emit import yaml_text
from orchestrator.emit.cloudbuild import (
    ENV_DELIMITERS,
    SETUP_STEP,
    TAG_PATTERN,
    TOOL_ACTIONS,
    emit_build,
    set_env_vars_value,
)
from orchestrator.errors import ConfigError
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
    assert config["tags"] == ["ct-orchestrator", f"commit-{HEAD[:12]}", "ref-feature-x"]
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


# -- gcloud functions deploy: the exact flags ----------------------------------------------------


def _deploy_args(rules: Rules, ref: str = "refs/heads/feature/$x") -> list[str]:
    artifacts = _artifacts(rules)._replace(ref=ref)
    config = emit_build(_plan(rules, "function/main.py"), rules, artifacts)
    assert config is not None
    build_from_dict(config)
    [deploy] = [s for s in config["steps"] if s["id"] == "deploy_function"]
    assert (deploy["name"], deploy["entrypoint"]) == (rules.build.gcloud_image, "gcloud")
    args: list[str] = deploy["args"]
    return args


def _substituted(value: str) -> str:
    """What a step receives: Cloud Build turns ``$$`` into ``$``, the only ``$`` left in it."""
    assert "$" not in value.replace("$$", ""), value
    return value.replace("$$", "$")


def _flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, name
    return args[args.index(name) + 1]


def _dict_flag(value: str) -> dict[str, str]:
    """A dict-type flag as ``gcloud topic escaping`` defines it: ``^D^`` sets the delimiter,
    each item is split on its first ``=``."""
    delimiter = ","
    if value.startswith("^") and "^" in value[1:]:
        delimiter, value = value[1:].split("^", 1)
    items = value.split(delimiter) if value else []
    return dict(item.split("=", 1) for item in items)


def test_the_function_is_deployed_with_retries(rules: Rules) -> None:
    args = _deploy_args(rules)
    assert args.count("--retry") == 1
    assert "--no-retry" not in args


def test_deploy_function_flags_are_exactly_these(rules: Rules) -> None:
    assert _deploy_args(rules) == [
        "functions", "deploy", "ct-trigger", "--gen2", "--quiet",
        "--project", "demo-project",
        "--region", "us-central1",
        "--runtime", "python311",
        "--source", "function",
        "--entry-point", "on_message",
        "--trigger-topic", "training-runs",
        "--retry",
        "--no-allow-unauthenticated",
        "--memory", "512Mi",
        "--timeout", "540s",
        "--max-instances", "10",
        "--min-instances", "0",
        "--ingress-settings", "internal-only",
        "--clear-vpc-connector",
        "--set-env-vars",
        "^,^CT_BACKEND=vertex,CT_BUCKET=demo-bucket,"
        "CT_LEDGER_URI=gs://demo-bucket/ct/ledger/feature%2F%24x/default.json,"
        "CT_PIPELINE_ROOT=gs://demo-bucket/pipeline-root,CT_PROJECT=demo-project,"
        "CT_REGION=us-central1,CT_STATE_PREFIX=ct",
    ]  # fmt: skip


FUNCTION_SETTINGS = """
[function]
memory = "1Gi"
timeout = "300s"
max_instances = 3
min_instances = 1
ingress = "internal-and-gclb"
vpc_connector = "projects/demo-project/locations/us-central1/connectors/ct-conn"
egress = "all"
service_account = "ct-trigger@demo-project.iam.gserviceaccount.com"
trigger_service_account = "ct-invoker@demo-project.iam.gserviceaccount.com"
"""


def test_function_settings_become_their_gcloud_flags() -> None:
    args = _deploy_args(_rules(RULES + FUNCTION_SETTINGS))
    assert _flag(args, "--memory") == "1Gi"
    assert _flag(args, "--timeout") == "300s"
    assert _flag(args, "--max-instances") == "3"
    assert _flag(args, "--min-instances") == "1"
    assert _flag(args, "--ingress-settings") == "internal-and-gclb"
    assert _flag(args, "--vpc-connector") == (
        "projects/demo-project/locations/us-central1/connectors/ct-conn"
    )
    assert _flag(args, "--egress-settings") == "all"
    assert _flag(args, "--service-account") == "ct-trigger@demo-project.iam.gserviceaccount.com"
    # the Eventarc trigger's identity, which holds Cloud Run Invoker (setup-gcp grants it)
    assert _flag(args, "--trigger-service-account") == (
        "ct-invoker@demo-project.iam.gserviceaccount.com"
    )
    assert "--clear-vpc-connector" not in args
    assert args.index("--retry") > 0


def test_a_connector_without_egress_keeps_gclouds_default() -> None:
    args = _deploy_args(_rules(RULES + '[function]\nvpc_connector = "ct-conn"\n'))
    assert _flag(args, "--vpc-connector") == "ct-conn"
    assert "--egress-settings" not in args  # gcloud's default: private-ranges-only


ENV_TABLE = """
[function.env]
SERVICE_ACCOUNT = "runner@demo-project.iam.gserviceaccount.com"
LIST = "a,b,c"
EQUATION = "x=y=z"
CARET = "^,^not a delimiter^"
SPACES = "  two  spaces  "
DOLLAR = "cost: $5 and $$ and ${HOME}"
EMPTY = ""
"odd:key" = "v"
"""
ENV_RULES = RULES + ENV_TABLE
ENV_EXPECTED = {
    "SERVICE_ACCOUNT": "runner@demo-project.iam.gserviceaccount.com",
    "LIST": "a,b,c",
    "EQUATION": "x=y=z",
    "CARET": "^,^not a delimiter^",
    "SPACES": "  two  spaces  ",
    "DOLLAR": "cost: $5 and $$ and ${HOME}",
    "EMPTY": "",
    "odd:key": "v",
}


def test_env_values_reach_the_function_as_written() -> None:
    rules = _rules(ENV_RULES)
    emitted = _flag(_deploy_args(rules), "--set-env-vars")
    assert "$$5" in emitted  # escaped for Cloud Build substitution
    value = _substituted(emitted)
    # ',', '@' and ':' are held by a value or a key: the first free delimiter is ';'
    assert value.startswith("^;^")
    env = _dict_flag(value)
    assert {k: env[k] for k in ENV_EXPECTED} == ENV_EXPECTED
    assert env["CT_LEDGER_URI"] == "gs://demo-bucket/ct/ledger/feature%2F%24x/default.json"
    assert env["CT_BACKEND"] == "vertex"


def test_env_with_no_free_delimiter_is_a_config_error() -> None:
    rules = _rules(RULES + f"[function]\nenv = {{ A = {json.dumps(''.join(ENV_DELIMITERS))} }}\n")
    with pytest.raises(ConfigError) as caught:
        _deploy_args(rules)
    assert (caught.value.file, caught.value.key) == ("rules.toml", "function.env")
    assert str(caught.value) == (
        "rules.toml: [function.env] the function's environment cannot be passed to gcloud: its "
        "keys and values hold every delimiter gcloud could split them on "
        "(, @ : ; | # ~ ! % & + *)"
    )


ENV_KEYS = st.text(min_size=1).filter(lambda key: "=" not in key)


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(ENV_KEYS, st.text(), min_size=1, max_size=8))
def test_set_env_vars_parses_back_to_the_environment(env: dict[str, str]) -> None:
    rules = _rules()
    held = "".join(f"{k}={v}" for k, v in env.items())
    if all(delimiter in held for delimiter in ENV_DELIMITERS):
        with pytest.raises(ConfigError):
            set_env_vars_value(env, rules)
        return
    assert _dict_flag(set_env_vars_value(env, rules)) == env


# -- the real gcloud (on this machine image; skipped where it is not installed) ----------------


def _gcloud_sdk() -> Path | None:
    found = shutil.which("gcloud")
    if found is None:
        return None
    root = Path(found).resolve().parent.parent
    return root if (root / "lib" / "googlecloudsdk").is_dir() else None


needs_gcloud = pytest.mark.skipif(_gcloud_sdk() is None, reason="the gcloud CLI is not installed")


def _gcloud_env(home: Path) -> dict[str, str]:
    """A gcloud with no account and no configuration of the user's, that never looks for one
    on a metadata server."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
    }


GCLOUD_DICT_PARSER = """
import json, sys
from googlecloudsdk.calliope import arg_parsers
from googlecloudsdk.command_lib.functions.v2.deploy import env_vars_util
parse = arg_parsers.ArgDict(
    key_type=env_vars_util.EnvVarKeyType, value_type=env_vars_util.EnvVarValueType
)
print(json.dumps(parse(sys.argv[1])))
"""


@needs_gcloud
def test_gclouds_own_parser_reads_the_env_vars_back(tmp_path: Path) -> None:
    """The very type gcloud gives --set-env-vars (functions v2 deploy), run on the value a step
    receives."""
    root = _gcloud_sdk()
    assert root is not None
    bundled = root / "platform" / "bundledpythonunix" / "bin" / "python3"
    python = str(bundled) if bundled.exists() else sys.executable
    value = _substituted(_flag(_deploy_args(_rules(ENV_RULES)), "--set-env-vars"))
    env = {
        **_gcloud_env(tmp_path),
        "PYTHONPATH": f"{root / 'lib'}{os.pathsep}{root / 'lib' / 'third_party'}",
    }
    done = subprocess.run(
        [python, "-c", GCLOUD_DICT_PARSER, value],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    parsed = json.loads(done.stdout)
    assert {k: parsed[k] for k in ENV_EXPECTED} == ENV_EXPECTED
    assert parsed == _dict_flag(value)


@needs_gcloud
@pytest.mark.parametrize("extra", ["", FUNCTION_SETTINGS], ids=["defaults", "every-setting"])
def test_gcloud_accepts_every_emitted_flag(tmp_path: Path, extra: str) -> None:
    """gcloud parses the whole command line (flag names, choices, integers, durations, the
    env dict) before it needs credentials: with none, it must stop at the account, exit 1, and
    never at an argument (exit 2)."""
    args = [_substituted(a) for a in _deploy_args(_rules(ENV_RULES + extra))]
    done = subprocess.run(
        ["gcloud", *args],
        capture_output=True, text=True, env=_gcloud_env(tmp_path), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "You do not currently have an active account selected" in done.stderr
    assert "argument" not in done.stderr


# -- tags ------------------------------------------------------------------------------------


def _tags_for(rules: Rules, branch: str, commit: str = HEAD) -> list[str]:
    plan = _plan(rules, "src/app.py")._replace(head=commit)
    artifacts = _artifacts(rules)._replace(ref=f"refs/heads/{branch}")
    config = emit_build(plan, rules, artifacts)
    assert config is not None
    assert list(build_from_dict(config).tags) == config["tags"]
    tags: list[str] = config["tags"]
    return tags


@settings(max_examples=300, deadline=None)
@given(branch=st.text(), commit=st.text())
def test_every_tag_is_one_cloud_build_accepts(rules: Rules, branch: str, commit: str) -> None:
    tags = _tags_for(rules, branch, commit)
    for tag in tags:
        assert TAG_PATTERN.fullmatch(tag), tag
    assert len(set(tags)) == len(tags)
    assert tags[0] == "ct-orchestrator"


@pytest.mark.parametrize(
    ("branch", "tag"),
    [
        ("main", "ref-main"),
        ("feature/café", "ref-feature-cafe"),
        ("release/v1.2_rc-3", "ref-release-v1.2_rc-3"),
        ("naïve/ünïcødé", "ref-naive-unic-de"),  # ø has no ASCII form
    ],
)
def test_a_branch_becomes_a_readable_ascii_tag(rules: Rules, branch: str, tag: str) -> None:
    assert _tags_for(rules, branch)[-1] == tag


def test_long_and_unspellable_branches_keep_distinct_tags(rules: Rules) -> None:
    long_a, long_b = "x" * 199 + "a", "x" * 199 + "b"
    tag_a, tag_b = _tags_for(rules, long_a)[-1], _tags_for(rules, long_b)[-1]
    assert len(tag_a) == len(tag_b) == 128
    assert tag_a != tag_b
    assert tag_a.startswith("ref-xxxx")
    japanese = _tags_for(rules, "日本語")[-1]
    assert TAG_PATTERN.fullmatch(japanese)
    assert japanese != _tags_for(rules, "中文")[-1]


# -- logs bucket -----------------------------------------------------------------------------


def test_a_logs_bucket_is_the_builds_logs_bucket() -> None:
    rules = _rules(
        RULES.replace(
            'machine_type = "E2_HIGHCPU_8"',
            'machine_type = "E2_HIGHCPU_8"\nlogs_bucket = "gs://demo-build-logs/ct"\n'
            'service_account = "builder@demo-project.iam.gserviceaccount.com"',
        )
    )
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    assert config["logsBucket"] == "gs://demo-build-logs/ct"
    assert config["options"]["logging"] == "GCS_ONLY"
    build = build_from_dict(config)
    assert build.logs_bucket == "gs://demo-build-logs/ct"
    assert build.options.logging.name == "GCS_ONLY"
    assert build.service_account.endswith("/builder@demo-project.iam.gserviceaccount.com")


def test_no_logs_bucket_unless_one_is_set(rules: Rules) -> None:
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    assert "logsBucket" not in config
