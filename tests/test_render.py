"""Renderers with literal plans: JSON schema, text, rich table, markdown, GitHub outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.commands.io import CommandIO
from orchestrator.commands.plan import show
from orchestrator.errors import InputError
from orchestrator.model import Action, ChangedPath, Existing, Plan, Reason, Skipped
from orchestrator.output import Redactor
from orchestrator.render import (
    github_outputs,
    plan_to_json,
    print_table,
    render_json,
    render_markdown,
    render_mermaid,
    render_text,
    write_github,
)

BASE, HEAD = "a" * 40, "b" * 40

PLAN = Plan(
    base=BASE,
    head=HEAD,
    base_reason="explicit",
    changes=(
        ChangedPath("M", "comp/t/main.py"),
        ChangedPath("R", "src/new.py", "src/old.py"),
        ChangedPath("M", "README.md"),
        ChangedPath("A", "Makefile"),
    ),
    actions=(
        Action("build_image:t", "build_image", "t", (),
               (Reason("comp/t/main.py", "images", "comp/"),)),
        Action("upload_source", "upload_source", None, (),
               (Reason("src/new.py", "source", "src/"), Reason("src/old.py", "source", "src/"))),
        Action("compile_pipeline", "compile_pipeline", None, ("build_image:t",),
               (Reason(implied_by="build_image:t"),)),
        Action("publish", "publish", None, ("upload_source", "compile_pipeline"),
               (Reason(implied_by="upload_source"), Reason(implied_by="compile_pipeline"),
                Reason("Makefile", "[unmatched]", None, None, "matches no rule"))),
    ),
    skipped=(Skipped("README.md", "docs"),),
    unmatched=("Makefile",),
    warnings=("component 'x': its context 'comp/x' does not exist at head",),
    existing=(Existing("build_image:u", "r/u@sha256:" + "0" * 64, "the image is in the registry"),),
)  # fmt: skip

EMPTY = Plan(base=None, head=HEAD, base_reason="root commit", changes=(), actions=())


# -- JSON --------------------------------------------------------------------------------------


def test_json_plan_has_exactly_the_documented_shape() -> None:
    assert plan_to_json(PLAN) == {
        "schema": 1,
        "base": BASE,
        "head": HEAD,
        "base_reason": "explicit",
        "changes": [
            {"status": "M", "path": "comp/t/main.py", "old_path": None},
            {"status": "R", "path": "src/new.py", "old_path": "src/old.py"},
            {"status": "M", "path": "README.md", "old_path": None},
            {"status": "A", "path": "Makefile", "old_path": None},
        ],
        "actions": [
            {"id": "build_image:t", "kind": "build_image", "target": "t", "needs": [],
             "reasons": [{"path": "comp/t/main.py", "rule": "images", "pattern": "comp/",
                          "count": 1}]},
            {"id": "upload_source", "kind": "upload_source", "target": None, "needs": [],
             "reasons": [{"path": "src/new.py", "rule": "source", "pattern": "src/",
                          "count": 2}]},
            {"id": "compile_pipeline", "kind": "compile_pipeline", "target": None,
             "needs": ["build_image:t"],
             "reasons": [{"path": None, "rule": None, "pattern": None,
                          "implied_by": "build_image:t", "count": 1}]},
            {"id": "publish", "kind": "publish", "target": None,
             "needs": ["upload_source", "compile_pipeline"],
             "reasons": [
                 {"path": None, "rule": None, "pattern": None, "implied_by": "upload_source",
                  "count": 1},
                 {"path": None, "rule": None, "pattern": None, "implied_by": "compile_pipeline",
                  "count": 1},
                 {"path": "Makefile", "rule": "[unmatched]", "pattern": None,
                  "note": "matches no rule", "count": 1},
             ]},
        ],
        "skipped": [{"path": "README.md", "rule": "docs", "count": 1}],
        "unmatched": ["Makefile"],
        "warnings": ["component 'x': its context 'comp/x' does not exist at head"],
        "existing": [{"id": "build_image:u", "artifact": "r/u@sha256:" + "0" * 64,
                      "note": "the image is in the registry"}],
    }  # fmt: skip


def test_json_summarizes_reasons_and_skips_per_rule_and_pattern_unless_all_paths() -> None:
    reasons = (
        Reason("src/a.py", "source", "src/"),
        Reason("lib/x.py", "source", "lib/"),
        Reason("src/b.py", "source", "src/"),
        Reason("src/c.py", "other", "src/"),
        Reason("src/d.py", "source", "src/"),
    )
    skipped = (Skipped("a.md", "docs"), Skipped("c/n.txt", "images", "not sent"),
               Skipped("b.md", "docs"))  # fmt: skip
    plan = Plan(BASE, HEAD, "explicit", (), (Action("upload_source", "upload_source", None, (),
                reasons),), skipped)  # fmt: skip
    summary = plan_to_json(plan)
    assert summary["actions"][0]["reasons"] == [
        {"path": "src/a.py", "rule": "source", "pattern": "src/", "count": 3},
        {"path": "lib/x.py", "rule": "source", "pattern": "lib/", "count": 1},
        {"path": "src/c.py", "rule": "other", "pattern": "src/", "count": 1},
    ]
    assert summary["skipped"] == [
        {"path": "a.md", "rule": "docs", "count": 2},
        {"path": "c/n.txt", "rule": "images", "note": "not sent", "count": 1},
    ]
    full = plan_to_json(plan, all_paths=True)
    assert [r["path"] for r in full["actions"][0]["reasons"]] == [r.path for r in reasons]
    assert {r["count"] for r in full["actions"][0]["reasons"]} == {1}
    assert [s["path"] for s in full["skipped"]] == ["a.md", "c/n.txt", "b.md"]
    # every path a reason stands for is counted once, in either form
    assert sum(r["count"] for r in summary["actions"][0]["reasons"]) == len(reasons)
    assert json.loads(render_json(plan, all_paths=True)) == full


def test_json_is_valid_utf8_for_a_path_that_is_not() -> None:
    """A file name's bytes that are not UTF-8 (git gives bytes; they are decoded with
    surrogateescape) come out as the characters backslash, x and two hex digits."""
    raw = b"data/caf\xe9-\xff.csv".decode("utf-8", "surrogateescape")
    plan = Plan(BASE, HEAD, "explicit", (ChangedPath("M", raw),), (), (Skipped(raw, "docs"),),
                unmatched=(raw,))  # fmt: skip
    text = render_json(plan)
    data = json.loads(text.encode("utf-8").decode("utf-8", "strict"))
    assert data["changes"][0]["path"] == "data/caf\\xe9-\\xff.csv"
    assert data["unmatched"] == ["data/caf\\xe9-\\xff.csv"]
    assert "\\udc" not in text


@pytest.mark.parametrize("plan", [PLAN, EMPTY], ids=["plan", "empty"])
def test_json_round_trips(plan: Plan) -> None:
    text = render_json(plan)
    assert text.endswith("\n")
    assert json.loads(text) == plan_to_json(plan)


def test_json_keeps_odd_paths_verbatim() -> None:
    odd = 'dir/new\nline "q" $HOME caf\u00e9|`x`.py'
    plan = Plan(BASE, HEAD, "explicit", (ChangedPath("M", odd),), (), (Skipped(odd, "docs"),))
    text = render_json(plan)
    assert "caf\u00e9" in text  # not \u-escaped
    assert json.loads(text)["changes"][0]["path"] == odd
    assert json.loads(text)["skipped"][0]["path"] == odd


def test_json_of_an_empty_plan() -> None:
    data = plan_to_json(EMPTY)
    assert data["base"] is None
    assert (data["actions"], data["changes"], data["skipped"]) == ([], [], [])


# -- text and the rich table -------------------------------------------------------------------


def test_text() -> None:
    assert render_text(PLAN) == (
        f"Plan for {'a' * 12}..{'b' * 12} (explicit), 4 changed path(s)\n"
        "1. build_image:t\n"
        "     - comp/t/main.py (rule images: comp/)\n"
        "2. upload_source\n"
        "     - src/new.py (rule source: src/)\n"
        "     - src/old.py (rule source: src/)\n"
        "3. compile_pipeline  (needs build_image:t)\n"
        "     - implied by build_image:t\n"
        "4. publish  (needs upload_source, compile_pipeline)\n"
        "     - implied by upload_source\n"
        "     - implied by compile_pipeline\n"
        "     - Makefile (matches no rule)\n"
        "Already there: 1 action(s) not needed\n"
        "     - build_image:u: the image is in the registry (r/u@sha256:" + "0" * 64 + ")\n"
        "Skipped: 1 path(s) that change nothing\n"
        "     - README.md (rule docs)\n"
        "Unmatched: 1 path(s) matched no rule\n"
        "     - Makefile\n"
        "Warning: component 'x': its context 'comp/x' does not exist at head\n"
    )


def test_text_of_an_empty_plan() -> None:
    assert render_text(EMPTY) == (
        f"Plan for (empty tree)..{'b' * 12} (root commit), 0 changed path(s)\nNothing to do.\n"
    )


GIVEN = Plan(
    base=None,
    head=HEAD,
    base_reason="given-paths",
    changes=(ChangedPath("M", "pipeline/params.toml"),),
    actions=(
        Action("publish", "publish", None, (),
               (Reason("pipeline/params.toml", "hyper-parameters", "pipeline/params.toml"),)),
    ),
)  # fmt: skip


def test_a_plan_of_paths_given_with_changed_says_so_not_empty_tree() -> None:
    header = f"Plan for the paths given with --changed, at {'b' * 12}: 1 path(s)"
    assert render_text(GIVEN).splitlines()[0] == header
    assert header in _table(GIVEN)
    assert f"`the paths given with --changed, at {'b' * 12}: 1 path(s)`" in render_markdown(GIVEN)
    for text in (render_text(GIVEN), _table(GIVEN), render_markdown(GIVEN)):
        assert "empty tree" not in text and "changed path(s)" not in text
    # the JSON plan is unchanged: no base, and the reason that says why
    data = plan_to_json(GIVEN)
    assert (data["base"], data["base_reason"]) == (None, "given-paths")


def test_text_shows_five_reasons_and_counts_the_rest() -> None:
    reasons = tuple(Reason(f"src/{i}.py", "source", "src/") for i in range(8))
    plan = Plan(BASE, HEAD, "x", (), (Action("upload_source", "upload_source", None, (), reasons),))
    text = render_text(plan)
    assert "src/4.py" in text and "src/5.py" not in text
    assert "     - ... and 3 more\n" in text


def _table(plan: Plan) -> str:
    out = io.StringIO()
    print_table(plan, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_rich_table_lists_actions_needs_and_reasons() -> None:
    text = _table(PLAN)
    for expected in ("build_image:t", "compile_pipeline", "comp/t/main.py (rule images: comp/)",
                     "implied by upload_source", "Skipped 1 path(s)", "1 path(s) matched no rule",
                     "Warning: component 'x'"):  # fmt: skip
        assert expected in text


def test_rich_table_prints_paths_that_look_like_markup_verbatim() -> None:
    odd = "docs/[red]x[/red]/a[/b].py"
    plan = Plan(
        BASE, HEAD, "explicit", (ChangedPath("M", odd),),
        (Action("upload_source", "upload_source", None, (), (Reason(odd, "r", "docs/"),)),),
        warnings=(f"{odd}: [bold]no[/bold] context",),
    )  # fmt: skip
    text = _table(plan)
    assert f"{odd} (rule r: docs/)" in text
    assert f"Warning: {odd}: [bold]no[/bold] context" in text


def test_rich_table_of_an_empty_plan() -> None:
    assert "Nothing to do." in _table(EMPTY)


# -- markdown ----------------------------------------------------------------------------------


def test_markdown_table_and_mermaid_graph() -> None:
    assert render_markdown(PLAN) == "\n".join([
        "### Build plan",
        "",
        f"`{'a' * 12}..{'b' * 12} (explicit), 4 changed path(s)`",
        "",
        "| # | action | needs | because |",
        "|---|---|---|---|",
        "| 1 | `build_image:t` |  | comp/t/main.py (rule images: comp/) |",
        "| 2 | `upload_source` |  | src/new.py (rule source: src/)<br>"
        "src/old.py (rule source: src/) |",
        "| 3 | `compile_pipeline` | build_image:t | implied by build_image:t |",
        "| 4 | `publish` | upload_source, compile_pipeline | implied by upload_source<br>"
        "implied by compile_pipeline<br>Makefile (matches no rule) |",
        "",
        "```mermaid",
        "graph LR",
        '  a0["build_image:t"]',
        '  a1["upload_source"]',
        '  a2["compile_pipeline"]',
        '  a3["publish"]',
        "  a0 --> a2",
        "  a1 --> a3",
        "  a2 --> a3",
        "```",
        "",
        "<details><summary>1 action(s) already done</summary>",
        "",
        "- `build_image:u`: the image is in the registry (`r/u@sha256:" + "0" * 64 + "`)",
        "",
        "</details>",
        "",
        "<details><summary>1 skipped path(s)</summary>",
        "",
        "- `README.md` (rule docs)",
        "",
        "</details>",
        "",
        "<details><summary>1 unmatched path(s)</summary>",
        "",
        "- `Makefile`",
        "",
        "</details>",
        "",
        "> :warning: component 'x': its context 'comp/x' does not exist at head",
        "",
    ])  # fmt: skip


def test_markdown_of_an_empty_plan_says_nothing_to_do_and_has_no_graph() -> None:
    text = render_markdown(EMPTY)
    assert "**Nothing to do**" in text
    assert "mermaid" not in text and "| # |" not in text


def test_markdown_escapes_pipes_backticks_and_html_in_table_cells() -> None:
    odd = "src/a|b`c`<d>\\e.py"
    plan = Plan(
        BASE, HEAD, "explicit", (ChangedPath("M", odd),),
        (Action("upload_source", "upload_source", None, (), (Reason(odd, "r", "src/"),)),),
    )  # fmt: skip
    row = next(line for line in render_markdown(plan).splitlines() if "`upload_source`" in line)
    assert row == "| 1 | `upload_source` |  | src/a\\|b\\`c\\`&lt;d>\\\\e.py (rule r: src/) |"
    # exactly the four column separators remain unescaped
    assert row.replace("\\|", "").count("|") == 5


@pytest.mark.parametrize(
    ("path", "item"),
    [
        ("docs/plain.md", "- `docs/plain.md` (rule docs)"),
        ("docs/a|b.md", "- `docs/a|b.md` (rule docs)"),
        ("docs/back\\slash.md", "- `docs/back\\slash.md` (rule docs)"),
        ("docs/tick`s.md", "- ``docs/tick`s.md`` (rule docs)"),
        ("docs/two``ticks.md", "- ```docs/two``ticks.md``` (rule docs)"),
        ("`docs/edge`", "- `` `docs/edge` `` (rule docs)"),
        ("docs/new\nline.md", "- `docs/new\\nline.md` (rule docs)"),
    ],
)
def test_markdown_code_spans_hold_any_path(path: str, item: str) -> None:
    plan = Plan(BASE, HEAD, "explicit", (), (), (Skipped(path, "docs"),))
    assert item in render_markdown(plan).splitlines()


def test_mermaid_nodes_of_components_differing_only_in_punctuation_stay_apart() -> None:
    plan = Plan(
        BASE, HEAD, "explicit", (),
        (Action("build_image:a.b", "build_image", "a.b", (), ()),
         Action("build_image:a-b", "build_image", "a-b", (), ()),
         Action("compile_pipeline", "compile_pipeline", None,
                ("build_image:a.b", "build_image:a-b"), ())),
    )  # fmt: skip
    assert render_mermaid(plan).splitlines() == [
        "graph LR",
        '  a0["build_image:a.b"]',
        '  a1["build_image:a-b"]',
        '  a2["compile_pipeline"]',
        "  a0 --> a2",
        "  a1 --> a2",
    ]


# -- GitHub outputs ----------------------------------------------------------------------------


def test_github_outputs() -> None:
    assert github_outputs(PLAN) == {
        "actions": '["build_image:t", "upload_source", "compile_pipeline", "publish"]',
        "test": "false",
        "build_image": "true",
        "upload_source": "true",
        "compile_pipeline": "true",
        "deploy_function": "false",
        "publish": "true",
        "images": '["t"]',
        "has_work": "true",
        "base": BASE,
        "head": HEAD,
    }


def test_github_outputs_of_an_empty_plan() -> None:
    outputs = github_outputs(EMPTY)
    assert outputs["actions"] == "[]"
    assert outputs["has_work"] == "false"
    assert outputs["base"] == ""
    assert {k for k, v in outputs.items() if v == "true"} == set()


def test_write_github_appends_outputs_and_summary() -> None:
    output, summary = io.StringIO("x=1\n"), io.StringIO()
    output.seek(0, io.SEEK_END)
    write_github(PLAN, output, summary)
    lines = output.getvalue().splitlines()
    assert lines[0] == "x=1"
    assert dict(line.split("=", 1) for line in lines[1:]) == github_outputs(PLAN)
    assert summary.getvalue() == render_markdown(PLAN)


def test_format_github_writes_the_files_named_in_the_environment(tmp_path: Path) -> None:
    output, summary = tmp_path / "output", tmp_path / "summary"
    summary.write_text("earlier step\n", encoding="utf-8")
    stdout = io.StringIO()
    env = {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
    show(PLAN, "github", CommandIO(stdout, io.StringIO(), env, Redactor()))
    written = dict(line.split("=", 1) for line in output.read_text("utf-8").splitlines())
    assert json.loads(written["actions"]) == [a.id for a in PLAN.actions]
    assert written["has_work"] == "true"
    assert summary.read_text("utf-8") == "earlier step\n" + render_markdown(PLAN)
    assert stdout.getvalue() == render_text(PLAN)


def test_format_github_without_the_environment_is_bad_input() -> None:
    with pytest.raises(InputError, match="needs GITHUB_OUTPUT or GITHUB_STEP_SUMMARY"):
        show(PLAN, "github", CommandIO(io.StringIO(), io.StringIO(), {}, Redactor()))


def test_format_github_with_an_unwritable_file_is_bad_input(tmp_path: Path) -> None:
    env = {"GITHUB_OUTPUT": str(tmp_path / "missing-dir" / "output")}
    with pytest.raises(InputError, match="cannot write the GitHub outputs"):
        show(PLAN, "github", CommandIO(io.StringIO(), io.StringIO(), env, Redactor()))


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "rich"),
    [
        (_Tty(), {}, True),
        (_Tty(), {"NO_COLOR": ""}, False),
        (_Tty(), {"NO_COLOR": "1"}, False),
        (io.StringIO(), {}, False),
    ],
)
def test_table_format_is_rich_only_on_a_terminal_without_no_color(
    stream: io.StringIO, env: dict[str, str], rich: bool
) -> None:
    show(PLAN, "table", CommandIO(stream, io.StringIO(), env, Redactor()))
    text = stream.getvalue()
    assert (text == render_text(PLAN)) is not rich
    assert ("━" in text or "─" in text or "┃" in text) is rich
