"""The CI base hint: pure decisions from literal environments and payloads, plus payload files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.ci_env import BaseHint, base_hint, ci_base_hint, is_null_sha, read_event_payload
from orchestrator.errors import InputError

BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
ZEROS = "0" * 40

PUSH = {
    "ref": "refs/heads/main",
    "before": BEFORE,
    "after": AFTER,
    "created": False,
    "deleted": False,
    "forced": False,
    "base_ref": None,
    "repository": {"full_name": "octo/repo", "default_branch": "main"},
}
PULL_REQUEST = {
    "action": "opened",
    "number": 2,
    "pull_request": {
        "base": {"ref": "main", "sha": BEFORE},
        "head": {"ref": "feature", "sha": AFTER},
    },
}
MERGE_GROUP = {
    "action": "checks_requested",
    "merge_group": {
        "head_sha": AFTER,
        "head_ref": "refs/heads/gh-readonly-queue/main/pr-2-" + BEFORE,
        "base_sha": BEFORE,
        "base_ref": "refs/heads/main",
    },
}


def gh(event: str) -> dict[str, str]:
    return {"GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": "/github/workflow/event.json"}


def with_(payload: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**payload, **changes}


@pytest.mark.parametrize(
    ("env", "payload", "expected"),
    [
        ({}, None, None),
        (gh("workflow_dispatch"), None, None),
        (gh("schedule"), None, None),
        (gh("push"), PUSH,
         BaseHint("github-push", BEFORE, AFTER, False, "main", "refs/heads/main")),
        (gh("push"), with_(PUSH, forced=True),
         BaseHint("github-push", BEFORE, AFTER, True, "main", "refs/heads/main")),
        (gh("push"), with_(PUSH, before=ZEROS, created=True, ref="refs/heads/topic"),
         BaseHint("github-push", None, AFTER, False, "main", "refs/heads/topic")),
        (gh("push"), with_(PUSH, before=BEFORE.upper()),
         BaseHint("github-push", BEFORE, AFTER, False, "main", "refs/heads/main")),
        (gh("push"), {"before": BEFORE, "after": AFTER},  # minimal payload
         BaseHint("github-push", BEFORE, AFTER)),
        (gh("pull_request"), PULL_REQUEST,
         BaseHint("github-pull-request", BEFORE, AFTER, default_branch="main")),
        (gh("pull_request_target"), PULL_REQUEST,
         BaseHint("github-pull-request", BEFORE, AFTER, default_branch="main")),
        (gh("merge_group"), MERGE_GROUP,
         BaseHint("github-merge-group", BEFORE, AFTER, default_branch="refs/heads/main")),
        ({"_BASE_SHA": BEFORE}, None, BaseHint("cloudbuild", BEFORE)),
        ({"_BASE_SHA": f" {BEFORE}\n"}, None, BaseHint("cloudbuild", BEFORE)),
        ({"_BASE_SHA": ""}, None, None),
        # all zeros: a new branch, as GitHub's `before` (it used to be ignored)
        ({"_BASE_SHA": ZEROS}, None, BaseHint("cloudbuild", None)),
        ({"_BASE_SHA": "0" * 64}, None, BaseHint("cloudbuild", None)),
        ({"_BASE_SHA": "0000000"}, None, BaseHint("cloudbuild", "0000000")),  # a short sha
        # a GitHub event that names a base wins over _BASE_SHA; one that does not, does not
        ({**gh("push"), "_BASE_SHA": "abcdef1"}, PUSH,
         BaseHint("github-push", BEFORE, AFTER, False, "main", "refs/heads/main")),
        ({**gh("workflow_dispatch"), "_BASE_SHA": "abcdef1"}, None,
         BaseHint("cloudbuild", "abcdef1")),
    ],
)  # fmt: skip
def test_base_hint(
    env: dict[str, str], payload: dict[str, Any] | None, expected: BaseHint | None
) -> None:
    assert base_hint(env, payload) == expected


def test_new_branch_property() -> None:
    assert BaseHint("github-push", None, AFTER).new_branch
    assert not BaseHint("github-push", BEFORE, AFTER).new_branch
    assert BaseHint("cloudbuild", None).new_branch  # _BASE_SHA all zeros
    assert not BaseHint("cloudbuild", BEFORE).new_branch
    assert not BaseHint("github-merge-group", None).new_branch


@pytest.mark.parametrize(
    ("event", "payload", "message"),
    [
        ("push", None, r"'push' event payload is missing"),
        ("push", {"after": AFTER}, r"no valid 'before' \(expected a commit sha\)"),
        ("push", with_(PUSH, before=""), r"no valid 'before'"),
        ("push", with_(PUSH, before=42), r"no valid 'before'"),
        ("push", with_(PUSH, before="not-a-sha"), r"not 'not-a-sha'"),
        ("push", with_(PUSH, before="abc"), r"not 'abc'"),
        ("push", with_(PUSH, after=None), r"no valid 'after'"),
        ("push", with_(PUSH, forced="yes"), r"no valid 'forced' \(expected a boolean\)"),
        ("push", with_(PUSH, repository={"default_branch": 3}), r"repository\.default_branch"),
        ("pull_request", {"pull_request": {"head": {"sha": AFTER}}}, r"pull_request\.base\.sha"),
        ("pull_request", {"pull_request": "x"}, r"pull_request\.base\.sha"),
        ("pull_request_target", {"pull_request": {"base": {"sha": BEFORE}}},
         r"'pull_request_target'.*pull_request\.head\.sha"),
        ("merge_group", {"merge_group": {"head_sha": AFTER}}, r"merge_group\.base_sha"),
    ],
)  # fmt: skip
def test_invalid_payloads_are_input_errors(
    event: str, payload: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        base_hint(gh(event), payload)
    assert "--base" in str(info.value)


@pytest.mark.parametrize(
    ("sha", "expected"),
    [(ZEROS, True), ("0" * 64, True), ("", False), (BEFORE, False),
     ("0000000", False), ("0" * 41, False)],  # a short sha may start with zeros
)  # fmt: skip
def test_is_null_sha(sha: str, expected: bool) -> None:
    assert is_null_sha(sha) is expected


# -- reading the payload file -----------------------------------------------------------------


def test_ci_base_hint_reads_the_payload_file(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"before": BEFORE, "after": AFTER, "forced": True}))
    env = {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(path)}
    assert ci_base_hint(env) == BaseHint("github-push", BEFORE, AFTER, forced=True)


def test_ci_base_hint_does_not_read_payloads_of_other_events() -> None:
    def read(path: str) -> Mapping[str, Any]:
        raise AssertionError(f"read {path}")

    assert ci_base_hint(gh("release"), read) is None
    assert ci_base_hint({"_BASE_SHA": BEFORE}, read) == BaseHint("cloudbuild", BEFORE)


def test_github_event_without_payload_path_is_an_input_error() -> None:
    with pytest.raises(InputError, match="GITHUB_EVENT_PATH is not set"):
        ci_base_hint({"GITHUB_EVENT_NAME": "push"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", r"is not valid JSON"),
        (b"\xff\xfe\x00garbage", r"is not valid JSON"),
        (b"[1, 2]", r"is not a JSON object"),
    ],
)
def test_read_event_payload_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_event_payload(str(path))


def test_read_event_payload_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read the GitHub event payload .*nope\.json"):
        read_event_payload(str(tmp_path / "nope.json"))
