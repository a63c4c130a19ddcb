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
