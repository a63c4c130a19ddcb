"""Changed paths x rules -> which rules each path hit, through which pattern. Pure.

Each pattern means what git means by it (:mod:`orchestrator.gitignore`). A pattern matches a
changed file when it matches the file itself or one of the directories above it (a
directory pattern such as ``docs/`` or ``components/*`` takes everything below the
directories it matches), exactly as ``git check-ignore`` decides for a file under a single
pattern. Within one rule the last matching pattern decides, so a later ``!pattern``
excludes what an earlier one included.

The one deviation from a ``.gitignore``: git stops at the first excluded directory on the
way down and never reads later patterns for what lies inside it, so there a negation cannot
re-include a file below an excluded directory (``components/`` then ``!components/**/*.md``
keeps every README excluded), and a negated directory (``!tests/``) does not undo a pattern
that matches the files themselves (``*.py``). Here every pattern that matches the file or one
of its directories counts and the last one decides, which is what a path filter means:
``["components/", "!components/**/*.md"]`` is every file under components/ except
markdown, and ``["*.py", "!tests/"]`` is every python file outside tests/. Where no
negation matches, the result is git's. ``tests/test_matching.py`` checks both against git.

:meth:`Matcher.explain` reports through the same code as :meth:`Matcher.match`, so what
``explain`` shows is what ``plan`` did.

Speed: a commit can touch tens of thousands of files and a rules file can hold a thousand
patterns, so no path is tried against every pattern. Literal names, ``*suffix`` names and
literal paths are looked up in dictionaries; what directories match is computed once per
directory; the remaining wildcard patterns are tried only on paths under their literal
prefix; and the per-rule decision is computed once per distinct set of matched patterns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from orchestrator.gitignore import GitPattern, compile_pattern
from orchestrator.model import Rule, RuleHit


class _DirInfo(NamedTuple):
    own: frozenset[int]  # patterns that match this directory itself
    ids: frozenset[int]  # ... or any directory above it
    candidates: tuple[int, ...]  # wildcard path patterns that may match something below


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _NameIndex:
    """Basename patterns: literal names, ``*suffix`` names, and the other wildcards."""

    def __init__(self) -> None:
        self.literal: dict[str, list[int]] = {}
        self.suffixes: dict[int, dict[str, list[int]]] = {}  # by suffix length
        self.wild: list[tuple[int, GitPattern]] = []
        self._cache: dict[str, frozenset[int]] = {}

    def add(self, pid: int, pattern: GitPattern) -> None:
        if pattern.literal is not None:
            self.literal.setdefault(pattern.literal, []).append(pid)
        elif pattern.suffix is not None:
            by_length = self.suffixes.setdefault(len(pattern.suffix), {})
            by_length.setdefault(pattern.suffix, []).append(pid)
        else:
            self.wild.append((pid, pattern))

    def lookup(self, name: str) -> frozenset[int]:
        found = self._cache.get(name)
        if found is not None:
            return found
        ids: list[int] = list(self.literal.get(name, ()))
        for length, by_suffix in self.suffixes.items():
            if len(name) >= length:
                ids += by_suffix.get(name[len(name) - length :], ())
        if self.wild:
            raw = _encode(name)
            ids += [pid for pid, pattern in self.wild if pattern.matches_name(raw)]
        found = self._cache[name] = frozenset(ids)
        return found


class Matcher:
    """All rules compiled once; ``match`` answers which rules a path hits."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.patterns: list[GitPattern] = []
        self._rule_of: list[int] = []
        for index, rule in enumerate(self.rules):
            for text in rule.patterns:
                self.patterns.append(compile_pattern(text))
                self._rule_of.append(index)
        # what may match a file, and what may match a directory (directory-only patterns)
        self._file_names = _NameIndex()
        self._dir_names = _NameIndex()
        self._file_paths: dict[str, list[int]] = {}
        self._dir_paths: dict[str, list[int]] = {}
        wild_paths: list[int] = []
        for pid, pattern in enumerate(self.patterns):
            if pattern.basename:
                self._dir_names.add(pid, pattern)
                if not pattern.dir_only:
                    self._file_names.add(pid, pattern)
            elif pattern.literal is not None:
                self._dir_paths.setdefault(pattern.literal, []).append(pid)
                if not pattern.dir_only:
                    self._file_paths.setdefault(pattern.literal, []).append(pid)
            else:
                wild_paths.append(pid)
        self._root = _DirInfo(frozenset(), frozenset(), tuple(wild_paths))
        self._dirs: dict[str, _DirInfo] = {"": self._root}
        self._decisions: dict[frozenset[int], tuple[RuleHit, ...]] = {}

    # -- directories ---------------------------------------------------------------------

    def _dir(self, directory: str) -> _DirInfo:
        info = self._dirs.get(directory)
        if info is not None:
            return info
        # walk up to the closest known directory, then down (no recursion: paths can be deep)
        missing = [directory]
        parent = directory.rpartition("/")[0]
        while parent not in self._dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        above = self._dirs[parent]
        for current in reversed(missing):
            above = self._dirs[current] = self._describe_dir(current, above)
        return above

    def _describe_dir(self, directory: str, above: _DirInfo) -> _DirInfo:
        name = directory.rpartition("/")[2]
        own = set(self._dir_names.lookup(name))
        own.update(self._dir_paths.get(directory, ()))
        candidates: list[int] = []
        if above.candidates:
            raw = _encode(directory)
            here = directory + "/"
            for pid in above.candidates:
                pattern = self.patterns[pid]
                prefix = pattern.prefix
                if prefix.startswith(here) or here.startswith(prefix):
                    candidates.append(pid)
                if directory.startswith(prefix) and pattern.matches_name(raw):
                    own.add(pid)
        frozen_own = frozenset(own)
        return _DirInfo(frozen_own, above.ids | frozen_own, tuple(candidates))

    # -- files ---------------------------------------------------------------------------

    def _file_ids(self, path: str, info: _DirInfo) -> frozenset[int]:
        """The patterns that match the file at ``path`` itself (not through a directory)."""
        name = path.rpartition("/")[2]
        ids = self._file_names.lookup(name)
        extra: list[int] = list(self._file_paths.get(path, ()))
        if info.candidates:
            raw = _encode(path)
            for pid in info.candidates:
                pattern = self.patterns[pid]
                if (
                    not pattern.dir_only
                    and path.startswith(pattern.prefix)
                    and pattern.matches_name(raw)
                ):
                    extra.append(pid)
        return ids.union(extra) if extra else ids

    def matched_ids(self, path: str) -> frozenset[int]:
        """Ids of every pattern (of every rule) that matches ``path`` or a directory above it."""
        directory = path.rpartition("/")[0]
        info = self._dirs.get(directory) or self._dir(directory)
        own = self._file_ids(path, info)
        if not info.ids:
            return own
        return info.ids | own if own else info.ids

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
        """Every rule with at least one matching pattern: how each pattern matched, and the
        outcome. Computed from the same per-directory and per-file matches as ``match``."""
        directory = path.rpartition("/")[0]
        info = self._dir(directory)
        where: dict[int, str] = dict.fromkeys(self._file_ids(path, info), path)
        parts = directory.split("/") if directory else []
        for depth in range(1, len(parts) + 1):  # the top-most matching directory, as git
            above = "/".join(parts[:depth])
            for pid in self._dir(above).own:
                where.setdefault(pid, above + "/")
        hits = {hit.rule: hit for hit in self.match(path)}
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
                        matched=pid in where,
                        through=where.get(pid) if where.get(pid) != path else None,
                    )
                )
                pid += 1
            matched = [v for v in verdicts if v.matched]
            if matched:
                explanations.append(
                    RuleExplanation(
                        rule=rule.name,
                        verdicts=tuple(verdicts),
                        included=rule.name in hits,
                        deciding=matched[-1].pattern,
                    )
                )
        return tuple(explanations)


class PatternVerdict(NamedTuple):
    pattern: str
    negation: bool
    matched: bool
    #: the directory (with a trailing '/') the pattern matched, when not the path itself
    through: str | None = None


class RuleExplanation(NamedTuple):
    rule: str
    verdicts: tuple[PatternVerdict, ...]
    included: bool  # the last matching pattern was not a negation
    deciding: str
