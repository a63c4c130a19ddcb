"""Changed paths: NUL-separated parsing with literals, and resolve_changes on real repositories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.git import Git
from orchestrator.changes import (
    merge_changes,
    parse_name_status,
    parse_status_porcelain,
    resolve_changes,
)
from orchestrator.errors import GitError
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
