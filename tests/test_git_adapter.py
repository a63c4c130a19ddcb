"""The git adapter against real temporary repositories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.git import Commit, Git
from orchestrator.adapters.process import CommandNotFound
from orchestrator.errors import GitError
from tests.fixtures.gitrepo import GitRepo

EMPTY_TREE_SHA1 = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def test_read_commits_resolves_many_revisions_at_once(git_repo: GitRepo) -> None:
    root = git_repo.commit({"a": "a"})
    second = git_repo.commit({"b": "b"})
    git_repo.git("tag", "-a", "-m", "annotated", "v1", root)
    git = Git(git_repo.path)
    assert git.read_commits(["HEAD", "v1", "nope", "HEAD^{tree}", root[:10], "main"]) == (
        Commit(second, (root,)),
        Commit(root, ()),
        None,
        None,
        Commit(root, ()),
        Commit(second, (root,)),
    )
    assert git.read_commits([]) == ()


def test_read_commits_reports_all_parents_of_a_merge(git_repo: GitRepo) -> None:
    git_repo.commit({"a": "a"})
    git_repo.git("checkout", "-q", "-b", "topic")
    topic = git_repo.commit({"t": "t"})
    git_repo.git("checkout", "-q", "main")
    mainline = git_repo.commit({"m": "m"})
    merge = git_repo.merge("topic")
    assert Git(git_repo.path).read_commit(merge) == Commit(merge, (mainline, topic))


def test_read_commits_gives_real_parents_in_a_shallow_clone(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    parent = git_repo.commit({"a": "a"})
    head = git_repo.commit({"b": "b"})
    clone = git_repo.clone(tmp_path / "clone", depth=1)
    git = Git(clone.path)
    assert git.read_commit("HEAD") == Commit(head, (parent,))  # not a root commit
    assert git.read_commit(parent) is None  # just not fetched


def test_read_commits_rejects_revisions_with_newlines(git_repo: GitRepo) -> None:
    git_repo.commit({"a": "a"})
    with pytest.raises(GitError, match="not a valid revision"):
        Git(git_repo.path).read_commits(["HEAD\nHEAD"])


def test_merge_base_and_is_ancestor(git_repo: GitRepo) -> None:
    fork = git_repo.commit({"a": "a"})
    git_repo.git("checkout", "-q", "-b", "topic")
    topic = git_repo.commit({"t": "t"})
    git_repo.git("checkout", "-q", "main")
    main = git_repo.commit({"m": "m"})
    git_repo.git("checkout", "-q", "--orphan", "lonely")
    lonely = git_repo.commit({"l": "l"})
    git = Git(git_repo.path)
    assert git.merge_base(topic, main) == fork
    assert git.merge_base(topic, lonely) is None
    assert git.is_ancestor(fork, topic)
    assert not git.is_ancestor(topic, main)
    with pytest.raises(GitError, match="merge-base"):
        git.merge_base("nope", main)
    with pytest.raises(GitError, match="ancestor"):
        git.is_ancestor("nope", main)


def test_empty_tree_matches_the_object_format(git_repo: GitRepo, tmp_path: Path) -> None:
    assert Git(git_repo.path).empty_tree() == EMPTY_TREE_SHA1
    sha256 = GitRepo(tmp_path / "sha256", init=False)
    sha256.path.mkdir()
    sha256.git("init", "-q", "-b", "main", "--object-format=sha256")
    sha256.commit({"a.txt": "a"})
    git = Git(sha256.path)
    empty = git.empty_tree()
    assert len(empty) == 64
    assert git.diff_name_status(empty, "HEAD") == b"A\0a.txt\0"


def test_diff_and_status_return_raw_nul_separated_bytes(git_repo: GitRepo) -> None:
    git_repo.commit({'caf\u00e9 "x".txt': "a", "gone": "g"})
    git_repo.commit({'caf\u00e9 "x".txt': "b", "gone": None})
    git_repo.git("config", "core.quotepath", "true")
    git = Git(git_repo.path)
    assert git.diff_name_status("HEAD~1", "HEAD") == 'M\0caf\u00e9 "x".txt\0D\0gone\0'.encode()
    git_repo.write("new\nfile", "n")
    assert git.status_porcelain() == b"?? new\nfile\0"


def test_hook_variables_do_not_redirect_the_adapter(git_repo: GitRepo, tmp_path: Path) -> None:
    sha = git_repo.commit({"a": "a"})
    env = {**os.environ, "GIT_DIR": str(tmp_path / "elsewhere"), "GIT_INDEX_FILE": "/nonexistent"}
    assert Git(git_repo.path, env=env).read_commit("HEAD") == Commit(sha, ())


def test_missing_git_is_a_clear_error(git_repo: GitRepo) -> None:
    with pytest.raises(CommandNotFound, match="'git' was not found"):
        Git(git_repo.path, env={"PATH": ""}).read_commit("HEAD")


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"git cat-file failed in .*not a git repository"):
        Git(tmp_path).read_commit("HEAD")


# -- default branch ------------------------------------------------------------------------


def test_default_branch(make_git_repo: Any, tmp_path: Path) -> None:
    origin: GitRepo = make_git_repo("origin")
    origin.commit({"a": "a"})
    origin.git("branch", "trunk")
    clone = origin.clone(tmp_path / "clone")
    git = Git(clone.path)
    assert git.default_branch() == "refs/remotes/origin/main"  # from origin/HEAD
    assert git.default_branch("main") == "refs/remotes/origin/main"
    assert git.default_branch("refs/heads/trunk") == "refs/remotes/origin/trunk"
    assert git.default_branch("missing") is None
    assert Git(origin.path).default_branch("main") == "refs/heads/main"  # a local branch
    assert Git(origin.path).default_branch() is None  # no origin/HEAD


# -- shallow clones --------------------------------------------------------------------------


def test_deepen_and_unshallow(git_repo: GitRepo, tmp_path: Path) -> None:
    shas = [git_repo.commit({"f": str(i)}) for i in range(6)]
    clone = git_repo.clone(tmp_path / "clone", depth=1)
    git = Git(clone.path)
    assert git.is_shallow()
    assert git.read_commit(shas[3]) is None
    git.deepen(2)
    assert git.read_commit(shas[3]) is not None and git.read_commit(shas[2]) is None
    assert git.is_shallow()
    git.unshallow()
    assert not git.is_shallow()
    assert git.read_commit(shas[0]) == Commit(shas[0], ())
    assert not Git(git_repo.path).is_shallow()


def test_deepen_without_a_remote_says_how_to_fix_it(git_repo: GitRepo) -> None:
    git_repo.commit({"a": "a"})
    with pytest.raises(
        GitError, match=r"could not fetch more history from 'origin'.*fetch-depth: 0"
    ):
        Git(git_repo.path).deepen(10)


# -- existing directories ---------------------------------------------------------------------


DIRS = [
    "components/trainer",
    "components/trainer/",
    "./components",
    "components/missing",
    "components/trainer/Dockerfile",  # a file, not a directory
    'with space/and "quote"',
    "new\nline",
    "",
    ".",
    "nowhere",
]


def test_existing_dirs_at_head(git_repo: GitRepo) -> None:
    git_repo.commit({
        "components/trainer/Dockerfile": "FROM x",
        "with space/and \"quote\"/f": "f",
        "new\nline/f": "f",
    })  # fmt: skip
    head = git_repo.rev()
    git_repo.commit({"components/trainer/Dockerfile": None, "later/f": "f"})
    found = Git(git_repo.path).existing_dirs(head, [*DIRS, "later"])
    assert found == frozenset({
        "components/trainer", "components/trainer/", "./components",
        "with space/and \"quote\"", "new\nline", "", ".",
    })  # fmt: skip


def test_existing_dirs_in_the_working_tree(git_repo: GitRepo) -> None:
    git_repo.commit({"components/trainer/Dockerfile": "FROM x"})
    git_repo.write("untracked/dir/f", "f")
    found = Git(git_repo.path).existing_dirs("HEAD", ["components/trainer", "untracked/dir",
                                                      "nowhere"], working_tree=True)  # fmt: skip
    assert found == frozenset({"components/trainer", "untracked/dir"})
    assert Git(git_repo.path).existing_dirs("HEAD", []) == frozenset()
