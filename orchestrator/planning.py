"""Matches -> the minimal, dependency-ordered ``Plan``, every action with its reasons. Pure.

The graph (``needs``):

* ``build_image:X`` implies ``compile_pipeline`` (the compiled spec pins the image), which needs it;
* ``compile_pipeline`` and ``upload_source`` imply ``publish``, which needs them;
* ``retrain`` is ``publish`` alone; ``deploy_function`` implies no run, but when both are
  planned ``publish`` needs ``deploy_function``;
* ``test`` is planned when a rule says so, or when anything else is planned and a ``[test]``
  command is configured; every other action then needs it;
* ``all`` is every declared component image, each of ``upload_source``, ``compile_pipeline``,
  ``deploy_function`` and ``test`` that some rule names, and ``publish``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from orchestrator.contexts import BuildContext
from orchestrator.errors import InputError
from orchestrator.matching import Matcher
from orchestrator.model import (
    Action,
    ChangeSet,
    Plan,
    Reason,
    RuleHit,
    Rules,
    Skipped,
    reason_group,
)

UNMATCHED_RULE = "[unmatched]"
#: The "rule" of the reason a test step gets from [test] itself (it runs before any build).
TEST_RULE = "[test]"


class UnmatchedPathsError(InputError):
    """``[unmatched] do = "error"`` and some changed paths match no rule."""


_UNMATCHED_NOTE = 'matches no rule; [unmatched] do = "all"'

#: What one acting rule hit asks for: its rule and pattern, the reason collections that every
#: path it matches joins (one per requested action, and "all"'s), and whether it says
#: build_image for the component(s) holding the path.
_Step = tuple[str, str, tuple[dict[Reason, None], ...], bool]


class _Expander:
    """Matched patterns -> (hits, steps), computed once per distinct set of matched patterns."""

    def __init__(
        self,
        rules: Rules,
        matcher: Matcher,
        components: _ComponentIndex,
        drafts: dict[str, dict[Reason, None]],
        everything: dict[Reason, None],
    ) -> None:
        self._directives = {r.name: r.do for r in rules.rules}
        self._skip = {r.name for r in rules.rules if r.is_skip}
        self._matcher = matcher
        self._components = components
        self._drafts = drafts
        self._everything = everything
        self._cache: dict[frozenset[int], tuple[tuple[RuleHit, ...], tuple[_Step, ...]]] = {}

    def expand(self, ids: frozenset[int]) -> tuple[tuple[RuleHit, ...], tuple[_Step, ...]]:
        """The hits, and their steps (empty when every hit is a skip rule)."""
        cached = self._cache.get(ids)
        if cached is None:
            hits = self._matcher.decide(ids)
            steps = tuple(self._step(hit) for hit in hits if hit.rule not in self._skip)
            cached = self._cache[ids] = (hits, steps)
        return cached

    def _step(self, hit: RuleHit) -> _Step:
        ids: list[str] = []
        wants_all = by_context = False
        for directive in self._directives[hit.rule]:
            kind = directive.kind
            if kind == "retrain":
                ids.append("publish")
            elif kind == "all":
                wants_all = True
            elif kind == "build_image" and directive.target is None:
                by_context = True
            elif kind == "build_image" and directive.target is not None:
                if self._components.buildable_name(directive.target):
                    ids.append(f"build_image:{directive.target}")
            elif kind != "skip":
                ids.append(kind)
        sinks = [self._drafts.setdefault(i, {}) for i in dict.fromkeys(ids)]
        if wants_all:
            sinks.append(self._everything)
        return hit.rule, hit.pattern, tuple(sinks), by_context


def plan_changes(
    changes: ChangeSet,
    rules: Rules,
    existing_dirs: Collection[str],
    *,
    matcher: Matcher | None = None,
    contexts: Mapping[str, BuildContext] | None = None,
) -> Plan:
    """Plan the actions for ``changes``.

    ``existing_dirs`` holds the component contexts that exist at head (the only part of the
    head tree planning needs); a component whose context is missing is not built.
    ``contexts`` (by component), when given, also says what each context's ignore file
    keeps from the builder: such a path does not rebuild the image.
    """
    matcher = matcher or Matcher(rules.rules)
    drafts: dict[str, dict[Reason, None]] = {}  # action id -> its reasons, in order
    warnings: dict[str, None] = {}
    skipped: list[Skipped] = []
    unmatched: list[str] = []
    components = _ComponentIndex(rules, existing_dirs, warnings, contexts)
    everything: dict[Reason, None] = {}  # reasons of "all", added to all its actions at the end
    expand = _Expander(rules, matcher, components, drafts, everything).expand
    matched_ids = matcher.matched_ids
    new_reason = tuple.__new__  # Reason(...) without NamedTuple's Python-level __new__

    # every touched path once, in diff order; a rename counts for its old path too
    paths = dict.fromkeys(p for c in changes.changes for p in (c.path, c.old_path) if p is not None)
    for path in paths:
        hits, steps = expand(matched_ids(path))
        if not steps:
            if hits:
                skipped.append(Skipped(path=path, rule=hits[0].rule))
            else:
                unmatched.append(path)
            continue
        acted = False
        idle: Skipped | None = None  # why a build_image rule that hit the path builds nothing
        for rule, pattern, sinks, by_context in steps:
            reason = new_reason(Reason, (path, rule, pattern, None, None, 1))
            for sink in sinks:
                sink[reason] = None
                acted = True
            if by_context:
                targets, why_not = components.targets(path)
                for target in targets:
                    drafts.setdefault(f"build_image:{target}", {})[reason] = None
                    acted = True
                if not targets and idle is None:
                    idle = Skipped(path=path, rule=rule, note=why_not)
                if why_not == NO_CONTEXT:
                    warnings.setdefault(
                        f"{path}: rule '{rule}' says build_image but the path lies in "
                        "no component's context; no image is built for it",
                        None,
                    )
        if not acted and idle is not None:
            skipped.append(idle)

    if unmatched and rules.unmatched == "error":
        shown = ", ".join(repr(p) for p in unmatched[:10])
        more = f" and {len(unmatched) - 10} more" if len(unmatched) > 10 else ""
        raise UnmatchedPathsError(
            f"{len(unmatched)} changed path(s) match no rule in {rules.source} and "
            f'[unmatched] do = "error": {shown}{more}'
        )
    if unmatched and rules.unmatched == "all":
        for path in unmatched:
            everything[Reason(path, UNMATCHED_RULE, None, None, _UNMATCHED_NOTE)] = None
    if everything:
        every = _counted(everything)
        ids = [f"build_image:{t}" for t in components.buildable()] + _all_singletons(rules)
        for action_id in ids:
            _add_counted(drafts.setdefault(action_id, {}), every)

    actions = _with_implications(drafts, rules)
    return Plan(
        base=changes.base,
        head=changes.head,
        base_reason=changes.base_reason,
        changes=changes.changes,
        actions=actions,
        skipped=tuple(skipped),
        unmatched=tuple(unmatched),
        warnings=tuple(warnings),
    )


def _counted(reasons: Iterable[Reason]) -> dict[tuple[str | None, ...], Reason]:
    """One reason per (rule, pattern, implied_by, note): the first path, with the number of
    paths it stands for (``Reason.path_count``)."""
    firsts: dict[tuple[str | None, ...], Reason] = {}
    counts: dict[tuple[str | None, ...], int] = {}
    for reason in reasons:
        key = reason_group(reason)
        firsts.setdefault(key, reason)
        counts[key] = counts.get(key, 0) + reason.path_count
    return {key: first._replace(path_count=counts[key]) for key, first in firsts.items()}


def _add_counted(draft: dict[Reason, None], every: Mapping[tuple[str | None, ...], Reason]) -> None:
    """``every`` (what an ``all`` gives each action) into one action's reasons, in place; a
    path the action already has through the same rule and pattern counts once (the counted
    reason covers every path of its rule and pattern)."""
    if any(reason_group(reason) in every for reason in draft):
        kept = [reason for reason in draft if reason_group(reason) not in every]
        draft.clear()
        draft.update(dict.fromkeys(kept))
    draft.update(dict.fromkeys(every.values()))


def _all_singletons(rules: Rules) -> list[str]:
    named = {d.kind for r in rules.rules for d in r.do}
    wanted = [
        k for k in ("test", "upload_source", "compile_pipeline", "deploy_function") if k in named
    ]
    return [*wanted, "publish"]


NO_CONTEXT = "lies in no component's build context"


class _ComponentIndex:
    """Which components' images a path can change, and which can be built at head."""

    def __init__(
        self,
        rules: Rules,
        existing: Collection[str],
        warnings: dict[str, None],
        contexts: Mapping[str, BuildContext] | None = None,
    ) -> None:
        if contexts is not None:
            existing = {c.component.context for c in contexts.values() if c.exists}
        #: context -> its components, deepest context first along a path (see ``_holding``)
        self._by_context: dict[str, list[str]] = {}
        for c in sorted(rules.components, key=lambda c: c.name, reverse=True):
            self._by_context.setdefault(c.context, []).append(c.name)
        self._held: dict[str, list[str]] = {}  # directory -> components holding it
        self._existing = {c.name for c in rules.components if c.context in existing}
        self._missing = {c.name: c.context for c in rules.components if c.context not in existing}
        self._names = [c.name for c in rules.components]
        self._filters = {name: c for name, c in (contexts or {}).items() if c.ignore is not None}
        self._warnings = warnings

    def targets(self, path: str) -> tuple[list[str], str | None]:
        """The buildable components whose image ``path`` can change (deepest context first),
        and, when there are none, why not."""
        holding = self._holding(path)
        if not holding:
            return [], NO_CONTEXT
        targets: list[str] = []
        excluded: list[str] = []
        for name in holding:
            if not self.buildable_name(name):
                continue
            context = self._filters.get(name)
            if context is not None and not context.sends(path):
                excluded.append(context.ignore_file or "")
            else:
                targets.append(name)
        if targets:
            return targets, None
        if excluded:
            return [], f"not sent to the image builder: excluded by {', '.join(excluded)}"
        return [], "its component's build context does not exist at head"

    def _holding(self, path: str) -> list[str]:
        """The components whose context holds ``path``, deepest context first: looked up for
        the path and each directory above it (a context is a directory, ``""`` the root), so
        the time does not grow with the number of components."""
        directory = path.rpartition("/")[0]
        held = self._held.get(directory)
        if held is None:
            held = []
            current = directory
            while True:
                held += self._by_context.get(current, ())
                if not current:
                    break
                current = current.rpartition("/")[0]
            self._held[directory] = held
        own = self._by_context.get(path)
        return [*own, *held] if own else held

    def buildable_name(self, name: str) -> bool:
        if name in self._existing:
            return True
        self._warnings.setdefault(
            f"component '{name}': its context '{self._missing[name] or '.'}' does not exist at "
            "head; its image is not built",
            None,
        )
        return False

    def buildable(self) -> list[str]:
        return [name for name in self._names if self.buildable_name(name)]


def _with_implications(drafts: dict[str, dict[Reason, None]], rules: Rules) -> tuple[Action, ...]:
    def implied(action_id: str, by: Iterable[str]) -> None:
        reasons = drafts.setdefault(action_id, {})
        for source in by:
            reasons[Reason(implied_by=source)] = None

    images = sorted(i for i in drafts if i.startswith("build_image:"))
    if images:
        implied("compile_pipeline", images)
    runs = [i for i in ("compile_pipeline", "upload_source") if i in drafts]
    if runs:
        implied("publish", runs)
    if drafts and "test" not in drafts and rules.test is not None:
        drafts["test"] = {test_reason(drafts): None}
    return assemble(drafts)


def test_reason(drafts: Iterable[str]) -> Reason:
    """Why [test] runs when no rule asked for it: it runs before any build."""
    others = ", ".join(sorted((d for d in drafts if d != "test"), key=_canonical_rank))
    return Reason(rule=TEST_RULE, note=f"[test] runs before any build: {others}")


def assemble(drafts: Mapping[str, Mapping[Reason, None]]) -> tuple[Action, ...]:
    """Exactly these actions (id -> reasons), with their ``needs``, in dependency order."""
    images = sorted(i for i in drafts if i.startswith("build_image:"))
    needs: dict[str, list[str]] = {i: [] for i in drafts}
    if "compile_pipeline" in drafts:
        needs["compile_pipeline"] += images
    if "publish" in drafts:
        needs["publish"] += [
            i for i in ("upload_source", "compile_pipeline", "deploy_function") if i in drafts
        ]
    if "test" in drafts:
        for action_id in drafts:
            if action_id != "test":
                needs[action_id].insert(0, "test")

    order = stable_topological_sort(sorted(drafts, key=_canonical_rank), needs)
    actions = []
    for action_id in order:
        kind, _, target = action_id.partition(":")
        actions.append(
            Action(
                id=action_id,
                kind=kind,
                target=target or None,
                needs=tuple(needs[action_id]),
                reasons=tuple(drafts[action_id]),
            )
        )
    return tuple(actions)


def _canonical_rank(action_id: str) -> tuple[int, str]:
    kind = action_id.partition(":")[0]
    ranks = {"test": 0, "build_image": 1, "upload_source": 2, "compile_pipeline": 3}
    ranks |= {"deploy_function": 4, "publish": 5}
    return ranks.get(kind, 9), action_id


class CycleError(ValueError):
    """The graph has a cycle; the message names it."""


def stable_topological_sort(nodes: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Order ``nodes`` so each comes after what it needs, otherwise keeping the given order."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            raise CycleError("dependency cycle: " + " -> ".join(cycle))
        state[node] = 1
        path.append(node)
        for dependency in needs.get(node, ()):
            visit(dependency)
        path.pop()
        state[node] = 2
        order.append(node)

    for node in nodes:
        visit(node)
    return order
