"""Which paths changed between a base and a head commit, and why that base.

Parsing (:func:`parse_name_status`, :func:`parse_status_porcelain`) is pure and works on
git's NUL-separated output, so paths arrive exactly as git stores them (unicode, spaces,
quotes, ``$``, newlines) whatever ``core.quotepath`` says. Bytes that are not UTF-8
survive as surrogate escapes (``path.encode("utf-8", "surrogateescape")`` gives them back).

:func:`resolve_changes` picks the base, makes sure the history it needs is in the clone,
and diffs. The base, in order of precedence:

==========================================  =================================================
``base_reason``                             base
==========================================  =================================================
``explicit``                                ``--base``
``explicit-new-branch-merge-base``          ``--base`` all zeros (40, or 64 in a sha256
                                            repository: what ``${{ github.event.before }}``
                                            is for a new branch): merge-base of head and the
                                            default branch (see below)
``explicit-new-branch-no-merge-base``       ... with no default branch to be found, no common
                                            history, or head on the default branch itself:
                                            none, everything at head changed
``github-push``                             the push's ``before``
``github-push-new-branch-merge-base``       new branch (``before`` all zeros): merge-base of
                                            head and the default branch (fetched into a
                                            shallow clone that lacks it)
``github-push-new-branch-no-merge-base``    new branch whose default branch is not in the
                                            clone, has no common history, or is the branch
                                            being created: none, everything at head changed
``github-forced-push-merge-base``           forced push whose ``before`` is not an ancestor of
                                            head: merge-base of ``before`` and head
``github-forced-push-default-branch-merge-base``  forced push whose ``before`` is gone from the
                                            history: merge-base of head and the default branch
``github-forced-push-no-merge-base``        ... and that cannot be found either: everything
``github-pull-request-merge-base``          merge-base of the PR's base and head shas
``github-pull-request-no-merge-base``       PR with unrelated histories: everything
``github-merge-group``                      the merge group's ``base_sha``
``cloudbuild-base-sha``                     ``_BASE_SHA`` from the environment
``cloudbuild-new-branch-merge-base``        ``_BASE_SHA`` all zeros: as for ``--base``
``cloudbuild-new-branch-no-merge-base``     ... and as ``explicit-new-branch-no-merge-base``
``ledger``                                  the commit the deploy ledger records as deployed
                                            (``--since-deployed``, and by default in CI)
``ledger-merge-base``                       ... where it meets head, when the deployed commit
                                            is not an ancestor of head (a rewritten history)
``ledger-no-merge-base``                    ... and when they share no history: everything
``first-parent``                            head's first parent (merges: the mainline side)
``root-commit``                             head has no parent: the empty tree, everything
==========================================  =================================================

A base of all zeros names no commit; like GitHub's own new-branch push it means "a
new branch", so the range starts where head left the default branch. When nothing names
that branch (an all-zeros ``--base`` or ``_BASE_SHA``; a GitHub push payload does), it is
the first of these in the clone:

1. ``refs/remotes/origin/HEAD``, what ``git clone`` records as the remote's default branch
   (and ``git remote set-head origin --auto`` sets), so it is exact for an ordinary clone;
2. ``origin/main``, then ``origin/master``: GitHub's default name, then git's historical
   one, as remote-tracking branches, which are what the remote has;
3. the local ``main``, then ``master``;
4. otherwise the remote is asked (``git ls-remote --symref origin HEAD``) and, in a shallow
   clone, that branch is fetched: ``actions/checkout`` records no ``origin/HEAD`` and with
   its default ``fetch-depth: 1`` fetches only the pushed branch.

The remote is asked last because the clone usually knows, and asking needs the network.
The branch being built is ``GITHUB_REF`` (``refs/heads/...``), else Cloud Build's
``BRANCH_NAME``, else (for ``--head HEAD``) the checked-out branch; when it is the default
branch itself, all of it is new and everything at head changed.

With ``working_tree=True`` the reason gets a ``+working-tree`` suffix and the staged,
unstaged and untracked (not ignored) files of the checkout are added to the range's
changes (a path already changed in the range keeps its range entry).

History that is not in the clone is never mistaken for "no changes": a shallow clone is
deepened (``git fetch --deepen``) step by step up to :data:`DEEPEN_LIMIT` commits until
the commits it needs are there, and anything still missing is a
:class:`~orchestrator.errors.GitError` (exit 2) that says how to fetch it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence

from orchestrator.adapters.git import Commit, FetchFailed, Git
from orchestrator.ci_env import BaseHint, ci_base_hint, is_null_sha
from orchestrator.errors import GitError, InputError
from orchestrator.model import ChangedPath, ChangeSet, ChangeStatus

#: How many commits of history a shallow clone may be deepened by, in total, and in
#: which steps (most bases are a few commits away; a long-lived branch needs more).
DEEPEN_STEPS: tuple[int, ...] = (100, 400, 1_500, 8_000)
DEEPEN_LIMIT = sum(DEEPEN_STEPS)

WORKING_TREE_SUFFIX = "+working-tree"

_FETCH_HINT = "fetch the full history (GitHub Actions: actions/checkout with fetch-depth: 0)"

#: Where to look for the default branch when nothing names it, after ``origin/HEAD``
#: (see the module docstring).
CONVENTIONAL_DEFAULT_BRANCHES = (
    "refs/remotes/origin/main",
    "refs/remotes/origin/master",
    "refs/heads/main",
    "refs/heads/master",
)

_SIMPLE_STATUSES: dict[str, ChangeStatus] = {"A": "A", "M": "M", "D": "D", "T": "T"}
_new_changed_path = functools.partial(tuple.__new__, ChangedPath)


# ---------------------------------------------------------------------------------
# Parsing (pure)
# ---------------------------------------------------------------------------------


def parse_name_status(raw: bytes) -> tuple[ChangedPath, ...]:
    """Parse ``git diff --name-status -z`` output.

    ``A``/``M``/``D``/``T`` keep their letter; ``R<score>`` becomes ``R`` with ``old_path``;
    a copy ``C<score>`` counts as the new path added. Anything else is a GitError.
    """
    if not raw:
        return ()
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    if fields[-1] == "":
        fields.pop()
    statuses = fields[0::2]
    if len(fields) % 2 == 0 and _SIMPLE_STATUSES.keys() >= set(statuses):
        # no rename or copy (the usual case): pairs of status and path, built without a
        # Python-level loop (20,000 paths in a few milliseconds)
        return tuple(map(_new_changed_path, zip(statuses, fields[1::2], itertools.repeat(None))))
    changes: list[ChangedPath] = []
    append = changes.append
    make = ChangedPath
    simple = _SIMPLE_STATUSES
    count = len(fields)
    i = 0
    try:
        while i < count:
            status = fields[i]
            letter = simple.get(status[:1])
            if letter is not None:
                append(make(letter, fields[i + 1], None))
                i += 2
            elif status[:1] == "R":
                append(make("R", fields[i + 2], fields[i + 1]))
                i += 3
            elif status[:1] == "C":
                append(make("A", fields[i + 2], None))
                i += 3
            else:
                raise GitError(
                    f"git diff reported an unknown change status {status!r}"
                    f"{_for_path(fields, i + 1)}; this git version is not supported."
                )
    except IndexError:
        raise GitError(
            f"git diff output ended in the middle of an entry (status {fields[i]!r})."
        ) from None
    return tuple(changes)


def parse_status_porcelain(raw: bytes) -> tuple[ChangedPath, ...]:
    """Parse ``git status --porcelain=v1 -z`` output into changes relative to HEAD.

    Untracked files are added; a rename (in the index or the working tree) keeps both
    paths; a copy is the new path added; a path that is added in the index counts as
    added even if changed again afterwards; unmerged paths count as modified.
    """
    if not raw:
        return ()
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    if fields[-1] == "":
        fields.pop()
    changes: list[ChangedPath] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        if len(entry) < 4 or entry[2] != " ":
            raise GitError(f"git status printed an entry this tool cannot read: {entry!r}.")
        xy, path = entry[:2], entry[3:]
        i += 1
        if "R" in xy or "C" in xy:
            if i >= len(fields):
                raise GitError(f"git status output ended in the middle of {entry!r}.")
            original = fields[i]
            i += 1
            changes.append(
                ChangedPath("R", path, original) if "R" in xy else ChangedPath("A", path)
            )
        elif xy == "??" or "A" in xy:
            changes.append(ChangedPath("A", path))
        elif "U" in xy or xy in ("DD",):
            changes.append(ChangedPath("M", path))
        elif "D" in xy:
            changes.append(ChangedPath("D", path))
        elif "T" in xy:
            changes.append(ChangedPath("T", path))
        elif "M" in xy:
            changes.append(ChangedPath("M", path))
        else:
            raise GitError(f"git status reported an unknown status {xy!r} for {path!r}.")
    return tuple(changes)


def merge_changes(
    range_changes: Sequence[ChangedPath], extra: Sequence[ChangedPath]
) -> tuple[ChangedPath, ...]:
    """The range's changes plus those of ``extra`` whose paths the range does not touch,
    sorted by path.
    """
    seen = {p for change in range_changes for p in change.touched()}
    added = [c for c in extra if not all(p in seen for p in c.touched())]
    if not added:
        return tuple(range_changes)
    return tuple(sorted((*range_changes, *added), key=lambda c: (c.path, c.old_path or "")))


def _for_path(fields: Sequence[str], index: int) -> str:
    return f" for {fields[index]!r}" if index < len(fields) else ""


# ---------------------------------------------------------------------------------
# Resolving the range (talks to git through the adapter)
# ---------------------------------------------------------------------------------


def resolve_changes(
    git: Git,
    *,
    base: str | None,
    head: str = "HEAD",
    working_tree: bool = False,
    env: Mapping[str, str],
    deployed: str | None = None,
) -> ChangeSet:
    """The changes between the chosen base and ``head`` (see the module docstring).

    ``env`` is the environment to read CI variables from (pass ``os.environ`` from the
    CLI; tests pass their own). An explicit ``base`` wins over anything in ``env``.
    ``deployed`` is the commit the deploy ledger records: when given (and no explicit
    ``base``), it is the base, so that everything since the last deploy is planned.
    """
    history = _History(git)
    base_sha: str | None
    if base is None and deployed is not None:
        head_commit = history.require(head, history.read([head])[0], "--head")
        base_sha, reason = _from_ledger(history, deployed, head_commit)
    elif base is not None and is_null_sha(base):
        head_commit = history.require(head, history.read([head])[0], "--head")
        base_sha, reason = _unnamed_new_branch(history, head_commit, head, env, "explicit")
    elif base is not None:
        read_head, read_base = history.read([head, base])
        head_commit = history.require(head, read_head, "--head")
        base_sha = history.require(base, read_base, "--base").sha
        reason = "explicit"
    else:
        head_commit = history.require(head, history.read([head])[0], "--head")
        hint = ci_base_hint(env)
        if hint is None:
            base_sha, reason = _first_parent(head_commit)
        else:
            base_sha, reason = _from_hint(history, hint, head_commit, head, env)

    if base_sha is None:
        changes = parse_name_status(git.diff_name_status(git.empty_tree(), head_commit.sha))
    else:
        changes = parse_name_status(history.diff(base_sha, head_commit.sha))
    if working_tree:
        changes = merge_changes(changes, parse_status_porcelain(git.status_porcelain()))
        reason += WORKING_TREE_SUFFIX
    return ChangeSet(base=base_sha, head=head_commit.sha, base_reason=reason, changes=changes)


def require_head(git: Git, head: str) -> Commit:
    """The commit ``--head`` names, deepening a shallow clone to find it; a
    :class:`GitError` (the same one planning gives) when it is not there.
    """
    history = _History(git)
    return history.require(head, history.read([head])[0], "--head")


def _from_ledger(history: _History, deployed: str, head: Commit) -> tuple[str | None, str]:
    """The deployed commit, or where it meets head when history was rewritten since."""
    if history.find(deployed) is None:
        raise GitError(
            f"the deploy ledger records {deployed}, which is not in the clone at "
            f"{history.git.repo}; {_FETCH_HINT}, or pass --base."
        )
    if deployed == head.sha or history.git.is_ancestor(deployed, head.sha):
        return deployed, "ledger"
    merge_base = history.merge_base(deployed, head.sha)
    if merge_base is None:
        return None, "ledger-no-merge-base"
    return merge_base, "ledger-merge-base"


def _first_parent(head: Commit) -> tuple[str | None, str]:
    if not head.parents:
        return None, "root-commit"
    return head.parents[0], "first-parent"


def _from_hint(
    history: _History, hint: BaseHint, head: Commit, head_rev: str, env: Mapping[str, str]
) -> tuple[str | None, str]:
    if hint.kind == "cloudbuild":
        if hint.base is None:  # all zeros
            return _unnamed_new_branch(history, head, head_rev, env, "cloudbuild")
        sha = _given(hint.base, "_BASE_SHA")
        return history.require_sha(sha, "_BASE_SHA"), "cloudbuild-base-sha"
    if hint.kind == "github-merge-group":
        sha = _given(hint.base, "merge_group.base_sha")
        return history.require_sha(sha, "merge_group.base_sha"), "github-merge-group"
    if hint.kind == "github-pull-request":
        pr_base = _given(hint.base, "pull_request.base.sha")
        pr_head = _given(hint.head, "pull_request.head.sha")
        pr_base = history.require_sha(pr_base, "pull_request.base.sha")
        pr_head = history.require_sha(pr_head, "pull_request.head.sha")
        merge_base = history.merge_base(pr_base, pr_head)
        if merge_base is None:
            return None, "github-pull-request-no-merge-base"
        return merge_base, "github-pull-request-merge-base"
    # push
    if hint.base is None:
        return _new_branch(history, hint, head)
    if not hint.forced:
        return history.require_sha(hint.base, "the push's 'before'"), "github-push"
    # A forced push may have rewritten `before` away: diff from where the histories meet.
    if history.find(hint.base) is not None:
        merge_base = history.merge_base(hint.base, head.sha)
        if merge_base == hint.base:
            return merge_base, "github-push"
        if merge_base is not None:
            return merge_base, "github-forced-push-merge-base"
    default = _default_branch_merge_base(history, hint, head)
    if default is None:
        return None, "github-forced-push-no-merge-base"
    return default, "github-forced-push-default-branch-merge-base"


def _given(value: str | None, name: str) -> str:
    if not value:
        raise InputError(f"the CI environment gives no {name}; pass --base.")
    return value


def _new_branch(history: _History, hint: BaseHint, head: Commit) -> tuple[str | None, str]:
    merge_base = _default_branch_merge_base(history, hint, head)
    if merge_base is None:
        return None, "github-push-new-branch-no-merge-base"
    return merge_base, "github-push-new-branch-merge-base"


def _default_branch_merge_base(history: _History, hint: BaseHint, head: Commit) -> str | None:
    if hint.default_branch and hint.ref == f"refs/heads/{hint.default_branch}":
        return None  # the default branch itself is being created: all of it is new
    ref = history.git.default_branch(hint.default_branch)
    if ref is None and hint.default_branch and history.is_shallow():
        # A CI checkout (fetch-depth: 1) has only the pushed branch: fetch the default one.
        ref = history.git.fetch_branch(hint.default_branch, depth=DEEPEN_STEPS[0])
    if ref is None:
        return None
    return history.merge_base(ref, head.sha)


def _unnamed_new_branch(
    history: _History, head: Commit, head_rev: str, env: Mapping[str, str], source: str
) -> tuple[str | None, str]:
    """An all-zeros base from ``source`` (``explicit``, ``cloudbuild``): a new branch,
    compared with the default branch that nothing names (see the module docstring).
    """
    default = _unnamed_default_branch(history)
    merge_base = None
    if default is not None:
        building = _building_branch(history.git, env, head_rev)
        if _branch_name(default) != building:  # the default branch itself: all of it is new
            merge_base = history.merge_base(default, head.sha)
    if merge_base is None:
        return None, f"{source}-new-branch-no-merge-base"
    return merge_base, f"{source}-new-branch-merge-base"


def _unnamed_default_branch(history: _History) -> str | None:
    git = history.git
    ref = git.default_branch() or git.resolve_ref(CONVENTIONAL_DEFAULT_BRANCHES)
    if ref is not None:
        return ref
    name = git.remote_default_branch()
    if name is None:
        return None
    ref = git.default_branch(name)
    if ref is None and history.is_shallow():
        ref = git.fetch_branch(name, depth=DEEPEN_STEPS[0])
    return ref


def _building_branch(git: Git, env: Mapping[str, str], head_rev: str) -> str | None:
    """The short name of the branch being built, when something says which."""
    if env.get("GITHUB_REF", "").startswith("refs/heads/"):
        return env["GITHUB_REF"].removeprefix("refs/heads/")
    if env.get("BRANCH_NAME"):
        return env["BRANCH_NAME"]
    ref = git.current_ref() if head_rev == "HEAD" else None
    return None if ref is None else _branch_name(ref)


def _branch_name(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/remotes/origin/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    return ref


class _History:
    """The commits a resolution needs, fetching more of a shallow clone's history on demand.

    Deepening happens at most :data:`DEEPEN_LIMIT` commits in total per resolution.
    """

    def __init__(self, git: Git) -> None:
        self.git = git
        self._shallow: bool | None = None
        self._steps = list(DEEPEN_STEPS)
        self.deepened_by = 0

    def read(self, revs: Sequence[str]) -> tuple[Commit | None, ...]:
        return self.git.read_commits(revs)

    def find(self, rev: str) -> Commit | None:
        """The commit, deepening a shallow clone until it appears (or the limit is hit)."""
        commit = self.git.read_commit(rev)
        while commit is None and self._deepen(f"the commit {rev}"):
            commit = self.git.read_commit(rev)
        return commit

    def require(self, rev: str, commit: Commit | None, source: str) -> Commit:
        """``commit`` (already read for ``rev``) or, when it is missing, the deepened one."""
        if commit is None:
            alternative = "check the ref" if source == "--head" else "pass a --base that is in it"
            while commit is None and self._deepen(f"{rev} ({source})", alternative):
                commit = self.git.read_commit(rev)
            if commit is None:
                raise self._missing(rev, source)
        return commit

    def require_sha(self, rev: str, source: str) -> str:
        return self.require(rev, self.git.read_commit(rev), source).sha

    def merge_base(self, a: str, b: str) -> str | None:
        """The merge-base; in a shallow clone, deepen until it appears (or the limit is hit)."""
        merge_base = self.git.merge_base(a, b)
        while merge_base is None and self._deepen(f"the merge-base of {a} and {b}"):
            merge_base = self.git.merge_base(a, b)
        return merge_base

    def diff(self, base: str, head: str) -> bytes:
        try:
            return self.git.diff_name_status(base, head)
        except GitError:
            # Only the first parent reaches here unchecked: in a shallow clone it lies
            # below the boundary. Anything else is a real failure.
            if self.git.read_commit(base) is not None:
                raise
            self.require(base, None, f"the parent of {head}")
            return self.git.diff_name_status(base, head)

    def is_shallow(self) -> bool:
        if self._shallow is None:
            self._shallow = self.git.is_shallow()
        return self._shallow

    def _deepen(self, wanted: str, alternative: str = "pass a --base that is in it") -> bool:
        """Fetch the next step of history; ``False`` when there is nothing left to try.
        ``wanted`` names what is looked for, for the error when the fetch fails (a CI
        checkout whose remote is gone or unreachable: git's reason, and what to do)."""
        if not self._steps or not self.is_shallow():
            return False
        step = self._steps.pop(0)
        try:
            self.git.deepen(step)
        except FetchFailed as error:
            raise GitError(
                f"{wanted} is not in the shallow clone at {self.git.repo}, and fetching more "
                f"history from '{error.remote}' failed: {error.reason}; {_FETCH_HINT}, or "
                f"fetch the commit into the clone (git fetch {error.remote} <sha>), or "
                f"{alternative}."
            ) from error
        self.deepened_by += step
        self._shallow = None  # the fetch may have reached the root of the history
        return True

    def _missing(self, rev: str, source: str) -> GitError:
        where = f"the clone at {self.git.repo}"
        alternative = "pass a --base that is in it" if source != "--head" else "check the ref"
        if rev == "HEAD" and source == "--head":
            return GitError(f"HEAD is not a commit in {self.git.repo}: commit something first.")
        if self.deepened_by:
            return GitError(
                f"{rev} ({source}) is not in {where} even after fetching {self.deepened_by} "
                f"more commits of history; {_FETCH_HINT}, or {alternative}."
            )
        return GitError(
            f"{rev} ({source}) is not a commit in {where}; if it is in the remote, "
            f"{_FETCH_HINT}, or {alternative}."
        )
