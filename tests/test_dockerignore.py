"""orchestrator.dockerignore with literals: the documentation's examples, moby/patternmatcher's
own test tables, and the edge cases of its reader, matcher and walk.

Where the builders disagree the expected answers are per builder; every one of those was
observed against the real engine (docker 20.10 with both builders, docker 28 classic), and
``tests/integration/test_dockerignore_docker.py`` keeps checking them there.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.dockerignore import (
    ALL_BUILDERS,
    IGNORE_FILE,
    Builder,
    DockerIgnoreError,
    IgnorePattern,
    always_sent,
    ignore_file_candidates,
    parse_dockerignore,
)

SOURCE = "components/x/.dockerignore"
CURRENT = (Builder.BUILDKIT, Builder.CLASSIC)
OLD = (Builder.BUILDKIT_20_10, Builder.CLASSIC_20_10)


def excluded(text: str, paths: list[str], builder: Builder | None = None) -> set[str]:
    ignore = parse_dockerignore(text, source=SOURCE)
    if builder is None:
        return {p for p in paths if ignore.excludes(p)}
    return {p for p in paths if ignore.excluded_by(p, builder)}


def patterns(text: str) -> list[tuple[int, str, bool]]:
    return [
        (p.line, p.pattern, p.exception) for p in parse_dockerignore(text, source=SOURCE).patterns
    ]


# --- the documentation's examples (docs.docker.com/build/concepts/context/#dockerignore-files)

DOC_EXAMPLES = [
    (
        "# comment\n*/temp*\n*/*/temp*\ntemp?\n",
        [
            "somedir/temporary.txt",
            "somedir/temp/inside",
            "somedir/subdir/temporary.txt",
            "tempa",
            "tempb",
            "temp",
            "tempab",
            "temporary.txt",
            "a/b/c/temp",
            "# comment",
        ],
        {
            "somedir/temporary.txt",
            "somedir/temp/inside",
            "somedir/subdir/temporary.txt",
            "tempa",
            "tempb",
        },
    ),
    ("**/*.go\n", ["a.go", "x/y/b.go", "a.go.txt", "go"], {"a.go", "x/y/b.go"}),
    # "markdown files right under the context directory except README.md ... markdown files
    # under subdirectories are still included"
    ("*.md\n!README.md\n", ["CHANGES.md", "README.md", "docs/x.md"], {"CHANGES.md"}),
    (
        "*.md\n!README*.md\nREADME-secret.md\n",
        ["CHANGES.md", "README.md", "README-x.md", "README-secret.md"],
        {"CHANGES.md", "README-secret.md"},
    ),
    (
        "*.md\nREADME-secret.md\n!README*.md\n",
        ["CHANGES.md", "README.md", "README-secret.md"],
        {"CHANGES.md"},
    ),
    ("# .dockerignore\nnode_modules\nbar\n", ["node_modules/x", "bar", "x/node_modules"], None),
    (".\n", ["a", "b/c"], set()),  # "For historical reasons, the pattern . is ignored."
    ("#/this/is/a/comment\n", ["this/is/a/comment"], set()),
]


@pytest.mark.parametrize(("text", "paths", "want"), DOC_EXAMPLES)
@pytest.mark.parametrize("builder", [None, *ALL_BUILDERS])
def test_documentation_examples(
    text: str, paths: list[str], want: set[str] | None, builder: Builder | None
) -> None:
    if want is None:
        want = {"node_modules/x", "bar"}
    assert excluded(text, paths, builder) == want


@pytest.mark.parametrize("line", ["/foo/bar/", "/foo/bar", "foo/bar/", "foo/bar"])
def test_leading_and_trailing_slashes_are_disregarded(line: str) -> None:
    paths = ["foo/bar", "foo/bar/x", "foo/baz", "x/foo/bar", "foo"]
    assert excluded(line + "\n", paths) == {"foo/bar", "foo/bar/x"}


# --- moby/patternmatcher patternmatcher_test.go: TestMatches (one pattern, paths as walked)

PATTERNMATCHER_MATCHES = [
    ("**", "file", True),
    ("**/", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/file", True),
    ("**/file", "dir/file", True),
    ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True),
    ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcdef", False),
    ("abc.def", "abc.def", True),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True),
    ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False),
    ("abc/**", "abc/def", True),
    ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True),
    ("a\\*b", "a*b", True),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "path", "want"), PATTERNMATCHER_MATCHES)
@pytest.mark.parametrize("builder", CURRENT)
def test_patternmatcher_matches_table(
    pattern: str, path: str, want: bool, builder: Builder
) -> None:
    assert bool(excluded(pattern, [path], builder)) is want


PATTERNMATCHER_MULTI = [
    ("**\n!util/docker/web\n", "util/docker/web/foo", False),
    ("**\n!util/docker/web\nutil/docker/web/foo\n", "util/docker/web/foo", True),
    ("**\n!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl\n",
     "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
    ("**\n!dist/*.whl\n", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
]  # fmt: skip


@pytest.mark.parametrize(("text", "path", "want"), PATTERNMATCHER_MULTI)
def test_patternmatcher_multi_pattern_table(text: str, path: str, want: bool) -> None:
    # BuildKit keeps walking (the exceptions have wildcards or name the directory).
    assert bool(excluded(text, [path], Builder.BUILDKIT)) is want


# --- Go's filepath.Match tests, as patternmatcher_test.go runs them (TestMatch)

GO_MATCH = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", True),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "\u03b1", True),  # Greek alpha
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "path", "want"), GO_MATCH)
def test_go_filepath_match_table(pattern: str, path: str, want: bool) -> None:
    for builder in ALL_BUILDERS:
        assert bool(excluded(pattern, [path], builder)) is want, builder


# --- reading the file: ignorefile.ReadAll then patternmatcher.New


def test_ignorefile_readall_table() -> None:
    # moby/patternmatcher ignorefile/ignorefile_test.go (its lone "!" lines are tested below)
    text = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n"
    assert patterns(text) == [
        (1, "test1", False),
        (2, "test2", False),
        (3, "a/file/here", False),
        (5, "lastfile", False),
        (7, "inverted/abs/path", True),
    ]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (" # not a comment\n", [(1, "# not a comment", False)]),  # '#' only in column 1
        ("#comment\n  \n\t\n", []),
        ("\t a \t\n", [(1, "a", False)]),
        ("\u00a0a\u2003\n", [(1, "a", False)]),  # Go's TrimSpace: Unicode white space
        ("a\r\nb\r\n", [(1, "a", False), (2, "b", False)]),
        ("a\rb\n", [(1, "a\rb", False)]),  # a lone CR does not end a line
        ("\ufeff#c\nb\n", [(2, "b", False)]),  # the BOM goes, then '#' is in column 1
        ("a\n\ufeffb\n", [(1, "a", False), (2, "\ufeffb", False)]),  # only on the first line
        ("last line without newline", [(1, "last line without newline", False)]),
        ("a/./b/../c\n", [(1, "a/c", False)]),
        ("./a\n", [(1, "a", False)]),
        ("a/\n", [(1, "a", False)]),
        ("a /\n", [(1, "a", False)]),  # Clean exposes a space that New trims
        ("!  a\n", [(1, "a", True)]),
        ("! /a\n", [(1, "a", True)]),
        ("//a\n", [(1, "a", False)]),
        ("../a\n", [(1, "../a", False)]),
        ("/\n", [(1, "/", False)]),
        ("x/..\n", [(1, ".", False)]),
        ("!./\n", [(1, ".", True)]),
    ],
)
def test_reading(text: str, want: list[tuple[int, str, bool]]) -> None:
    assert patterns(text) == want


def test_patterns_keep_their_line_and_text() -> None:
    ignore = parse_dockerignore("# c\n\n  !./docs/  \n", source=SOURCE)
    assert ignore.patterns == (
        IgnorePattern(line=3, text="!./docs/", pattern="docs", exception=True),
    )
    assert ignore.source == SOURCE


def test_comment_blank_and_cleaned_lines_exclude_nothing() -> None:
    paths = ["a", "b/c", "# x", "x"]
    assert excluded("# x\n\n.\n./\nx/..\n../a\n/\n", paths) == set()


# --- directories, exceptions and the walk


def test_a_pattern_that_matches_a_directory_excludes_everything_below() -> None:
    paths = ["a/b/c", "a/x", "ab", "b/a", "c/d/e"]
    assert excluded("a\n", paths) == {"a/b/c", "a/x"}
    assert excluded("*/d\n", paths) == {"c/d/e"}
    assert excluded("a/*\n", paths) == {"a/b/c", "a/x"}


def test_exceptions_reinclude_below_an_excluded_directory() -> None:
    paths = ["a/keep", "a/keep/deep", "a/x", "b"]
    for builder in ALL_BUILDERS:
        assert excluded("a\n!a/keep\n", paths, builder) == {"a/x"}, builder
    assert excluded("a\n!a/keep\n", paths) == {"a/x"}


def test_the_last_matching_line_decides() -> None:
    assert excluded("*.txt\n!a.txt\n", ["a.txt", "b.txt"]) == {"b.txt"}
    assert excluded("!a.txt\n*.txt\n", ["a.txt", "b.txt"]) == {"a.txt", "b.txt"}


# Observed against the real engines; the conservative answer (excludes) is the union of sent.
BUILDER_DIFFERENCES = [
    # BuildKit keeps walking when an exception has a wildcard; the classic walk only enters a
    # directory that some exception starts with.
    ("*\n!**/keep\n", ["keep", "sub/keep", "x/y/keep", "sub/other"],
     {Builder.BUILDKIT: {"sub/other"}, Builder.CLASSIC: {"sub/keep", "x/y/keep", "sub/other"},
      Builder.BUILDKIT_20_10: {"sub/keep", "x/y/keep", "sub/other"},
      Builder.CLASSIC_20_10: {"sub/keep", "x/y/keep", "sub/other"}},
     {"sub/other"}),
    ("*\n!*/keep\n", ["a/keep", "a/other"],
     {Builder.BUILDKIT: {"a/other"}, Builder.CLASSIC: {"a/keep", "a/other"},
      Builder.BUILDKIT_20_10: {"a/keep", "a/other"}, Builder.CLASSIC_20_10: {"a/keep", "a/other"}},
     {"a/other"}),
    # MatchesUsingParentResults: the skipped third line never records that it matched "a".
    ("a\n!a/x\na\n", ["a/x/y", "a/z", "b"],
     {Builder.BUILDKIT: {"a/z"}, Builder.CLASSIC: {"a/z"},
      Builder.BUILDKIT_20_10: {"a/x/y", "a/z"}, Builder.CLASSIC_20_10: {"a/x/y", "a/z"}},
     {"a/z"}),
    # Docker 20.10 tries ancestors only at the pattern's depth.
    ("**/foo\n!x/y/foo/keep\n", ["x/y/foo/z", "x/y/foo/keep", "foo", "w"],
     {b: {"x/y/foo/z", "foo"} for b in CURRENT} | {b: {"foo"} for b in OLD},
     {"foo"}),
    # A leading ** with nothing special after it is a plain suffix test today.
    ("**.go\n", ["ab.go", "x/cd.go", "e.goo", ".go", "x/.go"],
     {b: {"ab.go", "x/cd.go", ".go", "x/.go"} for b in CURRENT}
     | {b: {".go", "x/.go"} for b in OLD},
     {".go", "x/.go"}),
    # Docker 20.10 handed + ( ) | { } ^ to the regexp engine.
    ("a+b\n", ["a+b", "aab", "ab"],
     {b: {"a+b"} for b in CURRENT} | {b: {"aab", "ab"} for b in OLD}, set()),
    ("(a|b)\n", ["(a|b)", "a", "b"],
     {b: {"(a|b)"} for b in CURRENT} | {b: {"a", "b"} for b in OLD}, set()),
    ("a{2}\n", ["a{2}", "aa"],
     {b: {"a{2}"} for b in CURRENT} | {b: {"aa"} for b in OLD}, set()),
    ("a^b\n", ["a^b", "ab"], {b: {"a^b"} for b in CURRENT} | {b: set() for b in OLD}, set()),
]  # fmt: skip


@pytest.mark.parametrize(("text", "paths", "per_builder", "conservative"), BUILDER_DIFFERENCES)
def test_where_builders_differ(
    text: str,
    paths: list[str],
    per_builder: dict[Builder, set[str]],
    conservative: set[str],
) -> None:
    for builder, want in per_builder.items():
        assert excluded(text, paths, builder) == want, builder
    assert excluded(text, paths) == conservative


@pytest.mark.parametrize(
    ("text", "paths", "want"),
    [
        # shouldEscape's bitmap only holds characters below 64: in a pattern that becomes a
        # regexp, '|', '{' and '}' keep their regexp meaning in every Docker (seen on 28).
        (
            "x|y*\n",
            ["x", "xz", "zy", "zyq", "x|yz", "q", "d/zy"],
            {"x", "xz", "zy", "zyq", "x|yz", "d/zy"},  # a search: "y[^/]*$" anywhere
        ),
        ("|/\\?\n", ["a", "b/c", "|/?"], {"a", "b/c", "|/?"}),  # "^|..." matches everything
        ("b{2}?\n", ["bb1", "b{2}1", "b1"], {"bb1"}),
        ("a+b?\n", ["a+bc", "aabc"], {"a+bc"}),  # '+' is below 64: escaped today
        ("(c)?\n", ["(c)d", "cd"], {"(c)d"}),
    ],
)
def test_regexp_characters_in_wildcard_patterns(
    text: str, paths: list[str], want: set[str]
) -> None:
    for builder in CURRENT:
        assert excluded(text, paths, builder) == want, builder


def test_builders_can_be_chosen() -> None:
    ignore = parse_dockerignore("**.go\n", source=SOURCE, builders=[Builder.BUILDKIT])
    assert ignore.builders == (Builder.BUILDKIT,)
    assert ignore.excludes("ab.go")
    with pytest.raises(ValueError, match="classic"):
        ignore.excluded_by("ab.go", Builder.CLASSIC)
    with pytest.raises(ValueError, match="at least one builder"):
        parse_dockerignore("a\n", source=SOURCE, builders=[])


def test_an_excluded_dockerfile_keeps_its_directory_walked_by_the_classic_builder() -> None:
    # docker/cli TrimBuildFilesFromExcludes appends "!sub/Dockerfile", which the classic walk
    # reads as a reason to enter sub/.
    paths = ["sub/keep", "sub/other", "x/keep"]
    nested = parse_dockerignore("*\n!**/keep\n", source=SOURCE, dockerfile="sub/Dockerfile")
    assert {p for p in paths if nested.excluded_by(p, Builder.CLASSIC)} == {"sub/other", "x/keep"}
    assert {p for p in paths if nested.excluded_by(p, Builder.BUILDKIT_20_10)} == set(paths)
    at_root = parse_dockerignore("*\n!**/keep\n", source=SOURCE)
    assert {p for p in paths if at_root.excluded_by(p, Builder.CLASSIC)} == set(paths)


def test_a_classic_builder_that_would_drop_the_dockerfile_fails() -> None:
    # The CLI's single-parent check misses that the walk prunes x/y/foo, so it appends no
    # exception and the daemon finds no Dockerfile.
    ignore = parse_dockerignore("**/foo\n", source=SOURCE, dockerfile="x/y/foo/Dockerfile")
    assert ignore.builders == (Builder.BUILDKIT, Builder.BUILDKIT_20_10)
    refusals = dict(ignore.rejected)
    assert set(refusals) == {Builder.CLASSIC, Builder.CLASSIC_20_10}
    assert "Cannot locate specified Dockerfile" in refusals[Builder.CLASSIC].problem
    assert refusals[Builder.CLASSIC].line == 1
    # The appended "!+/?.d/Dockerfile" is a pattern: Docker 20.10 reads "+" as a regexp
    # operator, so it does not re-include the Dockerfile.
    odd = parse_dockerignore("?\n", source=SOURCE, dockerfile="+/?.d/Dockerfile")
    assert {b for b, _ in odd.rejected} == {Builder.CLASSIC_20_10}
    with pytest.raises(DockerIgnoreError, match="Dockerfile"):
        parse_dockerignore(
            "**/foo\n", source=SOURCE, dockerfile="x/y/foo/Dockerfile", builders=[Builder.CLASSIC]
        )


def test_excluded_because_names_the_deciding_line() -> None:
    ignore = parse_dockerignore("# docs\n*.md\n!README.md\nbuild\n", source=SOURCE)
    reason = ignore.excluded_because("CHANGES.md")
    assert reason is not None
    assert (reason.line, reason.text) == (2, "*.md")
    below = ignore.excluded_because("build/out/x.o")
    assert below is not None
    assert below.line == 4
    assert ignore.excluded_because("README.md") is None
    assert ignore.excluded_because("src/main.py") is None


# --- Go regular-expression details that Docker passes through


@pytest.mark.parametrize(
    ("text", "paths", "want"),
    [
        ("\\d\n", ["1", "d", "x"], {"1"}),  # an escaped letter is a regexp escape: a digit
        ("\\x41\n", ["A", "x41"], {"A"}),
        ("[[:alpha:]]\n", ["a", "1", ":"], {"a"}),
        ("[*]\n", ["a", "]", "x]", "b/]"], {"]"}),  # the class [[^/] repeated, then ']'
        ("[!a]\n", ["a", "b", "!"], {"a", "!"}),  # Go has no '!' negation: the set {!, a}
        ("[^a]\n", ["a", "b", "!"], {"b", "!"}),
        ("a[/]b\n", ["a/b", "ab"], {"a/b"}),  # a class can match the separator
        ("\\Qa*\n", ["a[^/]*$", "ab"], {"a[^/]*$"}),  # \Q quotes the rest, '$' included
        ("\\pL\n", ["é", "日", "1", "_"], {"é", "日"}),
        ("\\PL\n", ["é", "1", "_"], {"1", "_"}),
        ("[\\d_]\n", ["1", "_", "a"], {"1", "_"}),
        ("?\n", ["é", "日", "ab"], {"é", "日"}),  # runes, not bytes
        ("??\n", ["é", "ab"], {"ab"}),
        ("[é]x\n", ["éx", "ex"], {"éx"}),
        ("a[ ]b\n", ["a b", "ab"], {"a b"}),
    ],
)
def test_regexp_details(text: str, paths: list[str], want: set[str]) -> None:
    for builder in ALL_BUILDERS:
        assert excluded(text, paths, builder) == want, builder


@pytest.mark.parametrize(
    ("pattern", "path", "want"),
    [
        ("**", "a/b/c", True),
        ("**/", "x", True),
        ("**/a", "a", True),
        ("**/a", "x/y/a", True),
        ("**/a", "x/ya", False),
        ("a/**", "a", False),
        ("a/**", "a/b/c", True),
        ("a**", "ab/c", True),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("a/**/b", "ab", False),
        ("**/a/**", "x/a/y", True),
        ("**/a/**", "a/y", True),
        ("**/a/**", "a", False),
        ("**/**/a", "a", True),
        ("***", "x/y", True),
        ("a/**/**/b", "a/b", True),
        ("**/*.py[co]", "x/y.pyc", True),
        ("**/*.py[co]", "x/y.py", False),
    ],
)
def test_double_star_in_every_position(pattern: str, path: str, want: bool) -> None:
    for builder in ALL_BUILDERS:
        assert bool(excluded(pattern, [path], builder)) is want, builder


def test_a_newline_in_a_name_is_not_crossed_by_a_regexp_dot() -> None:
    # "**" becomes "(.*/)?" and Go's "." stops at a newline; "*" is "[^/]*", which does not.
    assert excluded("a/**/b\n", ["a/x\ny/b", "a/xy/b"], Builder.BUILDKIT) == {"a/xy/b"}
    assert excluded("*\n", ["x\ny"]) == {"x\ny"}


# --- malformed patterns


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("!", "lone '!'"),
        ("! ", "lone '!'"),
        ("!/", "lone '!'"),
        ("[", "never closed"),
        ("a[", "never closed"),
        ("[^", "never closed"),
        ("[^bc", "never closed"),
        ("[]a]", "empty character class"),
        ("[-]", "'-'"),
        ("[x-]", "no upper end"),
        ("[-x]", "'-'"),
        ("[a-b-c]", "'-'"),
        ("\\", "lone '\\'"),
        ("a\\", "lone '\\'"),
        ("[z-a]", "invalid character class range"),
        ("[Local-Only]/", "invalid character class range"),
        ("\\q", "invalid escape sequence"),
        ("\\1", "invalid escape sequence"),
        ("\\xZZ", "invalid escape sequence"),
        ("[[:foo:]]", "invalid character class range"),
        ("[[:alpha:]", "missing closing ]"),
        ("![z-a]", "invalid character class range"),  # Docker 20.10 fails on it at once
    ],
)
def test_malformed_patterns_name_their_line(line: str, problem: str) -> None:
    text = f"# comment\n\nok\n{line}\nlater\n"
    with pytest.raises(DockerIgnoreError) as caught:
        parse_dockerignore(text, source=SOURCE)
    error = caught.value
    assert error.line == 4
    assert error.source == SOURCE
    assert error.pattern == line.strip()
    assert problem in error.problem
    assert str(error).startswith(f"{SOURCE}:4: pattern {line.strip()!r} ")
    assert isinstance(error, ValueError)


def test_a_pattern_only_docker_20_10_rejects() -> None:
    ignore = parse_dockerignore("c++\n", source=SOURCE)
    assert ignore.builders == CURRENT
    assert {builder for builder, _ in ignore.rejected} == set(OLD)
    assert ignore.excludes("c++")
    assert not ignore.excludes("cc")
    with pytest.raises(DockerIgnoreError, match="nested repetition"):
        ignore.excluded_by("c++", Builder.CLASSIC_20_10)
    with pytest.raises(DockerIgnoreError, match=r"Docker 20\.10"):
        parse_dockerignore("c++\n", source=SOURCE, builders=OLD)


@pytest.mark.parametrize("line", ["\\bword", "\\p{Greek}"])
def test_regexp_features_not_modelled_are_refused(line: str) -> None:
    with pytest.raises(DockerIgnoreError, match="does not model") as caught:
        parse_dockerignore(f"a\n{line}\n", source=SOURCE)
    assert caught.value.line == 2


def test_a_line_of_64_kib_is_refused() -> None:
    with pytest.raises(DockerIgnoreError, match="64 KiB") as caught:
        parse_dockerignore("a\n" + "x" * (64 * 1024) + "\n", source=SOURCE)
    assert caught.value.line == 2
    assert parse_dockerignore("x" * (64 * 1024 - 1) + "\n", source=SOURCE).patterns


def test_paths_outside_the_context_are_refused() -> None:
    ignore = parse_dockerignore("a\n", source=SOURCE)
    assert ignore.excludes("./a")
    for bad in ["", ".", "..", "../a", "/a"]:
        with pytest.raises(ValueError, match="inside the build context"):
            ignore.excludes(bad)


# --- speed


def test_a_pattern_that_backtracks_in_python_re_answers_in_milliseconds() -> None:
    ignore = parse_dockerignore("*a*a*a*a*a*a*a*a*a*a*a*a*b\n", source=SOURCE)
    started = time.perf_counter()
    assert not ignore.excludes("a" * 100)
    assert ignore.excludes("a" * 99 + "b")
    assert not ignore.excludes("x/" + "a" * 100)
    assert time.perf_counter() - started < 0.05
    old = parse_dockerignore("(a|aa)*c\n", source=SOURCE, builders=OLD)  # a regexp in 20.10
    started = time.perf_counter()
    assert not old.excludes("a" * 200)
    assert old.excludes("a" * 200 + "c")
    assert time.perf_counter() - started < 0.05


def test_tens_of_thousands_of_paths() -> None:
    text = (
        ".git\n**/__pycache__\n**/*.pyc\n*.md\n!README.md\nnode_modules\ndocs/**\nbuild/\n"
        "**/.DS_Store\n*.log\ntests/**/fixtures/*.json\n!tests/**/fixtures/keep.json\n.env*\n"
    )
    ignore = parse_dockerignore(text, source=SOURCE)
    dirs = ["src", "src/pkg/sub", "tests/unit/fixtures", "docs/api", "node_modules/x", "lib/a/b"]
    exts = ["py", "pyc", "md", "json", "log"]
    paths = [f"{dirs[i % len(dirs)]}/f{i}.{exts[i % len(exts)]}" for i in range(30_000)]
    started = time.perf_counter()
    count = sum(ignore.excludes(p) for p in paths)
    assert time.perf_counter() - started < 3.0
    assert count == sum(
        p.startswith(("docs/", "node_modules/")) or p.endswith(".pyc")
        or (p.startswith("tests/") and p.endswith(".json"))
        for p in paths
    )  # fmt: skip


# --- a reference for plain globs, independent of the Go regexp engine


def _reference_glob(pattern: str, path: str) -> bool:
    """Go's filepath.Match for '*', '?' and letters: '*' and '?' never match '/'."""
    body = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(body, path) is not None


_segment = st.text(alphabet="ab*?", min_size=1, max_size=4).filter(lambda s: "**" not in s)
_glob = st.lists(_segment, min_size=1, max_size=3).map("/".join)
_path = st.lists(st.text(alphabet="ab", min_size=1, max_size=4), min_size=1, max_size=4).map(
    "/".join
)


@settings(max_examples=300, deadline=None)
@given(globs=st.lists(_glob, min_size=1, max_size=3), path=_path)
def test_plain_globs_exclude_a_file_when_it_or_a_directory_above_matches(
    globs: list[str], path: str
) -> None:
    ignore = parse_dockerignore("\n".join(globs) + "\n", source=SOURCE)
    names = path.split("/")
    prefixes = ["/".join(names[: i + 1]) for i in range(len(names))]
    want = any(_reference_glob(g, p) for g in globs for p in prefixes)
    for builder in ALL_BUILDERS:
        assert ignore.excluded_by(path, builder) is want, builder
    assert ignore.excludes(path) is want


# --- which ignore file, and what is always sent


def test_ignore_file_candidates() -> None:
    assert ignore_file_candidates("Dockerfile") == ("Dockerfile.dockerignore", IGNORE_FILE)
    assert ignore_file_candidates("docker/build.Dockerfile") == (
        "docker/build.Dockerfile.dockerignore",
        ".dockerignore",
    )
    assert ignore_file_candidates("./docker//x/../Dockerfile") == (
        "docker/Dockerfile.dockerignore",
        ".dockerignore",
    )
    assert ignore_file_candidates("Dockerfile", builders=[Builder.CLASSIC]) == (IGNORE_FILE,)
    assert ignore_file_candidates("Dockerfile", builders=OLD) == (
        "Dockerfile.dockerignore",
        IGNORE_FILE,
    )


@pytest.mark.parametrize(
    ("path", "dockerfile", "ignore_file", "want"),
    [
        ("Dockerfile", "Dockerfile", ".dockerignore", True),
        ("./Dockerfile", "Dockerfile", None, True),
        (".dockerignore", "Dockerfile", ".dockerignore", True),
        (".dockerignore", "Dockerfile", "Dockerfile.dockerignore", True),  # a candidate
        ("Dockerfile.dockerignore", "Dockerfile", None, True),  # adding it changes the rules
        ("docker/x.Dockerfile", "docker/x.Dockerfile", None, True),
        ("docker/x.Dockerfile.dockerignore", "docker/x.Dockerfile", None, True),
        ("docker/.dockerignore", "docker/x.Dockerfile", None, False),  # never read
        ("custom.ignore", "Dockerfile", "custom.ignore", True),
        ("src/a.py", "Dockerfile", ".dockerignore", False),
        ("dockerfile", "Dockerfile", None, False),
    ],
)
def test_always_sent(path: str, dockerfile: str, ignore_file: str | None, want: bool) -> None:
    assert always_sent(path, dockerfile, ignore_file) is want


def test_excluded_dockerfile_and_ignore_file_are_still_always_sent() -> None:
    ignore = parse_dockerignore("Dockerfile\n.dockerignore\n", source=SOURCE)
    assert ignore.excludes("Dockerfile")  # COPY cannot see it ...
    assert always_sent("Dockerfile", "Dockerfile", ".dockerignore")  # ... but it is sent
    assert always_sent(".dockerignore", "Dockerfile", ".dockerignore")
