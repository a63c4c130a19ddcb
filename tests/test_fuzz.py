"""Fuzzing with hypothesis (issue 11, "Hostile input"): whatever rules.toml, GitHub event
payload, ``step --artifacts`` or command line a user or an attacker hands the CLI, the answer is
an exit code of 0, 1 or 2 with at most one error line, never exit 3 (a bug) or a traceback.

Deterministic (``derandomize=True``) so CI sees the same examples every run; sized to run in
well under a minute on two cores. The Pub/Sub side (the trigger function) is fuzzed in
tests/workload/test_function_fuzz.py, next to the function's other tests.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.artifacts import Artifacts
from orchestrator.ci_env import base_hint
from orchestrator.cli import main
from orchestrator.config import load_rules, parse_rules
from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Rules
from orchestrator.output import error_line
from tests.fixtures.gitrepo import GitRepo

ENV = {"PATH": os.environ["PATH"]}
IN_PROCESS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THROUGH_CLI = settings(IN_PROCESS, max_examples=30)

BASE_RULES = """\
version = 1

[project]
bucket = "fuzz-bucket"
registry = "registry.invalid/ct"

[components.trainer]
context = "components/trainer"

[[rule]]
name = "source"
paths = ["training_src/"]
do = "upload_source"

[[rule]]
name = "images"
paths = ["components/"]
do = "build_image"
"""


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=ENV if env is None else env)
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(
    code: int, err: str, allowed: tuple[int, ...] = (0, 1, 2), *, several: bool = False
) -> None:
    """The exit code is a verdict, not a bug; an error is exactly one line. ``several``:
    validate lists every missing component context, each its own one-line error."""
    assert code in allowed, (code, err)
    assert "Traceback" not in err, err
    if code != 0:
        lines = err.splitlines(keepends=True)
        assert len(lines) == 1 or (several and len(lines) > 1), err
        for line in lines:
            assert line.startswith("orchestrator: error: ") and line.endswith("\n"), err
        assert "internal error" not in err, err


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitRepo]:
    """One small repository for the whole module (hypothesis runs many examples per test,
    and function-scoped fixtures are not reset between them)."""
    git_repo = GitRepo(tmp_path_factory.mktemp("fuzz") / "repo")
    git_repo.commit(
        {
            "rules.toml": BASE_RULES,
            "training_src/train.py": "x = 1\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
        }
    )
    git_repo.commit({"training_src/train.py": "x = 2\n", "README.md": "hi\n"})
    yield git_repo


# -- rules.toml --------------------------------------------------------------------------------

# What the README's rules.toml reference names: tables, their keys, the actions.
TABLES = {
    "project": ["gcp_project", "region", "bucket", "registry", "topic", "prefix"],
    "unmatched": ["do"],
    "test": ["command", "setup", "image"],
    "pipeline": ["dir", "compile", "params"],
    "source": ["dir"],
    "function": ["dir", "name", "entry_point", "runtime", "env", "memory", "timeout",
                 "max_instances", "min_instances", "ingress", "vpc_connector", "egress"],
    "build": ["machine_type", "logging", "timeout", "service_account", "install", "secret_env"],
    "data": ["prefix", "bucket"],
    "build.secret_env": ["TOKEN", "bad name", ""],
    "function.env": ["MODE", "X_GOOGLE_X", "A=B"],
    "components.trainer": ["context", "dockerfile", "build_args"],
    "components.Bad_Name": ["context"],
}  # fmt: skip
ACTIONS = ["all", "skip", "error", "upload_source", "build_image", "compile_pipeline",
           "retrain", "deploy_function", "test", "build_image:trainer", "nonsense"]  # fmt: skip
WEIRD_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=20
) | st.sampled_from(
    ["", "..", "../x", "/etc", "a\nb", "\x00", "\x1b[2J", "*", "!", "**/", "[", "\\",
     "gs://b/../x", "\udcff", "é", "a" * 300, "projects/p/secrets/s/versions/latest",
     f"gs://fuzz-bucket/{'a' * 300}.tar.gz", "gs://fuzz-bucket/training_src",
     "gs://fuzz-bucket/source/x/training_src.tar.gz/below"]
)  # fmt: skip
KEYS = st.sampled_from(
    [k for keys in TABLES.values() for k in keys] + ["name", "paths", "do", "version"]
) | st.text(max_size=8)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A value as TOML text (for what TOML cannot hold, text TOML rejects: also a case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(value)


# A plausible value per key, so that many documents get past TOML to the validation itself.
GOOD_VALUES: dict[str, list[Any]] = {
    "bucket": ["fuzz-bucket", "Bad_Bucket", "gs://x"], "registry": ["registry.invalid/ct"],
    "do": ["all", "skip", "error"], "command": [["pytest"], []], "dir": ["src", "../x", "/x"],
    "compile": [["python", "c.py"]], "params": ["p.toml"], "context": ["components/trainer", "."],
    "dockerfile": ["Dockerfile", "../../D"], "build_args": [{"A": "1"}, {"A": 1}],
    "memory": ["256Mi", "1Ti", "0M"], "timeout": ["60s", "9999s", "x"],
    "max_instances": [1, -1, 10**30], "ingress": ["all", "x"], "egress": ["all"],
    "env": [{"MODE": "x"}, {"": "x"}], "secret_env": [{"T": "projects/p/secrets/s:1"}],
    "TOKEN": ["projects/demo-project/secrets/s/versions/latest", "x"], "MODE": ["a\nb"],
    "machine_type": ["E2_HIGHCPU_8", "tiny"], "logging": ["CLOUD_LOGGING_ONLY", "x"],
    "prefix": ["data/", "", "../"], "gcp_project": ["demo-project", "X"], "region": ["r1"],
    "topic": ["t", "1bad"], "runtime": ["python311"], "name": ["fn", ""],
}  # fmt: skip
VALUES = st.recursive(
    st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**30, 0])
    | st.floats()
    | WEIRD_TEXT
    | st.sampled_from(ACTIONS),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=8,
)


PATTERNS = st.sampled_from(["src/", "*.md", "!x", "/rules.toml", "**", "a/**/b", "[a-", "!"])


@st.composite
def rules_documents(draw: st.DrawFn) -> str:
    """A rules.toml: the reference's structure with random keys, types and values, then
    random mutations of the text (lines dropped, duplicated or garbled, deep nesting)."""
    lines = [f"version = {toml_value(draw(st.sampled_from([1, 1, 1, 1, 1, 2, '1', 1.0])))}"]
    for table in draw(st.lists(st.sampled_from(sorted(TABLES)), max_size=5, unique=True)):
        lines.append(f"[{table}]")
        keys = st.sampled_from(TABLES[table]) | KEYS
        for key in draw(st.lists(keys, max_size=4, unique=True)):
            value = draw(st.sampled_from(GOOD_VALUES.get(key, [""])) | VALUES)
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[rule]]")
        rule: dict[str, Any] = {
            "name": draw(st.sampled_from(["a", "b", "a"]) | WEIRD_TEXT),
            "paths": draw(st.lists(WEIRD_TEXT | PATTERNS, max_size=3) | VALUES),
            "do": draw(st.sampled_from(ACTIONS) | st.lists(st.sampled_from(ACTIONS)) | VALUES),
        }
        for key in draw(st.lists(st.sampled_from(sorted(rule)), unique=True, min_size=1)):
            lines.append(f"{toml_key(key)} = {toml_value(rule[key])}")
    for _ in range(draw(st.integers(0, 3))):
        if not lines:
            break
        index = draw(st.integers(0, len(lines) - 1))
        mutation = draw(st.sampled_from(["drop", "repeat", "garble", "truncate", "nest"]))
        if mutation == "drop":
            del lines[index]
        elif mutation == "repeat":
            lines.insert(index, lines[index])
        elif mutation == "garble":
            lines[index] = draw(st.text(max_size=30))
        elif mutation == "truncate":
            lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
        else:
            depth = draw(st.integers(10, 3000))
            lines.insert(index, "deep = " + "[" * depth + "]" * depth)
    return "\n".join(lines) + "\n"


def check_rules_outcome(text: str, source: str = "fuzz.toml") -> Rules | ConfigError:
    try:
        return parse_rules(text, source=source)
    except ConfigError as error:
        line = error_line(str(error))
        assert line.count("\n") == 1, line
        assert str(error).startswith(source), str(error)
        return error


@IN_PROCESS
@given(rules_documents())
def test_fuzzed_rules_toml_is_rules_or_a_config_error(text: str) -> None:
    check_rules_outcome(text)


@IN_PROCESS
@given(st.text(max_size=200))
def test_random_text_as_rules_toml_is_rules_or_a_config_error(text: str) -> None:
    check_rules_outcome(text)


@IN_PROCESS
@given(st.binary(max_size=200), st.sampled_from([b"", b"version = 1\n", BASE_RULES.encode()]))
def test_random_bytes_in_a_rules_file_are_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, prefix: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "bytes-rules.toml"
    path.write_bytes(prefix + data)
    try:
        load_rules(path)
    except ConfigError as error:
        assert error_line(str(error)).count("\n") == 1
        assert str(error).startswith(str(path))


@THROUGH_CLI
@given(rules_documents())
def test_fuzzed_rules_toml_through_validate_is_exit_0_or_2(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "cli-rules.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, _, err = run("validate", "--repo", str(repo.path), "--rules", str(path))
    assert_clean_exit(code, err, allowed=(0, 2), several=True)


PATTERN_TEXT = st.text(alphabet="*?[]!/\\.^-{},ab\n é", min_size=1, max_size=12)
REPO_PATHS = st.text(alphabet="*?[]!/\\.^-ab\n\t é", min_size=1, max_size=15)


@IN_PROCESS
@given(
    st.lists(st.lists(PATTERN_TEXT, min_size=1, max_size=4), min_size=1, max_size=3),
    st.lists(REPO_PATHS | st.sampled_from(["training_src/train.py", "a/b/c", "README.md"]),
             min_size=1, max_size=4),
)  # fmt: skip
def test_fuzzed_patterns_match_any_path_or_are_a_config_error(
    patterns: list[list[str]], paths: list[str]
) -> None:
    """Rules that parse, with any gitignore-style patterns, plan any path without a crash."""
    from orchestrator.model import ChangedPath, ChangeSet
    from orchestrator.planning import UnmatchedPathsError, plan_changes

    text = "version = 1\n" + "".join(
        f'[[rule]]\nname = "r{i}"\npaths = {toml_value(p)}\ndo = "upload_source"\n'
        for i, p in enumerate(patterns)
    )
    rules = check_rules_outcome(text)
    if isinstance(rules, ConfigError):
        return
    changes = ChangeSet(None, "HEAD", "fuzz", tuple(ChangedPath("M", p) for p in paths))
    try:
        plan_changes(changes, rules, ())
    except UnmatchedPathsError as error:
        assert error_line(str(error)).count("\n") == 1


@THROUGH_CLI
@given(
    st.lists(st.lists(PATTERN_TEXT, min_size=1, max_size=3), min_size=1, max_size=2),
    st.lists(REPO_PATHS, min_size=1, max_size=3),
)
def test_fuzzed_patterns_through_explain_and_plan_are_exit_0_or_2(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, patterns: list[list[str]],
    paths: list[str],
) -> None:  # fmt: skip
    text = BASE_RULES + "".join(
        f'[[rule]]\nname = "r{i}"\npaths = {toml_value(p)}\ndo = "upload_source"\n'
        for i, p in enumerate(patterns)
    )
    path = tmp_path_factory.getbasetemp() / "pattern-rules.toml"
    path.write_text(text, encoding="utf-8")
    common = ["--repo", str(repo.path), "--rules", str(path)]
    code, out, err = run("explain", *common, *paths)
    assert_clean_exit(code, err, allowed=(0, 2))
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", out), out
    changed = [arg for p in paths for arg in ("--changed", p)]
    code, out, err = run("plan", *common, "--format", "json", *changed)
    assert_clean_exit(code, err, allowed=(0, 2))
    if code == 0:
        json.loads(out)


# -- GitHub event payloads ---------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
SHA_LIKE = JSON | st.sampled_from(
    ["0" * 40, "0" * 64, "HEAD", "HEAD~1", "main", "-x", "--output=x", "a" * 40, "", " ",
     "HEAD\n", "@{-1}", ":/", "..", "x" * 1000, "\udcff", "HEAD\udcff"]
)  # fmt: skip
EVENT_NAMES = ["push", "pull_request", "pull_request_target", "merge_group",
               "workflow_dispatch", "schedule", ""]  # fmt: skip


@st.composite
def near_valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """The fields each event's reader looks at, some of the wrong type or value."""
    return {
        "before": draw(SHA_LIKE),
        "after": draw(SHA_LIKE),
        "forced": draw(st.booleans() | JSON),
        "commits": draw(st.lists(JSON, max_size=2) | JSON),
        "ref": draw(st.sampled_from(["refs/heads/main", "refs/tags/v1"]) | JSON),
        "repository": draw(st.fixed_dictionaries({"default_branch": SHA_LIKE}) | JSON),
        "pull_request": draw(
            st.fixed_dictionaries(
                {
                    "base": st.fixed_dictionaries({"sha": SHA_LIKE, "ref": SHA_LIKE}) | JSON,
                    "head": st.fixed_dictionaries({"sha": SHA_LIKE}) | JSON,
                }
            )
            | JSON
        ),
        "merge_group": draw(
            st.fixed_dictionaries(
                {"base_sha": SHA_LIKE, "head_sha": SHA_LIKE, "base_ref": SHA_LIKE}
            )
            | JSON
        ),
    }


PAYLOADS = JSON | near_valid_payloads()


@IN_PROCESS
@given(st.sampled_from(EVENT_NAMES), PAYLOADS)
def test_fuzzed_event_payloads_give_a_hint_or_an_input_error(event: str, payload: Any) -> None:
    env = {"GITHUB_EVENT_NAME": event}
    try:
        base_hint(env, payload if isinstance(payload, dict) else None)
    except InputError as error:
        assert error_line(str(error)).count("\n") == 1


@THROUGH_CLI
@given(st.sampled_from(EVENT_NAMES), PAYLOADS | st.binary(max_size=50).map(lambda b: {"raw": b}))
def test_fuzzed_event_payloads_through_plan_are_exit_0_or_2(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, event: str, payload: Any
) -> None:
    path = tmp_path_factory.getbasetemp() / "event.json"
    if isinstance(payload, dict) and isinstance(payload.get("raw"), bytes):
        path.write_bytes(payload["raw"])
    else:
        path.write_text(json.dumps(payload), encoding="utf-8", errors="surrogatepass")
    env = {**ENV, "GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": str(path)}
    code, _, err = run("plan", "--repo", str(repo.path), "--format", "json", env=env)
    assert_clean_exit(code, err, allowed=(0, 2))


# -- step --artifacts --------------------------------------------------------------------------

VALID_ARTIFACTS: dict[str, Any] = {
    "commit": "0123456789abcdef0123456789abcdef01234567",
    "ref": "refs/heads/main",
    "bucket": "fuzz-bucket",
    "images": {"trainer": "registry.invalid/ct/trainer:c-x"},
    "source_uri": "gs://fuzz-bucket/source/x/training_src.tar.gz",
    "spec_uri": "gs://fuzz-bucket/pipelines/x/pipeline.yaml",
    "parameters": {"alpha": 1},
}


@st.composite
def near_valid_artifacts(draw: st.DrawFn) -> str:
    data: dict[str, Any] = dict(VALID_ARTIFACTS)
    names = [*sorted(data), "function_input", "data_uri", "data_version", "extra"]
    for key in draw(st.lists(st.sampled_from(names))):
        if draw(st.booleans()):
            data.pop(key, None)
        else:
            data[key] = draw(JSON | WEIRD_TEXT)
    return json.dumps(data)


#: an object key: '/'-separated parts of any text, some longer than a file name may be
OBJECT_KEYS = st.lists(
    st.text(min_size=1, max_size=12) | st.sampled_from(["a" * 256, "é" * 200, ".", ".."]),
    min_size=1,
    max_size=3,
).map("/".join)


@st.composite
def artifacts_naming_objects(draw: st.DrawFn) -> str:
    """Valid artifacts but for the objects they name, which the steps read and write."""
    data = dict(VALID_ARTIFACTS)
    for name in ("source_uri", "spec_uri"):
        data[name] = f"gs://fuzz-bucket/{draw(OBJECT_KEYS)}"
    return json.dumps(data)


ARTIFACTS_TEXT = (
    near_valid_artifacts()
    | artifacts_naming_objects()
    | JSON.map(json.dumps)
    | st.text(max_size=100)
)


@IN_PROCESS
@given(ARTIFACTS_TEXT)
def test_fuzzed_artifacts_are_artifacts_or_an_input_error(text: str) -> None:
    try:
        Artifacts.from_json(text)
    except InputError as error:
        assert error_line(str(error)).count("\n") == 1


# Actions whose step cannot reach a service here: a bad --artifacts is refused before anything
# runs, and a valid one fails for want of Docker or a pipeline (exit 1: nothing in the bucket
# is a compiled spec, so publish never starts a run), or uploads to a temporary local bucket.
STEP_ACTIONS = ["upload_source", "compile_pipeline", "publish", "nonsense",
                "build_image:trainer", "build_image:", ""]  # fmt: skip


@settings(THROUGH_CLI, max_examples=100)  # cheap: most are refused before any work
@given(st.sampled_from(STEP_ACTIONS), ARTIFACTS_TEXT)
def test_fuzzed_artifacts_through_step_are_exit_0_1_or_2(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, action: str, text: str
) -> None:
    env = {
        **ENV,
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path_factory.getbasetemp() / "step-bucket"),
    }
    code, _, err = run("step", action, "--repo", str(repo.path), "--artifacts", text, env=env)
    assert_clean_exit(code, err)


# -- the command line --------------------------------------------------------------------------

# Commands that start nothing: no run, trigger or --cloud (no pipeline, no Docker, no network);
# ledger set writes only to the temporary local bucket.
COMMANDS = [["plan"], ["validate"], ["explain", "x"], ["emit"], ["ledger", "show"],
            ["ledger", "history"], ["ledger", "set", "--commit", "HEAD"],
            ["setup-gcp", "--print"], ["--dry-run"], []]  # fmt: skip
FLAG_VALUES: dict[str, st.SearchStrategy[list[str]]] = {
    "--base": SHA_LIKE.filter(lambda v: isinstance(v, str)).map(lambda v: ["--base", v]),
    "--head": SHA_LIKE.filter(lambda v: isinstance(v, str)).map(lambda v: ["--head", v]),
    "--changed": WEIRD_TEXT.map(lambda v: ["--changed", v]),
    "--format": st.sampled_from(["table", "json", "markdown", "github", "yaml"]).map(
        lambda v: ["--format", v]
    ),
    "--rules": st.sampled_from(["rules.toml", "/dev/null", "/nonexistent", "/", ""]).map(
        lambda v: ["--rules", v]
    ),
    "--services": st.just(["--services", "local"]),
    "--working-tree": st.just(["--working-tree"]),
    "--since-deployed": st.just(["--since-deployed"]),
    "--all-paths": st.just(["--all-paths"]),
    "--branch": WEIRD_TEXT.map(lambda v: ["--branch", v]),
    "--github-repo": WEIRD_TEXT.map(lambda v: ["--github-repo", v]),
    "--unknown": st.just(["--unknown"]),
    "positional": WEIRD_TEXT.map(lambda v: [v]),
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    argv = list(draw(st.sampled_from(COMMANDS)))
    for flag in draw(st.lists(st.sampled_from(sorted(FLAG_VALUES)), max_size=4)):
        argv += draw(FLAG_VALUES[flag])
    # never a surrogate in argv that the OS could not have passed: Python decodes argv with
    # surrogateescape, so only \udc80-\udcff appear
    return [a.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
            if _encodable(a) else a.encode("utf-8", "replace").decode() for a in argv]  # fmt: skip


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


@THROUGH_CLI
@given(command_lines())
def test_fuzzed_command_lines_are_exit_0_1_or_2(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, argv: list[str]
) -> None:
    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path_factory.getbasetemp() / "b")}
    code, out, err = run(*argv, "--repo", str(repo.path), env=env)
    assert_clean_exit(code, err, several=argv[:1] == ["validate"])
    formats = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--format"]
    if code == 0 and formats and formats[-1] == "json" and argv[0] in ("plan", "--dry-run"):
        json.loads(out)  # whatever --changed named, the plan is JSON


@pytest.mark.parametrize(
    "argv",
    [
        # found by fuzzing: a --branch that is not UTF-8 was exit 3 (urllib's quote)
        ["ledger", "show", "--branch", b"\xed\xb3\xbf".decode("utf-8", "surrogateescape")],
        ["ledger", "set", "--commit", "HEAD", "--branch", "\udcff"],
    ],
)
def test_command_lines_fuzzing_found(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, argv: list[str]
) -> None:
    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path_factory.getbasetemp() / "b")}
    code, _, err = run(*argv, "--repo", str(repo.path), env=env)
    assert code == 2
    assert_clean_exit(code, err)
    assert "cannot have a deploy ledger" in err


@pytest.mark.parametrize("flag", ["--base", "--head"])
def test_a_revision_that_is_not_utf8_is_not_a_commit(repo: GitRepo, flag: str) -> None:
    """Was exit 3: the revision went to git's stdin through a strict UTF-8 encode."""
    code, _, err = run("plan", flag, "a\udcff", "--repo", str(repo.path))
    assert code == 2
    assert_clean_exit(code, err)
    assert f"a\\xff ({flag}) is not a commit in the clone at" in err


def test_the_flags_fuzzed_are_the_real_ones() -> None:
    """The command-line strategy draws from the parser's own option names."""
    import argparse

    from orchestrator.cli import build_parser

    parsers = [build_parser()]
    for action in parsers[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += action.choices.values()
    options = {o for parser in parsers for action in parser._actions for o in action.option_strings}
    assert {f for f in FLAG_VALUES if f.startswith("--")} - options == {"--unknown"}


# -- the real process --------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


@settings(THROUGH_CLI, max_examples=12)
@given(rules_documents(), st.sampled_from(["validate", "plan"]))
def test_fuzzed_rules_toml_through_the_real_process_with_an_ascii_locale(
    repo: GitRepo, tmp_path_factory: pytest.TempPathFactory, text: str, command: str
) -> None:
    """``python -m orchestrator`` itself, its streams ASCII (LC_ALL=C, no PYTHONIOENCODING):
    whatever rules.toml holds, exit 0 or 2 and at most one error line, no traceback."""
    path = tmp_path_factory.getbasetemp() / "process-rules.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C", "PYTHONPATH": str(REPO_ROOT),
           "PYTHONIOENCODING": "ascii:strict", "PYTHONUTF8": "0"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", command, "--repo", str(repo.path),
         "--rules", str(path), "--format", "json"] if command == "plan" else
        [sys.executable, "-m", "orchestrator", command, "--repo", str(repo.path),
         "--rules", str(path)],
        env=env, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    err = done.stderr.decode("ascii")  # strict: every byte written is ASCII
    done.stdout.decode("ascii")
    assert_clean_exit(done.returncode, err, allowed=(0, 2), several=command == "validate")
