"""Plan -> JSON, plain text, a rich table, markdown (with a mermaid graph), GitHub outputs.

Pure string builders, except ``write_github`` and ``print_table`` which take the files/console
they write to as parameters.
"""

from __future__ import annotations

import collections
import json
import operator
import re
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

from orchestrator.matching import RuleExplanation
from orchestrator.model import ACTION_KINDS, Action, Plan, Reason, Skipped, reason_group
from orchestrator.output import one_line, undecodable

PLAN_SCHEMA = 1
T = TypeVar("T")
SHOWN_REASONS = 5


# -- JSON ----------------------------------------------------------------------------------


def reason_to_json(reason: Reason, count: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = {"path": reason.path, "rule": reason.rule, "pattern": reason.pattern}
    if reason.implied_by is not None:
        data["implied_by"] = reason.implied_by
    if reason.note is not None:
        data["note"] = reason.note
    data["count"] = count
    return data


def plan_to_json(plan: Plan, *, all_paths: bool = False) -> dict[str, Any]:
    """The JSON plan (README: "The JSON plan"). An action's ``reasons`` and ``skipped`` hold
    one entry per (rule, pattern) with the first path and how many paths it stands for
    (``count``); ``all_paths`` lists every path instead (each with ``count`` 1). ``changes``
    and ``unmatched`` are always complete."""
    return {
        "schema": PLAN_SCHEMA,
        "base": plan.base,
        "head": plan.head,
        "base_reason": plan.base_reason,
        "changes": [
            {"status": c.status, "path": c.path, "old_path": c.old_path} for c in plan.changes
        ],
        "actions": [
            {
                "id": a.id,
                "kind": a.kind,
                "target": a.target,
                "needs": list(a.needs),
                "reasons": [
                    reason_to_json(r, n) for r, n in _grouped(a.reasons, reason_group, all_paths)
                ],
            }
            for a in plan.actions
        ],
        "skipped": [
            _skipped_to_json(s, n) for s, n in _grouped(plan.skipped, _skipped_key, all_paths)
        ],
        "unmatched": list(plan.unmatched),
        "warnings": list(plan.warnings),
        "existing": [{"id": e.id, "artifact": e.artifact, "note": e.note} for e in plan.existing],
    }


_skipped_key = operator.attrgetter("rule", "note")


def _grouped(items: Sequence[T], key: Callable[[T], Any], all_paths: bool) -> list[tuple[T, int]]:
    """``items`` one by one, or the first of each ``key`` with the number it stands for (no
    Python-level loop over the items: at 20,000 paths this is most of the rendering). A
    reason that already stands for several paths (``Reason.path_count``) counts as that many."""
    if all_paths:
        return [(item, _count(item)) for item in items]
    keys = list(map(key, items))
    counts = collections.Counter(keys)
    firsts = dict(zip(reversed(keys), reversed(items), strict=True))  # the earliest wins
    grouped = [(firsts[k], counts[k]) for k in dict.fromkeys(keys)]
    if any(_count(first) > 1 for first, _ in grouped):  # only what an ``all`` gave
        weights: collections.Counter[Any] = collections.Counter()
        for item, k in zip(items, keys, strict=True):
            weights[k] += _count(item)
        grouped = [(first, weights[key(first)]) for first, _ in grouped]
    return grouped


def _count(item: object) -> int:
    return item.path_count if isinstance(item, Reason) else 1


def _skipped_to_json(skipped: Skipped, count: int = 1) -> dict[str, Any]:
    data: dict[str, Any] = {"path": skipped.path, "rule": skipped.rule}
    if skipped.note is not None:
        data["note"] = skipped.note
    data["count"] = count
    return data


def describe_existing(plan: Plan) -> list[str]:
    """The actions finishing dropped because their artifacts are there, one line each."""
    if not plan.existing:
        return []
    lines = [f"Already there: {len(plan.existing)} action(s) not needed"]
    lines += [f"     - {e.id}: {e.note} ({e.artifact})" for e in plan.existing]
    return lines


def describe_skipped(skipped: Skipped) -> str:
    note = f": {skipped.note}" if skipped.note else ""
    return f"{skipped.path} (rule {skipped.rule}{note})"


def render_json(plan: Plan, *, all_paths: bool = False) -> str:
    """One line of JSON (the C encoder: at 20,000 changes ``indent`` would take the pure-Python
    one, four times slower), and valid UTF-8 whatever the paths hold: a byte that is not
    UTF-8 is the four characters ``\\xNN`` in the decoded string (:func:`undecodable`)."""
    text = json.dumps(plan_to_json(plan, all_paths=all_paths), ensure_ascii=False,
                      separators=(", ", ": "))  # fmt: skip
    try:
        text.encode("utf-8")  # fails only on a lone surrogate: a byte that is not UTF-8
    except UnicodeEncodeError:
        text = undecodable(text, backslash="\\\\")
    return text + "\n"


# -- text ----------------------------------------------------------------------------------


def describe_reason(reason: Reason) -> str:
    if reason.implied_by is not None:
        return f"implied by {reason.implied_by}"
    if reason.path is None:
        return reason.note or reason.rule or "(no reason recorded)"
    if reason.pattern is None:
        more = f", and {reason.path_count - 1} more path(s)" if reason.path_count > 1 else ""
        return f"{reason.path} ({reason.note or reason.rule}{more})"
    more = f", and {reason.path_count - 1} more path(s)" if reason.path_count > 1 else ""
    return f"{reason.path} (rule {reason.rule}: {reason.pattern}{more})"


def summarize_reasons(action: Action, limit: int = SHOWN_REASONS) -> list[str]:
    shown = [describe_reason(r) for r in action.reasons[:limit]]
    if len(action.reasons) > limit:
        shown.append(f"... and {len(action.reasons) - limit} more")
    return shown


#: the base_reason of a plan made from ``--changed`` paths rather than from a diff
GIVEN_PATHS = "given-paths"


def describe_range(plan: Plan) -> str:
    """What the plan is for: a commit range, or the paths given with ``--changed`` at head."""
    if plan.base_reason == GIVEN_PATHS:  # no base: "(empty tree)..head" would mislead
        return f"the paths given with --changed, at {plan.head[:12]}: {len(plan.changes)} path(s)"
    base = plan.base[:12] if plan.base else "(empty tree)"
    return f"{base}..{plan.head[:12]} ({plan.base_reason}), {len(plan.changes)} changed path(s)"


def render_text(plan: Plan) -> str:
    lines = [f"Plan for {describe_range(plan)}"]
    if not plan.actions:
        lines.append("Nothing to do.")
    for index, action in enumerate(plan.actions, start=1):
        needs = f"  (needs {', '.join(action.needs)})" if action.needs else ""
        lines.append(f"{index}. {action.id}{needs}")
        lines.extend(f"     - {text}" for text in summarize_reasons(action))
    lines.extend(describe_existing(plan))
    if plan.skipped:
        lines.append(f"Skipped: {len(plan.skipped)} path(s) that change nothing")
        lines.extend(f"     - {describe_skipped(s)}" for s in plan.skipped[:SHOWN_REASONS])
        if len(plan.skipped) > SHOWN_REASONS:
            lines.append(f"     ... and {len(plan.skipped) - SHOWN_REASONS} more")
    if plan.unmatched:
        lines.append(f"Unmatched: {len(plan.unmatched)} path(s) matched no rule")
        lines.extend(f"     - {p}" for p in plan.unmatched[:SHOWN_REASONS])
    lines.extend(f"Warning: {w}" for w in plan.warnings)
    # one line each, whatever a path holds (a newline or an escape sequence in a file name)
    return "\n".join(map(one_line, lines)) + "\n"


def print_table(plan: Plan, console: Any) -> None:
    """A rich table for terminals; ``console`` is a ``rich.console.Console``."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"Plan for {describe_range(plan)}"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("action", style="bold")
    table.add_column("needs")
    table.add_column("because")
    for index, action in enumerate(plan.actions, start=1):
        table.add_row(
            str(index),
            action.id,
            "\n".join(action.needs),
            escape("\n".join(map(one_line, summarize_reasons(action)))),
            end_section=True,
        )
    if plan.actions:
        console.print(table)
    else:
        console.print(
            f"{escape(f'Plan for {describe_range(plan)}')}\n[green]Nothing to do.[/green]"
        )
    for line in describe_existing(plan):
        console.print(f"[dim]{escape(one_line(line))}[/dim]")
    if plan.skipped:
        console.print(f"[dim]Skipped {len(plan.skipped)} path(s) that change nothing.[/dim]")
    if plan.unmatched:
        console.print(f"[yellow]{len(plan.unmatched)} path(s) matched no rule.[/yellow]")
    for warning in plan.warnings:
        console.print(
            f"[yellow]Warning:[/yellow] {escape(one_line(warning))}", markup=True, highlight=False
        )


# -- markdown ------------------------------------------------------------------------------


def _md(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("`", "\\`")
        .replace("<", "&lt;")
        .replace("\n", "\\n")
    )


def _code(text: str) -> str:
    """``text`` as a markdown code span (outside tables): no escapes work inside one."""
    text = text.replace("\n", "\\n")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_mermaid(plan: Plan) -> str:
    # node ids by position: component names may differ only in '.', '_' or '-'
    node = {action.id: f"a{index}" for index, action in enumerate(plan.actions)}
    lines = ["graph LR"]
    for action in plan.actions:
        lines.append(f'  {node[action.id]}["{action.id}"]')
    for action in plan.actions:
        for dependency in action.needs:
            lines.append(f"  {node[dependency]} --> {node[action.id]}")
    return "\n".join(lines)


def render_markdown(plan: Plan) -> str:
    out = ["### Build plan", "", _code(describe_range(plan)), ""]
    if not plan.actions:
        out.append("**Nothing to do**: no changed path needs a build or a run.")
    else:
        out += ["| # | action | needs | because |", "|---|---|---|---|"]
        for index, action in enumerate(plan.actions, start=1):
            because = "<br>".join(_md(r) for r in summarize_reasons(action))
            out.append(f"| {index} | `{action.id}` | {', '.join(action.needs)} | {because} |")
        out += ["", "```mermaid", render_mermaid(plan), "```"]
    if plan.existing:
        out += ["", f"<details><summary>{len(plan.existing)} action(s) already done</summary>", ""]
        out += [f"- `{e.id}`: {_md(e.note)} ({_code(e.artifact)})" for e in plan.existing]
        out += ["", "</details>"]
    if plan.skipped:
        out += ["", f"<details><summary>{len(plan.skipped)} skipped path(s)</summary>", ""]
        out += [
            f"- {_code(s.path)} (rule {_md(s.rule)}{': ' + _md(s.note) if s.note else ''})"
            for s in plan.skipped[:50]
        ]
        out += ["", "</details>"]
    if plan.unmatched:
        out += ["", f"<details><summary>{len(plan.unmatched)} unmatched path(s)</summary>", ""]
        out += [f"- {_code(p)}" for p in plan.unmatched[:50]]
        out += ["", "</details>"]
    if plan.warnings:
        out += [""] + [f"> :warning: {_md(w)}" for w in plan.warnings]
    return "\n".join(out) + "\n"


# -- GitHub Actions ------------------------------------------------------------------------


def github_outputs(plan: Plan) -> dict[str, str]:
    """The step outputs: ``actions`` (JSON), one boolean per action kind, ``has_work``."""
    kinds = {a.kind for a in plan.actions}
    outputs = {"actions": json.dumps([a.id for a in plan.actions])}
    for kind in ACTION_KINDS:
        outputs[kind] = "true" if kind in kinds else "false"
    outputs["images"] = json.dumps([a.target for a in plan.actions if a.kind == "build_image"])
    outputs["has_work"] = "true" if plan.actions else "false"
    outputs["base"] = plan.base or ""
    outputs["head"] = plan.head
    return outputs


def write_github(plan: Plan, output: IO[str] | None, summary: IO[str] | None) -> None:
    """Append outputs to ``$GITHUB_OUTPUT`` and the markdown plan to ``$GITHUB_STEP_SUMMARY``."""
    if output is not None:
        for key, value in github_outputs(plan).items():
            output.write(f"{key}={value}\n")
    if summary is not None:
        summary.write(render_markdown(plan))


# -- explain -------------------------------------------------------------------------------


def render_explanations(
    explained: Sequence[tuple[str, Sequence[RuleExplanation], Sequence[str], str]],
) -> str:
    """Each entry: path, the rules that touched it, the actions it causes, its outcome."""
    lines: list[str] = []
    for path, rules, actions, outcome in explained:
        lines.append(f"{path}")
        if not rules:
            lines.append("  matches no rule")
        for rule in rules:
            verdict = "included" if rule.included else "excluded"
            lines.append(f"  rule {rule.rule}: {verdict} by {rule.deciding!r}")
            for v in rule.verdicts:
                if v.matched:
                    mark = "negation, matches" if v.negation else "matches"
                    through = f" the directory {v.through!r}" if v.through else ""
                    lines.append(f"    {v.pattern!r}: {mark}{through}")
        lines.append(f"  => {outcome}" + (f": {', '.join(actions)}" if actions else ""))
    return "\n".join(map(one_line, lines)) + "\n"
