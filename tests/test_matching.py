"""Matching rules against paths: literal tables, the one documented deviation from a
``.gitignore``, the indexed matcher against a plain reading of the semantics, ``explain``
against ``match``, and whole pattern lists against ``git check-ignore``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.gitignore import compile_pattern
from orchestrator.matching import Matcher
from orchestrator.model import Directive, Rule, RuleHit
from tests.gitcheck import GitIgnoreOracle, ancestors, old_git_prefix_bug
from tests.test_gitignore import _compiles, _paths, _positive, patterns


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
        # git matches the directory components/trainer, so everything below it
        (["components/*"], "components/trainer/Dockerfile", True),
        (["components/*"], "components/Dockerfile", True),
        (["docs/**/"], "docs/readme.md", False),  # directories below docs/ only
        (["docs/**/"], "docs/api/readme.md", True),
        (["*[!a-z]*"], "a/b", False),  # neither 'a' (a directory) nor 'b' has a non-letter
        (["*[!a-z]*"], "a1/b", True),
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
        (["a/**/b"], "a/x/y/c", False),
        (["a/**/b"], "a/x/b/c", True),  # the directory a/x/b
        (["foo/**"], "foo/bar", True),
        (["foo/**"], "foo", False),
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[ab].py"], "b.py", True),
        (["[[:upper:]]*"], "src/Main.java", True),
        (["$x"], "dir/$x", True),
        (["\\#hash"], "#hash", True),
        (["\\!bang"], "!bang", True),
        (["*"], "anything/at/all", True),
        (["**/"], "top-level-file", False),
        (["**/"], "dir/file", True),
        (["name with space"], "d/name with space", True),
        (["a"], "a\n", False),  # a newline is an ordinary character
        (["*.md"], "é/ü.md", True),
        (["src/", "!src/gen/", "src/gen/keep.py"], "src/gen/keep.py", True),
        (["src/", "!src/gen/", "src/gen/keep.py"], "src/gen/out.py", False),
        (["components/", "!components/**/*.md"], "components/trainer/README.md", False),
        (["components/", "!components/**/*.md"], "components/trainer/main.py", True),
        (["*.py", "!tests/"], "tests/test_x.py", False),
        (["*.py", "!tests/"], "src/x.py", True),
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


def test_explain_shows_the_negation_that_excluded_a_path() -> None:
    matcher = Matcher([rule("images", "components/", "!components/**/*.md"), rule("docs", "*.md")])
    explained = {e.rule: e for e in matcher.explain("components/t/README.md")}
    assert not explained["images"].included
    assert explained["images"].deciding == "!components/**/*.md"
    verdicts = {v.pattern: v for v in explained["images"].verdicts}
    assert verdicts["components/"].through == "components/"
    assert verdicts["!components/**/*.md"].through is None  # matched the file itself
    assert explained["docs"].included


def test_explain_and_plan_agree_where_they_once_did_not() -> None:
    matcher = Matcher([rule("r", "*[!a-z]*")])
    assert matcher.match("a/b") == ()
    assert matcher.explain("a/b") == ()


def test_deep_paths_do_not_recurse() -> None:
    path = "/".join(["d"] * 5000) + "/f.md"
    assert Matcher([rule("docs", "*.md")]).match(path) == (RuleHit("docs", "*.md"),)


# -- the indexed matcher against a plain reading of the semantics --------------------------


def reference(patterns: list[str], path: str) -> str | None:
    """The deciding pattern by the README's words: the last pattern that matches the file
    or one of the directories above it; ``None`` when that is a negation or none matches."""
    decided = None
    for text in patterns:
        compiled = compile_pattern(text)
        if compiled.matches(path) or any(compiled.matches(d, is_dir=True) for d in ancestors(path)):
            decided = text
    return decided if decided is not None and not decided.startswith("!") else None


_valid = patterns().filter(_compiles)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.lists(st.lists(_valid, min_size=1, max_size=4), min_size=1, max_size=5),
    paths=st.lists(_paths, min_size=1, max_size=12),
)
def test_indexed_matcher_equals_the_plain_reading(rules: list[list[str]], paths: list[str]) -> None:
    matcher = Matcher([rule(f"r{i}", *ps) for i, ps in enumerate(rules)])
    for path in paths:
        expected = [
            RuleHit(f"r{i}", decided)
            for i, ps in enumerate(rules)
            if (decided := reference(ps, path)) is not None
        ]
        assert list(matcher.match(path)) == expected, path
        explained = {e.rule: e.included for e in matcher.explain(path)}
        assert {r for r, included in explained.items() if included} == {h.rule for h in expected}


# -- whole pattern lists against git -------------------------------------------------------


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> GitIgnoreOracle:
    return GitIgnoreOracle(tmp_path_factory.mktemp("git-oracle"))


AGREEMENT: dict[str, int] = {"cases": 0, "same": 0, "deviation": 0}

# A small vocabulary that overlaps a lot, so that negations and directories meet often.
_near_patterns = st.sampled_from(
    [
        "a", "b", "a/", "b/", "/a", "a/b", "a/*", "a/**", "**/b", "**/b/", "*.md", "a/**/*.md",
        "x.md", "*", "a/b/", "!a", "!b", "!a/", "!b/", "!a/b", "!a/*", "!a/**", "!**/b",
        "!*.md", "!a/**/*.md", "!x.md", "!*", "!a/b/",
    ]
)  # fmt: skip
_near_paths = st.lists(st.sampled_from(["a", "b", "x.md", "c"]), min_size=1, max_size=4).map(
    "/".join
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    patterns=st.one_of(
        st.lists(_valid, min_size=1, max_size=5), st.lists(_near_patterns, min_size=1, max_size=5)
    ),
    paths=st.one_of(
        st.lists(_paths, min_size=1, max_size=10), st.lists(_near_paths, min_size=1, max_size=10)
    ),
)
@example(patterns=["a/", "!a/b"], paths=["a/b/c", "a/x"])
@example(patterns=["components/", "!components/**/*.md"], paths=["components/t/README.md"])
@example(patterns=["src/", "!src/gen/", "src/gen/keep.py"], paths=["src/gen/out.py"])
@example(patterns=["*.py", "!tests/"], paths=["tests/t.py", "src/s.py"])
@example(patterns=["a/b/", "!a/"], paths=["a/b/c"])
def test_a_rule_decides_as_git_but_for_the_documented_deviation(
    oracle: GitIgnoreOracle, patterns: list[str], paths: list[str]
) -> None:
    """With the rule's patterns as a .gitignore, git and the matcher agree on every path,
    except where a negation matches the path (or a directory above it) while git had already
    excluded a directory above it: there the last matching pattern decides (the README's
    deviation), which git's per-pattern verdicts confirm."""
    if any(old_git_prefix_bug(p) for p in patterns) and oracle.version < (2, 52):
        return
    whole = oracle.check(patterns, paths)
    single = {p: oracle.check([_positive(p)], paths) for p in dict.fromkeys(patterns)}
    matcher = Matcher([rule("r", *patterns)])
    for path in paths:
        ours = bool(matcher.match(path))
        matching = [p for p in patterns if single[p][path].ignored]
        last_wins = bool(matching) and not matching[-1].startswith("!")
        assert ours == last_wins, (patterns, path)  # the documented semantics, by git's verdicts
        AGREEMENT["cases"] += 1
        if ours == whole[path].ignored:
            AGREEMENT["same"] += 1
            continue
        # the only disagreement: git excluded a directory above, a later negation matches
        assert whole[path].ignored and not ours, (patterns, path, whole[path])
        assert any(p.startswith("!") for p in matching), (patterns, path)
        AGREEMENT["deviation"] += 1


def test_agreement_figures_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints how often a rule decides exactly as git (``pytest -s`` shows it)."""
    cases = AGREEMENT["cases"]
    if cases:
        with capsys.disabled():
            print(
                f"\nmatching vs git check-ignore: {cases} cases, {AGREEMENT['same']} identical, "
                f"{AGREEMENT['deviation']} under the documented deviation, 0 other"
            )
