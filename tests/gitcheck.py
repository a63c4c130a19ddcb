"""git itself as the oracle for pattern semantics: ``git check-ignore --no-index``.

The patterns go into ``.git/info/exclude`` of an empty repository, so every path is asked
about as an untracked file that does not exist (git then treats it as a file, and the
directories above it as directories), and nothing from the user's configuration counts.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Verdict:
    """What git says of one path: the deciding pattern (``None``: none matched)."""

    pattern: str | None
    line: int | None

    @property
    def ignored(self) -> bool:
        return self.pattern is not None and not self.pattern.startswith("!")


class GitIgnoreOracle:
    def __init__(self, root: Path) -> None:
        self.repo = root / "oracle"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C",
        }
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True, env=self.env)
        out = subprocess.run(
            ["git", "--version"], check=True, capture_output=True, text=True, env=self.env
        ).stdout
        found = re.search(r"(\d+)\.(\d+)", out)
        assert found is not None, out
        self.version = (int(found.group(1)), int(found.group(2)))

    def check(self, patterns: Sequence[str], paths: Sequence[str]) -> dict[str, Verdict]:
        """git's verdict for each path under ``patterns`` (one gitignore line each)."""
        assert not any("\n" in p for p in patterns), "a gitignore line cannot hold a newline"
        exclude = self.repo / ".git" / "info" / "exclude"
        exclude.write_bytes(b"".join(p.encode("utf-8") + b"\n" for p in patterns))
        unique = list(dict.fromkeys(paths))
        if not unique:
            return {}
        completed = subprocess.run(
            ["git", "-c", "core.excludesFile=/dev/null", "check-ignore", "--no-index",
             "--verbose", "--non-matching", "-z", "--stdin"],
            cwd=self.repo,
            input=b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in unique),
            capture_output=True,
            env=self.env,
            check=False,
        )  # fmt: skip
        assert completed.returncode in (0, 1), completed.stderr.decode(errors="replace")
        fields = completed.stdout.split(b"\0")
        verdicts: dict[str, Verdict] = {}
        for i in range(0, len(fields) - 1, 4):
            _source, line, pattern, path = fields[i : i + 4]
            verdicts[path.decode("utf-8", "surrogateescape")] = Verdict(
                pattern=pattern.decode("utf-8") if pattern else None,
                line=int(line) if line else None,
            )
        assert set(verdicts) == set(unique), (unique, verdicts)
        return verdicts


def ancestors(path: str) -> list[str]:
    """The directories above ``path``, top-most first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def old_git_prefix_bug(pattern: str) -> bool:
    """Whether git before 2.52 misreads ``pattern``: it strips the literal prefix before
    calling wildmatch, so a ``**`` right after it (and not after a ``/``) is taken as the
    start of a segment (``foo**/bar`` matched ``foobar``)."""
    body = pattern.rstrip(" ")
    body = body[1:] if body.startswith("!") else body
    body = body[:-1] if body.endswith("/") else body
    if "/" not in body:
        return False  # basename patterns go to wildmatch whole
    body = body.removeprefix("/")
    special = re.search(r"[*?\[\\]", body)
    if special is None or special.start() == 0:
        return False
    return body[special.start() :].startswith("**") and body[special.start() - 1] != "/"
