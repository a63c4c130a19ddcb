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

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrator.model import Rule, RuleHit

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
    source: str  # pathspec's regex, with '$' made '\\Z' (a newline is an ordinary character)
    shape: Shape
    dir_only: bool  # the pattern matches directories only (trailing ``/``)
    literal: str | None  # the name or path, for literal shapes
    part: re.Pattern[str] | None  # a wildcard name, matched against one path component
    prefix: str  # every matching path starts with this (may be empty)

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.source)

    def matches(self, path: str) -> bool:
        """The reference semantics: pathspec's regex searched in the path."""
        return self.regex.search(path) is not None


@functools.lru_cache(maxsize=8192)
def _compile(source: str) -> re.Pattern[str]:
    return re.compile(source, re.S)


@functools.lru_cache(maxsize=8192)
def compile_pattern(text: str) -> CompiledPattern:
    """Compile one gitignore pattern; ``ValueError`` with a clear message if it means nothing."""
    from pathspec.patterns.gitignore.basic import GitIgnoreBasicPattern

    if not text.strip():
        raise ValueError("an empty pattern matches nothing")
    try:
        regex_source, include = GitIgnoreBasicPattern.pattern_to_regex(text)
    except Exception as exc:  # noqa: BLE001 - pathspec raises several types for bad patterns
        raise ValueError(f"invalid pattern {text!r}: {exc}") from None
    if include is None or regex_source is None:
        raise ValueError(
            f"pattern {text!r} matches nothing (a comment, or only '/' or '!'); "
            "escape a leading '#' as '\\#'"
        )
    source = _END_ANCHOR.sub(r"\1\\Z", regex_source)
    shape: Shape = "regex"
    literal: str | None = None
    part: re.Pattern[str] | None = None
    dir_only = False
    prefix_match = _LITERAL_PREFIX.match(regex_source)
    prefix = _ESCAPE.sub(r"\1", prefix_match.group(1)) if prefix_match else ""

    if found := _ANY_DEPTH.match(regex_source):
        body = found.group("body")
        if _is_component_regex(body):
            shape = "name"
            dir_only = found.group("tail") == "/"
            literal = _ESCAPE.sub(r"\1", body) if _is_literal(body) else None
            if literal is None:
                part = _compile(body + r"\Z")
            prefix = ""
    elif (found := _ANCHORED.match(regex_source)) and _is_literal(found.group("body")):
        shape = "anchored"
        dir_only = found.group("tail") == "/"
        literal = _ESCAPE.sub(r"\1", found.group("body"))
    return CompiledPattern(
        text=text,
        include=bool(include),
        source=source,
        shape=shape,
        dir_only=dir_only,
        literal=literal,
        part=part,
        prefix=prefix,
    )


def _grouped(
    parts: Sequence[tuple[int, re.Pattern[str]]],
) -> list[tuple[tuple[int, ...], re.Pattern[str]]]:
    groups: dict[re.Pattern[str], list[int]] = {}
    for pid, part in parts:
        groups.setdefault(part, []).append(pid)
    return [(tuple(pids), part) for part, pids in groups.items()]


def _any_of(parts: Sequence[tuple[tuple[int, ...], re.Pattern[str]]]) -> re.Pattern[str] | None:
    """One regex that matches a name when any of ``parts`` does (a cheap first test)."""
    if not parts:
        return None
    return re.compile("|".join(f"(?:{part.pattern})" for _, part in parts), re.S)


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
    candidates: tuple[tuple[int, re.Pattern[str]], ...]  # regex-shaped patterns that may match


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
        # name -> ids, split by whether the name may be the file itself (not dir-only)
        self._dir_names: dict[str, list[int]] = {}
        self._file_names: dict[str, list[int]] = {}
        self._dir_anchored: dict[str, list[int]] = {}
        self._file_anchored: dict[str, list[int]] = {}
        dir_wild: list[tuple[int, re.Pattern[str]]] = []
        file_wild: list[tuple[int, re.Pattern[str]]] = []
        self._regex: list[tuple[int, re.Pattern[str]]] = []
        for pid, pattern in enumerate(self.patterns):
            if pattern.shape == "name" and pattern.literal is not None:
                self._dir_names.setdefault(pattern.literal, []).append(pid)
                if not pattern.dir_only:
                    self._file_names.setdefault(pattern.literal, []).append(pid)
            elif pattern.shape == "name" and pattern.part is not None:
                dir_wild.append((pid, pattern.part))
                if not pattern.dir_only:
                    file_wild.append((pid, pattern.part))
            elif pattern.shape == "anchored" and pattern.literal is not None:
                self._dir_anchored.setdefault(pattern.literal, []).append(pid)
                if not pattern.dir_only:
                    self._file_anchored.setdefault(pattern.literal, []).append(pid)
            else:
                self._regex.append((pid, pattern.regex))
        # the same wildcard name in many rules is tested once
        self._dir_wild = _grouped(dir_wild)
        self._file_wild = _grouped(file_wild)
        self._dir_wild_any = _any_of(self._dir_wild)
        self._file_wild_any = _any_of(self._file_wild)
        self._dirs: dict[str, _DirInfo] = {}
        self._decisions: dict[frozenset[int], tuple[RuleHit, ...]] = {}

    # -- per directory -------------------------------------------------------------------

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
            ids.update(self._dir_names.get(name, ()))
            if self._dir_wild_any is not None and self._dir_wild_any.match(name):
                for pids, part in self._dir_wild:
                    if part.match(name):
                        ids.update(pids)
            ids.update(self._dir_anchored.get(directory, ()))
            here = directory + "/"
            candidates = tuple(
                (pid, regex)
                for pid, regex in above.candidates
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
        info = self._dirs.get(directory) or self._dir(directory)
        extra: list[int] = []
        found = self._file_names.get(name)
        if found:
            extra += found
        if self._file_wild_any is not None and self._file_wild_any.match(name):
            for pids, part in self._file_wild:
                if part.match(name):
                    extra += pids
        found = self._file_anchored.get(path)
        if found:
            extra += found
        for pid, regex in info.candidates:
            if regex.search(path) is not None:
                extra.append(pid)
        return info.ids.union(extra) if extra else info.ids

    def match(self, path: str) -> tuple[RuleHit, ...]:
        """The rules ``path`` hits, in rules-file order, each with its deciding pattern."""
        return self.decide(self.matched_ids(path))

    def decide(self, ids: frozenset[int]) -> tuple[RuleHit, ...]:
        """The rules hit by a set of matched patterns (see ``matched_ids``), cached."""
        hits = self._decisions.get(ids)
        if hits is None:
            hits = self._decisions[ids] = self._decide(ids)
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
