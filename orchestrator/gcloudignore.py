"""What ``gcloud builds submit`` leaves out of a build source: ``.gcloudignore``. Pure.

gcloud's rules (``gcloud topic gcloudignore``,
https://cloud.google.com/sdk/gcloud/reference/topic/gcloudignore, and its source,
``googlecloudsdk/command_lib/util/gcloudignore.py``, ``GetFileChooserForDir``):

* ``.gcloudignore`` at the top of the uploaded directory, when there is one, decides alone.
* Without it, when the directory holds ``.git`` or ``.gitignore``, gcloud uses the file it
  would generate: ``.gcloudignore``, ``.git`` and ``.gitignore`` (each at any depth), then
  ``#!include:.gitignore`` when a ``.gitignore`` exists. Otherwise nothing is left out
  (https://cloud.google.com/sdk/gcloud/reference/builds/submit: "The global .gitignore is
  not respected").
* Each line is a gitignore pattern; ``#`` starts a comment; a line gitignore cannot use is
  skipped. ``#!include:FILE`` inserts FILE's patterns at that point: FILE must sit next to
  the ``.gcloudignore`` (a ``/`` in its name, or a missing FILE, is an error) and its own
  ``#!include`` lines are not followed.
* A path is left out when, for itself or any directory above it, the last pattern that
  matches is not a negation: "if a parent directory is ignored, its children cannot be
  re-included" (gcloud's ``FileChooser.IsIncluded``), exactly as git decides for a
  ``.gitignore``.

gcloud matches each pattern with its own approximation of git's wildmatch; here each pattern
means exactly what git means by it (:mod:`orchestrator.gitignore`), which is what gcloud's
documentation promises ("the same syntax as .gitignore").

Credentials are never part of a build source, whatever the ignore files say: see
:func:`credential_kind`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import InputError
from orchestrator.gitignore import GitPattern, compile_pattern

IGNORE_FILE = ".gcloudignore"
#: The patterns of the file gcloud generates (its comments left out).
DEFAULT_PATTERNS = (".gcloudignore", ".git", ".gitignore")
_INCLUDE = "!include:"
_UTF8_BOM = b"\xef\xbb\xbf"

#: The credentials file google-github-actions/auth writes into the workspace
#: (https://github.com/google-github-actions/auth: "add gha-creds-*.json to .gitignore,
#: .dockerignore and similar files").
GHA_CREDENTIALS = compile_pattern("gha-creds-*.json")

#: Reads a file at the top of the uploaded directory: its bytes, or None when there is none.
ReadTop = Callable[[str], bytes | None]


@dataclass(frozen=True)
class FileChooser:
    """The patterns in force for one upload, and which file they came from."""

    patterns: tuple[GitPattern, ...]
    source: str  # ".gcloudignore", "gcloud's default .gcloudignore", or "" (none)
    _dirs: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def included(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether ``path`` (from the top of the upload, ``/``-separated) is uploaded."""
        parent = path.rpartition("/")[0]
        if parent and self._dir_left_out(parent):
            return False
        return not self._left_out_itself(path, is_dir)

    def _dir_left_out(self, directory: str) -> bool:
        """Whether ``directory`` or one above it is left out (remembered per directory)."""
        known = self._dirs.get(directory)
        if known is None:
            parent = directory.rpartition("/")[0]
            known = (bool(parent) and self._dir_left_out(parent)) or self._left_out_itself(
                directory, True
            )
            self._dirs[directory] = known
        return known

    def _left_out_itself(self, path: str, is_dir: bool) -> bool:
        decided: GitPattern | None = None
        for pattern in self.patterns:
            if pattern.matches(path, is_dir=is_dir):
                decided = pattern  # the last pattern that matches decides
        return decided is not None and decided.include  # not a "!" negation: left out


def chooser(read_top: ReadTop, *, has_git_dir: bool) -> FileChooser:
    """The chooser ``gcloud builds submit`` would use for a directory: its ``.gcloudignore``,
    else gcloud's generated one when ``.git`` (``has_git_dir``) or ``.gitignore`` is there,
    else none. Raises ``InputError`` for an ``#!include`` gcloud would refuse."""
    text = read_top(IGNORE_FILE)
    if text is not None:
        return FileChooser(_parse(_decode(text), IGNORE_FILE, read_top, recurse=1), IGNORE_FILE)
    has_gitignore = read_top(".gitignore") is not None
    if not (has_git_dir or has_gitignore):
        return FileChooser((), "")
    lines = list(DEFAULT_PATTERNS)
    if has_gitignore:
        lines.append(f"#{_INCLUDE}.gitignore")
    default = "gcloud's default .gcloudignore"
    return FileChooser(_parse("\n".join(lines), default, read_top, recurse=1), default)


def _parse(text: str, name: str, read_top: ReadTop, *, recurse: int) -> tuple[GitPattern, ...]:
    patterns: list[GitPattern] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            if line[1:].lstrip().startswith(_INCLUDE):
                patterns += _included(line, f"{name}:{number}", read_top, recurse)
            continue
        try:
            patterns.append(compile_pattern(line))
        except ValueError:
            continue  # gcloud skips a line it cannot use (blank, or never matching)
    return tuple(patterns)


def _included(line: str, where: str, read_top: ReadTop, recurse: int) -> list[GitPattern]:
    included = line[line.find(_INCLUDE) + len(_INCLUDE) :]
    if "/" in included:
        raise InputError(
            f"{where}: {line!r} includes a file that is not next to .gcloudignore "
            "(gcloud only includes files in the same directory)"
        )
    if not recurse:
        return []  # an included file's own includes are not followed
    text = read_top(included)
    if text is None:
        raise InputError(f"{where}: {line!r} includes {included!r}, which does not exist")
    return list(_parse(_decode(text), included, read_top, recurse=recurse - 1))


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --- credentials ---------------------------------------------------------------------------


def credential_kind(path: str, data: bytes) -> str | None:
    """Why the file at ``path`` with content ``data`` holds credentials, or None.

    ``gha-creds-*.json`` at any depth (google-github-actions/auth's file, whatever it holds),
    and any JSON object that is a service-account key (``"type": "service_account"`` with a
    ``"private_key"``: the key file format of
    https://cloud.google.com/iam/docs/keys-create-delete) or an authorized user's refresh
    token (``"type": "authorized_user"``, what ``gcloud auth application-default login``
    writes; google-auth's ``_default.py`` loads both types), whatever its name. The answer
    never quotes the content.
    """
    if GHA_CREDENTIALS.matches(path):
        return "a google-github-actions/auth credentials file"
    if not data.removeprefix(_UTF8_BOM).lstrip().startswith(b"{"):
        return None
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    if parsed.get("type") == "service_account" and "private_key" in parsed:
        return "a service-account private key"
    if parsed.get("type") == "authorized_user" and "refresh_token" in parsed:
        return "an authorized user's refresh token"
    return None
