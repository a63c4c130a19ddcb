"""Planning with literals: every implication of the plan graph, reasons, warnings, unmatched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import parse_rules
from orchestrator.errors import EXIT_BAD_INPUT
from orchestrator.model import ChangedPath, ChangeSet, Plan, Reason, Rules, Skipped
from orchestrator.planning import (
    UNMATCHED_RULE,
    CycleError,
    UnmatchedPathsError,
    plan_changes,
    stable_topological_sort,
)

# One rules file exercising every `do` value. Components: a, b (nested contexts: b inside a's
# sibling), gone (context missing at head in most cases).
RULES_TOML = """\
version = 1
[unmatched]
do = "{unmatched}"
{test}
[components.a]
context = "comp/a"
[components.b]
context = "comp/b"
[components.gone]
context = "comp/gone"

[[rule]]
name = "docs"
paths = ["*.md", "docs/"]
do = "skip"

[[rule]]
name = "images"
paths = ["comp/", "!comp/**/*.md"]
do = "build_image"

[[rule]]
name = "image-a"
paths = ["libs/a/"]
do = "build_image:a"

[[rule]]
name = "image-gone"
paths = ["libs/gone/"]
do = "build_image:gone"

[[rule]]
name = "source"
paths = ["src/"]
do = "upload_source"

[[rule]]
name = "pipeline"
paths = ["pipeline/", "!pipeline/params.toml"]
do = "compile_pipeline"

[[rule]]
name = "params"
paths = ["/pipeline/params.toml"]
do = "retrain"

[[rule]]
name = "function"
paths = ["function/"]
do = "deploy_function"

[[rule]]
name = "everything"
paths = ["/rules.toml"]
do = "all"

[[rule]]
name = "shared"
paths = ["shared/"]
do = ["upload_source", "build_image:b"]

[[rule]]
name = "src-docs"
paths = ["src/*.txt"]
do = "skip"
"""
TEST_TABLE = '[test]\ncommand = ["pytest"]\n'
TEST_RULE = '\n[[rule]]\nname = "tests"\npaths = ["tests/"]\ndo = "test"\n'
EXISTING = frozenset({"comp/a", "comp/b"})


def make_rules(*, unmatched: str = "all", test: bool = False, test_rule: bool = False) -> Rules:
    text = RULES_TOML.format(unmatched=unmatched, test=TEST_TABLE if test else "")
    return parse_rules(text + (TEST_RULE if test_rule else ""))


def changes(*paths: str | ChangedPath) -> ChangeSet:
    records = tuple(p if isinstance(p, ChangedPath) else ChangedPath("M", p) for p in paths)
    return ChangeSet(base="b" * 40, head="h" * 40, base_reason="explicit", changes=records)


def plan_of(
    *paths: str | ChangedPath, rules: Rules | None = None, existing: frozenset[str] = EXISTING
) -> Plan:
    return plan_changes(changes(*paths), rules or make_rules(), existing)


def graph(plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    return [(a.id, a.needs) for a in plan.actions]


# -- the implications of section 4, without [test] ---------------------------------------------

IMPLICATIONS: list[tuple[str, tuple[str, ...], list[tuple[str, tuple[str, ...]]]]] = [
    ("build_image implies compile_pipeline implies publish", ("comp/a/main.py",), [
        ("build_image:a", ()),
        ("compile_pipeline", ("build_image:a",)),
        ("publish", ("compile_pipeline",)),
    ]),
    ("two images, one compile", ("comp/b/x.py", "comp/a/y.py"), [
        ("build_image:a", ()),
        ("build_image:b", ()),
        ("compile_pipeline", ("build_image:a", "build_image:b")),
        ("publish", ("compile_pipeline",)),
    ]),
    ("explicit build_image target", ("libs/a/util.py",), [
        ("build_image:a", ()),
        ("compile_pipeline", ("build_image:a",)),
        ("publish", ("compile_pipeline",)),
    ]),
    ("upload_source implies publish", ("src/train.py",), [
        ("upload_source", ()),
        ("publish", ("upload_source",)),
    ]),
    ("compile_pipeline implies publish", ("pipeline/pipeline.py",), [
        ("compile_pipeline", ()),
        ("publish", ("compile_pipeline",)),
    ]),
    ("retrain is publish alone", ("pipeline/params.toml",), [("publish", ())]),
    ("deploy_function alone implies no publish", ("function/main.py",), [
        ("deploy_function", ()),
    ]),
    ("publish needs deploy_function when both", ("function/main.py", "pipeline/params.toml"), [
        ("deploy_function", ()),
        ("publish", ("deploy_function",)),
    ]),
    ("union: source, pipeline and function", ("function/m.py", "src/a.py", "pipeline/p.py"), [
        ("upload_source", ()),
        ("compile_pipeline", ()),
        ("deploy_function", ()),
        ("publish", ("upload_source", "compile_pipeline", "deploy_function")),
    ]),
    ("one rule with two actions", ("shared/x.py",), [
        ("build_image:b", ()),
        ("upload_source", ()),
        ("compile_pipeline", ("build_image:b",)),
        ("publish", ("upload_source", "compile_pipeline")),
    ]),
    ("all: every existing component, every singleton some rule names, publish", ("rules.toml",), [
        ("build_image:a", ()),
        ("build_image:b", ()),
        ("upload_source", ()),
        ("compile_pipeline", ("build_image:a", "build_image:b")),
        ("deploy_function", ()),
        ("publish", ("upload_source", "compile_pipeline", "deploy_function")),
    ]),
    ("unmatched path with [unmatched] all is all", ("Makefile",), [
        ("build_image:a", ()),
        ("build_image:b", ()),
        ("upload_source", ()),
        ("compile_pipeline", ("build_image:a", "build_image:b")),
        ("deploy_function", ()),
        ("publish", ("upload_source", "compile_pipeline", "deploy_function")),
    ]),
    ("skip only: nothing", ("README.md", "docs/x.png", "notes/api.md"), []),
    ("negated inside an acting rule, skipped by another", ("comp/a/README.md",), []),
    ("skip and acting rule on one path: acting wins", ("src/README.md", "src/notes.txt"), [
        ("upload_source", ()),
        ("publish", ("upload_source",)),
    ]),
    ("empty change set: empty plan", (), []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("paths", "expected"), [c[1:] for c in IMPLICATIONS], ids=[c[0] for c in IMPLICATIONS]
)
def test_implications(paths: tuple[str, ...], expected: list[tuple[str, tuple[str, ...]]]) -> None:
    assert graph(plan_of(*paths)) == expected


# -- test: planned by a rule, or implied by [test] when anything else is planned -------------

TESTS: list[tuple[str, bool, bool, tuple[str, ...], list[tuple[str, tuple[str, ...]]]]] = [
    ("[test] implied when anything is planned", True, False, ("src/a.py",), [
        ("test", ()),
        ("upload_source", ("test",)),
        ("publish", ("test", "upload_source")),
    ]),
    ("[test] not implied by an empty plan", True, False, ("README.md",), []),
    ("[test] not implied by an empty change set", True, False, (), []),
    ("[test] runs before images and deploy", True, False, ("comp/a/x", "function/f.py"), [
        ("test", ()),
        ("build_image:a", ("test",)),
        ("compile_pipeline", ("test", "build_image:a")),
        ("deploy_function", ("test",)),
        ("publish", ("test", "compile_pipeline", "deploy_function")),
    ]),
    ("[test] before retrain", True, False, ("pipeline/params.toml",), [
        ("test", ()),
        ("publish", ("test",)),
    ]),
    ("a test rule alone plans test alone", True, True, ("tests/test_x.py",), [("test", ())]),
    ("without [test] no test is implied", False, False, ("src/a.py",), [
        ("upload_source", ()),
        ("publish", ("upload_source",)),
    ]),
    ("all includes test when a rule names it", True, True, ("rules.toml",), [
        ("test", ()),
        ("build_image:a", ("test",)),
        ("build_image:b", ("test",)),
        ("upload_source", ("test",)),
        ("compile_pipeline", ("test", "build_image:a", "build_image:b")),
        ("deploy_function", ("test",)),
        ("publish", ("test", "upload_source", "compile_pipeline", "deploy_function")),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("test", "test_rule", "paths", "expected"), [c[1:] for c in TESTS], ids=[c[0] for c in TESTS]
)
def test_test_action(
    test: bool,
    test_rule: bool,
    paths: tuple[str, ...],
    expected: list[tuple[str, tuple[str, ...]]],
) -> None:
    rules = make_rules(test=test, test_rule=test_rule)
    assert graph(plan_of(*paths, rules=rules)) == expected


def test_a_test_rule_without_other_actions_gets_its_reason_and_no_implied_reason() -> None:
    plan = plan_of("tests/t.py", rules=make_rules(test=True, test_rule=True))
    assert plan.actions[0].reasons == (Reason("tests/t.py", "tests", "tests/"),)


def test_implied_test_says_it_runs_before_any_build() -> None:
    plan = plan_of("src/a.py", rules=make_rules(test=True))
    test = plan.action("test")
    assert test is not None
    assert test.reasons == (
        Reason(rule="[test]", note="[test] runs before any build: upload_source, publish"),
    )


# -- every action keeps its reasons ------------------------------------------------------------


def test_reasons_carry_path_rule_pattern_and_implied_by() -> None:
    plan = plan_of("comp/a/main.py", "libs/a/util.py", "comp/a/Dockerfile")
    assert [(a.id, a.reasons) for a in plan.actions] == [
        ("build_image:a", (
            Reason("comp/a/main.py", "images", "comp/"),
            Reason("libs/a/util.py", "image-a", "libs/a/"),
            Reason("comp/a/Dockerfile", "images", "comp/"),
        )),
        ("compile_pipeline", (Reason(implied_by="build_image:a"),)),
        ("publish", (Reason(implied_by="compile_pipeline"),)),
    ]  # fmt: skip


def test_an_action_planned_directly_and_implied_keeps_both_reasons() -> None:
    plan = plan_of("pipeline/p.py", "comp/b/x")
    compile_ = plan.action("compile_pipeline")
    assert compile_ is not None
    assert compile_.reasons == (
        Reason("pipeline/p.py", "pipeline", "pipeline/"),
        Reason(implied_by="build_image:b"),
    )


def test_all_reasons_reach_every_action_it_expands_to() -> None:
    plan = plan_of("rules.toml")
    reason = Reason("rules.toml", "everything", "/rules.toml")
    for action_id in ("build_image:a", "build_image:b", "upload_source", "deploy_function"):
        action = plan.action(action_id)
        assert action is not None and action.reasons == (reason,), action_id
    publish = plan.action("publish")
    assert publish is not None and publish.reasons[0] == reason


def test_unmatched_all_reason_names_the_policy() -> None:
    plan = plan_of("Makefile")
    assert plan.unmatched == ("Makefile",)
    source = plan.action("upload_source")
    assert source is not None
    assert source.reasons == (
        Reason("Makefile", UNMATCHED_RULE, None, None, 'matches no rule; [unmatched] do = "all"'),
    )


def test_renames_count_old_and_new_path() -> None:
    rename = ChangedPath("R", "src/moved.py", "function/old.py")
    plan = plan_of(rename)
    assert graph(plan) == [
        ("upload_source", ()),
        ("deploy_function", ()),
        ("publish", ("upload_source", "deploy_function")),
    ]
    function = plan.action("deploy_function")
    assert function is not None
    assert function.reasons == (Reason("function/old.py", "function", "function/"),)


def test_a_rename_out_of_a_skipped_dir_is_skipped_on_both_sides() -> None:
    plan = plan_of(ChangedPath("R", "docs/new.md", "docs/old.md"))
    assert plan.actions == ()
    assert plan.skipped == (Skipped("docs/new.md", "docs"), Skipped("docs/old.md", "docs"))


def test_deleted_path_still_plans() -> None:
    assert graph(plan_of(ChangedPath("D", "function/gone.py"))) == [("deploy_function", ())]


def test_a_path_changed_twice_counts_once() -> None:
    plan = plan_of(ChangedPath("R", "src/b.py", "src/a.py"), ChangedPath("M", "src/a.py"))
    source = plan.action("upload_source")
    assert source is not None
    assert [r.path for r in source.reasons] == ["src/b.py", "src/a.py"]


# -- skipped and unmatched --------------------------------------------------------------------


def test_skipped_paths_name_their_rule() -> None:
    plan = plan_of("README.md", "docs/a/b.png", "notes/CHANGES.md")
    assert plan.skipped == (
        Skipped("README.md", "docs"),
        Skipped("docs/a/b.png", "docs"),
        Skipped("notes/CHANGES.md", "docs"),
    )
    assert plan.unmatched == ()
    assert not plan.has_work


def test_unmatched_skip_lists_the_paths_and_plans_nothing() -> None:
    plan = plan_of("Makefile", "setup.cfg", rules=make_rules(unmatched="skip"))
    assert plan.actions == ()
    assert plan.unmatched == ("Makefile", "setup.cfg")


def test_unmatched_skip_does_not_hide_other_actions() -> None:
    plan = plan_of("Makefile", "src/a.py", rules=make_rules(unmatched="skip"))
    assert graph(plan) == [("upload_source", ()), ("publish", ("upload_source",))]
    assert plan.unmatched == ("Makefile",)


def test_unmatched_error_raises_naming_the_paths() -> None:
    with pytest.raises(UnmatchedPathsError) as caught:
        plan_of("src/a.py", "Makefile", "odd name.txt", rules=make_rules(unmatched="error"))
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(caught.value) == (
        '2 changed path(s) match no rule in rules.toml and [unmatched] do = "error": '
        "'Makefile', 'odd name.txt'"
    )


def test_unmatched_error_shows_ten_paths_and_counts_the_rest() -> None:
    paths = [f"x{i:02}" for i in range(12)]
    with pytest.raises(UnmatchedPathsError, match=r"12 changed path\(s\).*'x09' and 2 more$"):
        plan_of(*paths, rules=make_rules(unmatched="error"))


def test_unmatched_error_is_not_raised_when_every_path_matches() -> None:
    plan = plan_of("README.md", rules=make_rules(unmatched="error"))
    assert plan.actions == () and plan.unmatched == ()


# -- components: missing contexts and contexts that hold a path -------------------------------


def test_component_with_missing_context_is_not_built_and_warns() -> None:
    plan = plan_of("libs/gone/x.py")
    assert plan.actions == ()
    assert plan.warnings == (
        "component 'gone': its context 'comp/gone' does not exist at head; its image is not built",
    )


def test_component_with_missing_context_is_left_out_of_all() -> None:
    plan = plan_of("rules.toml")
    assert plan.action("build_image:gone") is None
    assert plan.warnings == (
        "component 'gone': its context 'comp/gone' does not exist at head; its image is not built",
    )


def test_all_builds_a_component_once_its_context_exists() -> None:
    plan = plan_of("rules.toml", existing=EXISTING | {"comp/gone"})
    assert [a.id for a in plan.actions if a.kind == "build_image"] == [
        "build_image:a",
        "build_image:b",
        "build_image:gone",
    ]
    assert plan.warnings == ()


def test_deleting_a_components_last_file_builds_nothing_and_warns() -> None:
    plan = plan_of(ChangedPath("D", "comp/gone/Dockerfile"))
    assert plan.actions == ()
    assert plan.warnings == (
        "component 'gone': its context 'comp/gone' does not exist at head; its image is not built",
    )


def test_build_image_for_a_path_in_no_context_warns() -> None:
    plan = plan_of("comp/shared.py")
    assert plan.actions == ()
    assert plan.warnings == (
        "comp/shared.py: rule 'images' says build_image but the path lies in no component's "
        "context; no image is built for it",
    )


def test_a_context_is_a_directory_not_a_prefix() -> None:
    plan = plan_of("comp/ab/x.py")
    assert plan.actions == ()
    assert len(plan.warnings) == 1 and "lies in no component's context" in plan.warnings[0]


NESTED = """\
version = 1
[components.outer]
context = "c"
[components.inner]
context = "c/inner"
[[rule]]
name = "images"
paths = ["c/"]
do = "build_image"
"""


@pytest.mark.parametrize(
    ("path", "images"),
    [
        ("c/x.py", ["build_image:outer"]),
        # the path is in both contexts: both images are built (outer's build context holds it)
        ("c/inner/x.py", ["build_image:inner", "build_image:outer"]),
    ],
)
def test_nested_contexts(path: str, images: list[str]) -> None:
    rules = parse_rules(NESTED)
    plan = plan_changes(changes(path), rules, frozenset({"c", "c/inner"}))
    assert [a.id for a in plan.actions if a.kind == "build_image"] == images


# -- order -------------------------------------------------------------------------------------


def test_actions_are_in_dependency_order_and_needs_name_only_planned_actions() -> None:
    rules = make_rules(test=True, test_rule=True)
    for paths in (
        ("rules.toml",),
        ("function/f.py", "comp/b/x", "src/a", "tests/t.py"),
        ("pipeline/params.toml", "function/f.py"),
        ("comp/a/x",),
    ):
        plan = plan_of(*paths, rules=rules)
        seen: set[str] = set()
        for action in plan.actions:
            assert set(action.needs) <= seen, (paths, action.id)
            seen.add(action.id)
        assert len(seen) == len(plan.actions)


def test_plan_records_the_range() -> None:
    plan = plan_of("src/a.py")
    assert (plan.base, plan.head, plan.base_reason) == ("b" * 40, "h" * 40, "explicit")
    assert plan.changes == (ChangedPath("M", "src/a.py"),)


# -- stable_topological_sort -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "needs", "expected"),
    [
        ([], {}, []),
        (["a", "b", "c"], {}, ["a", "b", "c"]),
        (["c", "b", "a"], {}, ["c", "b", "a"]),
        (["a", "b"], {"a": ["b"]}, ["b", "a"]),
        (["x", "a", "b", "c"], {"c": ["a"], "a": ["b"]}, ["x", "b", "a", "c"]),
        (["d", "c", "b", "a"], {"d": ["a"], "b": ["a"]}, ["a", "d", "c", "b"]),
        (["p", "t", "i"], {"p": ["i", "t"], "i": ["t"]}, ["t", "i", "p"]),
    ],
)
def test_stable_topological_sort(
    nodes: list[str], needs: dict[str, list[str]], expected: list[str]
) -> None:
    assert stable_topological_sort(nodes, needs) == expected


@pytest.mark.parametrize(
    ("nodes", "needs", "message"),
    [
        (["a"], {"a": ["a"]}, "dependency cycle: a -> a"),
        (["a", "b"], {"a": ["b"], "b": ["a"]}, "dependency cycle: a -> b -> a"),
        (["x", "a", "b", "c"], {"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]},
         "dependency cycle: a -> b -> c -> a"),
    ],
)  # fmt: skip
def test_stable_topological_sort_names_the_cycle(
    nodes: list[str], needs: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(CycleError) as caught:
        stable_topological_sort(nodes, needs)
    assert str(caught.value) == message


_SEGMENTS = st.sampled_from(["a", "b", "ab", "a.b", "c"])
_DIRS = st.lists(_SEGMENTS, max_size=3).map("/".join)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    contexts=st.lists(st.tuples(_DIRS, st.sampled_from(["x", "y", "z", "w"])), max_size=6),
    path=st.lists(_SEGMENTS, min_size=1, max_size=5).map("/".join),
)
def test_the_components_holding_a_path_are_every_context_above_it_deepest_first(
    contexts: list[tuple[str, str]], path: str
) -> None:
    """The index by directory answers what a scan of every context would (deepest context
    first, names in reverse order within one), without the scan's cost per component."""
    from orchestrator.contexts import holds
    from orchestrator.model import Component
    from orchestrator.planning import _ComponentIndex

    named = {name: context for context, name in contexts}  # one context per component name
    rules = make_rules()._replace(
        components=tuple(Component(name=n, context=c) for n, c in named.items())
    )
    index = _ComponentIndex(rules, list(named.values()), {})
    scanned = [n for c, n in sorted(((c, n) for n, c in named.items()), reverse=True)
               if holds(c, path)]  # fmt: skip
    assert index._holding(path) == scanned
    assert index._holding(path) == scanned  # cached by directory


def test_what_all_gives_every_action_is_one_reason_per_pattern_with_its_path_count() -> None:
    """An `all` repeats its paths for every action: they are counted, not copied (20,000
    unmatched paths and 1,000 components would otherwise be 20 million reasons)."""
    plan = plan_of("Makefile", "tools/a.sh", "tools/b.sh", "src/app.py", "comp/a/x.py")
    note = 'matches no rule; [unmatched] do = "all"'
    counted = Reason("Makefile", UNMATCHED_RULE, None, None, note, path_count=3)
    for action_id in ("build_image:a", "build_image:b", "upload_source", "deploy_function"):
        action = plan.action(action_id)
        assert action is not None and counted in action.reasons, action_id
        assert [r for r in action.reasons if r.rule == UNMATCHED_RULE] == [counted]
    source = plan.action("upload_source")
    assert source is not None
    assert Reason("src/app.py", "source", "src/") in source.reasons  # its own paths stay listed
    assert plan.unmatched == ("Makefile", "tools/a.sh", "tools/b.sh")  # every path, still


def test_a_path_an_action_has_and_all_gives_it_again_counts_once() -> None:
    rules = parse_rules(
        'version = 1\n[components.a]\ncontext = "a"\n'
        '[[rule]]\nname = "r"\npaths = ["a/"]\ndo = ["all", "build_image"]\n'
    )
    plan = plan_changes(changes("a/1.py", "a/2.py", "a/3.py"), rules, ["a"])
    image = plan.action("build_image:a")
    assert image is not None
    assert image.reasons == (Reason("a/1.py", "r", "a/", path_count=3),)
    from orchestrator.render import plan_to_json

    for all_paths in (False, True):
        actions = plan_to_json(plan, all_paths=all_paths)["actions"]
        [entry] = next(a for a in actions if a["id"] == "build_image:a")["reasons"]
        assert (entry["path"], entry["count"]) == ("a/1.py", 3)
