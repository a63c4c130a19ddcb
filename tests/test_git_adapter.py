"""The git adapter against real temporary repositories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.adapters.git import Commit, FetchFailed, Git, git_reason
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


def ambiguous_commits(repo: GitRepo, count: int = 1000) -> tuple[str, list[str]]:
    """Give ``repo`` a branch ``many`` of ``count`` real commits (one ``git fast-import``),
    enough that two of them share a 4-hex-digit prefix; return that prefix and the commits
    git names for it.
    """
    stream = b"".join(
        b"commit refs/heads/many\ncommitter T <t@example.com> %d +0000\ndata %d\n%s\n"
        % (1_700_000_000 + i, len(f"commit {i}\n"), f"commit {i}\n".encode())
        for i in range(count)
    )
    repo.git("fast-import", "--quiet", input=stream)
    by_prefix: dict[str, list[str]] = {}
    for sha in repo.git("rev-list", "refs/heads/many").split():
        by_prefix.setdefault(sha[:4], []).append(sha)
    prefix = min(p for p, shas in by_prefix.items() if len(shas) > 1)
    candidates = repo.git("rev-parse", f"--disambiguate={prefix}").split()
    assert len(candidates) >= 2  # what git itself sees
    return prefix, candidates


def test_read_commits_says_an_ambiguous_short_sha_is_ambiguous(git_repo: GitRepo) -> None:
    git_repo.commit({"a": "a"})
    prefix, candidates = ambiguous_commits(git_repo)
    git = Git(git_repo.path)
    # git 2.39 answers "<prefix>^{commit} missing" for these, never "ambiguous"
    for rev in (prefix, f"{prefix}~1", prefix.upper()):
        with pytest.raises(GitError) as caught:
            git.read_commits(["HEAD", rev])
        assert str(caught.value) == f"'{rev}' is ambiguous in {git_repo.path}; give a longer sha."
    # a longer prefix is not; other missing revisions are still just missing
    first, *_ = git.read_commits([candidates[0][:12], "nope", "HEAD^{tree}"])
    assert first is not None and first.sha == candidates[0]
    assert git.read_commits(["nope", "HEAD^{tree}"]) == (None, None)


def test_a_prefix_shared_by_one_commit_and_other_objects_is_that_commit(
    git_repo: GitRepo,
) -> None:
    git_repo.commit({"a": "a"})
    ambiguous_commits(git_repo)  # 1000 commits, and then 3000 blobs
    blobs = b"".join(b"blob\ndata %d\n%s\n" % (len(b"%d" % i), b"%d" % i) for i in range(3000))
    git_repo.git("fast-import", "--quiet", input=blobs)
    objects = git_repo.git(
        "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"
    )
    kinds: dict[str, list[tuple[str, str]]] = {}
    for line in objects.splitlines():
        sha, kind = line.split()
        kinds.setdefault(sha[:4], []).append((sha, kind))
    prefix, found = min(
        (p, objs) for p, objs in kinds.items()
        if [k for _, k in objs].count("commit") == 1 and len(objs) > 1
    )  # fmt: skip
    (commit,) = [sha for sha, kind in found if kind == "commit"]
    # git resolves prefix^{commit} to the one commit; so does the adapter
    resolved = Git(git_repo.path).read_commit(prefix)
    assert resolved is not None and resolved.sha == commit


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


def test_remote_default_branch_asks_the_remote(make_git_repo: Any, tmp_path: Path) -> None:
    origin: GitRepo = make_git_repo("origin")
    origin.commit({"a": "a"})
    origin.git("checkout", "-q", "-b", "trunk")
    origin.git("symbolic-ref", "HEAD", "refs/heads/trunk")
    clone = origin.clone(tmp_path / "clone", depth=1, branch="main")
    assert clone.git("branch", "-r") == "origin/main"  # the clone has no trunk, no origin/HEAD
    assert Git(clone.path).remote_default_branch() == "trunk"
    assert Git(origin.path).remote_default_branch() is None  # no remote 'origin'


def test_toplevel_is_the_resolved_work_tree_root(git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.commit({"dir/a": "a"})
    (tmp_path / "link").symlink_to(git_repo.path)
    assert Git(tmp_path / "link" / "dir").toplevel() == git_repo.path.resolve()
    bare = tmp_path / "bare.git"
    git_repo.git("clone", "-q", "--bare", str(git_repo.path), str(bare))
    assert Git(bare).toplevel() is None


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
    ) as error:
        Git(git_repo.path).deepen(10)
    assert isinstance(error.value, FetchFailed)
    # git's reason, not the generic advice it prints after it
    assert error.value.reason == "'origin' does not appear to be a git repository"


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            b"fatal: '/x/origin' does not appear to be a git repository\n"
            b"fatal: Could not read from remote repository.\n\n"
            b"Please make sure you have the correct access rights\nand the repository exists.\n",
            "'/x/origin' does not appear to be a git repository",
        ),
        (b"warning: a\nerror: pathspec 'x' did not match\n", "pathspec 'x' did not match"),
        (b"something\nlast words\n\n", "last words"),
        (b"fatal: \n", "fatal:"),
        (b"", ""),
    ],
)
def test_git_reason_is_the_first_fatal_or_error_line(stderr: bytes, reason: str) -> None:
    assert git_reason(stderr) == reason


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


def test_read_files_reads_many_files_in_one_call(git_repo: GitRepo) -> None:
    head = git_repo.commit({"a/.dockerignore": "*.md\n", "b/file": "x", "c d/.dockerignore": ""})
    found = Git(git_repo.path).read_files(
        head, ["a/.dockerignore", "b", "missing", "c d/.dockerignore"]
    )
    assert found == {
        "a/.dockerignore": b"*.md\n",
        "b": None,  # a directory is not a file
        "missing": None,
        "c d/.dockerignore": b"",
    }


def test_working_tree_entries_equal_the_commits_for_an_unchanged_checkout(
    git_repo: GitRepo,
) -> None:
    head = git_repo.commit(
        {
            "app/main.py": "print(1)\n",
            "app/run.sh": "#!/bin/sh\n",
            "app/link": GitRepo.Symlink("main.py"),
            "app/é x.txt": b"\xff\x00binary",
            "other/file": "o",
            ".gitignore": "*.log\n",
        }
    )
    (git_repo.path / "app" / "run.sh").chmod(0o755)
    git_repo.git("add", "--all")
    head = git_repo.commit()
    git = Git(git_repo.path)
    for directory in ("app", ""):
        assert git.working_tree_entries(directory) == git.tree_entries(head, directory)
    # ignored files do not count; untracked ones and edits do, with git's own object ids
    git_repo.write("app/debug.log", "noise")
    assert git.working_tree_entries("app") == git.tree_entries(head, "app")
    git_repo.write("app/new.py", "x = 1\n")
    git_repo.write("app/main.py", "print(2)\n")
    after = git_repo.commit()
    assert git.working_tree_entries("app") == git.tree_entries(after, "app")


# -- directories named by their tree ids ---------------------------------------------------

#: names whose order in a tree object differs from plain string order ("a" the directory
#: sorts as "a/", after "a.b" and "a-b"), an executable, a symbolic link, non-ASCII
TRICKY_TREE = {
    "d/a/f": "in a directory named a",
    "d/a.b": "a file",
    "d/a-b": "another",
    "d/a0": "digits",
    "d/run.sh": "#!/bin/sh\n",
    "d/café/x": "accented",
    "d/link": GitRepo.Symlink("a.b"),
    "d/deep/er/and/deeper/f": "nested",
    "top": "root file",
}


@pytest.mark.parametrize("object_format", ["sha1", "sha256"])
def test_content_ids_are_the_tree_ids_git_gives(tmp_path: Path, object_format: str) -> None:
    """contexts.content_id computes git's tree hash; a commit's directories are asked of git
    directly, the working tree's and a copy without git's are computed: all three agree."""
    from orchestrator.contexts import content_id
    from orchestrator.trees import CommitTree, DiskTree, WorkingTree

    repo = GitRepo(tmp_path / object_format, init=False)
    repo.path.mkdir(parents=True)
    repo.git("init", "-q", "-b", "main", f"--object-format={object_format}")
    repo.write("d/run.sh", "#!/bin/sh\n")
    (repo.path / "d/run.sh").chmod(0o755)
    head = repo.commit({k: v for k, v in TRICKY_TREE.items() if k != "d/run.sh"})
    # a submodule's commit in the tree (a gitlink), as git stores it
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{head},d/sub")
    head = repo.commit(message="gitlink")
    git = Git(repo.path)
    dirs = ["", "d", "d/a", "d/café", "d/deep/er", "missing", "top"]
    expected = {d: (repo.git("rev-parse", f"HEAD:{d}") if d not in ("missing", "top") else None)
                for d in dirs}  # fmt: skip
    expected[""] = repo.git("rev-parse", "HEAD^{tree}")
    assert CommitTree(git, head).content_ids(dirs) == expected
    for d in ("", "d", "d/a", "d/café"):
        assert content_id(git.tree_entries(head, d), d) == expected[d]
    listed = WorkingTree(git).content_ids(["d/a", "d/café", "d/deep/er"])
    assert listed == {d: expected[d] for d in listed}
    if object_format == "sha1":  # a copy without git hashes as git does by default
        copy = repo.path.parent / "copy"
        shutil.copytree(repo.path, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        assert DiskTree(copy).content_ids(["d/a", "d/café"]) == {
            "d/a": expected["d/a"], "d/café": expected["d/café"]
        }  # fmt: skip


def test_a_commits_files_and_directories_are_read_level_by_level(git_repo: GitRepo) -> None:
    head = git_repo.commit({**TRICKY_TREE, "new\nline/f": "nl"})
    git = Git(git_repo.path)
    snapshot = git.snapshot(head)
    assert git.snapshot(head) is snapshot  # a full commit id cannot move: kept
    found = snapshot.read_files(["d/a.b", "d/link", "d/a", "d/sub", "new\nline/f", "nowhere/f",
                                 "top", "d/deep/er/and/deeper/f", ""])  # fmt: skip
    assert found == {
        "d/a.b": b"a file", "d/link": b"a.b", "d/a": None, "d/sub": None,
        "new\nline/f": b"nl", "nowhere/f": None, "top": b"root file",
        "d/deep/er/and/deeper/f": b"nested", "": None,
    }  # fmt: skip
    assert snapshot.tree_ids(["new\nline", "d/link", "top"]) == {
        "new\nline": git_repo.git("rev-parse", "HEAD:new\nline"), "d/link": None, "top": None
    }  # fmt: skip
