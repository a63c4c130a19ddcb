"""Matching: literal tables, and hypothesis against pathspec's own semantics."""

from __future__ import annotations

import pathspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.matching import Matcher, compile_pattern
from orchestrator.model import Directive, Rule, RuleHit


def rule(name: str, *patterns: str, do: str = "retrain") -> Rule:
    return Rule(name=name, patterns=patterns, do=(Directive(do),))


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/deep/guide.md", True),
        (["*.md"], "notes.md/inner.txt", True),  # a directory named *.md: all below it
        (["*.md"], "README.mdx", False),
        (["docs/"], "docs/index.rst", True),
        (["docs/"], "a/docs/index.rst", True),
        (["docs/"], "docs", False),  # a file named docs is not the directory docs/
        (["docs"], "docs", True),
        (["/docs"], "a/docs/x", False),
        (["/docs"], "docs/x", True),
        (["pipeline/params.toml"], "pipeline/params.toml", True),
        (["pipeline/params.toml"], "x/pipeline/params.toml", False),  # a slash anchors
        (["components/"], "components/trainer/Dockerfile", True),
        (["components/", "!components/**/*.md"], "components/trainer/README.md", False),
        (["components/", "!components/**/*.md"], "components/trainer/main.py", True),
        (["components/", "!components/**/*.md", "components/keep.md"], "components/keep.md", True),
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
        (["a/**/b"], "a/x/y/c", False),
        (["foo/**"], "foo/bar", True),
        (["foo/**"], "foo", False),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[ab].py"], "b.py", True),
        (["$x"], "dir/$x", True),
        (["\\#hash"], "#hash", True),
        (["\\!bang"], "!bang", True),
        (["*"], "anything/at/all", True),
        (["**/"], "top-level-file", False),
        (["**/"], "dir/file", True),
        (["name with space"], "d/name with space", True),
        (["line\nbreak"], "x/line\nbreak", True),
        (["a"], "a\n", False),  # a newline is an ordinary character
        (["*.md"], "é/ü.md", True),
    ],
)
def test_pattern_table(patterns: list[str], path: str, expected: bool) -> None:
    assert bool(Matcher([rule("r", *patterns)]).match(path)) is expected


def test_last_matching_pattern_decides_and_is_reported() -> None:
    matcher = Matcher([rule("r", "src/", "!src/gen/", "src/gen/keep.py")])
    assert matcher.match("src/main.py") == (RuleHit("r", "src/"),)
    assert matcher.match("src/gen/out.py") == ()
    assert matcher.match("src/gen/keep.py") == (RuleHit("r", "src/gen/keep.py"),)


def test_rules_combine_by_union_in_file_order() -> None:
    matcher = Matcher([rule("docs", "*.md"), rule("all-src", "src/"), rule("none", "other/")])
    assert matcher.match("src/README.md") == (RuleHit("docs", "*.md"), RuleHit("all-src", "src/"))


@pytest.mark.parametrize("bad", ["", "   ", "# a comment"])
def test_patterns_that_match_nothing_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="matches nothing"):
        compile_pattern(bad)


def test_an_invalid_pattern_is_rejected_with_pathspecs_reason() -> None:
    with pytest.raises(ValueError, match="invalid pattern '!'"):
        compile_pattern("!")


def test_explain_shows_the_negation_that_excluded_a_path() -> None:
    matcher = Matcher([rule("images", "components/", "!components/**/*.md"), rule("docs", "*.md")])
    explained = {e.rule: e for e in matcher.explain("components/t/README.md")}
    assert not explained["images"].included
    assert explained["images"].deciding == "!components/**/*.md"
    assert explained["docs"].included


@pytest.mark.parametrize(
    ("pattern", "shape"),
    [("*.md", "name"), ("docs/", "name"), ("a/b/", "anchored"), ("a/*/b", "regex")],
)
def test_common_patterns_take_the_indexed_path(pattern: str, shape: str) -> None:
    assert compile_pattern(pattern).shape == shape


# -- property: the indexed matcher agrees with pathspec ------------------------------------

_components = st.sampled_from(
    ["a", "b", "c.md", "d.py", "docs", "x y", "$v", "é", "ab", "a.b", ".hidden", "[x]"]
)
_paths = st.lists(_components, min_size=1, max_size=5).map("/".join)
_segments = st.sampled_from(
    [
        "a",
        "b",
        "*",
        "**",
        "*.md",
        "d?py",
        "[ab]",
        "docs",
        "c.md",
        "a*",
        "*b",
        "\\[x\\]",
        "$v",
        "x y",
    ]
)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    body = "/".join(draw(st.lists(_segments, min_size=1, max_size=4)))
    if draw(st.booleans()):
        body = "/" + body
    if draw(st.booleans()):
        body += "/"
    if draw(st.integers(0, 3)) == 0:
        body = "!" + body
    return body


def _valid(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except ValueError:
        return False
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    patterns=st.lists(_patterns().filter(_valid), min_size=1, max_size=6),
    paths=st.lists(_paths, min_size=1, max_size=12),
)
def test_matcher_agrees_with_pathspec(patterns: list[str], paths: list[str]) -> None:
    reference = pathspec.PathSpec.from_lines("gitignore", patterns)
    matcher = Matcher([rule("r", *patterns)])
    for path in paths:
        assert bool(matcher.match(path)) == reference.match_file(path), (patterns, path)


@settings(max_examples=200, deadline=None)
@given(
    rules=st.lists(
        st.lists(_patterns().filter(_valid), min_size=1, max_size=3), min_size=1, max_size=5
    ),
    paths=st.lists(_paths, min_size=1, max_size=12),
)
def test_every_rule_is_decided_independently(rules: list[list[str]], paths: list[str]) -> None:
    matcher = Matcher([rule(f"r{i}", *ps) for i, ps in enumerate(rules)])
    for path in paths:
        expected = [
            f"r{i}"
            for i, ps in enumerate(rules)
            if pathspec.PathSpec.from_lines("gitignore", ps).match_file(path)
        ]
        assert [h.rule for h in matcher.match(path)] == expected
