"""What the CI environment says the base of a build should be.

:func:`base_hint` is pure: it takes the environment and the already-loaded GitHub event
payload and returns a :class:`BaseHint` (or ``None`` when the CI says nothing), raising
:class:`~orchestrator.errors.InputError` for a payload that lacks what its event needs.
:func:`read_event_payload` is the one effect: reading ``GITHUB_EVENT_PATH``.
:func:`ci_base_hint` combines the two.

Sources, in order:

- GitHub Actions, ``GITHUB_EVENT_NAME`` and the JSON file at ``GITHUB_EVENT_PATH``:
  ``push`` (``before``, ``after``, ``forced``, ``repository.default_branch``; ``before`` is
  all zeros for a new branch), ``pull_request`` / ``pull_request_target``
  (``pull_request.base.sha``, ``pull_request.head.sha``, ``pull_request.base.ref``) and
  ``merge_group`` (``merge_group.base_sha``, ``merge_group.head_sha``,
  ``merge_group.base_ref``). Other events (``workflow_dispatch``, ``schedule`` ...) say nothing.
- Cloud Build: ``_BASE_SHA`` passed to the build step as an environment variable; all
  zeros means a new branch, as GitHub's ``before`` does.

Which commit to diff against is decided in :mod:`orchestrator.changes`, which has git.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

from orchestrator.bounded import MAX_EVENT_PAYLOAD_BYTES, load_json, read_capped, shown
from orchestrator.errors import InputError

HintKind = Literal["github-push", "github-pull-request", "github-merge-group", "cloudbuild"]

GITHUB_PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})
GITHUB_EVENTS = frozenset({"push", "merge_group", *GITHUB_PULL_REQUEST_EVENTS})


class BaseHint(NamedTuple):
    """The commits a CI system names for this build.

    - ``github-push``: ``base`` is ``before`` (``None`` for a new branch), ``head`` is
      ``after``, ``forced`` says whether the push rewrote history, ``default_branch`` is
      the repository's default branch and ``ref`` the pushed ref (``refs/heads/...``).
    - ``github-pull-request``: ``base`` and ``head`` are the PR's base and head shas; the
      range starts at their merge-base. ``default_branch`` is the PR's base branch.
    - ``github-merge-group``: ``base`` is ``base_sha``, the commit the queue merges onto.
    - ``cloudbuild``: ``base`` is ``_BASE_SHA`` (``None`` when it is all zeros: a new
      branch).
    """

    kind: HintKind
    base: str | None
    head: str | None = None
    forced: bool = False
    default_branch: str | None = None
    ref: str | None = None

    @property
    def new_branch(self) -> bool:
        return self.kind in ("github-push", "cloudbuild") and self.base is None


def is_null_sha(sha: str) -> bool:
    """An all-zeros object id, sha1 or sha256 (40 or 64 zeros): what GitHub sends as
    ``before`` when a push creates a branch. A shorter run of zeros can be a real short sha.
    """
    return len(sha) in (40, 64) and set(sha) == {"0"}


def github_event_payload_path(env: Mapping[str, str]) -> str | None:
    """The payload file to read, when the GitHub event is one that names a base."""
    if env.get("GITHUB_EVENT_NAME", "") not in GITHUB_EVENTS:
        return None
    path = env.get("GITHUB_EVENT_PATH", "")
    if not path:
        raise InputError(
            f"GITHUB_EVENT_NAME is '{env['GITHUB_EVENT_NAME']}' but GITHUB_EVENT_PATH is not set; "
            "run inside GitHub Actions or pass --base."
        )
    return path


def read_event_payload(path: str) -> dict[str, Any]:
    """Load the GitHub event payload JSON file: at most 25 MB (what GitHub delivers), strict
    and bounded JSON (:mod:`orchestrator.bounded`); InputError for anything else."""
    hint = "check GITHUB_EVENT_PATH or pass --base."
    try:
        data = read_capped(path, MAX_EVENT_PAYLOAD_BYTES)
    except OSError as exc:
        raise InputError(
            f"cannot read the GitHub event payload {path} ({exc.strerror or exc}); {hint}"
        ) from None
    try:
        payload = load_json(data, f"the GitHub event payload {path}", limit=MAX_EVENT_PAYLOAD_BYTES)
    except InputError as exc:
        raise InputError(f"{exc}; {hint}") from None
    if not isinstance(payload, dict):
        raise InputError(f"the GitHub event payload {path} is not a JSON object; {hint}")
    return payload


def base_hint(env: Mapping[str, str], payload: Mapping[str, Any] | None) -> BaseHint | None:
    """What the CI says the base is (pure). ``payload`` is the loaded GitHub event, when any.

    GitHub Actions comes first; Cloud Build's ``_BASE_SHA`` is used when no GitHub event
    names a base. Returns ``None`` when neither says anything.
    """
    event = env.get("GITHUB_EVENT_NAME", "")
    if event in GITHUB_EVENTS:
        if payload is None:
            raise InputError(f"the GitHub '{event}' event payload is missing; pass --base.")
        if event == "push":
            return _push(payload)
        if event in GITHUB_PULL_REQUEST_EVENTS:
            return _pull_request(event, payload)
        return _merge_group(payload)
    cloudbuild_base = env.get("_BASE_SHA", "").strip()
    if cloudbuild_base:
        base = None if is_null_sha(cloudbuild_base) else cloudbuild_base
        return BaseHint(kind="cloudbuild", base=base)
    return None


def ci_base_hint(
    env: Mapping[str, str],
    read: Callable[[str], Mapping[str, Any]] = read_event_payload,
) -> BaseHint | None:
    """:func:`base_hint` with the payload read from ``GITHUB_EVENT_PATH`` when needed."""
    path = github_event_payload_path(env)
    return base_hint(env, None if path is None else read(path))


# -- GitHub events -------------------------------------------------------------------


def _push(payload: Mapping[str, Any]) -> BaseHint:
    before = _sha(payload, ("before",), "push")
    after = _sha(payload, ("after",), "push")
    forced = payload.get("forced", False)
    if not isinstance(forced, bool):
        raise _invalid("push", "forced", "a boolean")
    return BaseHint(
        kind="github-push",
        base=None if is_null_sha(before) else before,
        head=None if is_null_sha(after) else after,
        forced=forced,
        default_branch=_optional_str(payload, ("repository", "default_branch"), "push"),
        ref=_optional_str(payload, ("ref",), "push"),
    )


def _pull_request(event: str, payload: Mapping[str, Any]) -> BaseHint:
    return BaseHint(
        kind="github-pull-request",
        base=_sha(payload, ("pull_request", "base", "sha"), event),
        head=_sha(payload, ("pull_request", "head", "sha"), event),
        default_branch=_optional_str(payload, ("pull_request", "base", "ref"), event),
    )


def _merge_group(payload: Mapping[str, Any]) -> BaseHint:
    return BaseHint(
        kind="github-merge-group",
        base=_sha(payload, ("merge_group", "base_sha"), "merge_group"),
        head=_sha(payload, ("merge_group", "head_sha"), "merge_group"),
        default_branch=_optional_str(payload, ("merge_group", "base_ref"), "merge_group"),
    )


def _lookup(payload: Mapping[str, Any], keys: tuple[str, ...]) -> object:
    value: object = payload
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _sha(payload: Mapping[str, Any], keys: tuple[str, ...], event: str) -> str:
    value = _lookup(payload, keys)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(event, ".".join(keys), "a commit sha")
    value = value.strip()
    if not all(c in "0123456789abcdefABCDEF" for c in value) or len(value) < 7:
        raise _invalid(event, ".".join(keys), f"a commit sha, not {shown(value)}")
    return value.lower()


def _optional_str(payload: Mapping[str, Any], keys: tuple[str, ...], event: str) -> str | None:
    value = _lookup(payload, keys)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(event, ".".join(keys), "a string")
    return value or None


def _invalid(event: str, field: str, expected: str) -> InputError:
    return InputError(
        f"the GitHub '{event}' event payload has no valid '{field}' (expected {expected}); "
        "pass --base to choose the base yourself."
    )
