"""One gitignore pattern, checked against git itself.

* git's own wildmatch test vectors (``t/t3070-wildmatch.sh``, the first column: wildmatch with
  ``WM_PATHNAME``, which is what gitignore uses);
* hypothesis against ``git check-ignore --no-index`` for single patterns over the whole
  syntax: anchored and not, trailing ``/``, ``**`` everywhere, ``*``, ``?``, brackets with
  ranges, negation and POSIX classes, escapes, dotfiles, unicode, spaces;
* patterns this tool rejects really never match anything in git;
* no pattern makes matching slow.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.gitignore import compile_pattern, wildmatch
from tests.gitcheck import GitIgnoreOracle, ancestors, old_git_prefix_bug

# (expected with WM_PATHNAME, text, pattern): git's t/t3070-wildmatch.sh, first column.
# Shell single quotes keep backslashes, so these are the same bytes the test script passes.
WILDMATCH_VECTORS: list[tuple[int, str, str]] = [
    # Basic wildmatch features
    (1, "foo", "foo"), (0, "foo", "bar"), (1, "", ""), (1, "foo", "???"), (0, "foo", "??"),
    (1, "foo", "*"), (1, "foo", "f*"), (0, "foo", "*f"), (1, "foo", "*foo*"),
    (1, "foobar", "*ob*a*r*"), (1, "aaaaaaabababab", "*ab"), (1, "foo*", r"foo\*"),
    (0, "foobar", r"foo\*bar"), (1, r"f\oo", r"f\\oo"), (1, "ball", "*[al]?"),
    (0, "ten", "[ten]"), (1, "ten", "**[!te]"), (0, "ten", "**[!ten]"), (1, "ten", "t[a-g]n"),
    (0, "ten", "t[!a-g]n"), (1, "ton", "t[!a-g]n"), (1, "ton", "t[^a-g]n"),
    (1, "a]b", "a[]]b"), (1, "a-b", "a[]-]b"), (1, "a]b", "a[]-]b"), (0, "aab", "a[]-]b"),
    (1, "aab", "a[]a-]b"), (1, "]", "]"),
    # Extended slash-matching features
    (0, "foo/baz/bar", "foo*bar"), (0, "foo/baz/bar", "foo**bar"), (1, "foobazbar", "foo**bar"),
    (1, "foo/baz/bar", "foo/**/bar"), (1, "foo/baz/bar", "foo/**/**/bar"),
    (1, "foo/b/a/z/bar", "foo/**/bar"), (1, "foo/b/a/z/bar", "foo/**/**/bar"),
    (1, "foo/bar", "foo/**/bar"), (1, "foo/bar", "foo/**/**/bar"), (0, "foo/bar", "foo?bar"),
    (0, "foo/bar", "foo[/]bar"), (0, "foo/bar", "foo[^a-z]bar"),
    (0, "foo/bar", "f[^eiu][^eiu][^eiu][^eiu][^eiu]r"),
    (1, "foo-bar", "f[^eiu][^eiu][^eiu][^eiu][^eiu]r"), (1, "foo", "**/foo"),
    (1, "XXX/foo", "**/foo"), (1, "bar/baz/foo", "**/foo"), (0, "bar/baz/foo", "*/foo"),
    (0, "foo/bar/baz", "**/bar*"), (1, "deep/foo/bar/baz", "**/bar/*"),
    (0, "deep/foo/bar/baz/", "**/bar/*"), (1, "deep/foo/bar/baz/", "**/bar/**"),
    (0, "deep/foo/bar", "**/bar/*"), (1, "deep/foo/bar/", "**/bar/**"),
    (0, "foo/bar/baz", "**/bar**"), (1, "foo/bar/baz/x", "*/bar/**"),
    (0, "deep/foo/bar/baz/x", "*/bar/**"), (1, "deep/foo/bar/baz/x", "**/bar/*/*"),
    # Various additional tests
    (0, "acrt", "a[c-c]st"), (1, "acrt", "a[c-c]rt"), (0, "]", "[!]-]"), (1, "a", "[!]-]"),
    (0, "", "\\"), (0, "\\", "\\"), (0, "XXX/\\", "*/\\"), (1, "XXX/\\", r"*/\\"),
    (1, "foo", "foo"), (1, "@foo", "@foo"), (0, "foo", "@foo"), (1, "[ab]", r"\[ab]"),
    (1, "[ab]", "[[]ab]"), (1, "[ab]", "[[:]ab]"), (0, "[ab]", "[[::]ab]"),
    (1, "[ab]", "[[:digit]ab]"), (1, "[ab]", r"[\[:]ab]"), (1, "?a?b", r"\??\?b"),
    (1, "abc", r"\a\b\c"), (0, "foo", ""), (1, "foo/bar/baz/to", "**/t[o]"),
    # Character class tests
    (1, "a1B", "[[:alpha:]][[:digit:]][[:upper:]]"), (0, "a", "[[:digit:][:upper:][:space:]]"),
    (1, "A", "[[:digit:][:upper:][:space:]]"), (1, "1", "[[:digit:][:upper:][:space:]]"),
    (0, "1", "[[:digit:][:upper:][:spaci:]]"), (1, " ", "[[:digit:][:upper:][:space:]]"),
    (0, ".", "[[:digit:][:upper:][:space:]]"), (1, ".", "[[:digit:][:punct:][:space:]]"),
    (1, "5", "[[:xdigit:]]"), (1, "f", "[[:xdigit:]]"), (1, "D", "[[:xdigit:]]"),
    (1, "_", "[[:alnum:][:alpha:][:blank:][:cntrl:][:digit:][:graph:][:lower:][:print:]"
             "[:punct:][:space:][:upper:][:xdigit:]]"),
    (1, ".", "[^[:alnum:][:alpha:][:blank:][:cntrl:][:digit:][:lower:][:space:][:upper:]"
             "[:xdigit:]]"),
    (1, "5", "[a-c[:digit:]x-z]"), (1, "b", "[a-c[:digit:]x-z]"), (1, "y", "[a-c[:digit:]x-z]"),
    (0, "q", "[a-c[:digit:]x-z]"),
    # Additional tests, including some malformed wildmatch patterns
    (1, "]", r"[\\-^]"), (0, "[", r"[\\-^]"), (1, "-", r"[\-_]"), (1, "]", r"[\]]"),
    (0, r"\]", r"[\]]"), (0, "\\", r"[\]]"), (0, "ab", "a[]b"), (0, "a[]b", "a[]b"),
    (0, "ab[", "ab["), (0, "ab", "[!"), (0, "ab", "[-"), (1, "-", "[-]"), (0, "-", "[a-"),
    (0, "-", "[!a-"), (1, "-", "[--A]"), (1, "5", "[--A]"), (1, " ", "[ --]"), (1, "$", "[ --]"),
    (1, "-", "[ --]"), (0, "0", "[ --]"), (1, "-", "[---]"), (1, "-", "[------]"),
    (0, "j", "[a-e-n]"), (1, "-", "[a-e-n]"), (1, "a", "[!------]"), (0, "[", "[]-a]"),
    (1, "^", "[]-a]"), (0, "^", "[!]-a]"), (1, "[", "[!]-a]"), (1, "^", "[a^bc]"),
    (1, "-b]", "[a-]b]"), (0, "\\", "[\\]"), (1, "\\", r"[\\]"), (0, "\\", r"[!\\]"),
    (1, "G", r"[A-\\]"), (0, "aaabbb", "b*a"), (0, "aabcaa", "*ba*"), (1, ",", "[,]"),
    (1, ",", r"[\\,]"), (1, "\\", r"[\\,]"), (1, "-", "[,-.]"), (0, "+", "[,-.]"),
    (0, "-.]", "[,-.]"), (1, "2", r"[\1-\3]"), (1, "3", r"[\1-\3]"), (0, "4", r"[\1-\3]"),
    (1, "\\", r"[[-\]]"), (1, "[", r"[[-\]]"), (1, "]", r"[[-\]]"), (0, "-", r"[[-\]]"),
    # Test recursion
    (1, "-adobe-courier-bold-o-normal--12-120-75-75-m-70-iso8859-1",
        "-*-*-*-*-*-*-12-*-*-*-m-*-*-*"),
    (0, "-adobe-courier-bold-o-normal--12-120-75-75-X-70-iso8859-1",
        "-*-*-*-*-*-*-12-*-*-*-m-*-*-*"),
    (0, "-adobe-courier-bold-o-normal--12-120-75-75-/-70-iso8859-1",
        "-*-*-*-*-*-*-12-*-*-*-m-*-*-*"),
    (1, "XXX/adobe/courier/bold/o/normal//12/120/75/75/m/70/iso8859/1",
        "XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*"),
    (0, "XXX/adobe/courier/bold/o/normal//12/120/75/75/X/70/iso8859/1",
        "XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*"),
    (1, "abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txt", "**/*a*b*g*n*t"),
    (0, "abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txtz", "**/*a*b*g*n*t"),
    (0, "foo", "*/*/*"), (0, "foo/bar", "*/*/*"), (1, "foo/bba/arr", "*/*/*"),
    (0, "foo/bb/aa/rr", "*/*/*"), (1, "foo/bb/aa/rr", "**/**/**"), (1, "abcXdefXghi", "*X*i"),
    (0, "ab/cXd/efXg/hi", "*X*i"), (1, "ab/cXd/efXg/hi", "*/*X*/*/*i"),
    (1, "ab/cXd/efXg/hi", "**/*X*/**/*i"),
    # Extra pathmatch tests
    (0, "foo", "fo"), (1, "foo/bar", "foo/bar"), (1, "foo/bar", "foo/*"),
    (0, "foo/bba/arr", "foo/*"), (1, "foo/bba/arr", "foo/**"), (0, "foo/bba/arr", "foo*"),
    (0, "foo/bba/arr", "foo**"), (0, "foo/bba/arr", "foo/*arr"), (0, "foo/bba/arr", "foo/**arr"),
    (0, "foo/bba/arr", "foo/*z"), (0, "foo/bba/arr", "foo/**z"), (0, "foo/bar", "foo?bar"),
    (0, "foo/bar", "foo[/]bar"), (0, "foo/bar", "foo[^a-z]bar"), (0, "ab/cXd/efXg/hi", "*Xg*i"),
    # Extra case-sensitivity tests
    (0, "a", "[A-Z]"), (1, "A", "[A-Z]"), (0, "A", "[a-z]"), (1, "a", "[a-z]"),
    (0, "a", "[[:upper:]]"), (1, "A", "[[:upper:]]"), (0, "A", "[[:lower:]]"),
    (1, "a", "[[:lower:]]"), (0, "A", "[B-Za]"), (1, "a", "[B-Za]"), (0, "A", "[B-a]"),
    (1, "a", "[B-a]"), (0, "z", "[Z-y]"), (1, "Z", "[Z-y]"),
]  # fmt: skip


@pytest.mark.parametrize(("expected", "text", "pattern"), WILDMATCH_VECTORS)
def test_gits_wildmatch_vectors(expected: int, text: str, pattern: str) -> None:
    assert wildmatch(pattern.encode(), text.encode()) is bool(expected)


# -- the gitignore layer -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.md", "docs/README.md", False, True),
        ("docs/", "a/docs", True, True),
        ("docs/", "a/docs", False, False),  # a file named docs is not the directory docs/
        ("/docs", "a/docs", True, False),
        ("components/*", "components/trainer", True, True),
        ("docs/**/", "docs/readme.md", False, False),  # names directories below docs only
        ("docs/**/", "docs/api", True, True),
        ("a[!a-z]b", "a/b", False, False),  # brackets never match '/' in a path pattern
        ("x/a[^a-z]b", "x/a/b", False, False),
        ("[[:digit:]]*", "7up", False, True),
        ("[[:digit:]]*", "up", False, False),
        ("[\\]]x", "]x", False, True),  # a backslash escapes inside brackets
        ("a\t", "a\t", False, True),  # a trailing tab is part of the pattern
        ("a\t", "a", False, False),
        ("a  ", "a", False, True),  # unescaped trailing spaces are not
        ("a\\ ", "a ", False, True),
        ("foo**/bar", "foobar", False, False),  # git >= 2.52; older git matches (a bug)
        ("foo**/bar", "foox/bar", False, True),
        ("??", "é", False, True),  # byte-wise, as git: é is two bytes
        ("?", "é", False, False),
        ("É", "é", False, False),  # case-sensitive
        ("\\#hash", "#hash", False, True),
        ("\\!bang", "!bang", False, True),
        ("**", "any/thing", False, True),
        ("a/**", "a", True, False),
        ("*", "line\nbreak", False, True),  # a newline is an ordinary character
    ],
)
def test_pattern_table(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert compile_pattern(pattern).matches(path, is_dir=is_dir) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "matches nothing"),
        ("   ", "matches nothing"),
        ("/", "matches nothing"),
        ("!", "matches nothing"),
        ("!/", "matches nothing"),
        ("# a comment", "comment"),
        ("[z-a]", "reversed"),
        ("x[b-a]y/", "reversed"),
        ("a[bc", "never closed"),
        ("[[:alpha:]", "never closed"),
        ("[[:alfa:]]", "unknown character class"),
        ("foo\\", "lone backslash"),
        ("a//b", "empty path segment"),
        ("//a", "empty path segment"),
        ("a//", "empty path segment"),
        ("./src/", "'.' or '..' segment"),
        ("src/../x", "'.' or '..' segment"),
        ("a[/]b", "matches no character but '/'"),
        ("a\0b", "NUL"),
    ],
)
def test_patterns_that_can_never_match_are_rejected(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace(".", r"\.")):
        compile_pattern(pattern)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging CI) if the block runs longer than ``seconds``."""

    def expired(*_: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 100),
        ("x/*a*a*a*a*a*a*a*a*a*a*a*a*b", "x/" + "a" * 100),
        ("**/*a*a*a*a*a*a*a*a*a*a*a*b/**/c", "/".join(["a" * 20] * 30)),
        ("**/a/**/a/**/a/**/a/**/a/**/b", "/".join(["a"] * 200)),
        ("*?*?*?*?*?*?*?*?*?*?*?*?!", "?" * 200),
        ("[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*0", "z" * 300),
    ],
)
def test_no_pattern_makes_matching_slow(pattern: str, name: str) -> None:
    compiled = compile_pattern(pattern)
    # git answers these in milliseconds; a backtracking matcher would not finish in a lifetime
    with _deadline(5.0):
        started = time.perf_counter()
        assert not compiled.matches(name)
        assert time.perf_counter() - started < 5.0


# -- hypothesis against git check-ignore ----------------------------------------------------

NAMES = (
        "a", "b", "ab", "abc", "x.md", "y.py", "docs", "src", ".hidden", ".md", "é", "ü.md",
        "x y", " lead", "trail ", "[x]", "a*b", "q?", "back\\slash", "#h", "!b", "$v", "A",
        "B1", "a-b", "t\tab", "n\nl", "😀", "foo", "foobar", "bar", "aa", "-", "]",
)  # fmt: skip
#: pieces of patterns: literals, escapes, every wildcard, brackets (some malformed)
TOKENS = (
        "a", "b", "ab", "docs", "src", ".md", "x", "é", "foo", "bar", " ", "\\ ", "\\*", "\\?",
        "\\[", "\\\\", "\\#", "\\!", "*", "**", "***", "?", "[ab]", "[!a]", "[^a-c]", "[a-z]",
        "[[:alpha:]]", "[[:digit:][:upper:]]", "[[:space:]]", "[[:punct:]]", "[]a]", "[\\]]",
        "[é]", "[!é]", "[--z]", "[a-]", "[", "[z-a]", "\\", "-", "]", "$", "#", "!", ".",
        "[[:alfa:]]", "[!/]", "y.py", "x.md", "\t",
)  # fmt: skip
_names = st.sampled_from(NAMES)
_paths = st.lists(_names, min_size=1, max_size=5).map("/".join)
_tokens = st.sampled_from(TOKENS)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segment = st.lists(_tokens, min_size=1, max_size=3).map("".join)
    body = "/".join(draw(st.lists(segment, min_size=1, max_size=4)))
    if draw(st.booleans()):
        body = "/" + body
    if draw(st.booleans()):
        body += "/"
    if draw(st.integers(0, 3)) == 0:
        body = "!" + body
    return body


def _positive(pattern: str) -> str:
    """The pattern without its negation (a '#' or '!' it then starts with stays literal)."""
    if not pattern.startswith("!"):
        return pattern
    body = pattern[1:]
    return "\\" + body if body.startswith(("#", "!")) else body


def _compiles(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> GitIgnoreOracle:
    return GitIgnoreOracle(tmp_path_factory.mktemp("git-oracle"))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pattern=patterns().filter(_compiles), paths=st.lists(_paths, min_size=1, max_size=10))
def test_a_pattern_matches_what_git_ignores(
    oracle: GitIgnoreOracle, pattern: str, paths: list[str]
) -> None:
    """A file matches when the pattern matches it or a directory above it: git's verdict for a
    single (positive) pattern, which is what ``git check-ignore --no-index`` reports."""
    positive = _positive(pattern)
    compiled = compile_pattern(positive)
    if old_git_prefix_bug(positive) and oracle.version < (2, 52):
        return  # git before 2.52 answers this one wrongly (see orchestrator/gitignore.py)
    verdicts = oracle.check([positive], paths)
    for path in paths:
        ours = compiled.matches(path) or any(
            compiled.matches(d, is_dir=True) for d in ancestors(path)
        )
        assert ours == verdicts[path].ignored, (positive, path, verdicts[path])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pattern=patterns().filter(lambda p: not _compiles(p)), paths=st.lists(_paths, max_size=8))
def test_rejected_patterns_never_match_in_git(
    oracle: GitIgnoreOracle, pattern: str, paths: list[str]
) -> None:
    with pytest.raises(ValueError) as rejected:
        compile_pattern(pattern)
    if "reversed" in str(rejected.value) or "NUL" in str(rejected.value):
        return  # rejected as malformed: [az-a] still matches 'a' in git
    positive = pattern[1:] if pattern.startswith("!") else pattern
    if not positive.strip() or positive.lstrip().startswith("#"):
        return  # git reads these as blank lines or comments: nothing to ask it
    verdicts = oracle.check([positive], paths)  # git checks the directories above, too
    assert not any(v.ignored for v in verdicts.values()), (pattern, verdicts)


# -- the literal fast path -----------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("ab.-_é !#/\\*"), min_size=1, max_size=12))
def test_a_plain_pattern_compiles_as_the_general_path_does(text: str) -> None:
    """Patterns without wildcards skip the regex builder; what they get is what it builds."""
    from orchestrator import gitignore

    try:
        fast = compile_pattern.__wrapped__(text)
    except ValueError:
        return
    if fast.literal is None or not gitignore.is_plain(fast.literal):
        return
    assert fast == gitignore._general(text, fast.include, fast.dir_only, fast.basename,
                                      fast.literal)  # fmt: skip
