"""``.gcloudignore`` as ``gcloud builds submit`` reads it, and the credentials rule. Literals,
with git (``git check-ignore``) and, where installed, gcloud itself
(``gcloud meta list-files-for-upload``) as oracles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from orchestrator import gcloudignore
from orchestrator.errors import InputError
from tests.gitcheck import GitIgnoreOracle


def top(files: Mapping[str, str]) -> gcloudignore.ReadTop:
    return lambda name: files[name].encode() if name in files else None


def kept(chooser: gcloudignore.FileChooser, paths: list[str]) -> list[str]:
    return [p for p in paths if chooser.included(p)]


PATHS = [
    ".gcloudignore",
    ".gitignore",
    ".git/config",
    "a.txt",
    "a.log",
    "sub/.gitignore",
    "sub/b.log",
    "sub/b.txt",
    "docs/guide.md",
    "docs/keep.md",
    "build/out.bin",
    "src/build/x.py",
]


def test_with_a_gcloudignore_it_alone_decides() -> None:
    chooser = gcloudignore.chooser(
        top({".gcloudignore": "*.log\n", ".gitignore": "*.txt\n"}), has_git_dir=True
    )
    assert chooser.source == ".gcloudignore"
    # .gitignore is not read, .git and .gcloudignore are not left out unless it says so
    assert kept(chooser, PATHS) == [p for p in PATHS if not p.endswith(".log")]


def test_without_one_gclouds_generated_file_when_git_files_are_there() -> None:
    """``.gcloudignore``, ``.git``, ``.gitignore`` at any depth, then ``#!include:.gitignore``
    (gcloud topic gcloudignore; gcloudignore.py's DEFAULT_IGNORE_FILE)."""
    chooser = gcloudignore.chooser(top({".gitignore": "*.log\n/build/\n"}), has_git_dir=False)
    assert chooser.source == "gcloud's default .gcloudignore"
    assert kept(chooser, PATHS) == [
        "a.txt", "sub/b.txt", "docs/guide.md", "docs/keep.md", "src/build/x.py",
    ]  # fmt: skip
    only_git = gcloudignore.chooser(top({}), has_git_dir=True)
    assert [p.text for p in only_git.patterns] == [".gcloudignore", ".git", ".gitignore"]


def test_without_git_files_or_a_gcloudignore_everything_goes() -> None:
    chooser = gcloudignore.chooser(top({}), has_git_dir=False)
    assert (chooser.source, chooser.patterns) == ("", ())
    assert kept(chooser, PATHS) == PATHS


def test_an_include_inserts_the_patterns_at_its_line() -> None:
    files = {".gitignore": "*.log\n", ".gcloudignore": "!a.log\n#!include:.gitignore\n"}
    after = gcloudignore.chooser(top(files), has_git_dir=True)
    assert not after.included("a.log")  # the include comes later: *.log wins
    files[".gcloudignore"] = "#!include:.gitignore\n!a.log\n"
    before = gcloudignore.chooser(top(files), has_git_dir=True)
    assert before.included("a.log") and not before.included("sub/b.log")
    # gcloud also reads "# !include:" (spaces after the '#')
    files[".gcloudignore"] = "#  !include:.gitignore\n"
    assert not gcloudignore.chooser(top(files), has_git_dir=True).included("a.log")


def test_an_included_files_own_includes_are_not_followed() -> None:
    files = {".gcloudignore": "#!include:one\n", "one": "#!include:two\n*.log\n", "two": "*\n"}
    chooser = gcloudignore.chooser(top(files), has_git_dir=True)
    assert [p.text for p in chooser.patterns] == ["*.log"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("#!include:.gitignore", "includes '.gitignore', which does not exist"),
        ("#!include:sub/.gitignore", "not next to .gcloudignore"),
    ],
)
def test_includes_gcloud_refuses_are_errors_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        gcloudignore.chooser(top({".gcloudignore": f"*.tmp\n{line}\n"}), has_git_dir=True)
    assert str(info.value).startswith(".gcloudignore:2: ")


def test_comments_blank_and_unusable_lines_are_skipped() -> None:
    text = "# a comment\n\n   \n/\n!\n[z-a]\n\\#hash\r\n*.log  \n"
    chooser = gcloudignore.chooser(top({".gcloudignore": text}), has_git_dir=True)
    assert [p.text for p in chooser.patterns] == ["\\#hash", "*.log  "]
    assert not chooser.included("#hash") and not chooser.included("x/a.log")


NEGATIONS = [
    "docs/",
    "!docs/keep.md",  # docs/ is left out: what is in it cannot come back (as in git)
    "*.tmp",
    "!src/important.tmp",
    "build/*",
    "!build/keep/",
    "/top.txt",
    "**/deep/**",
    "!**/deep/ok.txt",
    "*.[oa]",
    "!lib.a",
]
NEGATION_PATHS = [
    "docs/guide.md", "docs/keep.md", "src/important.tmp", "src/scratch.tmp", "x.tmp",
    "build/out.bin", "build/keep/a.txt", "build/keep", "top.txt", "sub/top.txt",
    "a/deep/b/c.txt", "a/deep/ok.txt", "deep/ok.txt", "main.o", "lib.a", "x/lib.a", "README.md",
]  # fmt: skip


def test_a_path_is_left_out_exactly_when_git_would_ignore_it(tmp_path: Path) -> None:
    """Last match wins per path and per directory above it; a left-out directory's files
    cannot be re-included (gcloud's FileChooser.IsIncluded, and git's own rule)."""
    chooser = gcloudignore.chooser(top({".gcloudignore": "\n".join(NEGATIONS)}), has_git_dir=True)
    verdicts = GitIgnoreOracle(tmp_path).check(NEGATIONS, NEGATION_PATHS)
    assert {p: chooser.included(p) for p in NEGATION_PATHS} == {
        p: not v.ignored for p, v in verdicts.items()
    }
    assert not chooser.included("docs/keep.md")
    assert chooser.included("src/important.tmp") and not chooser.included("src/scratch.tmp")


# --- gcloud itself --------------------------------------------------------------------------

TREE = {
    ".gitignore": "*.log\nbuild/\n!keep.log\n",
    "a.txt": "a",
    "keep.log": "k",
    "x.log": "x",
    "build/out.bin": "o",
    "docs/guide.md": "g",
    "docs/keep.md": "k",
    "src/app.py": "p",
    "src/important.tmp": "i",
    "src/scratch.tmp": "s",
    "src/.gitignore": "ignored by the default file\n",
}
GCLOUDIGNORE = (
    "# ours\n.gcloudignore\n#!include:.gitignore\ndocs/\n!docs/keep.md\n*.tmp\n!src/important.tmp\n"
)


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
@pytest.mark.parametrize("ignore_file", [GCLOUDIGNORE, None], ids=["gcloudignore", "default"])
def test_gcloud_lists_the_same_files(tmp_path: Path, ignore_file: str | None) -> None:
    root = tmp_path / "src"
    for rel, text in {**TREE, **({".gcloudignore": ignore_file} if ignore_file else {})}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    listed = subprocess.run(
        ["gcloud", "meta", "list-files-for-upload", str(root)],
        env={**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud-config"),
             "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    chooser = gcloudignore.chooser(
        lambda name: (root / name).read_bytes() if (root / name).is_file() else None,
        has_git_dir=False,
    )
    ours = [p for p in [*sorted(TREE), ".gcloudignore"] if (root / p).exists()]
    assert sorted(p for p in ours if chooser.included(p)) == sorted(listed)


# --- credentials ----------------------------------------------------------------------------

KEY = json.dumps(
    {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "0123",
        "private_key": "-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n",
        "client_email": "sa@p.iam.gserviceaccount.com",
    }
).encode()


@pytest.mark.parametrize(
    ("path", "data", "kind"),
    [
        ("gha-creds-1a2b3c.json", b'{"type": "external_account"}', "google-github-actions/auth"),
        ("deep/er/gha-creds-x.json", b"not even json", "google-github-actions/auth"),
        ("keys/prod.json", KEY, "a service-account private key"),
        ("no-extension", b"\xef\xbb\xbf  \n" + KEY, "a service-account private key"),
        ("adc.json", b'{"type": "authorized_user", "refresh_token": "r"}', "refresh token"),
        ("public.json", b'{"type": "service_account", "client_email": "x"}', None),
        ("list.json", b"[" + KEY + b"]", None),
        ("broken.json", b'{"type": "service_account", "private_key": ', None),
        ("gha-creds.json", b"{}", None),
        ("src/app.py", b"print('private_key service_account')", None),
    ],
)
def test_credentials_are_recognised_by_name_or_content(
    path: str, data: bytes, kind: str | None
) -> None:
    found = gcloudignore.credential_kind(path, data)
    if kind is None:
        assert found is None
    else:
        assert found is not None and kind in found
        assert "SECRET" not in found and "{" not in found
