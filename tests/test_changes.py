"""Changed paths: NUL-separated parsing with literals, and resolve_changes on real repositories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.adapters.git import Git
from orchestrator.changes import (
    merge_changes,
    parse_name_status,
    parse_status_porcelain,
    resolve_changes,
)
from orchestrator.errors import GitError, InputError
from orchestrator.model import ChangedPath, ChangeSet
from tests.fixtures.gitrepo import GitRepo

NO_CI: dict[str, str] = {}

# ---------------------------------------------------------------------------------
# parse_name_status
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", ()),
        (b"M\0a.py\0", (ChangedPath("M", "a.py"),)),
        (b"A\0new\0D\0gone\0T\0link\0", (
            ChangedPath("A", "new"), ChangedPath("D", "gone"), ChangedPath("T", "link"),
        )),
        (b"R100\0old/x.py\0new/x.py\0", (ChangedPath("R", "new/x.py", "old/x.py"),)),
        (b"R087\0a\0b\0M\0c\0", (ChangedPath("R", "b", "a"), ChangedPath("M", "c"))),
        (b"C075\0src.py\0copy.py\0", (ChangedPath("A", "copy.py"),)),
        # no trailing NUL is tolerated
        (b"M\0a.py", (ChangedPath("M", "a.py"),)),
        # odd names arrive verbatim: spaces, quotes, $, newlines, tabs, unicode
        (b"A\0with space.txt\0A\0q\"uote'.txt\0A\0$HOME.txt\0A\0new\nline\0A\0t\tab\0",
         (ChangedPath("A", "with space.txt"), ChangedPath("A", "q\"uote'.txt"),
          ChangedPath("A", "$HOME.txt"), ChangedPath("A", "new\nline"),
          ChangedPath("A", "t\tab"))),
        ("M\0caf\u00e9/\u65e5\u672c.txt\0".encode(),
         (ChangedPath("M", "caf\u00e9/\u65e5\u672c.txt"),)),
    ],
)  # fmt: skip
def test_parse_name_status(raw: bytes, expected: tuple[ChangedPath, ...]) -> None:
    assert parse_name_status(raw) == expected


def test_parsed_changes_are_ordinary_frozen_records() -> None:
    changes = parse_name_status(b"R100\0a\0b\0M\0x\0")
    assert changes == (ChangedPath("R", "b", "a"), ChangedPath("M", "x"))
    assert {changes[1]} == {ChangedPath("M", "x")}
    assert repr(changes[1]) == repr(ChangedPath("M", "x"))
    with pytest.raises(AttributeError):
        changes[0].path = "other"  # type: ignore[misc]


def test_parse_name_status_keeps_non_utf8_bytes() -> None:
    (change,) = parse_name_status(b"A\0lat\xe9n1.txt\0")
    assert change.path.encode("utf-8", "surrogateescape") == b"lat\xe9n1.txt"


@pytest.mark.parametrize("raw", [b"U\0conflict.txt\0", b"X\0weird\0", b"B50\0a\0"])
def test_parse_name_status_rejects_unknown_statuses(raw: bytes) -> None:
    with pytest.raises(GitError, match="unknown change status"):
        parse_name_status(raw)


@pytest.mark.parametrize("raw", [b"M\0", b"R100\0only-old\0"])
def test_parse_name_status_rejects_truncated_output(raw: bytes) -> None:
    with pytest.raises(GitError, match="middle of an entry"):
        parse_name_status(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", ()),
        (b" M tracked.py\0", (ChangedPath("M", "tracked.py"),)),
        (b"M  staged.py\0", (ChangedPath("M", "staged.py"),)),
        (b"MM both.py\0", (ChangedPath("M", "both.py"),)),
        (b"?? untracked dir/f\0", (ChangedPath("A", "untracked dir/f"),)),
        (b"A  added\0AM added-then-edited\0", (
            ChangedPath("A", "added"), ChangedPath("A", "added-then-edited"),
        )),
        (b" D deleted\0D  staged-delete\0", (
            ChangedPath("D", "deleted"), ChangedPath("D", "staged-delete"),
        )),
        (b" T link\0", (ChangedPath("T", "link"),)),
        (b"R  new\nname\0old name\0", (ChangedPath("R", "new\nname", "old name"),)),
        (b"RM new\0old\0?? x\0", (ChangedPath("R", "new", "old"), ChangedPath("A", "x"))),
        (b"C  copy\0orig\0", (ChangedPath("A", "copy"),)),
        (b"UU conflict\0AA both-added\0DD both-deleted\0", (
            ChangedPath("M", "conflict"), ChangedPath("A", "both-added"),
            ChangedPath("M", "both-deleted"),
        )),
    ],
)  # fmt: skip
def test_parse_status_porcelain(raw: bytes, expected: tuple[ChangedPath, ...]) -> None:
    assert parse_status_porcelain(raw) == expected


@pytest.mark.parametrize("raw", [b"garbage\0", b"R  new-without-old\0"])
def test_parse_status_porcelain_rejects_malformed_output(raw: bytes) -> None:
    with pytest.raises(GitError):
        parse_status_porcelain(raw)


def test_merge_changes_keeps_range_entries_and_adds_new_paths_sorted() -> None:
    range_changes = (ChangedPath("A", "b.py"), ChangedPath("R", "d.py", "c.py"))
    extra = (ChangedPath("M", "b.py"), ChangedPath("M", "d.py"), ChangedPath("A", "a.py"))
    assert merge_changes(range_changes, extra) == (
        ChangedPath("A", "a.py"),
        ChangedPath("A", "b.py"),
        ChangedPath("R", "d.py", "c.py"),
    )
    assert merge_changes(range_changes, ()) == range_changes


# ---------------------------------------------------------------------------------
# resolve_changes on real repositories
# ---------------------------------------------------------------------------------


def changes_of(cs: ChangeSet) -> set[tuple[str, str, str | None]]:
    return {(c.status, c.path, c.old_path) for c in cs.changes}


def resolve(repo: GitRepo, env: dict[str, str] | None = None, **kw: Any) -> ChangeSet:
    kw.setdefault("base", None)
    return resolve_changes(Git(repo.path), env=NO_CI if env is None else env, **kw)


def test_root_commit_compares_against_the_empty_tree(git_repo: GitRepo) -> None:
    root = git_repo.commit({"a.txt": "a", "dir/b.txt": "b"})
    cs = resolve(git_repo)
    assert (cs.base, cs.head, cs.base_reason) == (None, root, "root-commit")
    assert changes_of(cs) == {("A", "a.txt", None), ("A", "dir/b.txt", None)}


def test_default_base_is_the_first_parent(git_repo: GitRepo) -> None:
    first = git_repo.commit({"a.txt": "a", "b.txt": "b"})
    second = git_repo.commit({"a.txt": "changed", "b.txt": None, "c.txt": "c"})
    cs = resolve(git_repo)
    assert (cs.base, cs.head, cs.base_reason) == (first, second, "first-parent")
    assert changes_of(cs) == {("M", "a.txt", None), ("D", "b.txt", None), ("A", "c.txt", None)}


def test_explicit_range_over_several_commits(git_repo: GitRepo) -> None:
    base = git_repo.commit({"keep.txt": "k", "a.txt": "1"})
    git_repo.commit({"a.txt": "2", "tmp.txt": "t"})
    git_repo.commit({"tmp.txt": None, "b.txt": "b"})
    head = git_repo.commit({"a.txt": "3"})
    cs = resolve(git_repo, base="HEAD~3", head="main")
    assert (cs.base, cs.head, cs.base_reason) == (base, head, "explicit")
    # tmp.txt came and went inside the range: not a change of the range
    assert changes_of(cs) == {("M", "a.txt", None), ("A", "b.txt", None)}


def test_explicit_base_equal_to_head_has_no_changes(git_repo: GitRepo) -> None:
    sha = git_repo.commit({"a.txt": "a"})
    cs = resolve(git_repo, base=sha, head=sha)
    assert cs.changes == () and cs.base == cs.head == sha


def test_merge_commit_compares_with_its_first_parent(git_repo: GitRepo) -> None:
    git_repo.commit({"base.txt": "b"})
    git_repo.git("checkout", "-q", "-b", "topic")
    git_repo.commit({"topic.txt": "t"})
    git_repo.git("checkout", "-q", "main")
    mainline = git_repo.commit({"main.txt": "m"})
    merge = git_repo.merge("topic")
    cs = resolve(git_repo)
    assert (cs.base, cs.head, cs.base_reason) == (mainline, merge, "first-parent")
    assert changes_of(cs) == {("A", "topic.txt", None)}


def test_rename_keeps_old_and_new_path(git_repo: GitRepo) -> None:
    content = "".join(f"line {i}\n" for i in range(50))
    git_repo.commit({"old/name.py": content})
    git_repo.commit({"new/name.py": content + "one more\n", "old/name.py": None})
    cs = resolve(git_repo)
    (change,) = cs.changes
    assert (change.status, change.path, change.old_path) == ("R", "new/name.py", "old/name.py")
    assert change.touched() == ("new/name.py", "old/name.py")


def test_renames_are_detected_whatever_the_user_config_says(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "same content\n" * 20})
    git_repo.commit(renames={"a.txt": "b.txt"})
    for key, value in [("diff.renames", "false"), ("core.quotepath", "true"),
                       ("diff.external", "false"), ("diff.relative", "true"),
                       ("color.ui", "always"), ("color.diff", "always")]:  # fmt: skip
        git_repo.git("config", key, value)
    cs = resolve(git_repo)
    assert changes_of(cs) == {("R", "b.txt", "a.txt")}


def test_deletions(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a", "dir/b.txt": "b", "dir/c.txt": "c"})
    git_repo.commit({"dir/b.txt": None, "dir/c.txt": None})
    assert changes_of(resolve(git_repo)) == {("D", "dir/b.txt", None), ("D", "dir/c.txt", None)}


def test_type_changes_file_to_symlink_and_back(git_repo: GitRepo) -> None:
    git_repo.commit({"target.txt": "t", "thing": "a file"})
    git_repo.commit({"thing": GitRepo.Symlink("target.txt")})
    assert changes_of(resolve(git_repo)) == {("T", "thing", None)}
    git_repo.commit({"thing": "a file again"})
    assert changes_of(resolve(git_repo)) == {("T", "thing", None)}


ODD_NAMES = [
    "with space.txt",
    "caf\u00e9/\u65e5\u672c\u8a9e.txt",
    'double"quote.txt',
    "single'quote.txt",
    "$HOME and $(cmd).txt",
    "new\nline.txt",
    "tab\there.txt",
    "back\\slash.txt",
    "-dash-first.txt",
    "emoji \U0001f680.txt",
]


def test_odd_names_arrive_exactly_as_stored(git_repo: GitRepo) -> None:
    git_repo.commit({"seed.txt": "s"})
    git_repo.git("config", "core.quotepath", "true")  # must make no difference
    git_repo.commit(dict.fromkeys(ODD_NAMES, "x"))
    cs = resolve(git_repo)
    assert sorted(c.path for c in cs.changes) == sorted(ODD_NAMES)
    assert {c.status for c in cs.changes} == {"A"}
    # and renaming / deleting them works too
    git_repo.commit({ODD_NAMES[0]: None}, renames={ODD_NAMES[5]: "renamed\n$ \u00e9.txt"})
    assert changes_of(resolve(git_repo)) == {
        ("D", ODD_NAMES[0], None),
        ("R", "renamed\n$ \u00e9.txt", ODD_NAMES[5]),
    }


def test_unknown_explicit_base_is_a_clear_error(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    with pytest.raises(GitError, match=r"no-such-ref \(--base\) is not a commit .*fetch-depth: 0"):
        resolve(git_repo, base="no-such-ref")
    with pytest.raises(GitError, match=r"--head"):
        resolve(git_repo, base="HEAD", head="no-such-ref")


def test_unknown_sha_base_is_a_clear_error(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    with pytest.raises(GitError, match="fetch-depth: 0"):
        resolve(git_repo, base="1234567" * 5 + "12345")


def test_base_that_names_a_tree_is_not_a_commit(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    with pytest.raises(GitError, match="is not a commit"):
        resolve(git_repo, base="HEAD^{tree}")


def test_empty_repository_says_so(git_repo: GitRepo) -> None:
    with pytest.raises(GitError, match="commit something first"):
        resolve(git_repo)


def test_not_a_repository_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        resolve_changes(Git(tmp_path), base=None, env=NO_CI)


# ---------------------------------------------------------------------------------
# The base from the CI environment (GitHub event payload files, Cloud Build)
# ---------------------------------------------------------------------------------

ZEROS = "0" * 40


def github_env(tmp_path: Path, event: str, payload: dict[str, Any]) -> dict[str, str]:
    path = GitRepo.write_event(tmp_path / f"{event}.json", payload)
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": str(path)}


def push_payload(
    before: str,
    after: str,
    *,
    forced: bool = False,
    ref: str = "refs/heads/main",
    default_branch: str = "main",
) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "base_ref": None,
        "created": before == ZEROS,
        "deleted": False,
        "forced": forced,
        "compare": f"https://github.com/octo/repo/compare/{before[:12]}...{after[:12]}",
        "commits": [],
        "head_commit": {"id": after, "message": "change"},
        "repository": {"full_name": "octo/repo", "default_branch": default_branch},
        "pusher": {"name": "octo"},
        "sender": {"login": "octo"},
    }


def pull_request_payload(base_sha: str, head_sha: str, base_ref: str = "main") -> dict[str, Any]:
    return {
        "action": "synchronize",
        "number": 7,
        "pull_request": {
            "number": 7,
            "base": {"ref": base_ref, "sha": base_sha, "repo": {"full_name": "octo/repo"}},
            "head": {"ref": "topic", "sha": head_sha, "repo": {"full_name": "octo/repo"}},
        },
        "repository": {"full_name": "octo/repo", "default_branch": "main"},
    }


def merge_group_payload(base_sha: str, head_sha: str) -> dict[str, Any]:
    return {
        "action": "checks_requested",
        "merge_group": {
            "head_sha": head_sha,
            "head_ref": "refs/heads/gh-readonly-queue/main/pr-7-" + base_sha,
            "base_sha": base_sha,
            "base_ref": "refs/heads/main",
            "head_commit": {"id": head_sha, "message": "Merge pull request #7"},
        },
        "repository": {"full_name": "octo/repo", "default_branch": "main"},
    }


def test_github_push_uses_before(git_repo: GitRepo, tmp_path: Path) -> None:
    before = git_repo.commit({"a.txt": "a", "b.txt": "b"})
    git_repo.commit({"a.txt": "a2"})
    after = git_repo.commit({"c.txt": "c"})
    cs = resolve(git_repo, github_env(tmp_path, "push", push_payload(before, after)))
    assert (cs.base, cs.head, cs.base_reason) == (before, after, "github-push")
    assert changes_of(cs) == {("M", "a.txt", None), ("A", "c.txt", None)}


def test_explicit_base_wins_over_the_ci_environment(git_repo: GitRepo, tmp_path: Path) -> None:
    first = git_repo.commit({"a.txt": "a"})
    second = git_repo.commit({"b.txt": "b"})
    git_repo.commit({"c.txt": "c"})
    env = github_env(tmp_path, "push", push_payload(first, git_repo.rev()))
    env["_BASE_SHA"] = first
    cs = resolve(git_repo, env, base=second)
    assert (cs.base, cs.base_reason) == (second, "explicit")


def test_github_push_new_branch_uses_merge_base_with_default_branch(
    make_git_repo: Any, tmp_path: Path
) -> None:
    origin: GitRepo = make_git_repo("origin")
    fork_point = origin.commit({"main.txt": "m"})
    origin.git("checkout", "-q", "-b", "topic")
    origin.commit({"topic1.txt": "t"})
    origin.commit({"topic2.txt": "t"})
    origin.git("checkout", "-q", "main")
    origin.commit({"main-later.txt": "m"})
    clone = origin.clone(tmp_path / "clone", branch="topic")
    env = github_env(tmp_path, "push", push_payload(ZEROS, clone.rev(), ref="refs/heads/topic"))
    cs = resolve(clone, env)
    assert (cs.base, cs.base_reason) == (fork_point, "github-push-new-branch-merge-base")
    assert changes_of(cs) == {("A", "topic1.txt", None), ("A", "topic2.txt", None)}


def test_github_push_new_branch_without_default_branch_is_everything(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "a"})
    git_repo.git("checkout", "-q", "-b", "topic")
    head = git_repo.commit({"b.txt": "b"})
    payload = push_payload(ZEROS, head, ref="refs/heads/topic", default_branch="trunk")
    cs = resolve(git_repo, github_env(tmp_path, "push", payload))
    assert (cs.base, cs.head, cs.base_reason) == (
        None,
        head,
        "github-push-new-branch-no-merge-base",
    )
    assert changes_of(cs) == {("A", "a.txt", None), ("A", "b.txt", None)}


def test_github_push_creating_the_default_branch_is_everything(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "a"})
    head = git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, github_env(tmp_path, "push", push_payload(ZEROS, head)))
    assert (cs.base, cs.base_reason) == (None, "github-push-new-branch-no-merge-base")
    assert len(cs.changes) == 2


def rewritten_history(repo: GitRepo) -> tuple[str, str, str]:
    """main: A - B - C, then force-pushed to A - B - D. Returns (B, C, D)."""
    repo.commit({"a.txt": "a"})
    b = repo.commit({"b.txt": "b"})
    c = repo.commit({"c.txt": "c"})
    repo.git("reset", "-q", "--hard", b)
    d = repo.commit({"d.txt": "d"})
    return b, c, d


def test_github_forced_push_uses_merge_base_with_before(git_repo: GitRepo, tmp_path: Path) -> None:
    b, c, d = rewritten_history(git_repo)
    env = github_env(tmp_path, "push", push_payload(c, d, forced=True))
    cs = resolve(git_repo, env)
    assert (cs.base, cs.head, cs.base_reason) == (b, d, "github-forced-push-merge-base")
    assert changes_of(cs) == {("A", "d.txt", None)}


def test_github_forced_push_that_fast_forwards_uses_before(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    before = git_repo.commit({"a.txt": "a"})
    after = git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, github_env(tmp_path, "push", push_payload(before, after, forced=True)))
    assert (cs.base, cs.base_reason) == (before, "github-push")


def test_github_forced_push_whose_before_is_gone_uses_the_default_branch(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    fork_point = git_repo.commit({"a.txt": "a"})
    git_repo.git("checkout", "-q", "-b", "topic")
    head = git_repo.commit({"b.txt": "b"})
    gone = "ab" * 20  # rewritten away and never fetched
    payload = push_payload(gone, head, forced=True, ref="refs/heads/topic")
    cs = resolve(git_repo, github_env(tmp_path, "push", payload))
    assert (cs.base, cs.base_reason) == (fork_point, "github-forced-push-default-branch-merge-base")
    assert changes_of(cs) == {("A", "b.txt", None)}


def test_github_push_whose_before_is_missing_is_an_error(git_repo: GitRepo, tmp_path: Path) -> None:
    head = git_repo.commit({"a.txt": "a"})
    env = github_env(tmp_path, "push", push_payload("cd" * 20, head))
    with pytest.raises(GitError, match=r"cdcd.*push's 'before'.*fetch-depth: 0"):
        resolve(git_repo, env)


def pr_history(repo: GitRepo) -> dict[str, str]:
    """main: A - M1; topic from A: T1 - T2; plus the merge GitHub tests (refs/pull/N/merge)."""
    shas = {"A": repo.commit({"shared.txt": "s"})}
    repo.git("checkout", "-q", "-b", "topic")
    shas["T1"] = repo.commit({"topic1.txt": "t"})
    shas["T2"] = repo.commit({"shared.txt": "changed on topic"})
    repo.git("checkout", "-q", "main")
    shas["M1"] = repo.commit({"main1.txt": "m"})
    repo.git("checkout", "-q", "-b", "pr-merge")
    shas["merge"] = repo.merge("topic")
    repo.git("checkout", "-q", "topic")
    return shas


def test_github_pull_request_uses_merge_base_of_base_and_head(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    shas = pr_history(git_repo)
    env = github_env(tmp_path, "pull_request", pull_request_payload(shas["M1"], shas["T2"]))
    cs = resolve(git_repo, env)
    assert (cs.base, cs.head, cs.base_reason) == (
        shas["A"], shas["T2"], "github-pull-request-merge-base",
    )  # fmt: skip
    assert changes_of(cs) == {("A", "topic1.txt", None), ("M", "shared.txt", None)}


def test_github_pull_request_target_is_read_like_pull_request(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    shas = pr_history(git_repo)
    payload = pull_request_payload(shas["M1"], shas["T2"])
    cs = resolve(git_repo, github_env(tmp_path, "pull_request_target", payload))
    assert (cs.base, cs.base_reason) == (shas["A"], "github-pull-request-merge-base")


def test_github_pull_request_with_unrelated_histories_is_everything(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    main = git_repo.commit({"a.txt": "a"})
    git_repo.git("checkout", "-q", "--orphan", "other")
    git_repo.git("rm", "-q", "-rf", ".")
    head = git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, github_env(tmp_path, "pull_request", pull_request_payload(main, head)))
    assert (cs.base, cs.base_reason) == (None, "github-pull-request-no-merge-base")
    assert changes_of(cs) == {("A", "b.txt", None)}


def test_github_merge_group_uses_base_sha(git_repo: GitRepo, tmp_path: Path) -> None:
    base = git_repo.commit({"a.txt": "a"})
    git_repo.commit({"b.txt": "b"})
    head = git_repo.commit({"c.txt": "c"})
    cs = resolve(git_repo, github_env(tmp_path, "merge_group", merge_group_payload(base, head)))
    assert (cs.base, cs.head, cs.base_reason) == (base, head, "github-merge-group")
    assert changes_of(cs) == {("A", "b.txt", None), ("A", "c.txt", None)}


def test_cloudbuild_base_sha(git_repo: GitRepo) -> None:
    base = git_repo.commit({"a.txt": "a"})
    git_repo.commit({"b.txt": "b"})
    git_repo.commit({"c.txt": "c"})
    cs = resolve(git_repo, {"_BASE_SHA": base, "BUILD_ID": "123"})
    assert (cs.base, cs.base_reason) == (base, "cloudbuild-base-sha")
    assert len(cs.changes) == 2


def test_other_github_events_fall_back_to_the_first_parent(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    parent = git_repo.commit({"a.txt": "a"})
    git_repo.commit({"b.txt": "b"})
    env = {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_EVENT_PATH": str(tmp_path / "none")}
    cs = resolve(git_repo, env)
    assert (cs.base, cs.base_reason) == (parent, "first-parent")


def test_unreadable_github_payload_is_an_input_error(git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.commit({"a.txt": "a"})
    env = {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(tmp_path / "missing.json")}
    with pytest.raises(InputError, match=r"cannot read the GitHub event payload .*missing\.json"):
        resolve(git_repo, env)


# ---------------------------------------------------------------------------------
# Shallow clones and missing history
# ---------------------------------------------------------------------------------


@pytest.fixture
def long_origin(make_git_repo: Any) -> tuple[GitRepo, list[str]]:
    origin: GitRepo = make_git_repo("origin")
    shas = [origin.commit({f"f{i}.txt": str(i)}) for i in range(12)]
    return origin, shas


def test_shallow_clone_is_deepened_until_the_base_is_reachable(
    long_origin: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    origin, shas = long_origin
    clone = origin.clone(tmp_path / "clone", depth=1)
    assert clone.git("rev-parse", "--is-shallow-repository") == "true"
    env = github_env(tmp_path, "push", push_payload(shas[3], shas[-1]))
    cs = resolve(clone, env)
    assert (cs.base, cs.head, cs.base_reason) == (shas[3], shas[-1], "github-push")
    assert {c.path for c in cs.changes} == {f"f{i}.txt" for i in range(4, 12)}


def test_shallow_clone_first_parent_is_fetched_not_mistaken_for_a_root(
    long_origin: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    origin, shas = long_origin
    clone = origin.clone(tmp_path / "clone", depth=1)
    cs = resolve(clone)
    assert (cs.base, cs.base_reason) == (shas[-2], "first-parent")
    assert changes_of(cs) == {("A", "f11.txt", None)}


def test_shallow_clone_explicit_base_is_fetched(
    long_origin: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    origin, shas = long_origin
    clone = origin.clone(tmp_path / "clone", depth=2)
    cs = resolve(clone, base=shas[0])
    assert cs.base == shas[0] and len(cs.changes) == 11


def test_shallow_pull_request_merge_checkout_is_deepened(git_repo: GitRepo, tmp_path: Path) -> None:
    shas = pr_history(git_repo)
    clone = git_repo.clone(tmp_path / "clone", depth=1, branch="pr-merge")
    env = github_env(tmp_path, "pull_request", pull_request_payload(shas["M1"], shas["T2"]))
    cs = resolve(clone, env)
    assert (cs.base, cs.head, cs.base_reason) == (
        shas["A"], shas["merge"], "github-pull-request-merge-base",
    )  # fmt: skip
    assert changes_of(cs) == {
        ("A", "topic1.txt", None), ("M", "shared.txt", None), ("A", "main1.txt", None),
    }  # fmt: skip


def test_shallow_clone_base_that_never_appears_is_an_error(
    long_origin: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    origin, _ = long_origin
    clone = origin.clone(tmp_path / "clone", depth=1)
    with pytest.raises(GitError, match=r"even after fetching \d+ more commits.*fetch-depth: 0"):
        resolve(clone, base="ef" * 20)


def test_full_clone_missing_base_is_an_error_not_no_changes(
    long_origin: tuple[GitRepo, list[str]], tmp_path: Path
) -> None:
    origin, _ = long_origin
    clone = origin.clone(tmp_path / "clone")
    later = origin.commit({"later.txt": "l"})  # pushed after the clone was made
    with pytest.raises(GitError, match=rf"{later} \(--base\) is not a commit.*fetch-depth: 0"):
        resolve(clone, base=later)
    env = github_env(tmp_path, "merge_group", merge_group_payload(later, clone.rev()))
    with pytest.raises(GitError, match=r"merge_group\.base_sha.*fetch-depth: 0"):
        resolve(clone, env)


# ---------------------------------------------------------------------------------
# --working-tree
# ---------------------------------------------------------------------------------


def test_working_tree_adds_staged_unstaged_and_untracked_files(git_repo: GitRepo) -> None:
    git_repo.commit({".gitignore": "*.log\nbuild/\n", "a.txt": "a", "b.txt": "b", "c.txt": "c"})
    git_repo.commit({"in-range.txt": "r"})
    git_repo.write("a.txt", "unstaged edit")
    git_repo.write("staged.txt", "new")
    git_repo.git("add", "staged.txt")
    git_repo.remove("b.txt")
    git_repo.write("untracked dir/new file.txt", "u")
    git_repo.write("debug.log", "ignored")
    git_repo.write("build/out.bin", "ignored")
    git_repo.git("mv", "c.txt", "c-renamed.txt")

    cs = resolve(git_repo, working_tree=True)
    assert cs.base_reason == "first-parent+working-tree"
    assert cs.head == git_repo.rev()
    assert changes_of(cs) == {
        ("A", "in-range.txt", None),
        ("M", "a.txt", None),
        ("A", "staged.txt", None),
        ("D", "b.txt", None),
        ("A", "untracked dir/new file.txt", None),
        ("R", "c-renamed.txt", "c.txt"),
    }
    assert [c.path for c in cs.changes] == sorted(c.path for c in cs.changes)
    # without the flag, only the range
    assert changes_of(resolve(git_repo)) == {("A", "in-range.txt", None)}


def test_working_tree_on_a_clean_checkout_is_just_the_range(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, working_tree=True)
    assert changes_of(cs) == {("A", "b.txt", None)}
    assert cs.base_reason == "first-parent+working-tree"


def test_shallow_new_branch_push_fetches_the_default_branch(
    make_git_repo: Any, tmp_path: Path
) -> None:
    origin: GitRepo = make_git_repo("origin")
    origin.commit({"main0.txt": "m"})
    fork_point = origin.commit({"main1.txt": "m"})
    origin.git("checkout", "-q", "-b", "topic")
    origin.commit({"topic1.txt": "t"})
    head = origin.commit({"topic2.txt": "t"})
    origin.git("checkout", "-q", "main")
    origin.commit({"main2.txt": "m"})
    # what actions/checkout does by default: one commit of the pushed branch only
    clone = origin.clone(tmp_path / "clone", depth=1, branch="topic")
    assert clone.git("branch", "-r") == "origin/topic"
    payload = push_payload(ZEROS, head, ref="refs/heads/topic")
    cs = resolve(clone, github_env(tmp_path, "push", payload))
    assert (cs.base, cs.base_reason) == (fork_point, "github-push-new-branch-merge-base")
    assert changes_of(cs) == {("A", "topic1.txt", None), ("A", "topic2.txt", None)}


# ---------------------------------------------------------------------------------
# An all-zeros base: a new branch, compared with the default branch nobody named
# ---------------------------------------------------------------------------------


def forked_origin(origin: GitRepo) -> str:
    """main: M0 - M1 - M2; topic from M1: T1 - T2 (checked out). Returns M1, the fork point."""
    origin.commit({"main0.txt": "m"})
    fork_point = origin.commit({"main1.txt": "m"})
    origin.git("checkout", "-q", "-b", "topic")
    origin.commit({"topic1.txt": "t"})
    origin.commit({"topic2.txt": "t"})
    origin.git("checkout", "-q", "main")
    origin.commit({"main2.txt": "m"})
    origin.git("checkout", "-q", "topic")
    return fork_point


TOPIC_CHANGES = {("A", "topic1.txt", None), ("A", "topic2.txt", None)}


@pytest.mark.parametrize("zeros", [ZEROS, "0" * 64])
def test_explicit_zeros_base_uses_merge_base_with_origin_head(
    make_git_repo: Any, tmp_path: Path, zeros: str
) -> None:
    origin: GitRepo = make_git_repo("origin")
    fork_point = forked_origin(origin)
    origin.git("checkout", "-q", "main")
    clone = origin.clone(tmp_path / "clone")
    clone.git("checkout", "-q", "topic")
    assert clone.git("symbolic-ref", "refs/remotes/origin/HEAD") == "refs/remotes/origin/main"
    cs = resolve(clone, base=zeros)
    assert (cs.base, cs.head, cs.base_reason) == (
        fork_point, clone.rev(), "explicit-new-branch-merge-base",
    )  # fmt: skip
    assert changes_of(cs) == TOPIC_CHANGES


def test_explicit_zeros_base_without_a_remote_uses_the_local_main(git_repo: GitRepo) -> None:
    fork_point = forked_origin(git_repo)
    cs = resolve(git_repo, base=ZEROS)
    assert (cs.base, cs.base_reason) == (fork_point, "explicit-new-branch-merge-base")
    assert changes_of(cs) == TOPIC_CHANGES
    # the same with --head naming the branch while main is checked out
    git_repo.git("checkout", "-q", "main")
    cs = resolve(git_repo, base=ZEROS, head="topic")
    assert (cs.base, cs.base_reason) == (fork_point, "explicit-new-branch-merge-base")


def test_explicit_zeros_base_prefers_origin_main_to_a_stale_local_master(
    make_git_repo: Any, tmp_path: Path
) -> None:
    origin: GitRepo = make_git_repo("origin")
    fork_point = forked_origin(origin)
    clone = origin.clone(tmp_path / "clone")  # origin's HEAD is topic: origin/HEAD says topic
    clone.git("remote", "set-head", "origin", "--delete")
    clone.git("branch", "master", fork_point + "~1")
    cs = resolve(clone, base=ZEROS)
    assert (cs.base, cs.base_reason) == (fork_point, "explicit-new-branch-merge-base")


def test_explicit_zeros_base_in_a_shallow_ci_checkout_fetches_the_default_branch(
    make_git_repo: Any, tmp_path: Path
) -> None:
    origin: GitRepo = make_git_repo("origin")
    fork_point = forked_origin(origin)
    origin.git("checkout", "-q", "main")
    # what actions/checkout does by default: one commit of the pushed branch, no origin/HEAD
    clone = origin.clone(tmp_path / "clone", depth=1, branch="topic")
    assert clone.git("branch", "-r") == "origin/topic"
    env = {"GITHUB_REF": "refs/heads/topic"}
    cs = resolve(clone, env, base=ZEROS)
    assert (cs.base, cs.base_reason) == (fork_point, "explicit-new-branch-merge-base")
    assert changes_of(cs) == TOPIC_CHANGES


def test_explicit_zeros_base_without_a_default_branch_is_everything(git_repo: GitRepo) -> None:
    git_repo.git("checkout", "-q", "-b", "trunk")
    git_repo.commit({"a.txt": "a"})
    git_repo.git("checkout", "-q", "-b", "topic")
    head = git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, base=ZEROS)
    assert (cs.base, cs.head, cs.base_reason) == (
        None, head, "explicit-new-branch-no-merge-base",
    )  # fmt: skip
    assert changes_of(cs) == {("A", "a.txt", None), ("A", "b.txt", None)}


def test_explicit_zeros_base_on_the_default_branch_itself_is_everything(
    git_repo: GitRepo,
) -> None:
    git_repo.commit({"a.txt": "a"})
    git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, base=ZEROS)  # main checked out: the default branch is being created
    assert (cs.base, cs.base_reason) == (None, "explicit-new-branch-no-merge-base")
    assert len(cs.changes) == 2
    cs = resolve(git_repo, {"GITHUB_REF": "refs/heads/main"}, base=ZEROS, head="main")
    assert (cs.base, cs.base_reason) == (None, "explicit-new-branch-no-merge-base")


def test_explicit_zeros_base_with_unrelated_histories_is_everything(git_repo: GitRepo) -> None:
    git_repo.commit({"a.txt": "a"})
    git_repo.git("checkout", "-q", "--orphan", "other")
    git_repo.git("rm", "-q", "-rf", ".")
    git_repo.commit({"b.txt": "b"})
    cs = resolve(git_repo, base=ZEROS)
    assert (cs.base, cs.base_reason) == (None, "explicit-new-branch-no-merge-base")
    assert changes_of(cs) == {("A", "b.txt", None)}


def test_cloudbuild_zeros_base_sha_is_a_new_branch(git_repo: GitRepo) -> None:
    fork_point = forked_origin(git_repo)
    git_repo.git("checkout", "-q", "--detach")  # how Cloud Build checks out
    cs = resolve(git_repo, {"_BASE_SHA": ZEROS, "BRANCH_NAME": "topic"})
    assert (cs.base, cs.base_reason) == (fork_point, "cloudbuild-new-branch-merge-base")
    assert changes_of(cs) == TOPIC_CHANGES
    git_repo.git("checkout", "-q", "--detach", "main")
    cs = resolve(git_repo, {"_BASE_SHA": ZEROS, "BRANCH_NAME": "main"})
    assert (cs.base, cs.base_reason) == (None, "cloudbuild-new-branch-no-merge-base")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "M", "D", "T", "R100", "R075", "C050"]),
            st.text(
                st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                min_size=1,
                max_size=8,
            ),
            st.text(
                st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                min_size=1,
                max_size=8,
            ),
        ),
        max_size=20,
    )
)
def test_name_status_parses_as_the_format_reads(entries: list[tuple[str, str, str]]) -> None:
    """With and without renames (the fast path reads pairs; the general one reads each
    entry's fields), every entry is read as git's -z format says."""
    raw = b""
    expected = []
    for status, path, old in entries:
        if status[0] in "RC":
            raw += f"{status}\0{old}\0{path}\0".encode("utf-8", "surrogateescape")
            expected.append(ChangedPath("R", path, old) if status[0] == "R"
                            else ChangedPath("A", path, None))  # fmt: skip
        else:
            raw += f"{status}\0{path}\0".encode("utf-8", "surrogateescape")
            expected.append(ChangedPath(status, path, None))  # type: ignore[arg-type]
    assert parse_name_status(raw) == tuple(expected)
