"""Docker's ``.dockerignore`` rules: which files of a build context reach the builder. Pure.

A changed file that Docker does not send to the builder cannot change the image, so it must
neither trigger a rebuild nor change the image's content hash. This module answers "would
Docker send this file?" the way Docker itself does, which is *not* the way git reads a
``.gitignore``: patterns are anchored at the context root (``*.md`` is only the top level),
``*`` and ``?`` never cross a ``/``, a pattern that matches a directory takes everything
below it, and a later ``!pattern`` can re-include files below an excluded directory.

What is followed, and where it comes from:

- Docs, https://docs.docker.com/build/concepts/context/#dockerignore-files ("Build
  context"): the file names and locations, ``#`` comments in column 1, ``filepath.Clean``
  preprocessing, Go's ``filepath.Match`` rules, ``**``, ``!`` exceptions (the last matching
  line decides), "the pattern ``.`` is ignored", and that the Dockerfile and the ignore file
  are still sent to the builder.
- Reading the file: ``ignorefile.ReadAll`` in moby/patternmatcher (``ignorefile/
  ignorefile.go``): a UTF-8 BOM is dropped, a line *starting* with ``#`` is a comment (an
  indented ``#`` is a pattern), lines are trimmed of Unicode white space, a ``!`` may be
  followed by spaces, the rest goes through ``filepath.Clean`` and loses one leading ``/``.
  Lines are split the way Go's ``bufio.ScanLines`` does (LF, an optional CR before it), and a
  line of 64 KiB or more makes Docker fail.
- Matching: ``patternmatcher.go`` in moby/patternmatcher. ``New`` trims and cleans again,
  rejects a lone ``!`` and anything ``filepath.Match`` calls malformed. ``compile`` turns a
  pattern into one of four tests: exact string, prefix (``dir/**``), suffix (``**`` first
  and nothing else special: ``**.go`` is *any path ending in* ``.go``), or a Go regular
  expression in which ``*`` is ``[^/]*``, ``?`` is ``[^/]``, ``**`` is ``(.*/)?`` (``.*`` at
  the end), ``.+()$`` are escaped and everything else, ``[...]``, ``^``, ``|``, ``{}`` and
  ``\\x`` escapes included, is handed to Go's ``regexp`` as it is. So ``\\d`` means a digit,
  ``[[:alpha:]]`` a letter, ``[*]`` the class ``[[^/]`` repeated then ``]``, ``x|y*`` is "starts
  with x, or ends in a name part starting with y", and a pattern whose regexp Go rejects
  (``[z-a]``, ``\\q``, ``[Local-Only]``) fails the build. (The escapes are meant to be
  ``.+()|{}$``, but ``shouldEscape``'s ``[8]byte`` bitmap can only hold characters below 64,
  so ``|``, ``{`` and ``}`` are never escaped; observed with docker 28.) This module
  parses and runs that regexp itself (RE2 syntax, search semantics) with a lazily built DFA,
  so matching is linear in the path whatever the pattern (Python's ``re`` backtracks, and
  Docker's own engine does not).
- Walking: Docker tests every file *and directory* while walking the context, passing each
  entry the parent directory's per-pattern results (``MatchesUsingParentResults``): a
  pattern that matched a directory matches everything below it. An excluded directory is
  skipped entirely unless an exception could re-include something in it; how that is
  decided differs between the classic builder (moby ``pkg/archive`` ``TarWithOptions``: an
  exception that starts with ``dir/``) and BuildKit (tonistiigi/fsutil ``filter.go``: the
  same after dropping a trailing ``/**`` or ``/*``, and any exception with a wildcard keeps
  every directory walked). The classic CLI also appends ``!.dockerignore`` and
  ``!<Dockerfile>`` as the last patterns when its (single-parent, see below) check says the
  file's patterns exclude them (docker/cli ``cli/command/image/build/dockerignore.go``
  ``TrimBuildFilesFromExcludes``). They are patterns like any other (a ``?`` in the path is
  a wildcard) and can keep the Dockerfile's directory walked. When the classic walk still
  leaves the Dockerfile out, the daemon answers "Cannot locate specified Dockerfile": that
  builder is then listed in :attr:`DockerIgnore.rejected`. For the Dockerfile and the ignore
  file themselves, :meth:`DockerIgnore.excludes` tells whether ``COPY`` can see them (the
  daemon hides them when the file's own patterns match); they are sent in any case.
- Docker 20.10 (still Debian 12's ``docker.io``; its CLI does the filtering for both
  builders) used the older ``pkg/fileutils``: every pattern is a regexp in which only ``.``
  and ``$`` are escaped (``a+b`` is the regexp ``a+b``, ``c++`` fails the build), and a
  file's ancestors are tested only at the pattern's own depth (``**/foo`` does not exclude
  ``x/y/foo/z`` once the walk enters ``x/y/foo``).

These four behaviours are the :class:`Builder` values. :meth:`DockerIgnore.excludes` is true
only when *none* of the chosen builders would send the file, so a file any of them sends
still counts as a change; :meth:`DockerIgnore.excluded_by` answers for one builder.
``tests/integration/test_dockerignore_docker.py`` compares both against the real engine.

Speed: all the patterns' regexps run as one product automaton built as paths need it (a
character costs one dictionary lookup), and what Docker decided for each directory is kept,
so a path costs its last name times the patterns; 20,000 paths take about 0.3 s.

Not modelled: the Go regexp word boundaries ``\\b``/``\\B`` and Unicode script classes
(``\\p{Greek}``; general categories such as ``\\pL`` are) are refused with an error, and a
malformed exception line that Docker ≥ 23 happens never to evaluate (an ``!`` line before
anything matched) is reported as malformed although that build would pass.
"""

from __future__ import annotations

import enum
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from orchestrator.dockerpaths import DEFAULT_DOCKERFILE, IGNORE_FILE, always_sent
from orchestrator.dockerpaths import clean as _clean
from orchestrator.dockerpaths import context_relative as _context_path
from orchestrator.dockerpaths import ignore_file_candidates as _candidates

__all__ = ["DEFAULT_DOCKERFILE", "IGNORE_FILE", "always_sent"]


class DockerIgnoreError(ValueError):
    """A line Docker would refuse; ``line`` is 1-based and counts comments and blank lines
    (0 when the pattern at fault is the one the classic CLI makes of the Dockerfile's path)."""

    def __init__(self, problem: str, *, source: str, line: int, pattern: str) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        self.pattern = pattern
        super().__init__(f"{source}:{line}: pattern {pattern!r} {problem}")


class Builder(enum.Enum):
    """Whose ``.dockerignore`` behaviour: the client that walks the context decides it."""

    BUILDKIT = "buildkit"  # BuildKit with a current client (docker >= 23 / buildx)
    CLASSIC = "classic"  # the classic builder (DOCKER_BUILDKIT=0) with docker CLI >= 23
    BUILDKIT_20_10 = "buildkit-20.10"  # BuildKit driven by docker CLI 20.10
    CLASSIC_20_10 = "classic-20.10"  # the classic builder with docker CLI 20.10

    @property
    def current(self) -> bool:
        """Whether it matches with moby/patternmatcher (else Docker 20.10's pkg/fileutils)."""
        return self in (Builder.BUILDKIT, Builder.CLASSIC)

    @property
    def buildkit(self) -> bool:
        return self in (Builder.BUILDKIT, Builder.BUILDKIT_20_10)


ALL_BUILDERS: tuple[Builder, ...] = tuple(Builder)


@dataclass(frozen=True, slots=True)
class IgnorePattern:
    """One pattern line: ``pattern`` is what Docker keeps after cleaning, without the ``!``."""

    line: int
    text: str
    pattern: str
    exception: bool


# --- Go's string helpers --------------------------------------------------------------------

# unicode.IsSpace: Latin-1 white space plus the White_Space property above Latin-1.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_MAX_LINE_BYTES = 64 * 1024  # bufio.MaxScanTokenSize: a longer line is bufio.ErrTooLong


def _trim_space(text: str) -> str:
    return text.strip(_GO_SPACE)


# --- filepath.Match's syntax check (Go's path/filepath/match.go) ---------------------------


def _glob_syntax_error(pattern: str) -> str | None:
    """Why ``filepath.Match(pattern, ".")`` returns ErrBadPattern, or None.

    Go checks every chunk (the text between unbracketed stars) even after a mismatch, so the
    error depends on the pattern alone.
    """
    rest = pattern
    while rest:
        rest = rest.lstrip("*")
        end, in_range = 0, False
        while end < len(rest):  # scanChunk
            char = rest[end]
            if char == "\\":
                end += 1 if end + 1 < len(rest) else 0
            elif char == "[":
                in_range = True
            elif char == "]":
                in_range = False
            elif char == "*" and not in_range:
                break
            end += 1
        problem = _chunk_syntax_error(rest[:end])
        if problem:
            return problem
        rest = rest[end:]
    return None


def _chunk_syntax_error(chunk: str) -> str | None:
    """matchChunk's checks: character classes, and a backslash with nothing after it."""
    i, n = 0, len(chunk)

    def class_char(i: int, *, upper: bool) -> int | str:
        """getEsc: the index after one class character, or what is wrong."""
        if i >= n:
            return "has a '[' character class that is never closed"
        if chunk[i] == "]":
            if upper:
                return "has a range in a character class with no upper end"
            return "has an empty character class, or one that starts with ']'"
        if chunk[i] == "-":
            return "has a '-' in a character class with nothing before it"
        if chunk[i] == "\\":
            i += 1
            if i >= n:
                return "has a '[' character class that is never closed"
        i += 1
        if i >= n:
            return "has a '[' character class that is never closed"
        return i

    while i < n:
        char = chunk[i]
        if char == "\\":
            if i + 1 >= n:
                return "ends with a lone '\\'"
            i += 2
        elif char == "[":
            i += 1
            if i < n and chunk[i] == "^":
                i += 1
            ranges = 0
            while not (i < n and chunk[i] == "]" and ranges > 0):
                after = class_char(i, upper=False)
                if isinstance(after, str):
                    return after
                i = after
                if chunk[i] == "-":
                    after = class_char(i + 1, upper=True)
                    if isinstance(after, str):
                        return after
                    i = after
                ranges += 1
            i += 1
        else:
            i += 1
    return None


# --- Docker's pattern -> Go regexp (patternmatcher compile(), and Docker 20.10's) -----------

_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exact", "prefix", "suffix", "regexp"
# patternmatcher.go shouldEscape registers ".+()|{}$" in an [8]byte bitmap as bit b/8 of byte
# b%8: a byte has no bit 8 and up, so only the characters below 64 are ever escaped.
_CURRENT_ESCAPES = frozenset(".+()$")
_OLD_ESCAPES = frozenset(".$")  # Docker 20.10 pkg/fileutils compile()


def _translate(pattern: str, *, current: bool) -> tuple[str, str]:
    """(match type, Go regexp text) exactly as Docker builds them from a cleaned pattern."""
    escapes = _CURRENT_ESCAPES if current else _OLD_ESCAPES
    out = ["^"]
    kind = _EXACT
    pos, n = 0, len(pattern)
    first = True
    while pos < n:
        char = pattern[pos]
        pos += 1
        if char == "*":
            if pos < n and pattern[pos] == "*":
                pos += 1
                if pos < n and pattern[pos] == "/":  # "**/" is "**"
                    pos += 1
                if pos >= n:  # "**" at the end takes everything, like .gitignore
                    if current and kind == _EXACT:
                        kind = _PREFIX
                    else:
                        out.append(".*")
                        kind = _REGEXP
                else:
                    out.append("(.*/)?")
                    kind = _REGEXP
                if first:
                    kind = _SUFFIX
            else:
                out.append("[^/]*")
                kind = _REGEXP
        elif char == "?":
            out.append("[^/]")
            kind = _REGEXP
        elif char in escapes:
            out.append("\\" + char)
        elif char == "\\":
            if pos < n:
                out.append("\\" + pattern[pos])
                pos += 1
                kind = _REGEXP
            else:
                out.append("\\")
        elif char in "[]":
            out.append(char)
            kind = _REGEXP
        else:
            out.append(char)
        first = False
    if not current:
        kind = _REGEXP
    if kind == _REGEXP:
        out.append("$")
    return kind, "".join(out)


# --- Go regexp (RE2 syntax, Perl flags), parsed and run here --------------------------------


class _RegexpError(Exception):
    """Go's regexp.Compile rejects the expression: Docker reports "syntax error in pattern"."""


class _Unsupported(Exception):
    """A Go regexp feature this module does not model."""


_MAX_RUNE = 0x10FFFF
_Ranges = tuple[tuple[int, int], ...]
_DIGIT: _Ranges = ((0x30, 0x39),)
_WORD: _Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_PERL: dict[str, _Ranges] = {"d": _DIGIT, "s": ((9, 10), (12, 13), (32, 32)), "w": _WORD}
_POSIX: dict[str, _Ranges] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0, 0x7F),),
    "blank": ((9, 9), (32, 32)),
    "cntrl": ((0, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((9, 13), (32, 32)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
_MAJOR_CATEGORIES = {
    "C": frozenset({"Cc", "Cf", "Co", "Cs"}),  # Go's unicode.C has no Cn
    "L": frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"}),
    "M": frozenset({"Mn", "Mc", "Me"}),
    "N": frozenset({"Nd", "Nl", "No"}),
    "P": frozenset({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}),
    "S": frozenset({"Sm", "Sc", "Sk", "So"}),
    "Z": frozenset({"Zs", "Zl", "Zp"}),
}
_CATEGORIES: dict[str, frozenset[str]] = {
    **_MAJOR_CATEGORIES,
    **{minor: frozenset({minor}) for group in _MAJOR_CATEGORIES.values() for minor in group},
}


def _complement(ranges: _Ranges) -> _Ranges:
    out: list[tuple[int, int]] = []
    low = 0
    for lo, hi in sorted(ranges):
        if lo > low:
            out.append((low, lo - 1))
        low = max(low, hi + 1)
    if low <= _MAX_RUNE:
        out.append((low, _MAX_RUNE))
    return tuple(out)


class _CharSet:
    """A character class: code point ranges, plus Unicode general categories (``\\p``)."""

    __slots__ = ("_categories", "_ends", "_negated", "_not_categories", "_starts")

    def __init__(
        self,
        ranges: Iterable[tuple[int, int]],
        categories: frozenset[str] = frozenset(),
        not_categories: tuple[frozenset[str], ...] = (),
        negated: bool = False,
    ) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [lo for lo, _ in merged]
        self._ends = [hi for _, hi in merged]
        self._categories = categories
        self._not_categories = not_categories
        self._negated = negated

    def __contains__(self, char: str) -> bool:
        code = ord(char)
        i = bisect_right(self._starts, code) - 1
        hit = i >= 0 and code <= self._ends[i]
        if not hit and (self._categories or self._not_categories):
            category = unicodedata.category(char)
            hit = category in self._categories or any(
                category not in excluded for excluded in self._not_categories
            )
        return hit != self._negated


_ANY_BUT_NEWLINE = _CharSet([(10, 10)], negated=True)  # "." without the s flag


@dataclass(frozen=True, slots=True)
class _Char:
    test: str | _CharSet  # a literal character or a class


@dataclass(frozen=True, slots=True)
class _Assert:
    at_end: bool  # \z or $ (one-line mode); else ^ or \A


@dataclass(frozen=True, slots=True)
class _Concat:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alternate:
    branches: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    sub: _Node
    low: int
    high: int  # -1: unbounded
    braces: bool  # written x{n,m}: only those count toward Go's 1000-copies limit


_Node = _Char | _Assert | _Concat | _Alternate | _Repeat


def _repeat_is_valid(node: _Node, limit: int) -> bool:
    """regexp/syntax repeatIsValid: nested {n,m} may not exceed 1000 copies."""
    if isinstance(node, _Repeat) and node.braces:
        most = node.high if node.high >= 0 else node.low
        if most == 0 and node.high == 0:
            return True
        if most > limit:
            return False
        if most > 0:
            limit //= most
    if isinstance(node, _Repeat):
        return _repeat_is_valid(node.sub, limit)
    if isinstance(node, _Concat):
        return all(_repeat_is_valid(sub, limit) for sub in node.items)
    if isinstance(node, _Alternate):
        return all(_repeat_is_valid(sub, limit) for sub in node.branches)
    return True


def _unhex(char: str) -> int:
    return int(char, 16) if char and char in "0123456789abcdefABCDEF" else -1


class _RegexpParser:
    """regexp/syntax's parser for the flags regexp.Compile uses (Perl: one-line, ClassNL)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.pos < len(self.text):  # only a ')' stops an alternation early
            raise _RegexpError("unexpected )")
        return node

    def _alternation(self) -> _Node:
        branches = [self._concatenation()]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            branches.append(self._concatenation())
        return branches[0] if len(branches) == 1 else _Alternate(tuple(branches))

    def _concatenation(self) -> _Node:
        text, items = self.text, []
        last_was_repeat = False
        while self.pos < len(text) and text[self.pos] not in "|)":
            char = text[self.pos]
            repeat = False
            if char == "(":
                if text.startswith("(?", self.pos):
                    raise _Unsupported("a (?...) group")
                self.pos += 1
                sub = self._alternation()
                if self.pos >= len(text):
                    raise _RegexpError("missing closing )")
                self.pos += 1
                items.append(sub)
            elif char in "^$":
                items.append(_Assert(at_end=char == "$"))
                self.pos += 1
            elif char == ".":
                items.append(_Char(_ANY_BUT_NEWLINE))
                self.pos += 1
            elif char == "[":
                items.append(_Char(self._class()))
            elif char in "*+?":
                self.pos += 1
                low, high = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[char]
                self._repeat(items, low, high, last_was_repeat, braces=False)
                repeat = True
            elif char == "{":
                counts = self._repeat_counts()
                if counts is None:  # not a repetition: a literal brace
                    items.append(_Char("{"))
                    self.pos += 1
                else:
                    low, high, end = counts
                    if low < 0 or low > 1000 or high > 1000 or 0 <= high < low:
                        raise _RegexpError("invalid repeat count")
                    self.pos = end
                    self._repeat(items, low, high, last_was_repeat, braces=True)
                    repeat = True
            elif char == "\\":
                self._escape(items)
            else:
                items.append(_Char(char))
                self.pos += 1
            last_was_repeat = repeat
        return items[0] if len(items) == 1 else _Concat(tuple(items))

    def _repeat(
        self, items: list[_Node], low: int, high: int, last_was_repeat: bool, *, braces: bool
    ) -> None:
        if self.pos < len(self.text) and self.text[self.pos] == "?":  # non-greedy: same set
            self.pos += 1
        if last_was_repeat:
            raise _RegexpError("invalid nested repetition operator")
        if not items:
            raise _RegexpError("missing argument to repetition operator")
        node = _Repeat(items.pop(), low, high, braces)
        if braces and (low >= 2 or high >= 2) and not _repeat_is_valid(node, 1000):
            raise _RegexpError("invalid repeat count")
        items.append(node)

    def _repeat_counts(self) -> tuple[int, int, int] | None:
        """parseRepeat: ``{n}``, ``{n,}`` or ``{n,m}`` (no leading zeros), else None."""
        text, pos = self.text, self.pos + 1

        def number(at: int) -> tuple[int, int] | None:
            end = at
            while end < len(text) and "0" <= text[end] <= "9":
                end += 1
            if end == at or (end - at >= 2 and text[at] == "0"):
                return None
            digits = text[at:end]
            return (int(digits) if len(digits) <= 8 else -1), end

        first = number(pos)
        if first is None:
            return None
        low, pos = first
        if pos >= len(text):
            return None
        high = low
        if text[pos] == ",":
            pos += 1
            if pos >= len(text):
                return None
            if text[pos] == "}":
                high = -1
            else:
                second = number(pos)
                if second is None:
                    return None
                high, pos = second
                if high < 0:
                    low = -1
        if pos >= len(text) or text[pos] != "}":
            return None
        return low, high, pos + 1

    def _escape(self, items: list[_Node]) -> None:
        text, pos = self.text, self.pos
        if pos + 1 < len(text):
            code = text[pos + 1]
            if code in "Az":
                items.append(_Assert(at_end=code == "z"))
                self.pos += 2
                return
            if code in "bB":
                raise _Unsupported(f"the word-boundary assertion \\{code}")
            if code == "C":
                raise _RegexpError("invalid escape sequence: \\C")
            if code == "Q":  # \Q...\E: literal text, to \E or the end
                end = text.find("\\E", pos + 2)
                literal = text[pos + 2 :] if end < 0 else text[pos + 2 : end]
                items.extend(_Char(char) for char in literal)
                self.pos = len(text) if end < 0 else end + 2
                return
            if code in "pP":
                items.append(_Char(self._unicode_class()))
                return
            if code in "dDsSwW":
                items.append(_Char(_CharSet(_PERL[code.lower()], negated=code.isupper())))
                self.pos += 2
                return
        items.append(_Char(self._escaped_char()))

    def _escaped_char(self) -> str:
        """parseEscape: the character a backslash sequence stands for."""
        text, pos = self.text, self.pos + 1
        if pos >= len(text):
            raise _RegexpError("trailing backslash at end of expression")
        code = text[pos]
        pos += 1
        bad = _RegexpError(f"invalid escape sequence: \\{code}")
        if code < "\x80" and not code.isalnum():  # escaped punctuation is itself
            self.pos = pos
            return code
        if code in "1234567" and not (pos < len(text) and "0" <= text[pos] <= "7"):
            raise bad  # a single non-zero digit would be a backreference
        if code in "01234567":
            value = int(code)
            for _ in range(2):
                if pos < len(text) and "0" <= text[pos] <= "7":
                    value = value * 8 + int(text[pos])
                    pos += 1
            self.pos = pos
            return chr(value)
        if code == "x":
            if pos >= len(text):
                raise bad
            if text[pos] == "{":
                end = text.find("}", pos + 1)
                digits = text[pos + 1 : end] if end >= 0 else ""
                if not digits or any(_unhex(d) < 0 for d in digits):
                    raise bad
                value = int(digits, 16)
                if value > _MAX_RUNE:
                    raise bad
                self.pos = end + 1
                return chr(value)
            high, low = _unhex(text[pos]), _unhex(text[pos + 1 : pos + 2])
            if high < 0 or low < 0:
                raise bad
            self.pos = pos + 2
            return chr(high * 16 + low)
        controls = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
        if code in controls:
            self.pos = pos
            return controls[code]
        raise bad

    def _unicode_class(self) -> _CharSet:
        """parseUnicodeClass: ``\\pL``, ``\\p{Lu}``, ``\\p{^L}``, ``\\PL``."""
        return _CharSet(*self._unicode_parts())

    def _unicode_parts(self) -> tuple[_Ranges, frozenset[str], tuple[frozenset[str], ...]]:
        """(ranges, categories, excluded categories) of the ``\\p`` class at ``pos``."""
        text, pos = self.text, self.pos
        negated = text[pos + 1] == "P"
        if pos + 2 < len(text) and text[pos + 2] == "{":
            end = text.find("}", pos)
            if end < 0:
                raise _RegexpError("invalid character class range")
            name, self.pos = text[pos + 3 : end], end + 1
        else:
            name, self.pos = text[pos + 2 : pos + 3], min(pos + 3, len(text))
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        if not name:
            raise _RegexpError("invalid character class range")
        if name == "Any":
            return (() if negated else ((0, _MAX_RUNE),)), frozenset(), ()
        if name in _CATEGORIES:
            if negated:
                return (), frozenset(), (_CATEGORIES[name],)
            return (), _CATEGORIES[name], ()
        raise _Unsupported(f"the Unicode class \\p{{{name}}} (only general categories are)")

    def _class(self) -> _CharSet:
        """parseClass: ``[...]`` with ranges, escapes, ``[:name:]``, ``\\d`` and ``\\pL``."""
        text = self.text
        pos = self.pos + 1
        negated = pos < len(text) and text[pos] == "^"
        pos += negated
        ranges: list[tuple[int, int]] = []
        categories: set[str] = set()
        not_categories: list[frozenset[str]] = []
        first = True
        while pos >= len(text) or text[pos] != "]" or first:
            first = False
            if len(text) - pos > 2 and text.startswith("[:", pos):
                end = text.find(":]", pos + 2)
                if end >= 0:
                    name = text[pos + 2 : end]
                    group = _POSIX.get(name.removeprefix("^"))
                    if group is None:
                        raise _RegexpError(f"invalid character class range: [:{name}:]")
                    ranges.extend(_complement(group) if name.startswith("^") else group)
                    pos = end + 2
                    continue
            if pos + 1 < len(text) and text[pos] == "\\" and text[pos + 1] in "pP":
                self.pos = pos
                more, these, not_these = self._unicode_parts()
                pos = self.pos
                ranges.extend(more)
                categories |= these
                not_categories.extend(not_these)
                continue
            if pos + 1 < len(text) and text[pos] == "\\" and text[pos + 1] in "dDsSwW":
                perl = _PERL[text[pos + 1].lower()]
                ranges.extend(_complement(perl) if text[pos + 1].isupper() else perl)
                pos += 2
                continue
            low, pos = self._class_char(pos)
            high = low
            if len(text) - pos >= 2 and text[pos] == "-" and text[pos + 1] != "]":
                high, pos = self._class_char(pos + 1)
                if high < low:
                    raise _RegexpError("invalid character class range")
            ranges.append((low, high))
        self.pos = pos + 1
        return _CharSet(
            ranges,
            categories=frozenset(categories),
            not_categories=tuple(not_categories),
            negated=negated,
        )

    def _class_char(self, pos: int) -> tuple[int, int]:
        if pos >= len(self.text):
            raise _RegexpError("missing closing ]")
        if self.text[pos] == "\\":
            self.pos = pos
            char = self._escaped_char()
            return ord(char), self.pos
        return ord(self.text[pos]), pos + 1


_CHAR_NODE, _SPLIT, _BEGIN, _END, _MATCH = range(5)
_ACCEPT = -1  # the expression has matched (search semantics: any further input still matches)
_DEAD = -2  # it can no longer match
_MEMO_LIMIT = 1 << 17


class _Program:
    """A Thompson NFA run as a lazily built DFA: linear time, like Go's own engine.

    ``MatchString`` semantics: the expression may match anywhere in the text (Docker's
    expressions start with ``^``, but a ``\\Q`` can swallow the closing ``$``).
    """

    def __init__(self, node: _Node) -> None:
        self._kind: list[int] = []
        self._test: list[str | _CharSet | None] = []
        self._out: list[int] = []
        self._out2: list[int] = []
        self._match = self._add(_MATCH)
        self._start = self._build(node, self._match)
        self._sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self._chars: list[tuple[tuple[str | _CharSet, int], ...]] = []
        self._ends: list[bool | None] = []
        self._trans: dict[tuple[int, str], int] = {}
        self._runs: dict[tuple[int, str], int] = {}
        self._floating = self._closure([self._start], at_start=False, at_end=False)
        self.start = self._intern(self._closure([self._start], at_start=True, at_end=False))
        self._empty = self._match in self._closure([self._start], at_start=True, at_end=True)

    def _add(self, kind: int, test: str | _CharSet | None = None, out: int = -1) -> int:
        self._kind.append(kind)
        self._test.append(test)
        self._out.append(out)
        self._out2.append(-1)
        return len(self._kind) - 1

    def _build(self, node: _Node, then: int) -> int:
        """The entry state of ``node`` followed by state ``then``."""
        match node:
            case _Char(test):
                return self._add(_CHAR_NODE, test, then)
            case _Assert(at_end):
                return self._add(_END if at_end else _BEGIN, None, then)
            case _Concat(items):
                for item in reversed(items):
                    then = self._build(item, then)
                return then
            case _Alternate(branches):
                entries = [self._build(branch, then) for branch in branches]
                entry = entries[-1]
                for other in reversed(entries[:-1]):
                    entry = self._split(other, entry)
                return entry
            case _Repeat(sub, low, high, _):
                if high < 0:
                    entry = self._split(-1, then)
                    self._out[entry] = self._build(sub, entry)
                else:
                    entry = then
                    for _ in range(high - low):
                        optional = self._split(-1, then)
                        self._out[optional] = self._build(sub, entry)
                        entry = optional
                for _ in range(low):
                    entry = self._build(sub, entry)
                return entry
        raise AssertionError(node)  # pragma: no cover - the match above is exhaustive

    def _split(self, out: int, out2: int) -> int:
        state = self._add(_SPLIT, None, out)
        self._out2[state] = out2
        return state

    def _closure(self, seeds: Iterable[int], *, at_start: bool, at_end: bool) -> frozenset[int]:
        kind, out, out2 = self._kind, self._out, self._out2
        seen: set[int] = set()
        result: set[int] = set()
        stack = list(seeds)
        while stack:
            state = stack.pop()
            if state in seen:
                continue
            seen.add(state)
            what = kind[state]
            if what == _SPLIT:
                stack.append(out[state])
                stack.append(out2[state])
            elif what == _BEGIN:
                if at_start:
                    stack.append(out[state])
            elif what == _END and at_end:
                stack.append(out[state])
            else:  # a character test, the match, or a $ that may hold at the end
                result.add(state)
        return frozenset(result)

    def _intern(self, states: frozenset[int]) -> int:
        if self._match in states:
            return _ACCEPT
        if not states:
            return _DEAD
        found = self._ids.get(states)
        if found is not None:
            return found
        found = len(self._sets)
        self._ids[states] = found
        self._sets.append(states)
        self._chars.append(
            tuple(
                (test, self._out[state])
                for state in states
                if (test := self._test[state]) is not None and self._kind[state] == _CHAR_NODE
            )
        )
        self._ends.append(None)
        return found

    def _step(self, state: int, char: str) -> int:
        seeds = [
            out
            for test, out in self._chars[state]
            if (char == test if isinstance(test, str) else char in test)
        ]
        following = self._intern(
            self._closure(seeds, at_start=False, at_end=False) | self._floating
        )
        if len(self._trans) >= _MEMO_LIMIT:
            self._trans.clear()
        self._trans[(state, char)] = following
        return following

    def advance(self, state: int, char: str) -> int:
        """The state after reading one more character."""
        if state < 0:
            return state
        following = self._trans.get((state, char))
        return self._step(state, char) if following is None else following

    def run(self, state: int, text: str) -> int:
        """The state after reading ``text`` from ``state`` (never at the text's start)."""
        if state < 0 or not text:
            return state
        key = (state, text)
        found = self._runs.get(key)
        if found is not None:
            return found
        trans = self._trans
        current = state
        for char in text:
            following = trans.get((current, char))
            current = self._step(current, char) if following is None else following
            if current < 0:
                break
        if len(self._runs) >= _MEMO_LIMIT:
            self._runs.clear()
        self._runs[key] = current
        return current

    def accepts(self, state: int) -> bool:
        """Whether the text read so far (not empty) matches, given ``$`` holds at its end."""
        if state < 0:
            return state == _ACCEPT
        known = self._ends[state]
        if known is None:
            pending = [self._out[s] for s in self._sets[state] if self._kind[s] == _END]
            known = self._match in self._closure(pending, at_start=False, at_end=True)
            self._ends[state] = known
        return known

    def matches(self, text: str) -> bool:
        if not text:
            return self._empty
        return self.accepts(self.run(self.start, text))


@lru_cache(maxsize=1024)
def _compile_regexp(text: str) -> _Program:
    return _Program(_RegexpParser(text).parse())


# --- compiled patterns and the walk ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    exception: bool
    pattern: str
    depth: int  # len(strings.Split(pattern, "/")): Docker 20.10 tests ancestors at this depth
    kind: str  # the current match type
    current_slot: int  # program slot of the current regexp (kind == _REGEXP), else -1
    old_slot: int  # program slot of Docker 20.10's regexp, -1 when a string compare is enough


@dataclass(frozen=True, slots=True)
class _Walker:
    """How one builder decides whether an excluded directory is walked into."""

    current: bool
    prefixes: tuple[str, ...]  # an exception starting with "<dir>/" keeps <dir> walked
    has_exceptions: bool
    walk_all: bool  # current BuildKit when an exception has a wildcard
    extra: tuple[int, ...]  # rules the classic CLI appends after the file's own

    def skips(self, directory: str) -> bool:
        if not self.has_exceptions:
            return True
        if self.walk_all:
            return False
        head = directory + "/"
        return not any(prefix.startswith(head) for prefix in self.prefixes)


class _Entry:
    """What Docker decides for one path when its walk reaches it."""

    __slots__ = (
        "current",
        "decider",
        "matched",
        "matched_current",
        "matched_old",
        "old",
        "path",
        "state",
        "tails",
    )

    def __init__(self, path: str, state: int) -> None:
        self.path = path
        self.state = state  # the product automaton's state after reading the path
        self.current: tuple[bool, ...] | None = None  # MatchesUsingParentResults' MatchInfo
        self.matched_current = False
        self.old: tuple[bool, ...] = ()  # Docker 20.10: which patterns match the path itself
        self.matched_old = False
        self.decider = -1  # the pattern whose match excluded it, or -1
        self.matched: tuple[bool, ...] = ()  # per walker, after the rules it appends
        self.tails: tuple[tuple[bool, ...] | None, ...] = ()  # per walker: their MatchInfo


class _Dir:
    __slots__ = ("chain", "entry", "pruned")

    def __init__(self, entry: _Entry, pruned: tuple[bool, ...], chain: tuple[_Dir, ...]) -> None:
        self.entry = entry
        self.pruned = pruned  # per walker: this directory or one above it is not walked
        self.chain = (*chain, self)  # the directories from the top down to this one


@dataclass(frozen=True, slots=True)
class _Verdict:
    excluded: tuple[bool, ...]  # per walker
    decider: int  # a pattern that excluded it, or -1


class _Matcher:
    """The walk, remembered per directory: a path costs the patterns times its last name."""

    def __init__(
        self,
        rules: Sequence[_Rule],
        user_rules: int,
        walkers: Sequence[_Walker],
        programs: Sequence[_Program],
    ) -> None:
        self.rules = tuple(rules)
        self.user_rules = user_rules  # the file's own; the rest are appended by a walker
        self.walkers = tuple(walkers)
        self.programs = tuple(programs)
        self._need_current = any(w.current for w in walkers)
        self._need_old = any(not w.current for w in walkers)
        self._generations = tuple(w.current for w in walkers)
        self._appends = any(w.extra for w in walkers)
        self._no_tails: tuple[tuple[bool, ...] | None, ...] = (None,) * len(walkers)
        # All programs run as one product automaton, built as paths need it: a character
        # costs one dictionary lookup however many patterns there are.
        start = tuple(p.start for p in programs)
        self._tuples: list[tuple[int, ...]] = [start]
        self._tuple_ids: dict[tuple[int, ...], int] = {start: 0}
        self._accepts: list[tuple[bool, ...] | None] = [None]
        self._trans: dict[tuple[int, str], int] = {}
        top = _Entry("", 0)
        top.tails = (None,) * len(walkers)
        root = _Dir(top, (False,) * len(walkers), ())
        root.chain = ()
        self._dirs: dict[str, _Dir] = {"": root}

    def _advance(self, state: int, text: str) -> int:
        trans = self._trans
        for char in text:
            following = trans.get((state, char))
            if following is None:
                following = self._step(state, char)
            state = following
        return state

    def _step(self, state: int, char: str) -> int:
        states = tuple(
            program.advance(s, char)
            for program, s in zip(self.programs, self._tuples[state], strict=True)
        )
        following = self._tuple_ids.get(states)
        if following is None:
            following = len(self._tuples)
            self._tuple_ids[states] = following
            self._tuples.append(states)
            self._accepts.append(None)
        if len(self._trans) >= _MEMO_LIMIT:
            self._trans.clear()
        self._trans[(state, char)] = following
        return following

    def _accepted(self, state: int) -> tuple[bool, ...]:
        """Per program: whether the path read so far matches its regexp."""
        found = self._accepts[state]
        if found is None:
            found = tuple(
                program.accepts(s)
                for program, s in zip(self.programs, self._tuples[state], strict=True)
            )
            self._accepts[state] = found
        return found

    def verdict(self, path: str, *, as_sent: bool = True) -> _Verdict:
        """Per walker, whether ``path`` is left out. ``as_sent=False`` leaves out the rules a
        walker appends: what the daemon then hides from COPY for the files they keep."""
        parent_path, _, name = path.rpartition("/")
        parent = self._directory(parent_path)
        entry = self._entry(parent, name)
        matched = entry.matched
        if not as_sent:
            matched = tuple(
                entry.matched_current if current else entry.matched_old
                for current in self._generations
            )
        excluded = tuple(pruned or hit for hit, pruned in zip(matched, parent.pruned, strict=True))
        decider = entry.decider
        if decider < 0 and any(parent.pruned):
            decider = next(d.entry.decider for d in parent.chain if any(d.pruned))
        return _Verdict(excluded, decider if any(excluded) else -1)

    def _directory(self, path: str) -> _Dir:
        found = self._dirs.get(path)
        if found is not None:
            return found
        names = path.split("/")
        known = len(names) - 1
        while known > 0 and "/".join(names[:known]) not in self._dirs:
            known -= 1
        directory = self._dirs["/".join(names[:known])]
        for name in names[known:]:
            entry = self._entry(directory, name)
            pruned = tuple(
                was or (matched and walker.skips(entry.path))
                for walker, matched, was in zip(
                    self.walkers, entry.matched, directory.pruned, strict=True
                )
            )
            directory = _Dir(entry, pruned, directory.chain)
            self._dirs[entry.path] = directory
        return directory

    def _entry(self, parent: _Dir, name: str) -> _Entry:
        above = parent.entry
        path = f"{above.path}/{name}" if above.path else name
        entry = _Entry(path, self._advance(above.state, f"/{name}" if above.path else name))
        accepted = self._accepted(entry.state)
        rules = self.rules
        users = range(self.user_rules)
        if self._need_current:  # patternmatcher MatchesUsingParentResults
            inherited = above.current
            flags = [False] * self.user_rules
            matched, decider = False, -1
            for index in users:
                rule = rules[index]
                hit = inherited[index] if inherited is not None else False
                if not hit:
                    if rule.exception != matched:
                        continue  # cannot change the outcome; Go leaves its MatchInfo false
                    if rule.kind == _REGEXP:
                        hit = accepted[rule.current_slot]
                    else:
                        hit = _string_match(rule, path)
                flags[index] = hit
                if hit:
                    matched, decider = not rule.exception, index
            entry.current, entry.matched_current = tuple(flags), matched
            if matched:
                entry.decider = decider
        if self._need_old:  # Docker 20.10 pkg/fileutils Matches
            old = tuple(
                path == rule.pattern if rule.old_slot < 0 else accepted[rule.old_slot]
                for rule in rules
            )
            chain, depth = parent.chain, len(parent.chain)
            matched, decider = False, -1
            for index in users:
                hit = old[index]
                if not hit:  # the ancestor at the pattern's depth
                    level = rules[index].depth
                    hit = level <= depth and chain[level - 1].entry.old[index]
                if hit:
                    matched, decider = not rules[index].exception, index
            entry.old, entry.matched_old = old, matched
            if matched and entry.decider < 0:
                entry.decider = decider
        if not self._appends:
            entry.matched = tuple(
                entry.matched_current if current else entry.matched_old
                for current in self._generations
            )
            entry.tails = self._no_tails
            return entry
        results: list[bool] = []
        tails: list[tuple[bool, ...] | None] = []
        for walker, inherited_tail in zip(self.walkers, above.tails, strict=True):
            matched = entry.matched_current if walker.current else entry.matched_old
            tail: tuple[bool, ...] | None = None
            if walker.extra and walker.current:  # the same MatchesUsingParentResults, continued
                flags = []
                for position, index in enumerate(walker.extra):
                    rule = rules[index]
                    hit = inherited_tail[position] if inherited_tail is not None else False
                    if not hit and rule.exception == matched:
                        if rule.kind == _REGEXP:
                            hit = accepted[rule.current_slot]
                        else:
                            hit = _string_match(rule, path)
                    flags.append(hit)
                    if hit:
                        matched = not rule.exception
                tail = tuple(flags)
            elif walker.extra:
                for index in walker.extra:
                    if self._old_hit(index, parent, entry.old):
                        matched = not rules[index].exception
            results.append(matched)
            tails.append(tail)
        entry.matched, entry.tails = tuple(results), tuple(tails)
        return entry

    def _old_hit(self, index: int, parent: _Dir, old: tuple[bool, ...]) -> bool:
        """Docker 20.10: the path itself, or its ancestor at the pattern's depth, matches."""
        if old[index]:
            return True
        depth = self.rules[index].depth
        return 0 < depth <= len(parent.chain) and parent.chain[depth - 1].entry.old[index]


# --- reading the file -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    text: str
    pattern: str  # after ignorefile.ReadAll


def _read_lines(text: str, source: str) -> list[_Line]:
    """ignorefile.ReadAll, line by line as bufio.ScanLines splits them."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    out: list[_Line] = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) * 4 >= _MAX_LINE_BYTES and len(raw.encode("utf-8", "surrogatepass")) >= (
            _MAX_LINE_BYTES
        ):
            raise DockerIgnoreError(
                "is on a line of 64 KiB or more, which Docker's reader rejects "
                "(bufio.Scanner: token too long)",
                source=source,
                line=number,
                pattern=raw[:40] + "...",
            )
        line = raw.removesuffix("\r")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):  # only in column 1: an indented '#' starts a pattern
            continue
        pattern = _trim_space(line)
        if not pattern:
            continue
        exception = pattern.startswith("!")
        if exception:
            pattern = _trim_space(pattern[1:])
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append(_Line(number, _trim_space(line), "!" + pattern if exception else pattern))
    return out


def _new_pattern(line: _Line, source: str) -> IgnorePattern | None:
    """patternmatcher.New for one line: None when it is blank after cleaning."""
    pattern = _trim_space(line.pattern)
    if not pattern:
        return None
    pattern = _clean(pattern)
    exception = pattern.startswith("!")
    if exception:
        if len(pattern) == 1:
            raise DockerIgnoreError(
                "is a lone '!': an exception needs a pattern after it "
                "(Docker: illegal exclusion pattern)",
                source=source,
                line=line.number,
                pattern=line.text,
            )
        pattern = pattern[1:]
    problem = _glob_syntax_error(pattern)
    if problem:
        raise DockerIgnoreError(
            f"{problem} (Docker: syntax error in pattern)",
            source=source,
            line=line.number,
            pattern=line.text,
        )
    return IgnorePattern(line.number, line.text, pattern, exception)


def _regexp_problem(regexp: str) -> str | None:
    """Why Go's regexp package rejects ``regexp`` (None if it compiles)."""
    try:
        _compile_regexp(regexp)
    except _RegexpError as error:
        return str(error)
    return None


# --- the public API -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DockerIgnore:
    """A parsed ignore file, for the context it belongs to and the Dockerfile built from it.

    ``builders`` are those modelled for this file; ``rejected`` those that would fail the
    build on it (each with the reason), which therefore constrain nothing.
    """

    source: str
    patterns: tuple[IgnorePattern, ...]
    dockerfile: str = DEFAULT_DOCKERFILE
    builders: tuple[Builder, ...] = ALL_BUILDERS
    rejected: tuple[tuple[Builder, DockerIgnoreError], ...] = ()
    _matcher: _Matcher | None = field(default=None, repr=False, compare=False)

    def excludes(self, path: str) -> bool:
        """True when Docker would not send the file at ``path`` (relative to the context root,
        '/'-separated, no leading './') to the builder: under none of ``builders`` is it sent.

        For the Dockerfile and the ignore file this says whether ``COPY``/``ADD`` can see
        them; Docker sends them in any case (see :func:`always_sent`).
        """
        verdict = self._verdict(path)
        return all(verdict.excluded)

    def excluded_by(self, path: str, builder: Builder) -> bool:
        """Whether ``builder`` leaves the file at ``path`` out of the build context."""
        for rejecting, error in self.rejected:
            if rejecting is builder:
                raise error
        if builder not in self.builders:
            raise ValueError(f"{builder.value} is not among the builders of {self.source}")
        return self._verdict(path).excluded[self.builders.index(builder)]

    def excluded_because(self, path: str) -> IgnorePattern | None:
        """The pattern that excludes ``path`` (for a builder that excludes it), else None."""
        verdict = self._verdict(path)
        if not any(verdict.excluded) or verdict.decider < 0:
            return None
        return self.patterns[verdict.decider]

    def _verdict(self, path: str) -> _Verdict:
        if self._matcher is None:
            raise ValueError("DockerIgnore instances come from parse_dockerignore()")
        name = _context_path(path)
        return self._matcher.verdict(name, as_sent=name not in (self.dockerfile, IGNORE_FILE))


def parse_dockerignore(
    text: str,
    *,
    source: str,
    dockerfile: str = DEFAULT_DOCKERFILE,
    builders: Iterable[Builder] = ALL_BUILDERS,
) -> DockerIgnore:
    """Parse an ignore file's text. ``dockerfile`` is the Dockerfile's path relative to the
    context (the classic builder keeps it in the context with an extra exception). Raises
    :class:`DockerIgnoreError` when every one of ``builders`` would fail the build."""
    wanted = tuple(dict.fromkeys(builders))
    if not wanted:
        raise ValueError("parse_dockerignore needs at least one builder")
    patterns: list[IgnorePattern] = []
    for line in _read_lines(text, source):
        pattern = _new_pattern(line, source)
        if pattern is not None:
            patterns.append(pattern)

    compiler = _Compiler(source)
    rejected: dict[Builder, DockerIgnoreError] = {}
    generations = sorted({builder.current for builder in wanted}, reverse=True)
    rules: list[_Rule] = []
    for pattern in patterns:
        rule, refusals = compiler.rule(pattern, generations)
        rules.append(rule)
        for builder in wanted:
            if builder.current in refusals:
                rejected.setdefault(builder, refusals[builder.current])
    user_rules = len(rules)
    name = _clean(dockerfile)
    inside = name != "." and not name.startswith(("/", "../")) and name != ".."
    walkers: dict[Builder, _Walker] = {}
    for builder in wanted:
        if builder in rejected:
            continue
        try:
            walkers[builder] = _walker(builder, rules, user_rules, compiler, name, inside)
        except DockerIgnoreError as refusal:
            rejected[builder] = refusal
    matcher = _Matcher(rules, user_rules, tuple(walkers.values()), compiler.programs)
    if inside:
        # The classic builder needs the Dockerfile in the context it sends: when its walk
        # leaves it out anyway the daemon answers "Cannot locate specified Dockerfile".
        verdict = matcher.verdict(name)
        for index, builder in enumerate(walkers):
            if not builder.buildkit and verdict.excluded[index]:
                culprit = patterns[verdict.decider] if verdict.decider >= 0 else patterns[-1]
                rejected[builder] = DockerIgnoreError(
                    f"leaves the Dockerfile {name!r} out of what the {builder.value} builder "
                    "sends, so that build fails ('Cannot locate specified Dockerfile')",
                    source=source,
                    line=culprit.line,
                    pattern=culprit.text,
                )
        if any(builder in rejected for builder in walkers):
            walkers = {b: w for b, w in walkers.items() if b not in rejected}
            matcher = _Matcher(rules, user_rules, tuple(walkers.values()), compiler.programs)
    if not walkers:
        raise rejected[wanted[0]]
    return DockerIgnore(
        source=source,
        patterns=tuple(patterns),
        dockerfile=name,
        builders=tuple(walkers),
        rejected=tuple((b, rejected[b]) for b in wanted if b in rejected),
        _matcher=matcher,
    )


class _Compiler:
    """Patterns -> rules, sharing one program per distinct Go regexp."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.programs: list[_Program] = []
        self._slots: dict[str, int] = {}

    def rule(
        self, pattern: IgnorePattern, generations: Sequence[bool]
    ) -> tuple[_Rule, dict[bool, DockerIgnoreError]]:
        """The rule, and per generation (True: current) why its regexp fails the build."""
        slots = {True: -1, False: -1}
        refusals: dict[bool, DockerIgnoreError] = {}
        kind = _EXACT
        for current in generations:
            this_kind, regexp = _translate(pattern.pattern, current=current)
            if current:
                kind = this_kind
            if this_kind != _REGEXP:
                continue
            if not current and regexp == f"^{_escaped_literal(pattern.pattern)}$":
                continue  # a plain name: string equality is the same test
            try:
                problem = _regexp_problem(regexp)
            except _Unsupported as unsupported:
                raise DockerIgnoreError(
                    f"uses {unsupported}, a Go regular-expression feature that Docker passes "
                    "through and this tool does not model",
                    source=self.source,
                    line=pattern.line,
                    pattern=pattern.text,
                ) from None
            if problem is not None:
                who = "Docker" if current else "Docker 20.10"
                refusals[current] = DockerIgnoreError(
                    f"is malformed once {who} turns it into a Go regular expression "
                    f"({regexp!r}: {problem}), so the build fails with 'syntax error in pattern'",
                    source=self.source,
                    line=pattern.line,
                    pattern=pattern.text,
                )
                continue
            if regexp not in self._slots:
                self._slots[regexp] = len(self.programs)
                self.programs.append(_compile_regexp(regexp))
            slots[current] = self._slots[regexp]
        rule = _Rule(
            exception=pattern.exception,
            pattern=pattern.pattern,
            depth=pattern.pattern.count("/") + 1,
            kind=kind,
            current_slot=slots[True],
            old_slot=slots[False],
        )
        return rule, refusals


def _escaped_literal(pattern: str) -> str:
    """Docker 20.10's regexp body for a pattern with no special character, else ''."""
    if any(char in "*?[]\\+(){}|^" for char in pattern):
        return ""
    return "".join("\\" + char if char in _OLD_ESCAPES else char for char in pattern)


def _walker(
    builder: Builder,
    rules: list[_Rule],
    user_rules: int,
    compiler: _Compiler,
    dockerfile: str,
    inside: bool,
) -> _Walker:
    """How ``builder`` walks; for the classic CLI, with the exceptions it appends."""
    exceptions = [rule.pattern for rule in rules[:user_rules] if rule.exception]
    if builder is Builder.BUILDKIT:
        # fsutil filter.go: patternWithoutTrailingGlob, and onlyPrefixExcludeExceptions
        trimmed = [p.removesuffix("/**").removesuffix("/*") for p in exceptions]
        walk_all = any(char in p for p in trimmed for char in "*[]?^\\")
        return _Walker(True, tuple(p + "/" for p in trimmed), bool(exceptions), walk_all, ())
    extra: list[int] = []
    if not builder.buildkit:
        # docker/cli TrimBuildFilesFromExcludes: when the deprecated single-parent Matches says
        # the patterns exclude the ignore file or the Dockerfile, it appends "!<path>" to them.
        # That is a pattern like any other (a '?' in the path is a wildcard), and it is last.
        for kept in (IGNORE_FILE, dockerfile) if inside else (IGNORE_FILE,):
            if not _single_parent_matches(
                kept, rules[:user_rules], compiler.programs, current=builder.current
            ):
                continue
            line = _Line(0, f"!{kept}", f"!{kept}")
            try:
                pattern = _new_pattern(line, compiler.source)
            except DockerIgnoreError as error:
                raise DockerIgnoreError(
                    f"excludes {kept!r}, so the {builder.value} builder adds the exception "
                    f"'!{kept}', which Docker rejects: {error.problem}",
                    source=compiler.source,
                    line=0,
                    pattern=f"!{kept}",
                ) from None
            if pattern is None:
                continue
            rule, refusals = compiler.rule(pattern, [builder.current])
            if builder.current in refusals:
                raise refusals[builder.current]
            extra.append(len(rules))
            rules.append(rule)
            exceptions.append(rule.pattern)
    prefixes = tuple(p + "/" for p in exceptions)
    return _Walker(builder.current, prefixes, bool(exceptions), False, tuple(extra))


def _single_parent_matches(
    path: str, rules: Sequence[_Rule], programs: Sequence[_Program], *, current: bool
) -> bool:
    """patternmatcher.Matches / fileutils.Matches: ancestors tried at the pattern's depth."""
    parents = path.split("/")[:-1]
    matched = False
    for rule in rules:
        candidates = [path]
        if parents and rule.depth <= len(parents):
            candidates.append("/".join(parents[: rule.depth]))
        if any(_direct_match(rule, c, programs, current=current) for c in candidates):
            matched = not rule.exception
    return matched


def _direct_match(rule: _Rule, path: str, programs: Sequence[_Program], *, current: bool) -> bool:
    """patternmatcher Pattern.match (or Docker 20.10's) on one path."""
    if current:
        if rule.kind == _REGEXP:
            return programs[rule.current_slot].matches(path)
        return _string_match(rule, path)
    if rule.old_slot < 0:
        return path == rule.pattern
    return programs[rule.old_slot].matches(path)


def _string_match(rule: _Rule, path: str) -> bool:
    """The exact, prefix and suffix match types of patternmatcher."""
    if rule.kind == _EXACT:
        return path == rule.pattern
    if rule.kind == _PREFIX:
        return path.startswith(rule.pattern[:-2])
    suffix = rule.pattern[2:]  # "**" first: a plain suffix test (so "**.go" matches "a.go")
    return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])


def ignore_file_candidates(
    dockerfile: str, *, builders: Iterable[Builder] = ALL_BUILDERS
) -> tuple[str, ...]:
    """The context-relative ignore files ``builders`` read for ``dockerfile``, most specific
    first (:func:`orchestrator.dockerpaths.ignore_file_candidates`)."""
    return _candidates(dockerfile, buildkit=any(builder.buildkit for builder in builders))
