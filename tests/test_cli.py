"""The CLI through main(argv, stdout=, stderr=, env=) and a subprocess, on real repositories."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import workflow
from orchestrator.cli import main
from tests.fixtures.gitrepo import GitRepo, git_env
from tests.test_git_adapter import ambiguous_commits

RULES = """\
version = 1
[components.trainer]
context = "comp/trainer"

[[rule]]
name = "docs"
paths = ["*.md"]
do = "skip"

[[rule]]
name = "source"
paths = ["src/", "!src/**/*.txt"]
do = "upload_source"

[[rule]]
name = "images"
paths = ["comp/"]
do = "build_image"
"""

ENV = {"PATH": os.environ["PATH"]}  # never GitHub's own variables


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit(
        {"rules.toml": RULES, "src/a.py": "a", "comp/trainer/Dockerfile": "FROM x", "R.md": "r"}
    )
    git_repo.commit({"src/a.py": "b", "R.md": "s"}, message="second")
    return git_repo


def run(*argv: str, env: dict[str, str] | None = None, stdout: io.StringIO | None = None
        ) -> tuple[int, str, str]:  # fmt: skip
    out, err = stdout or io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=ENV if env is None else env)
    return code, out.getvalue(), err.getvalue()


def assert_one_clean_line(stderr: str) -> None:
    assert stderr.startswith("orchestrator: error: ")
    assert stderr.count("\n") == 1 and stderr.endswith("\n")
    assert "Traceback" not in stderr


# -- plan ------------------------------------------------------------------------------------


def test_plan_json(repo: GitRepo) -> None:
    code, out, err = run("plan", "--repo", str(repo.path), "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["base"], data["head"]) == (repo.rev("HEAD~1"), repo.rev())
    assert [a["id"] for a in data["actions"]] == ["upload_source", "publish"]
    assert data["skipped"] == [{"path": "R.md", "rule": "docs", "count": 1}]


def test_options_before_the_command_work_too(repo: GitRepo) -> None:
    code, out, _ = run("--repo", str(repo.path), "--format", "json", "plan")
    assert code == 0 and json.loads(out)["schema"] == 1


def test_plan_explicit_range_and_rules_file(repo: GitRepo, tmp_path: Path) -> None:
    root = repo.rev("HEAD~1")
    rules = tmp_path / "other.toml"
    rules.write_text(RULES.replace('"build_image"', '"retrain"'), encoding="utf-8")
    code, out, _ = run("plan", "--repo", str(repo.path), "--rules", str(rules),
                       "--base", root, "--head", "HEAD", "--format", "json")  # fmt: skip
    assert code == 0
    assert [a["id"] for a in json.loads(out)["actions"]] == ["upload_source", "publish"]
    assert json.loads(out)["base_reason"] == "explicit"


def test_nothing_to_do_is_exit_0(repo: GitRepo) -> None:
    repo.commit({"docs.md": "only docs"})
    code, out, err = run("plan", "--repo", str(repo.path))
    assert (code, err) == (0, "")
    assert "Nothing to do." in out


def test_plain_text_when_not_a_tty_or_no_color(repo: GitRepo) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    code, plain, _ = run("plan", "--repo", str(repo.path))
    assert code == 0 and plain.startswith("Plan for ") and "1. upload_source" in plain
    code, no_color, _ = run("plan", "--repo", str(repo.path), env={**ENV, "NO_COLOR": "1"},
                            stdout=Tty())  # fmt: skip
    assert no_color == plain
    code, rich, _ = run("plan", "--repo", str(repo.path), stdout=Tty())
    assert code == 0 and rich != plain and "upload_source" in rich


def test_markdown_format(repo: GitRepo) -> None:
    code, out, _ = run("plan", "--repo", str(repo.path), "--format", "markdown")
    assert code == 0
    assert out.startswith("### Build plan\n")
    assert "| 1 | `upload_source` |" in out and "```mermaid" in out


def test_github_format_writes_the_files_from_env(repo: GitRepo, tmp_path: Path) -> None:
    output, summary = tmp_path / "out", tmp_path / "summary"
    env = {**ENV, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
    code, out, err = run("plan", "--repo", str(repo.path), "--format", "github", env=env)
    assert (code, err) == (0, "")
    written = dict(line.split("=", 1) for line in output.read_text("utf-8").splitlines())
    assert json.loads(written["actions"]) == ["upload_source", "publish"]
    assert (written["upload_source"], written["build_image"]) == ("true", "false")
    assert written["has_work"] == "true"
    assert summary.read_text("utf-8").startswith("### Build plan\n")
    assert out.startswith("Plan for ")


def test_github_format_outside_github_is_exit_2(repo: GitRepo) -> None:
    code, _, err = run("plan", "--repo", str(repo.path), "--format", "github")
    assert code == 2
    assert_one_clean_line(err)
    assert "GITHUB_OUTPUT" in err


# -- --changed --------------------------------------------------------------------------------


def changed_paths(repo: GitRepo, *paths: str, repo_option: Path | None = None) -> list[str]:
    argv = ["plan", "--repo", str(repo_option or repo.path), "--format", "json"]
    code, out, err = run(*argv, *(a for p in paths for a in ("--changed", p)))
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["base_reason"] == "given-paths"
    return [c["path"] for c in data["changes"]]


def test_changed_absolute_paths_become_repository_relative(repo: GitRepo, tmp_path: Path) -> None:
    src = repo.path / "src" / "a.py"
    assert changed_paths(repo, str(src), "./R.md", "src/b.py") == ["src/a.py", "R.md", "src/b.py"]
    assert changed_paths(repo, str(repo.path / "src" / "gone.py")) == ["src/gone.py"]  # deleted
    assert changed_paths(repo, f"{repo.path}/src/../comp/") == ["comp/"]
    # symlinks: to the repository, and to a directory inside it
    (tmp_path / "link").symlink_to(repo.path)
    (repo.path / "src-link").symlink_to(repo.path / "src")
    assert changed_paths(repo, str(tmp_path / "link" / "src" / "a.py")) == ["src/a.py"]
    assert changed_paths(repo, str(src), repo_option=tmp_path / "link") == ["src/a.py"]
    assert changed_paths(repo, str(repo.path / "src-link" / "a.py")) == ["src/a.py"]
    # a symlink that is itself the changed file stays that file
    repo.commit({"R-link.md": GitRepo.Symlink("R.md")})
    assert changed_paths(repo, str(repo.path / "R-link.md")) == ["R-link.md"]


def test_changed_absolute_path_in_a_subdirectory_repo_option(repo: GitRepo) -> None:
    sub = repo.path / "src"
    code, out, err = run("plan", "--repo", str(sub), "--rules", str(repo.path / "rules.toml"),
                         "--changed", str(sub / "a.py"), "--format", "json")  # fmt: skip
    assert (code, err) == (0, "")
    assert [c["path"] for c in json.loads(out)["changes"]] == ["src/a.py"]


@pytest.mark.parametrize("where", ["outside", "root", "sibling"])
def test_changed_absolute_path_outside_the_repository_is_exit_2(
    repo: GitRepo, tmp_path: Path, where: str
) -> None:
    path = {
        "outside": str(tmp_path / "elsewhere" / "a.py"),
        "root": str(repo.path),
        "sibling": str(repo.path) + "-other/a.py",  # shares the root's name as a prefix
    }[where]
    code, out, err = run("plan", "--repo", str(repo.path), "--changed", "src/a.py",
                         "--changed", path)  # fmt: skip
    assert (code, out) == (2, "")
    if where == "root":
        assert (
            err
            == f"orchestrator: error: --changed {path}: the repository's root, not a path in it\n"
        )
    else:
        assert err == (
            f"orchestrator: error: --changed {path}: outside the repository {repo.path.resolve()}\n"
        )


def test_changed_paths_keep_their_spaces(repo: GitRepo) -> None:
    names = [" src/a.py", "src/a.py ", "src/tab\t", " "]
    assert changed_paths(repo, *names, "./ lead") == [*names, " lead"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "--changed takes repository-relative paths, not an empty string"),
        ("./", "--changed ./: the repository's root, not a path in it"),
        (".", "--changed .: the repository's root, not a path in it"),
    ],
)
def test_changed_empty_path_is_exit_2(repo: GitRepo, path: str, message: str) -> None:
    code, out, err = run("plan", "--repo", str(repo.path), "--changed", path)
    assert (code, out, err) == (2, "", f"orchestrator: error: {message}\n")


# -- --dry-run --------------------------------------------------------------------------------


def test_dry_run_plans_the_auto_detected_range_and_writes_nothing(repo: GitRepo) -> None:
    repo.write("untracked.txt", "x")
    before = repo.git("status", "--porcelain", "--untracked-files=all", "--ignored")
    refs = repo.git("for-each-ref")
    code, out, _ = run("--dry-run", "--repo", str(repo.path))
    assert code == 0
    assert out.startswith(f"Plan for {repo.rev('HEAD~1')[:12]}..{repo.rev()[:12]} (")
    assert "upload_source" in out
    assert repo.git("status", "--porcelain", "--untracked-files=all", "--ignored") == before
    assert repo.git("for-each-ref") == refs


def test_dry_run_takes_the_base_from_github_push_event(repo: GitRepo, tmp_path: Path) -> None:
    root = repo.rev("HEAD~1")
    repo.commit({"comp/trainer/train.py": "t"})
    event = repo.write_event(tmp_path / "event.json", {"before": root, "after": repo.rev()})
    env = {**ENV, "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event)}
    code, out, _ = run("--dry-run", "--repo", str(repo.path), "--format", "json", env=env)
    assert code == 0
    data = json.loads(out)
    assert data["base"] == root
    assert {a["id"] for a in data["actions"]} >= {"upload_source", "build_image:trainer"}


def test_dry_run_does_not_apply_to_validate(repo: GitRepo) -> None:
    code, _, err = run("--dry-run", "validate", "--repo", str(repo.path))
    assert code == 2
    assert_one_clean_line(err)


# -- explain ----------------------------------------------------------------------------------


def test_explain_shows_matches_negations_and_actions(repo: GitRepo) -> None:
    code, out, _ = run("explain", "--repo", str(repo.path), "src/a.py", "src/notes.txt", "R.md")
    assert code == 0
    assert out == (
        "src/a.py\n"
        "  rule source: included by 'src/'\n"
        "    'src/': matches the directory 'src/'\n"
        "  => would plan: upload_source, publish\n"
        "src/notes.txt\n"
        "  rule source: excluded by '!src/**/*.txt'\n"
        "    'src/': matches the directory 'src/'\n"
        "    '!src/**/*.txt': negation, matches\n"
        '  => matches no rule; [unmatched] do = "all": would plan: '
        "build_image:trainer, upload_source, compile_pipeline, publish\n"
        "R.md\n"
        "  rule docs: included by '*.md'\n"
        "    '*.md': matches\n"
        "  => skipped (rule docs)\n"
    )


def test_explain_needs_a_path(repo: GitRepo) -> None:
    code, _, err = run("explain", "--repo", str(repo.path))
    assert code == 2
    assert_one_clean_line(err)


# -- validate ---------------------------------------------------------------------------------


def test_validate_ok(repo: GitRepo) -> None:
    code, out, err = run("validate", "--repo", str(repo.path))
    assert (code, err) == (0, "")
    assert out == f"{repo.path / 'rules.toml'}: ok (3 rule(s), 1 component(s))\n"


def test_validate_broken_rules_is_exit_2_naming_file_line_key(repo: GitRepo) -> None:
    (repo.path / "rules.toml").write_text(RULES + 'colour = "red"\n', encoding="utf-8")
    code, out, err = run("validate", "--repo", str(repo.path))
    assert (code, out) == (2, "")
    assert_one_clean_line(err)
    assert err.startswith(f"orchestrator: error: {repo.path / 'rules.toml'}:")
    assert "unknown key 'colour'" in err


def test_validate_missing_component_context_is_exit_2(repo: GitRepo) -> None:
    repo.commit({"comp/trainer/Dockerfile": None})
    code, out, err = run("validate", "--repo", str(repo.path))
    assert (code, out) == (2, "")
    assert err == (
        f"orchestrator: error: {repo.path / 'rules.toml'}: [components.trainer] context "
        "'comp/trainer' does not exist at HEAD\n"
    )


def test_validate_accepts_a_byte_order_mark_and_keeps_line_numbers(repo: GitRepo) -> None:
    rules = repo.path / "rules.toml"
    rules.write_bytes("\ufeff".encode() + RULES.encode())
    code, out, err = run("validate", "--repo", str(repo.path))
    assert (code, out, err) == (0, f"{rules}: ok (3 rule(s), 1 component(s))\n", "")
    rules.write_bytes("\ufeff".encode() + RULES.replace('do = "skip"', 'do = "sikp"').encode())
    code, out, err = run("validate", "--repo", str(repo.path))
    assert (code, out) == (2, "")
    assert err.startswith(f"orchestrator: error: {rules}:8: [rule 'docs'.do] unknown action 'sikp'")
    assert_one_clean_line(err)


@pytest.mark.parametrize("argv", [["plan"], ["validate"], ["explain", "a.txt"], ["--dry-run"]])
def test_missing_rules_file_is_exit_2_naming_it(git_repo: GitRepo, argv: list[str]) -> None:
    git_repo.commit({"a.txt": "a"})
    code, _, err = run(*argv, "--repo", str(git_repo.path))
    assert code == 2
    assert_one_clean_line(err)
    assert f"{git_repo.path / 'rules.toml'}: file not found" in err


# -- exit codes and errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["plan", "--bogus"],
        ["--bogus"],
        ["plan", "--format", "xml"],
        [],
    ],
)
def test_bad_command_lines_are_exit_2_with_one_line(argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert_one_clean_line(err)


def test_help_and_version_return_0_on_the_given_stdout() -> None:
    code, out, err = run("--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: orchestrator")
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("orchestrator ")


def test_unknown_base_is_exit_2(repo: GitRepo) -> None:
    code, _, err = run("plan", "--repo", str(repo.path), "--base", "deadbeef" * 5)
    assert code == 2
    assert_one_clean_line(err)


def test_zeros_base_is_a_new_branch_not_a_missing_commit(repo: GitRepo) -> None:
    fork_point = repo.rev()
    repo.git("checkout", "-q", "-b", "topic")
    repo.commit({"comp/trainer/train.py": "t"})
    code, out, err = run("plan", "--repo", str(repo.path), "--base", "0" * 40, "--format", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["base"], data["base_reason"]) == (fork_point, "explicit-new-branch-merge-base")
    assert [c["path"] for c in data["changes"]] == ["comp/trainer/train.py"]


def test_ambiguous_short_sha_is_exit_2_saying_so(repo: GitRepo) -> None:
    prefix, _ = ambiguous_commits(repo)
    for option in ("--base", "--head"):
        code, out, err = run("plan", "--repo", str(repo.path), option, prefix)
        assert (code, out) == (2, "")
        assert err == (
            f"orchestrator: error: '{prefix}' is ambiguous in {repo.path}; give a longer sha.\n"
        )


def unknown_head_message(repo: GitRepo) -> str:
    return (
        f"orchestrator: error: no-such-ref (--head) is not a commit in the clone at {repo.path}; "
        "if it is in the remote, fetch the full history (GitHub Actions: actions/checkout with "
        "fetch-depth: 0), or check the ref.\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["plan"],
        ["plan", "--changed", "src/a.py"],
        ["explain", "src/a.py"],
        ["validate"],
    ],
)
def test_unknown_head_is_exit_2_with_the_same_message_everywhere(
    repo: GitRepo, argv: list[str]
) -> None:
    code, out, err = run(*argv, "--repo", str(repo.path), "--head", "no-such-ref")
    assert (code, out, err) == (2, "", unknown_head_message(repo))


@pytest.mark.parametrize("argv", [["explain", "src/a.py"], ["validate"]])
def test_unknown_head_is_exit_2_without_components_too(repo: GitRepo, argv: list[str]) -> None:
    """Without components nothing else asks git about the head."""
    repo.commit(
        {"rules.toml": 'version = 1\n[[rule]]\nname = "s"\npaths = "src/"\ndo = "upload_source"\n'}
    )
    code, out, err = run(*argv, "--repo", str(repo.path), "--head", "no-such-ref")
    assert (code, out, err) == (2, "", unknown_head_message(repo))
    code, _, err = run(*argv, "--repo", str(repo.path), "--head", "HEAD~1")
    assert (code, err) == (0, "")


def test_not_a_repository_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    code, _, err = run("plan", "--repo", str(tmp_path), env={**ENV, "GIT_CEILING_DIRECTORIES":
                                                            str(tmp_path.parent)})  # fmt: skip
    assert code == 2
    assert_one_clean_line(err)


def test_internal_error_is_exit_3_without_traceback_unless_debug(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planner exploded")

    # the single patched test: nothing realistic makes our own planner fail
    monkeypatch.setattr(workflow, "plan_changes", broken)
    code, out, err = run("plan", "--repo", str(repo.path))
    assert (code, out) == (3, "")
    assert_one_clean_line(err)
    assert "internal error: RuntimeError: planner exploded" in err
    code, _, err = run("plan", "--repo", str(repo.path), "--debug")
    assert code == 3
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith(
        "orchestrator: error: internal error: RuntimeError: planner exploded "
        "(rerun with --debug for the traceback, and please report it)\n"
    )


def test_config_error_with_debug_shows_the_traceback(repo: GitRepo) -> None:
    (repo.path / "rules.toml").write_text("version = 9\n", encoding="utf-8")
    code, _, err = run("validate", "--repo", str(repo.path), "--debug")
    assert code == 2
    assert "Traceback" in err and "ConfigError" in err


# -- through a subprocess -----------------------------------------------------------------------


def _subprocess(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**git_env(), **extra}
    for key in [k for k in env if k.startswith(("GITHUB_", "_BASE_SHA", "NO_COLOR"))]:
        del env[key]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=60)  # fmt: skip


def test_subprocess_plan_json(repo: GitRepo) -> None:
    done = _subprocess(
        [sys.executable, "-m", "orchestrator", "plan", "--format", "json"], repo.path
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert [a["id"] for a in json.loads(done.stdout)["actions"]] == ["upload_source", "publish"]


def test_subprocess_bad_config_is_one_line_exit_2(repo: GitRepo) -> None:
    (repo.path / "rules.toml").write_text("version = 1\n[[rule]]\nname = 3\n", encoding="utf-8")
    done = _subprocess([sys.executable, "-m", "orchestrator", "--dry-run"], repo.path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "orchestrator: error: rules.toml:3: [rule[0].name] must be a string, not an integer\n"
    )


def test_subprocess_unknown_option_is_exit_2_without_usage_dump(repo: GitRepo) -> None:
    done = _subprocess([sys.executable, "-m", "orchestrator", "plan", "--nope"], repo.path)
    assert done.returncode == 2
    assert_one_clean_line(done.stderr)


def test_console_script_is_installed(repo: GitRepo) -> None:
    script = shutil.which("orchestrator")
    assert script is not None, "pip install -e . installs the 'orchestrator' console script"
    done = _subprocess([script, "validate"], repo.path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "rules.toml: ok (3 rule(s), 1 component(s))\n"


def test_a_directory_that_is_not_a_repository_is_named(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text("version = 1\n")
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["plan", "--repo", str(tmp_path)], stdout=out, stderr=err, env={"PATH": os.environ["PATH"]}
    )
    assert code == 2
    assert err.getvalue() == (
        f"orchestrator: error: --repo {tmp_path}: not a git repository (run it inside a clone)\n"
    )


# -- what reaches the terminal -----------------------------------------------------------------

PROJECT = Path(__file__).resolve().parents[1]
NOT_UTF8 = b"src/caf\xe9.py".decode("utf-8", "surrogateescape")  # a Latin-1 file name


@pytest.mark.parametrize("fmt", ["json", "table", "markdown"])
def test_a_file_name_that_is_not_utf8_keeps_every_output_valid(repo: GitRepo, fmt: str) -> None:
    """git hands out file names as bytes; one that is not UTF-8 is written with the byte as
    backslash, x and two hex digits, even to a strict UTF-8 stdout (before: bytes that were
    not JSON, or exit 3)."""
    repo.commit({NOT_UTF8: "x"}, message="latin-1")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "plan", "--repo", str(repo.path), "--format", fmt],
        env={
            **ENV,
            "PYTHONIOENCODING": "utf-8:strict",
            "PYTHONPATH": str(Path(__file__).parents[1]),
        },
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8", "strict")
    assert ("src/caf\\\\xe9.py" if fmt == "json" else "src/caf\\xe9.py") in text
    if fmt == "json":
        assert json.loads(text)["changes"] == [
            {"status": "A", "path": "src/caf\\xe9.py", "old_path": None}
        ]


def test_an_error_with_a_newline_or_an_undecodable_byte_is_one_line(repo: GitRepo) -> None:
    code, _, err = run("plan", "--repo", str(repo.path), "--base", "no\nsuch\x1b[31m" + NOT_UTF8)
    assert code == 2
    assert_one_clean_line(err)
    assert "no\\nsuch\\x1b[31m" in err and "caf\\xe9" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "--format", "json"],
        ["--rules", "plan", "plan", "--base", "HEAD~1"],
        ["--format", "json", "explain", "a.py", "b/c.py"],
        ["--dry-run"],
        ["--dry-run", "--all-paths", "--format", "json"],
        ["run", "--executor", "cloudbuild", "--project", "p"],
        ["step", "publish", "--artifacts", "{}"],
        ["ledger", "set", "--commit", "HEAD", "--branch", "run"],
        ["trigger", "--reason", "data", "--data", "gs://b/k"],
        ["setup-gcp", "--print", "--github-repo", "o/r"],
        ["validate", "--cloud", "--rules", "ledger"],
        ["--changed", "emit", "emit", "-o", "x.yaml"],
    ],
)
def test_the_command_line_is_read_as_the_full_parser_reads_it(argv: list[str]) -> None:
    """main builds only the options of the command it runs (cli.parse_command_line); what it
    reads is what the parser with every command's options reads."""
    from orchestrator.cli import build_parser, parse_command_line

    assert vars(parse_command_line(argv)) == vars(build_parser().parse_args(argv))
