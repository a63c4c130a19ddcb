"""Build contexts: the root context, nested contexts, and what Docker's ignore file keeps out
of an image, from planning through to the image's content-addressed name."""

from __future__ import annotations

import io

import pytest

from orchestrator.cli import main
from orchestrator.config import parse_rules
from orchestrator.contexts import BuildContext, build_contexts
from orchestrator.errors import ConfigError
from orchestrator.model import ChangedPath, ChangeSet, Plan, Rules
from orchestrator.planning import plan_changes
from orchestrator.workflow import Target, make_plan, name_build, plan_target
from tests.fixtures.gitrepo import GitRepo

RULES = """\
version = 1
[project]
bucket = "b"
registry = "r.example/ct"

[components.app]
context = "."

[components.x]
context = "components/x"

[[rule]]
name = "docs"
paths = ["*.md"]
do = "skip"

[[rule]]
name = "images"
paths = ["*"]
do = "build_image"
"""


def _rules() -> Rules:
    return parse_rules(RULES)


def _contexts(rules: Rules, **ignore_files: str) -> dict[str, BuildContext]:
    files = {path.replace("__", "/"): text.encode() for path, text in ignore_files.items()}
    return build_contexts(rules, {"", "components/x"}, files)


def _plan(rules: Rules, contexts: dict[str, BuildContext], *paths: str) -> Plan:
    changes = ChangeSet(None, "h" * 40, "explicit", tuple(ChangedPath("M", p) for p in paths))
    return plan_changes(changes, rules, {"", "components/x"}, contexts=contexts)


def _images(plan: Plan) -> set[str]:
    return {a.id for a in plan.actions if a.kind == "build_image"}


def test_the_root_context_holds_every_path_and_nested_contexts_build_both() -> None:
    rules = _rules()
    plan = _plan(rules, _contexts(rules), "src/app.py", "components/x/main.py")
    assert _images(plan) == {"build_image:app", "build_image:x"}
    assert _images(_plan(rules, _contexts(rules), "src/app.py")) == {"build_image:app"}


def test_a_path_the_ignore_file_excludes_builds_nothing_and_says_why() -> None:
    rules = _rules()
    contexts = _contexts(rules, **{".dockerignore": "components/\nnotes/\n"})
    plan = _plan(rules, contexts, "components/x/main.py", "notes/todo.txt")
    assert _images(plan) == {"build_image:x"}  # the root image never sees components/
    (skipped,) = plan.skipped
    assert skipped.path == "notes/todo.txt"
    assert skipped.note == "not sent to the image builder: excluded by .dockerignore"


def test_the_dockerfile_and_the_ignore_file_always_count() -> None:
    rules = _rules()
    contexts = _contexts(rules, **{".dockerignore": "*\n"})
    assert _images(_plan(rules, contexts, "Dockerfile")) == {"build_image:app"}
    assert _images(_plan(rules, contexts, ".dockerignore")) == {"build_image:app"}
    assert _images(_plan(rules, contexts, "anything.py")) == set()


def test_a_context_ignore_file_applies_relative_to_its_context() -> None:
    rules = _rules()
    contexts = _contexts(rules, **{"components__x__.dockerignore": "tests/\n"})
    assert _images(_plan(rules, contexts, "components/x/tests/t.py")) == {"build_image:app"}
    assert _images(_plan(rules, contexts, "components/x/main.py")) == {
        "build_image:app",
        "build_image:x",
    }


def test_with_two_ignore_files_a_path_is_left_out_only_when_both_leave_it_out() -> None:
    # BuildKit reads Dockerfile.dockerignore, the classic builder .dockerignore
    rules = _rules()
    contexts = _contexts(rules, **{".dockerignore": "a\nb\n", "Dockerfile.dockerignore": "b\n"})
    assert _images(_plan(rules, contexts, "a")) == {"build_image:app"}
    assert _images(_plan(rules, contexts, "b")) == set()


def test_a_malformed_ignore_file_names_its_file_and_line() -> None:
    rules = _rules()
    with pytest.raises(ConfigError) as raised:
        _contexts(rules, **{"components__x__.dockerignore": "ok\n[z-a]\n"})
    assert str(raised.value).startswith("components/x/.dockerignore:2: pattern '[z-a]'")


# -- through git: the plan and the image's content-addressed name ---------------------------


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit(
        {
            "rules.toml": RULES,
            "Dockerfile": "FROM scratch\nCOPY . /app\n",
            ".dockerignore": "notes/\n",
            "src/app.py": "print(1)\n",
            "notes/todo.txt": "one\n",
            "components/x/Dockerfile": "FROM scratch\n",
        }
    )
    return git_repo


def _tag(repo: GitRepo, component: str, working_tree: bool = False) -> str:
    target = Target(repo=repo.path, rules_path=repo.path / "rules.toml", working_tree=working_tree)
    planned = plan_target(target, {}, None)
    return name_build(planned.tree, planned.rules, planned.plan, planned.ref).image(component)


def test_an_excluded_file_changes_neither_the_plan_nor_the_image_name(repo: GitRepo) -> None:
    before = _tag(repo, "app")
    repo.commit({"notes/todo.txt": "two\n"})
    target = Target(repo=repo.path, rules_path=repo.path / "rules.toml")
    _, plan = make_plan(target, env={})
    assert _images(plan) == set()
    assert plan.skipped[0].note == "not sent to the image builder: excluded by .dockerignore"
    assert _tag(repo, "app") == before
    repo.commit({"src/app.py": "print(2)\n"})
    assert _tag(repo, "app") != before


def test_the_working_tree_names_images_as_the_commit_does(repo: GitRepo) -> None:
    committed = _tag(repo, "app")
    assert _tag(repo, "app", working_tree=True) == committed
    repo.write("notes/draft.txt", "not sent")
    assert _tag(repo, "app", working_tree=True) == committed
    repo.write("src/app.py", "print(3)\n")
    assert _tag(repo, "app", working_tree=True) != committed


def test_validate_and_plan_report_a_malformed_ignore_file(repo: GitRepo) -> None:
    repo.commit({".dockerignore": "notes/\n\\q\n"})
    for command in (["validate"], ["plan"], ["explain", "src/app.py"]):
        out, err = io.StringIO(), io.StringIO()
        code = main([*command, "--repo", str(repo.path)], stdout=out, stderr=err, env={})
        assert code == 2, command
        assert err.getvalue().startswith("orchestrator: error: ")
        assert ".dockerignore:2: pattern '\\\\q'" in err.getvalue(), err.getvalue()
        assert err.getvalue().count("\n") == 1
