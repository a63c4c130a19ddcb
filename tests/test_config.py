"""rules.toml loading: a table of broken files, each with its exact message; valid files."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import model
from orchestrator.config import load_rules, parse_rules
from orchestrator.errors import ConfigError
from orchestrator.model import Component, Directive, ProjectSettings, Rule

REPO_ROOT = Path(__file__).resolve().parent.parent

V1 = "version = 1\n"
CONTEXT_OUTSIDE = (
    "rules.toml:3: [components.a.context] must be a directory inside the repository, "
    "relative to its root ('.' for the root itself)"
)
RULE = '[[rule]]\nname = "r"\npaths = ["a/"]\ndo = "upload_source"\n'


FN = V1 + "[function]\n"
MEMORY_ERROR = (
    "rules.toml:3: [function.memory] {} is not a function's memory: write a number and one of "
    "the units k, M, G, Ki, Mi, Gi, from 128Mi to 32Gi (such as '512Mi' or '1Gi')"
)
TIMEOUT_ERROR = (
    "rules.toml:3: [function.timeout] {} is not a function's timeout: write seconds such as "
    "'540s', from 1s to 540s (the most an event-driven function may run)"
)
ENV_KEY_ERROR = (
    "rules.toml:{}: [function.env] {} cannot be a function's environment variable: a key must "
    "not be empty, contain '=' or start with X_GOOGLE_, and FUNCTION_TARGET, "
    "FUNCTION_SIGNATURE_TYPE, K_SERVICE, K_REVISION, PORT are set by Cloud Run"
)
SERVICE_ACCOUNT_ERROR = (
    "rules.toml:{}: [build.service_account] Cloud Build refuses a build with its own service "
    "account and logging = {}: set logging to 'CLOUD_LOGGING_ONLY' or 'NONE', or logs_bucket"
)


def rule(do: str, paths: str = '["a/"]') -> str:
    return f'[[rule]]\nname = "r"\npaths = {paths}\ndo = {do}\n'


# Each case: the file's text, then str(ConfigError) exactly: "<file>:<line>: [<key>] <message>".
BROKEN: list[tuple[str, str, str]] = [
    ("toml-syntax", V1 + "[project\n",
     "rules.toml:2: invalid TOML: Expected ']' at the end of a table declaration"),
    ("toml-syntax-later-line", V1 + "\n\n" + 'x = "unterminated\n',
     "rules.toml:4: invalid TOML: Illegal character '\\n'"),
    ("unsupported-version", "version = 2\n",
     "rules.toml:1: [version] unsupported version 2; this orchestrator reads version 1"),
    ("missing-version", RULE, "rules.toml: missing required key 'version'"),
    ("version-as-string", 'version = "1"\n',
     "rules.toml:1: [version] must be an integer, not a string"),
    ("version-as-bool", "version = true\n",
     "rules.toml:1: [version] must be an integer, not a boolean"),
    ("unknown-top-level-key", V1 + "colour = 1\n",
     "rules.toml:2: [colour] unknown key 'colour' "
     "(allowed: version, project, unmatched, components, rule, test, pipeline, source, function, "
     "build, data)"),
    ("unknown-project-key", V1 + '[project]\nregion = "x"\nzone = "y"\n',
     "rules.toml:4: [project.zone] unknown key 'zone' "
     "(allowed: gcp_project, region, bucket, registry, topic, prefix)"),
    ("unknown-component-key", V1 + '[components.a]\ncontext = "a"\nimage = "x"\n',
     "rules.toml:4: [components.a.image] unknown key 'image' "
     "(allowed: context, dockerfile, build_args)"),
    ("unknown-rule-key", V1 + RULE + 'when = "x"\n',
     "rules.toml:6: [rule 'r'.when] unknown key 'when' (allowed: name, paths, do)"),
    ("unknown-do", V1 + rule('"deploy"'),
     "rules.toml:5: [rule 'r'.do] unknown action 'deploy'; use one of: skip, all, test, "
     "build_image, upload_source, compile_pipeline, deploy_function, retrain "
     "(build_image may name a component: build_image:<name>)"),
    ("do-unknown-component",
     V1 + '[components.trainer]\ncontext = "t"\n' + rule('"build_image:nope"'),
     "rules.toml:7: [rule 'r'.do] unknown component 'nope' in 'build_image:nope' "
     "(components: trainer)"),
    ("do-unknown-component-none-declared", V1 + rule('"build_image:nope"'),
     "rules.toml:5: [rule 'r'.do] unknown component 'nope' in 'build_image:nope' "
     "(components: none are declared)"),
    ("target-on-other-kind", V1 + rule('"upload_source:x"'),
     "rules.toml:5: [rule 'r'.do] 'upload_source' takes no ':x' "
     "(only build_image names a component)"),
    ("build-image-empty-target", V1 + rule('"build_image:"'),
     "rules.toml:5: [rule 'r'.do] 'build_image:' names no component"),
    ("skip-with-others", V1 + rule('["skip", "retrain"]'),
     "rules.toml:5: [rule 'r'.do] 'skip' cannot be combined with other actions"),
    ("empty-paths", V1 + rule('"retrain"', paths="[]"),
     "rules.toml:4: [rule 'r'.paths] must not be empty"),
    ("empty-do", V1 + rule("[]"), "rules.toml:5: [rule 'r'.do] must not be empty"),
    ("paths-as-int", V1 + rule('"retrain"', paths="3"),
     "rules.toml:4: [rule 'r'.paths] must be a string or a list of strings, not an integer"),
    ("paths-with-int", V1 + rule('"retrain"', paths='["a", 3]'),
     "rules.toml:4: [rule 'r'.paths] must be a string or a list of strings, not a list"),
    ("do-as-inline-table", V1 + rule("{ x = 1 }"),
     "rules.toml:5: [rule 'r'.do] must be a string or a list of strings, not a table"),
    ("context-as-list", V1 + '[components.a]\ncontext = ["a"]\n',
     "rules.toml:3: [components.a.context] must be a string, not a list"),
    ("build-arg-not-string-inline", V1 + '[components.a]\ncontext = "a"\nbuild_args = { X = 1 }\n',
     "rules.toml:4: [components.a.build_args.X] must be a string, not an integer"),
    ("build-arg-not-string-table",
     V1 + '[components.a]\ncontext = "a"\n\n[components.a.build_args]\nY = "ok"\nX = 1\n',
     "rules.toml:7: [components.a.build_args.X] must be a string, not an integer"),
    ("build-args-not-table", V1 + '[components.a]\ncontext = "a"\nbuild_args = "X=1"\n',
     "rules.toml:4: [components.a.build_args] must be a table of strings, not a string"),
    ("dockerfile-as-int", V1 + '[components.a]\ncontext = "a"\ndockerfile = 1\n',
     "rules.toml:4: [components.a.dockerfile] must be a string, not an integer"),
    ("project-not-table", V1 + "project = 3\n",
     "rules.toml:2: [project] must be a table ([project]), not an integer"),
    ("rule-not-array", V1 + "rule = 3\n",
     "rules.toml:2: [rule] must be an array of tables ([[rule]])"),
    ("component-not-table", V1 + "[components]\na = 3\n",
     "rules.toml:3: [components.a] must be a table, not an integer"),
    ("duplicate-rule-names", V1 + RULE + "\n" + RULE,
     "rules.toml:8: [rule 'r'.name] duplicate rule name 'r' (first defined at line 3)"),
    ("missing-name", V1 + '[[rule]]\npaths = ["a/"]\ndo = "retrain"\n',
     "rules.toml:2: [rule[0]] missing required key 'name'"),
    ("missing-name-second-rule", V1 + RULE + '[[rule]]\npaths = ["a/"]\ndo = "retrain"\n',
     "rules.toml:6: [rule[1]] missing required key 'name'"),
    ("name-as-int", V1 + '[[rule]]\nname = 3\npaths = ["a"]\ndo = "retrain"\n',
     "rules.toml:3: [rule[0].name] must be a string, not an integer"),
    ("missing-paths", V1 + '[[rule]]\nname = "r"\ndo = "retrain"\n',
     "rules.toml:2: [rule 'r'] missing required key 'paths'"),
    ("missing-do", V1 + '[[rule]]\nname = "r"\npaths = ["a"]\n',
     "rules.toml:2: [rule 'r'] missing required key 'do'"),
    ("test-without-command", V1 + rule('"test"'),
     "rules.toml:5: [rule 'r'.do] says 'test' but rules.toml has no [test] table with a command"),
    ("test-command-as-string", V1 + '[test]\ncommand = "pytest"\n',
     "rules.toml:3: [test.command] must be a non-empty list of non-empty strings "
     "(an argv, run without a shell)"),
    ("test-command-empty", V1 + "[test]\ncommand = []\n",
     "rules.toml:3: [test.command] must be a non-empty list of non-empty strings "
     "(an argv, run without a shell)"),
    ("bad-unmatched-policy", V1 + '[unmatched]\ndo = "maybe"\n',
     "rules.toml:3: [unmatched.do] 'maybe' is not a policy; use one of: all, skip, error"),
    ("unmatched-as-string", V1 + 'unmatched = "all"\n',
     "rules.toml:2: [unmatched] must be a table ([unmatched]), not a string"),
    ("invalid-component-name", V1 + '[components.Trainer]\ncontext = "a"\n',
     "rules.toml:2: [components.Trainer] a component name must be lowercase letters, digits, "
     "'.', '_' or '-' (it becomes an image name)"),
    ("context-outside-repo", V1 + '[components.a]\ncontext = "../x"\n',
     CONTEXT_OUTSIDE),
    ("context-escapes-through-subdir", V1 + '[components.a]\ncontext = "a/../../x"\n',
     CONTEXT_OUTSIDE),
    ("context-absolute", V1 + '[components.a]\ncontext = "/etc"\n',
     CONTEXT_OUTSIDE),
    ("invalid-pattern-bang", V1 + rule('"retrain"', paths='["!"]'),
     "rules.toml:4: [rule 'r'.paths] pattern '!' matches nothing (it is empty, or only '/' or "
     "'!'); to match everything write '*'"),
    ("pattern-matches-nothing", V1 + rule('"retrain"', paths='["a", "# comment"]'),
     "rules.toml:4: [rule 'r'.paths] pattern '# comment' is a comment in gitignore syntax and "
     "matches nothing; escape a leading '#' as '\\#'"),
    ("empty-pattern", V1 + rule('"retrain"', paths='["  "]'),
     "rules.toml:4: [rule 'r'.paths] pattern '  ' matches nothing (it is empty, or only '/' or "
     "'!'); to match everything write '*'"),
    ("reversed-range", V1 + rule('"retrain"', paths='["a", "[z-a]"]'),
     "rules.toml:4: [rule 'r'.paths] pattern '[z-a]' has the range 'z-a', which is reversed "
     "and matches nothing; write 'a-z'"),
    ("slash-alone", V1 + rule('"retrain"', paths='"/"'),
     "rules.toml:4: [rule 'r'.paths] pattern '/' matches nothing (it is empty, or only '/' or "
     "'!'); to match everything write '*'"),
    ("unclosed-bracket-on-its-own-line",
     V1 + '[[rule]]\nname = "r"\npaths = [\n  "a/",\n  "b[c",\n]\ndo = "retrain"\n',
     "rules.toml:6: [rule 'r'.paths] pattern 'b[c' has a '[' that is never closed, so it "
     "matches nothing; write '\\[' for a literal bracket"),
    # [function]: what `gcloud functions deploy` and Cloud Run accept (see orchestrator/config.py)
    ("function-unknown-key", FN + 'cpu = "1"\n',
     "rules.toml:3: [function.cpu] unknown key 'cpu' (allowed: dir, name, entry_point, runtime, "
     "service_account, trigger_service_account, env, memory, timeout, max_instances, "
     "min_instances, ingress, vpc_connector, egress)"),
    ("function-memory-no-unit", FN + 'memory = "512"\n', MEMORY_ERROR.format("'512'")),
    ("function-memory-unknown-unit", FN + 'memory = "1Ti"\n', MEMORY_ERROR.format("'1Ti'")),
    ("function-memory-below-128Mi", FN + 'memory = "64Mi"\n', MEMORY_ERROR.format("'64Mi'")),
    ("function-memory-above-32Gi", FN + 'memory = "33Gi"\n', MEMORY_ERROR.format("'33Gi'")),
    ("function-memory-as-int", FN + "memory = 512\n",
     "rules.toml:3: [function.memory] must be a non-empty string, not an integer"),
    ("function-timeout-above-540s", FN + 'timeout = "541s"\n', TIMEOUT_ERROR.format("'541s'")),
    ("function-timeout-zero", FN + 'timeout = "0s"\n', TIMEOUT_ERROR.format("'0s'")),
    ("function-timeout-minutes", FN + 'timeout = "9m"\n', TIMEOUT_ERROR.format("'9m'")),
    ("function-max-instances-zero", FN + "max_instances = 0\n",
     "rules.toml:3: [function.max_instances] must be at least 1"),
    ("function-max-instances-string", FN + 'max_instances = "10"\n',
     "rules.toml:3: [function.max_instances] must be an integer, not a string"),
    ("function-max-instances-bool", FN + "max_instances = true\n",
     "rules.toml:3: [function.max_instances] must be an integer, not a boolean"),
    ("function-min-instances-negative", FN + "min_instances = -1\n",
     "rules.toml:3: [function.min_instances] must be 0 or more"),
    ("function-min-above-default-max", FN + "min_instances = 11\n",
     "rules.toml:3: [function.min_instances] min_instances (11) is more than max_instances (10)"),
    ("function-max-below-default-min", FN + "min_instances = 3\nmax_instances = 2\n",
     "rules.toml:3: [function.min_instances] min_instances (3) is more than max_instances (2)"),
    ("function-ingress-unknown", FN + 'ingress = "internal"\n',
     "rules.toml:3: [function.ingress] 'internal' is not an ingress setting; use one of: all, "
     "internal-only, internal-and-gclb"),
    ("function-egress-without-connector", FN + 'egress = "all"\n',
     "rules.toml:3: [function.egress] applies to a VPC connector: set vpc_connector too"),
    ("function-egress-unknown", FN + 'vpc_connector = "c1"\negress = "private"\n',
     "rules.toml:4: [function.egress] 'private' is not an egress setting; use one of: "
     "private-ranges-only, all"),
    ("function-vpc-connector-half-qualified",
     FN + 'vpc_connector = "projects/p/connectors/c1"\n',
     "rules.toml:3: [function.vpc_connector] 'projects/p/connectors/c1' is not a connector: "
     "write its id (in the function's region) or "
     "projects/<project>/locations/<region>/connectors/<id>"),
    ("function-env-reserved-prefix", FN + 'env = { X_GOOGLE_A = "1" }\n',
     ENV_KEY_ERROR.format(3, "'X_GOOGLE_A'")),
    ("function-env-key-with-equals", FN + 'env = { "A=B" = "1" }\n',
     ENV_KEY_ERROR.format(3, "'A=B'")),
    ("function-env-reserved-key-in-subtable",
     FN + 'name = "f"\n\n[function.env]\nA = "1"\nPORT = "8080"\n',
     ENV_KEY_ERROR.format(7, "'PORT'")),
    # [build]: Cloud Build's LoggingMode and its rule for a user-specified service account
    ("build-unknown-key", V1 + '[build]\nlogs = "x"\n',
     "rules.toml:3: [build.logs] unknown key 'logs' (allowed: machine_type, logging, logs_bucket, "
     "timeout, service_account, python_image, docker_image, gcloud_image, install, "
     "secret_env)"),
    ("build-logging-unknown", V1 + '[build]\nlogging = "CLOUD_LOGGING"\n',
     "rules.toml:3: [build.logging] 'CLOUD_LOGGING' is not a Cloud Build logging mode; use one "
     "of: LOGGING_UNSPECIFIED, LEGACY, GCS_ONLY, STACKDRIVER_ONLY, CLOUD_LOGGING_ONLY, NONE"),
    ("build-logging-lowercase", V1 + '[build]\nlogging = "none"\n',
     "rules.toml:3: [build.logging] 'none' is not a Cloud Build logging mode; use one "
     "of: LOGGING_UNSPECIFIED, LEGACY, GCS_ONLY, STACKDRIVER_ONLY, CLOUD_LOGGING_ONLY, NONE"),
    ("build-service-account-legacy-logging",
     V1 + '[build]\nlogging = "LEGACY"\nservice_account = "b@p.iam.gserviceaccount.com"\n',
     SERVICE_ACCOUNT_ERROR.format(4, "'LEGACY'")),
    ("build-service-account-unspecified-logging",
     V1 + '[build]\nservice_account = "b@p.iam.gserviceaccount.com"\n'
     'logging = "LOGGING_UNSPECIFIED"\n',
     SERVICE_ACCOUNT_ERROR.format(3, "'LOGGING_UNSPECIFIED'")),
    ("build-service-account-gcs-only-without-bucket",
     V1 + '[build]\nlogging = "GCS_ONLY"\nservice_account = "b@p.iam.gserviceaccount.com"\n',
     SERVICE_ACCOUNT_ERROR.format(4, "'GCS_ONLY'")),
    ("build-logs-bucket-not-a-uri", V1 + '[build]\nlogs_bucket = "my-logs"\n',
     "rules.toml:3: [build.logs_bucket] 'my-logs' is not a bucket: write gs://<bucket> or "
     "gs://<bucket>/<path>"),
    ("build-logs-bucket-name-too-short", V1 + '[build]\nlogs_bucket = "gs://l"\n',
     "rules.toml:3: [build.logs_bucket] 'gs://l' is not a bucket: write gs://<bucket> or "
     "gs://<bucket>/<path>"),
    ("build-logs-bucket-with-no-logging",
     V1 + '[build]\nlogging = "NONE"\nlogs_bucket = "gs://my-logs"\n',
     "rules.toml:4: [build.logs_bucket] is never written with logging = 'NONE'; "
     "use GCS_ONLY or LEGACY, or drop logs_bucket"),
    ("build-logs-bucket-with-cloud-logging-only",
     V1 + '[build]\nlogging = "CLOUD_LOGGING_ONLY"\nlogs_bucket = "gs://my-logs/ct"\n',
     "rules.toml:4: [build.logs_bucket] is never written with logging = 'CLOUD_LOGGING_ONLY'; "
     "use GCS_ONLY or LEGACY, or drop logs_bucket"),
    ("error-in-second-rule",
     V1 + RULE + "\n" + '[[rule]]\nname = "s"\npaths = ["b"]\ndo = "nope"\n',
     "rules.toml:10: [rule 's'.do] unknown action 'nope'; use one of: skip, all, test, "
     "build_image, upload_source, compile_pipeline, deploy_function, retrain "
     "(build_image may name a component: build_image:<name>)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_rules_give_one_precise_message(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(text)
    assert str(caught.value) == expected


def test_error_carries_file_line_and_key_as_fields() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(V1 + rule('"nope"'), source="ci/rules.toml")
    error = caught.value
    assert (error.file, error.line, error.key) == ("ci/rules.toml", 5, "rule 'r'.do")
    assert str(error).startswith("ci/rules.toml:5: [rule 'r'.do] unknown action 'nope'")


def test_load_rules_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("version = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value) == (
        f"{path}:1: [version] unsupported version 3; this orchestrator reads version 1"
    )


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "rules.toml"
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value) == (
        f"{path}: file not found; create it (see the README's rules.toml reference) or pass --rules"
    )


BOM = "\ufeff".encode()


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(BOM + (V1 + RULE).encode())
    rules = load_rules(path)
    assert [r.name for r in rules.rules] == ["r"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (V1 + RULE + 'when = "x"\n',
         "6: [rule 'r'.when] unknown key 'when' (allowed: name, paths, do)"),
        (V1 + "\n\n" + 'x = "unterminated\n', "4: invalid TOML: Illegal character '\\n'"),
        ("\r\n".join([V1.strip(), "[project]", 'zone = "y"', ""]),
         "3: [project.zone] unknown key 'zone' "
         "(allowed: gcp_project, region, bucket, registry, topic, prefix)"),
    ],
)  # fmt: skip
def test_errors_after_a_byte_order_mark_keep_their_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(BOM + text.encode())
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert str(caught.value) == f"{path}:{expected}"


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b"version = 1\n# \xff\n")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_rules(path)


# -- valid files ---------------------------------------------------------------------------

ISSUE_EXAMPLE = """\
version = 1

[project]                # where artifacts go; used by later issues
gcp_project = "demo-project"
region = "us-central1"
bucket = "demo-bucket"
registry = "us-central1-docker.pkg.dev/demo-project/ct"
topic = "training-runs"

[unmatched]
do = "all"

[components.trainer]     # a custom pipeline component built as a container image
context = "components/trainer"

[[rule]]
name = "docs"
paths = ["*.md", "docs/", "figures/"]
do = "skip"

[[rule]]
name = "component-images"
paths = ["components/", "!components/**/*.md"]
do = "build_image"

[[rule]]
name = "shared-lib"
paths = ["libs/common/"]
do = ["build_image:trainer", "upload_source"]   # a string or a list

[[rule]]
name = "hyper-parameters"
paths = ["pipeline/params.toml"]
do = "retrain"
"""


def test_the_issue_example_loads() -> None:
    rules = parse_rules(ISSUE_EXAMPLE, source="example.toml")
    assert rules.source == "example.toml"
    assert rules.version == 1
    assert rules.project == ProjectSettings(
        gcp_project="demo-project",
        region="us-central1",
        bucket="demo-bucket",
        registry="us-central1-docker.pkg.dev/demo-project/ct",
        topic="training-runs",
    )
    assert rules.unmatched == "all"
    assert rules.components == (Component("trainer", "components/trainer"),)
    assert rules.test is None
    assert rules.rules == (
        Rule("docs", ("*.md", "docs/", "figures/"), (Directive("skip"),), line=16),
        Rule(
            "component-images",
            ("components/", "!components/**/*.md"),
            (Directive("build_image"),),
            line=21,
        ),
        Rule(
            "shared-lib",
            ("libs/common/",),
            (Directive("build_image", "trainer"), Directive("upload_source")),
            line=26,
        ),
        Rule("hyper-parameters", ("pipeline/params.toml",), (Directive("retrain"),), line=31),
    )
    assert [r.is_skip for r in rules.rules] == [True, False, False, False]


def test_this_repositorys_rules_toml_loads() -> None:
    rules = load_rules(REPO_ROOT / "rules.toml")
    assert rules.version == 1
    assert {c.name for c in rules.components} == {"validator", "evaluator"}
    assert rules.test is not None and rules.test.command[:3] == ("python", "-m", "pytest")
    names = [r.name for r in rules.rules]
    assert len(names) == len(set(names))
    assert {"docs", "component-images", "training-source", "rules"} <= set(names)


def test_paths_and_do_may_be_single_strings() -> None:
    rules = parse_rules(V1 + '[[rule]]\nname = "r"\npaths = "src/"\ndo = "upload_source"\n')
    assert rules.rules == (Rule("r", ("src/",), (Directive("upload_source"),), line=2),)


def test_defaults() -> None:
    rules = parse_rules(V1 + '[components.a]\ncontext = "./comp/a/"\n')
    assert rules.unmatched == "all"
    assert rules.project == ProjectSettings()
    assert rules.components == (Component("a", "comp/a", "Dockerfile", ()),)
    assert rules.rules == ()
    assert rules.test is None


def test_full_component_and_test_table() -> None:
    rules = parse_rules(
        V1
        + '[test]\ncommand = ["pytest", "-q"]\n'
        + '[components.a]\ncontext = "a"\ndockerfile = "docker/Dockerfile.gpu"\n'
        + 'build_args = { BASE = "python:3.11", MODE = "gpu" }\n'
        + '[[rule]]\nname = "t"\npaths = ["tests/"]\ndo = ["test", "test"]\n'
    )
    assert rules.test == model.TestSettings(("pytest", "-q"))
    assert rules.components == (
        Component("a", "a", "docker/Dockerfile.gpu", (("BASE", "python:3.11"), ("MODE", "gpu"))),
    )
    assert rules.rules[0].do == (Directive("test"),)  # duplicates collapse


@pytest.mark.parametrize("policy", ["all", "skip", "error"])
def test_each_unmatched_policy_loads(policy: str) -> None:
    assert parse_rules(V1 + f'[unmatched]\ndo = "{policy}"\n').unmatched == policy


@pytest.mark.parametrize("root", [".", "", "/", "./", "/./"])
def test_the_repository_root_is_a_build_context(root: str) -> None:
    rules = parse_rules(V1 + f'[components.app]\ncontext = "{root}"\n')
    assert rules.components[0].context == ""


# -- [function] and [build] settings ----------------------------------------------------------


def test_function_and_build_defaults() -> None:
    rules = parse_rules(V1)
    assert rules.function == model.FunctionSettings()
    assert (rules.function.memory, rules.function.timeout) == ("512Mi", "540s")
    assert (rules.function.max_instances, rules.function.min_instances) == (10, 0)
    assert rules.function.ingress == "internal-only"
    assert (rules.function.vpc_connector, rules.function.egress) == (None, None)
    assert rules.build == model.BuildSettings()
    assert (rules.build.logging, rules.build.logs_bucket) == ("CLOUD_LOGGING_ONLY", None)


def test_a_full_function_table_loads() -> None:
    rules = parse_rules(
        FN
        + 'memory = "1Gi"\ntimeout = "300s"\nmax_instances = 3\nmin_instances = 1\n'
        + 'ingress = "internal-and-gclb"\n'
        + 'vpc_connector = "projects/p/locations/us-central1/connectors/ct-conn"\n'
        + 'egress = "all"\nservice_account = "fn@p.iam.gserviceaccount.com"\n'
        + '[function.env]\nCT_BACKEND = "kfp"\n"odd,key" = "a@b"\n'
    )
    assert rules.function == model.FunctionSettings(
        memory="1Gi",
        timeout="300s",
        max_instances=3,
        min_instances=1,
        ingress="internal-and-gclb",
        vpc_connector="projects/p/locations/us-central1/connectors/ct-conn",
        egress="all",
        service_account="fn@p.iam.gserviceaccount.com",
        env=(("CT_BACKEND", "kfp"), ("odd,key", "a@b")),
    )


@pytest.mark.parametrize(
    "memory", ["128Mi", "32Gi", "512M", "512MB", "512Mb", "1G", "1000000k", "131072Ki"]
)
def test_memory_in_gcloud_units_loads(memory: str) -> None:
    assert parse_rules(FN + f'memory = "{memory}"\n').function.memory == memory


@pytest.mark.parametrize("timeout", ["1s", "60s", "540s"])
def test_timeouts_up_to_540s_load(timeout: str) -> None:
    assert parse_rules(FN + f'timeout = "{timeout}"\n').function.timeout == timeout


@pytest.mark.parametrize("ingress", ["all", "internal-only", "internal-and-gclb"])
def test_each_ingress_setting_loads(ingress: str) -> None:
    assert parse_rules(FN + f'ingress = "{ingress}"\n').function.ingress == ingress


def test_logging_modes_are_the_ones_cloud_build_accepts() -> None:
    from google.cloud.devtools import cloudbuild_v1

    from orchestrator.config import LOGGING_MODES

    assert list(LOGGING_MODES) == list(cloudbuild_v1.BuildOptions.LoggingMode.__members__)
    for mode in LOGGING_MODES:
        assert parse_rules(V1 + f'[build]\nlogging = "{mode}"\n').build.logging == mode


SERVICE_ACCOUNT = 'service_account = "builder@p.iam.gserviceaccount.com"\n'


@pytest.mark.parametrize(
    ("settings", "logging", "bucket"),
    [
        ("", "CLOUD_LOGGING_ONLY", None),  # the default logging
        ('logging = "CLOUD_LOGGING_ONLY"\n', "CLOUD_LOGGING_ONLY", None),
        ('logging = "NONE"\n', "NONE", None),
        ('logs_bucket = "gs://my-logs"\n', "GCS_ONLY", "gs://my-logs"),
        ('logging = "LEGACY"\nlogs_bucket = "gs://my-logs/ct"\n', "LEGACY", "gs://my-logs/ct"),
        ('logging = "GCS_ONLY"\nlogs_bucket = "gs://my-logs"\n', "GCS_ONLY", "gs://my-logs"),
    ],
)
def test_a_build_service_account_with_logging_cloud_build_accepts(
    settings: str, logging: str, bucket: str | None
) -> None:
    build = parse_rules(V1 + "[build]\n" + SERVICE_ACCOUNT + settings).build
    assert (build.logging, build.logs_bucket) == (logging, bucket)
    assert build.service_account == "builder@p.iam.gserviceaccount.com"


def test_a_logs_bucket_alone_sends_the_logs_there() -> None:
    build = parse_rules(V1 + '[build]\nlogs_bucket = "gs://my-logs"\n').build
    assert (build.logging, build.logs_bucket) == ("GCS_ONLY", "gs://my-logs")


def test_validate_reports_a_service_account_cloud_build_would_refuse(tmp_path: Path) -> None:
    import io

    from orchestrator.cli import main

    path = tmp_path / "rules.toml"
    path.write_text(V1 + '[build]\nlogging = "LEGACY"\n' + SERVICE_ACCOUNT, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = main(["--repo", str(tmp_path), "validate"], stdout=out, stderr=err, env={})
    assert (code, out.getvalue()) == (2, "")
    assert err.getvalue() == (
        f"orchestrator: error: {path}:4: [build.service_account] Cloud Build refuses a build with "
        "its own service account and logging = 'LEGACY': set logging to 'CLOUD_LOGGING_ONLY' or "
        "'NONE', or logs_bucket\n"
    )


def test_the_readmes_rules_toml_reference_loads() -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## rules.toml reference") :]
    block = block[block.index("```toml\n") + len("```toml\n") :]
    rules = parse_rules(block[: block.index("```\n")], source="README.md")
    assert rules.function.ingress == "internal-only"
    assert rules.build.service_account is not None
