"""Changed paths x rules -> which rules each path hit, through which pattern. Pure.

Semantics are pathspec's gitignore patterns (``GitIgnoreBasicPattern``, the successor of
``gitwildmatch``), matched against file paths: within one rule the last matching pattern
decides, so a later ``!pattern`` excludes what an earlier one included.

Speed: a commit can touch tens of thousands of files and a rules file can hold hundreds of
patterns, so matching every pattern's regex against every path is too slow. Instead each
pattern is classified by the shape of the regex pathspec compiles for it:

* ``name`` at any depth (``*.md``, ``docs/``, ``Makefile``): matches when some component of the
  path matches the name (for ``name/``, some directory component);
* an anchored literal (``/docs``, ``pipeline/params.toml``, ``components/trainer/``): matches the
  path itself or one of its ancestor directories;
* anything else: its regex, tried only on paths that can start with its literal prefix.

What paths in one directory share (ancestor components and prefixes) is computed once per
directory, and the per-rule decision is computed once per distinct set of matched patterns.
``tests/test_matching.py`` checks with hypothesis that the result equals pathspec's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.model import PathMatch, Rule, RuleHit

_ANY_DEPTH = re.compile(r"^\^\(\?:\.\+/\)\?(?P<body>.*?)(?P<tail>\(\?:/\|\$\)|/)\Z", re.S)
_ANCHORED = re.compile(r"^\^(?P<body>.*?)(?P<tail>\(\?:/\|\$\)|/)\Z", re.S)
_END_ANCHOR = re.compile(r"(?<!\\)((?:\\\\)*)\$")
_ESCAPE = re.compile(r"\\(.)", re.S)
_LITERAL_PREFIX = re.compile(r"^\^((?:\\.|[^\\\[\](){}.*+?|^$])*)", re.S)

Shape = Literal["name", "anchored", "regex"]


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    """One pattern of one rule, compiled once."""

    text: str
    include: bool  # False for a negation (``!pattern``)
    regex: re.Pattern[str]
    shape: Shape
    dir_only: bool  # the pattern matches directories only (trailing ``/``)
    literal: str | None  # the name or path, for literal shapes
    part: re.Pattern[str] | None  # a wildcard name, matched against one path component
    prefix: str  # every matching path starts with this (may be empty)

    def matches(self, path: str) -> bool:
        """The reference semantics: pathspec's regex searched in the path."""
        return self.regex.search(path) is not None


def compile_pattern(text: str) -> CompiledPattern:
    """Compile one gitignore pattern; ``ValueError`` with a clear message if it means nothing."""
    from pathspec.patterns.gitignore.basic import GitIgnoreBasicPattern

    if not text.strip():
        raise ValueError("an empty pattern matches nothing")
    try:
        compiled = GitIgnoreBasicPattern(text)
    except Exception as exc:  # noqa: BLE001 - pathspec raises several types for bad patterns
        raise ValueError(f"invalid pattern {text!r}: {exc}") from None
    if compiled.include is None or compiled.regex is None:
        raise ValueError(
            f"pattern {text!r} matches nothing (a comment, or only '/' or '!'); "
            "escape a leading '#' as '\\#'"
        )
    source: str = compiled.regex.pattern
    # A newline is an ordinary character in a git path: match it like any other.
    regex = re.compile(_END_ANCHOR.sub(r"\1\\Z", source), re.S)
    shape: Shape = "regex"
    literal: str | None = None
    part: re.Pattern[str] | None = None
    dir_only = False
    prefix_match = _LITERAL_PREFIX.match(source)
    prefix = _ESCAPE.sub(r"\1", prefix_match.group(1)) if prefix_match else ""

    if found := _ANY_DEPTH.match(source):
        body = found.group("body")
        if _is_component_regex(body):
            shape = "name"
            dir_only = found.group("tail") == "/"
            literal = _ESCAPE.sub(r"\1", body) if _is_literal(body) else None
            if literal is None:
                part = re.compile(body + r"\Z", re.S)
            prefix = ""
    elif (found := _ANCHORED.match(source)) and _is_literal(found.group("body")):
        shape = "anchored"
        dir_only = found.group("tail") == "/"
        literal = _ESCAPE.sub(r"\1", found.group("body"))
    return CompiledPattern(
        text=text,
        include=bool(compiled.include),
        regex=regex,
        shape=shape,
        dir_only=dir_only,
        literal=literal,
        part=part,
        prefix=prefix,
    )


def _is_literal(body: str) -> bool:
    """True when the regex fragment is only escaped or plain characters (no wildcard)."""
    return re.fullmatch(r"(?:\\.|[^\\\[\](){}.*+?|^$])*", body, re.S) is not None


def _is_component_regex(body: str) -> bool:
    """True when the fragment cannot match a '/' or cross into another component."""
    without_classes = body.replace("[^/]", "")
    if "/" in without_classes:
        return False
    # an unescaped '.' (as in '.+' or '.*') could cross a '/'
    return re.search(r"(?<!\\)(?:\\\\)*\.", without_classes) is None


@dataclass(frozen=True, slots=True)
class _DirInfo:
    ids: frozenset[int]  # patterns matched through the directory itself or an ancestor
    candidates: tuple[int, ...]  # regex-shaped patterns that may match files below it


class Matcher:
    """All rules compiled once; ``match`` answers which rules a path hits."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.patterns: list[CompiledPattern] = []
        self._rule_of: list[int] = []
        for index, rule in enumerate(self.rules):
            for text in rule.patterns:
                self.patterns.append(compile_pattern(text))
                self._rule_of.append(index)
        self._names: dict[str, list[int]] = {}  # literal name -> pattern ids
        self._wild: list[int] = []  # wildcard names
        self._anchored: dict[str, list[int]] = {}
        self._regex: list[int] = []
        for pid, pattern in enumerate(self.patterns):
            if pattern.shape == "name" and pattern.literal is not None:
                self._names.setdefault(pattern.literal, []).append(pid)
            elif pattern.shape == "name":
                self._wild.append(pid)
            elif pattern.shape == "anchored" and pattern.literal is not None:
                self._anchored.setdefault(pattern.literal, []).append(pid)
            else:
                self._regex.append(pid)
        wild_alternatives = "|".join(
            f"(?:{self.patterns[pid].part.pattern})"  # type: ignore[union-attr]
            for pid in self._wild
        )
        self._wild_any = re.compile(wild_alternatives, re.S) if self._wild else None
        self._dirs: dict[str, _DirInfo] = {}
        self._decisions: dict[frozenset[int], tuple[RuleHit, ...]] = {}

    # -- per directory -------------------------------------------------------------------

    def _component_ids(self, component: str, *, as_dir: bool) -> list[int]:
        found: list[int] = []
        for pid in self._names.get(component, ()):
            if as_dir or not self.patterns[pid].dir_only:
                found.append(pid)
        if self._wild_any is not None and self._wild_any.match(component):
            for pid in self._wild:
                pattern = self.patterns[pid]
                if (as_dir or not pattern.dir_only) and pattern.part.match(component):  # type: ignore[union-attr]
                    found.append(pid)
        return found

    def _dir(self, directory: str) -> _DirInfo:
        info = self._dirs.get(directory)
        if info is not None:
            return info
        if not directory:
            info = _DirInfo(frozenset(), tuple(self._regex))
        else:
            parent, _, name = directory.rpartition("/")
            above = self._dir(parent)
            ids = set(above.ids)
            ids.update(self._component_ids(name, as_dir=True))
            ids.update(self._anchored.get(directory, ()))
            here = directory + "/"
            candidates = tuple(
                pid
                for pid in above.candidates
                if here.startswith(self.patterns[pid].prefix)
                or self.patterns[pid].prefix.startswith(here)
            )
            info = _DirInfo(frozenset(ids), candidates)
        self._dirs[directory] = info
        return info

    # -- per path ------------------------------------------------------------------------

    def matched_ids(self, path: str) -> frozenset[int]:
        """Ids of every pattern (of every rule) that matches ``path``."""
        directory, _, name = path.rpartition("/")
        info = self._dir(directory)
        extra = self._component_ids(name, as_dir=False)
        for pid in self._anchored.get(path, ()):
            if not self.patterns[pid].dir_only:
                extra.append(pid)
        for pid in info.candidates:
            if self.patterns[pid].regex.search(path) is not None:
                extra.append(pid)
        return info.ids.union(extra) if extra else info.ids

    def match(self, path: str) -> tuple[RuleHit, ...]:
        """The rules ``path`` hits, in rules-file order, each with its deciding pattern."""
        ids = self.matched_ids(path)
        hits = self._decisions.get(ids)
        if hits is None:
            hits = self._decide(ids)
            self._decisions[ids] = hits
        return hits

    def _decide(self, ids: frozenset[int]) -> tuple[RuleHit, ...]:
        decided: dict[int, int] = {}
        for pid in sorted(ids, reverse=True):
            decided.setdefault(self._rule_of[pid], pid)
        hits = []
        for rule_index in sorted(decided):
            pattern = self.patterns[decided[rule_index]]
            if pattern.include:
                hits.append(RuleHit(rule=self.rules[rule_index].name, pattern=pattern.text))
        return tuple(hits)

    def match_all(self, paths: Iterable[str]) -> tuple[PathMatch, ...]:
        return tuple(PathMatch(path=p, hits=self.match(p)) for p in paths)

    # -- explaining ----------------------------------------------------------------------

    def explain(self, path: str) -> tuple[RuleExplanation, ...]:
        """Every rule with at least one matching pattern, each pattern's verdict, the outcome."""
        explanations = []
        pid = 0
        for rule in self.rules:
            verdicts = []
            for _ in rule.patterns:
                pattern = self.patterns[pid]
                verdicts.append(
                    PatternVerdict(
                        pattern=pattern.text,
                        negation=not pattern.include,
                        matched=pattern.matches(path),
                    )
                )
                pid += 1
            matched = [v for v in verdicts if v.matched]
            if matched:
                explanations.append(
                    RuleExplanation(
                        rule=rule.name,
                        verdicts=tuple(verdicts),
                        included=not matched[-1].negation,
                        deciding=matched[-1].pattern,
                    )
                )
        return tuple(explanations)


@dataclass(frozen=True, slots=True)
class PatternVerdict:
    pattern: str
    negation: bool
    matched: bool


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    rule: str
    verdicts: tuple[PatternVerdict, ...]
    included: bool  # the last matching pattern was not a negation
    deciding: str
