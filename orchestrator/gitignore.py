"""One gitignore pattern -> a compiled matcher with git's exact semantics. Pure.

A rules.toml pattern means what the same line means in a ``.gitignore`` at the repository
root, as git itself decides it (``git check-ignore --no-index``). The rules come from git's
source, which is the only complete specification:

* ``dir.c`` (``parse_path_pattern``, ``trim_trailing_spaces``, ``match_basename``,
  ``match_pathname``): a leading ``!`` negates; unescaped trailing spaces are dropped (a
  trailing tab is kept); a trailing ``/`` matches directories only; a pattern with no other
  ``/`` is matched against the last component of a path at any depth, a pattern with one is
  matched against the whole path from the root (a leading ``/`` only anchors it).
* ``wildmatch.c`` with ``WM_PATHNAME``: ``?``, ``*`` and bracket expressions never match
  ``/``; ``**`` between slashes (or at either end) spans any number of directories, and
  elsewhere is a plain ``*``; ``[...]`` takes ``!`` or ``^`` for negation, ranges, backslash
  escapes and the POSIX classes of git's own ``ctype`` (ASCII only, and ``space`` is space,
  tab, LF and CR); a backslash makes the next character literal.
* Matching is byte-wise on UTF-8, as in git: ``?`` matches one byte, so ``é`` (two bytes)
  matches ``??``. It is case-sensitive (``core.ignorecase`` off).
* git before 2.52 strips a pattern's literal prefix before calling wildmatch, which made
  ``foo**/bar`` match ``foobar``; this module implements the fixed behaviour (the whole
  pattern goes to wildmatch), under which that ``**`` is a plain ``*``.

Patterns that can never match a path, or that wildmatch would abort on, are rejected with
a ``ValueError`` that says why (an unclosed ``[``, a reversed range such as ``[z-a]``, an
unknown ``[:class:]``, a trailing lone backslash, ``/`` alone, an empty or ``.`` segment).

Speed: each pattern becomes one Python regular expression that is equivalent to wildmatch
but cannot backtrack catastrophically. Within a path segment, every ``*`` but the last finds
the earliest place where the fixed-length piece after it matches and commits to it (an
atomic group): when the rest of the segment starts with another ``*``, the earliest place is
always a right one. The same holds one level up for runs of segments between ``**``. So
``*a*a*a*a*a*a*a*a*a*a*a*a*b`` against a 100-character name costs a few hundred steps,
where plain backtracking would take longer than the universe has.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

# git's ctype.c (``sane_ctype``) and git-compat-util.h: ASCII only.
_ALPHA = frozenset(range(ord("a"), ord("z") + 1)) | frozenset(range(ord("A"), ord("Z") + 1))
_DIGIT = frozenset(range(ord("0"), ord("9") + 1))
_PUNCT = frozenset(
    b for b in range(33, 127) if not (b in _ALPHA or b in _DIGIT)
)  # ctype.c marks every printable non-alphanumeric as P, R, G or U
_CLASSES: dict[str, frozenset[int]] = {
    "alnum": _ALPHA | _DIGIT,
    "alpha": _ALPHA,
    "blank": frozenset(b" \t"),
    "cntrl": frozenset(range(0, 32)) | {127},
    "digit": _DIGIT,
    "graph": frozenset(range(33, 127)),
    "lower": frozenset(range(ord("a"), ord("z") + 1)),
    "print": frozenset(range(32, 127)),
    "punct": _PUNCT,
    "space": frozenset(b" \t\n\r"),  # not \v or \f: git's isspace
    "upper": frozenset(range(ord("A"), ord("Z") + 1)),
    "xdigit": _DIGIT | frozenset(b"abcdefABCDEF"),
}
_SLASH = ord("/")
_ALL_BYTES = frozenset(range(256))


class _Star:
    """A run of ``*`` inside a segment (``**`` that is not a whole segment is a ``*``); one
    instance, ``_STAR``."""

    __slots__ = ()


class _Any:
    """``?``: one byte that is not ``/``; one instance, ``_ANY``."""

    __slots__ = ()


class _Set(NamedTuple):
    """A bracket expression: the bytes it matches (never ``/``)."""

    members: frozenset[int]


_Atom = int | _Star | _Any | _Set  # an int is a literal byte
_GLOBSTAR = "**"  # a whole segment of two or more stars
_Segment = tuple[_Atom, ...] | str  # str only for _GLOBSTAR

_STAR = _Star()
_ANY = _Any()
_GLOB_SPECIAL = frozenset(b"*?[\\")
_GLOB_SPECIAL_RE = re.compile(rb"[*?[\\]")
_BAD_LITERAL_SEGMENT = re.compile(rb"(?:^|/)\.{0,2}(?:/|$)")


class GitPattern(NamedTuple):
    """One compiled pattern.

    ``basename`` patterns (no ``/`` but a trailing one) are matched against the last component
    of a path; the others against the whole path. ``literal`` is the unescaped pattern when it
    has no wildcard (it then matches exactly that name or path), ``suffix`` the literal tail of
    a ``*literal`` basename pattern (git's ENDSWITH case), and ``prefix`` the literal text every
    matching path starts with (may be empty). Those three let :mod:`orchestrator.matching`
    index patterns instead of trying each one; :meth:`matches_name` is the definition.
    """

    text: str  # as written
    include: bool  # False for a negation (``!pattern``)
    dir_only: bool  # trailing ``/``: matches directories only
    basename: bool
    literal: str | None
    suffix: str | None
    prefix: str
    source: bytes  # the regular expression (fullmatch, bytes) equivalent to wildmatch

    @property
    def regex(self) -> re.Pattern[bytes]:
        return _compile(self.source)

    def matches_name(self, name: bytes) -> bool:
        """Whether ``name`` (a UTF-8 basename or path, by :attr:`basename`) matches."""
        return _compile(self.source).fullmatch(name) is not None

    def matches(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether the file (or, with ``is_dir``, the directory) at ``path`` matches by itself
        (the directories above it are not considered; :mod:`orchestrator.matching` does that).
        """
        if self.dir_only and not is_dir:
            return False
        name = path.rpartition("/")[2] if self.basename else path
        return self.matches_name(name.encode("utf-8", "surrogateescape"))


@functools.lru_cache(maxsize=16384)
def _compile(source: bytes) -> re.Pattern[bytes]:
    return re.compile(source, re.DOTALL)


@functools.lru_cache(maxsize=16384)
def compile_pattern(text: str) -> GitPattern:
    """Compile one pattern; ``ValueError`` with a clear reason when it can never match."""
    if "\0" in text:
        raise ValueError(f"pattern {text!r} contains a NUL character, which no path has")
    if text.startswith("#"):
        raise ValueError(
            f"pattern {text!r} is a comment in gitignore syntax and matches nothing; "
            "escape a leading '#' as '\\#'"
        )
    body = _trim_trailing_spaces(text)
    include = not body.startswith("!")
    if not include:
        body = body[1:]
    dir_only = body.endswith("/")
    if dir_only:
        body = body[:-1]
    basename = "/" not in body
    if not basename and body.startswith("/"):
        body = body[1:]  # a leading slash only anchors the pattern to the root
    if not body:
        raise ValueError(
            f"pattern {text!r} matches nothing (it is empty, or only '/' or '!'); "
            "to match everything write '*'"
        )
    if is_plain(body):  # most patterns: a directory or a file name, as written
        return GitPattern(
            text=text, include=include, dir_only=dir_only, basename=basename, literal=body,
            suffix=None, prefix=body, source=re.escape(body.encode("utf-8")),
        )  # fmt: skip
    return _general(text, include, dir_only, basename, body)


def is_plain(body: str) -> bool:
    """No wildcard or escape, and no empty, ``.`` or ``..`` segment: the pattern body is its
    own regex, literal and prefix (what :func:`_general` computes for it, more slowly;
    ``tests/test_gitignore.py`` checks they agree)."""
    raw = body.encode("utf-8")
    return not _GLOB_SPECIAL_RE.search(raw) and not _BAD_LITERAL_SEGMENT.search(raw)


def _general(text: str, include: bool, dir_only: bool, basename: bool, body: str) -> GitPattern:
    raw = body.encode("utf-8")
    segments = _segments(raw, text)
    literal = None if any(b in _GLOB_SPECIAL for b in raw) else body
    suffix = None
    if basename and raw.startswith(b"*") and not any(b in _GLOB_SPECIAL for b in raw[1:]):
        suffix = body[1:]  # git's PATTERN_FLAG_ENDSWITH
    return GitPattern(
        text=text,
        include=include,
        dir_only=dir_only,
        basename=basename,
        literal=literal,
        suffix=suffix,
        prefix=_literal_prefix(raw),
        source=_regex(segments),
    )


def wildmatch(pattern: bytes, text: bytes) -> bool:
    """git's ``wildmatch(pattern, text, WM_PATHNAME)``: the matching engine alone, without
    the gitignore layer (no negation, anchoring or trailing-slash handling) and without the
    checks that reject patterns no path can match. A malformed pattern matches nothing, as
    in git (where dowild aborts)."""
    try:
        segments = _segments(pattern, repr(pattern), strict=False)
    except ValueError:
        return False
    return _compile(_regex(segments)).fullmatch(text) is not None


def _trim_trailing_spaces(text: str) -> str:
    """git's ``trim_trailing_spaces``: drop unescaped trailing spaces (tabs stay)."""
    if not text.endswith(" "):
        return text
    last_space: int | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == " ":
            if last_space is None:
                last_space = i
        elif ch == "\\":
            i += 1
            if i >= len(text):
                return text
            last_space = None
        else:
            last_space = None
        i += 1
    return text if last_space is None else text[:last_space]


def _literal_prefix(raw: bytes) -> str:
    """The literal text before the first wildcard, as whole characters."""
    end = len(raw)
    for i, b in enumerate(raw):
        if b in _GLOB_SPECIAL:
            end = i
            break
    return raw[:end].decode("utf-8", "ignore")


# -- parsing (the grammar of git's dowild) ------------------------------------------------


def _segments(raw: bytes, text: str, *, strict: bool = True) -> tuple[_Segment, ...]:
    """Split into ``/``-separated segments of atoms, as wildmatch reads them.

    ``strict`` also rejects what wildmatch accepts but no path in git can match (empty and
    ``.`` segments, a reversed range, a bracket that matches nothing); without it those
    simply match nothing, as in wildmatch itself.
    """
    segments: list[_Segment] = []
    atoms: list[_Atom] = []
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == ord("\\"):
            if i + 1 >= n:
                raise ValueError(
                    f"pattern {text!r} ends with a lone backslash, which matches nothing; "
                    "write '\\\\' for a literal backslash"
                )
            i += 1
            if raw[i] == _SLASH:
                segments.append(_finish(atoms, text, strict))
                atoms = []
            else:
                atoms.append(raw[i])
            i += 1
        elif b == _SLASH:
            segments.append(_finish(atoms, text, strict))
            atoms = []
            i += 1
        elif b == ord("?"):
            atoms.append(_ANY)
            i += 1
        elif b == ord("*"):
            start = i
            while i < n and raw[i] == ord("*"):
                i += 1
            at_start = start == 0 or raw[start - 1] == _SLASH
            at_end = i == n or raw[i] == _SLASH or raw[i : i + 2] == b"\\/"
            if i - start >= 2 and at_start and at_end:
                atoms.append(_STAR)  # marked as a globstar in _finish
                atoms.append(_STAR)
            elif not atoms or atoms[-1] != _STAR:
                atoms.append(_STAR)
        elif b == ord("["):
            members, i = _bracket(raw, i, text, strict)
            atoms.append(_Set(members))
        else:
            atoms.append(b)
            i += 1
    segments.append(_finish(atoms, text, strict))
    return tuple(segments)


def _finish(atoms: list[_Atom], text: str, strict: bool) -> _Segment:
    if atoms == [_STAR, _STAR]:
        return _GLOBSTAR
    if not strict:
        return tuple(atoms)
    if not atoms:
        raise ValueError(f"pattern {text!r} has an empty path segment ('//'), which no path has")
    if atoms in ([ord(".")], [ord("."), ord(".")]):
        raise ValueError(
            f"pattern {text!r} has a '.' or '..' segment, which no path in git has: "
            "patterns are relative to the repository root"
        )
    return tuple(atoms)


def _bracket(raw: bytes, start: int, text: str, strict: bool) -> tuple[frozenset[int], int]:
    """Parse ``[...]`` at ``start`` exactly as dowild does; return its bytes and the index after.

    dowild returns WM_ABORT_ALL (no match, ever) for an unclosed bracket or an unknown class;
    those are errors here.
    """
    n = len(raw)

    def at(k: int) -> int:
        return raw[k] if k < n else 0

    unclosed = ValueError(
        f"pattern {text!r} has a '[' that is never closed, so it matches nothing; "
        "write '\\[' for a literal bracket"
    )
    p = start + 1
    p_ch = at(p)
    if p_ch == ord("^"):
        p_ch = ord("!")
    negated = p_ch == ord("!")
    if negated:
        p += 1
        p_ch = at(p)
    members: set[int] = set()
    prev_ch = 0
    while True:
        if not p_ch:
            raise unclosed
        if p_ch == ord("\\"):
            p += 1
            p_ch = at(p)
            if not p_ch:
                raise unclosed
            members.add(p_ch)
        elif p_ch == ord("-") and prev_ch and at(p + 1) and at(p + 1) != ord("]"):
            p += 1
            p_ch = at(p)
            if p_ch == ord("\\"):
                p += 1
                p_ch = at(p)
                if not p_ch:
                    raise unclosed
            if p_ch < prev_ch and strict:
                low, high = chr(prev_ch), chr(p_ch)
                raise ValueError(
                    f"pattern {text!r} has the range '{low}-{high}', which is reversed and "
                    f"matches nothing; write '{high}-{low}'"
                )
            members.update(range(prev_ch, p_ch + 1))
            p_ch = 0  # this makes prev_ch 0: no range may start at a range's end
        elif p_ch == ord("[") and at(p + 1) == ord(":"):
            s = p + 2
            q = s
            while at(q) and at(q) != ord("]"):
                q += 1
            if not at(q):
                raise unclosed
            length = q - s - 1
            if length < 0 or raw[q - 1] != ord(":"):
                # no ":]": an ordinary '[' member, and scanning resumes after it
                members.add(ord("["))
                p_ch = ord("[")
            else:
                name = raw[s : s + length].decode("utf-8", "replace")
                if name not in _CLASSES:
                    raise ValueError(
                        f"pattern {text!r} names the unknown character class '[:{name}:]' "
                        f"(known: {', '.join(sorted(_CLASSES))})"
                    )
                members.update(_CLASSES[name])
                p = q
                p_ch = 0
        else:
            members.add(p_ch)
        prev_ch = p_ch
        p += 1
        p_ch = at(p)
        if p_ch == ord("]"):
            break
    matched = (_ALL_BYTES - members if negated else frozenset(members)) - {_SLASH}
    if not matched and strict:
        raise ValueError(
            f"pattern {text!r} has a bracket expression that matches no character but '/', "
            "and '/' only separates path segments: it matches nothing"
        )
    return frozenset(matched), p + 1


# -- the equivalent regular expression ----------------------------------------------------


def _atom_regex(atom: _Atom) -> bytes:
    if isinstance(atom, int):
        return re.escape(bytes([atom]))
    if isinstance(atom, _Any):
        return b"[^/]"
    if isinstance(atom, _Set):
        return _set_regex(atom.members)
    raise AssertionError(atom)  # stars are handled by the segment


def _set_regex(members: frozenset[int]) -> bytes:
    if not members:
        return b"(?!)"
    if members == _ALL_BYTES - {_SLASH}:
        return b"[^/]"
    ordered = sorted(members)
    parts: list[bytes] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        low, high = ordered[i], ordered[j]
        parts.append(b"\\x%02x" % low if low == high else b"\\x%02x-\\x%02x" % (low, high))
        i = j + 1
    return b"[" + b"".join(parts) + b"]"


def _segment_regex(atoms: tuple[_Atom, ...]) -> bytes:
    """One segment: every star but the last commits to the earliest fit of the piece after it."""
    pieces: list[list[bytes]] = [[]]
    for atom in atoms:
        if isinstance(atom, _Star):
            pieces.append([])
        else:
            pieces[-1].append(_atom_regex(atom))
    out = b"".join(pieces[0])
    for middle in pieces[1:-1]:
        out += b"(?>[^/]*?" + b"".join(middle) + b")"
    if len(pieces) > 1:
        out += b"[^/]*" + b"".join(pieces[-1])
    return out


def _run_regex(segments: tuple[_Segment, ...]) -> bytes:
    """Consecutive segments without ``**``, joined by ``/``."""
    return b"/".join(_segment_regex(s) for s in segments if not isinstance(s, str))


def _regex(segments: tuple[_Segment, ...]) -> bytes:
    """The whole pattern: runs of segments between ``**``; every run but the last commits to
    the earliest place it fits (the ``**`` after it absorbs whatever lies between)."""
    parts: list[bytes] = []
    i = 0
    count = len(segments)
    while i < count:
        if segments[i] == _GLOBSTAR:
            while i + 1 < count and segments[i + 1] == _GLOBSTAR:
                i += 1  # "**/**" is "**"
            if i == count - 1:
                parts.append(b".*")  # a trailing "**" matches everything below
                break
            end = i + 1
            while end < count and segments[end] != _GLOBSTAR:
                end += 1
            run = _run_regex(segments[i + 1 : end])
            if end == count:
                parts.append(b"(?:[^/]*/)*?" + run)
            else:
                parts.append(b"(?>(?:[^/]*/)*?" + run + b"/)")
            i = end
        else:
            end = i
            while end < count and segments[end] != _GLOBSTAR:
                end += 1
            parts.append(_run_regex(segments[i:end]))
            if end < count:
                parts.append(b"/")
            i = end
    return b"".join(parts)
