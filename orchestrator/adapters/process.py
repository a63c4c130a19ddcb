"""The one place that runs subprocesses.

Every external program (git now, build steps later) goes through :func:`run`, which
never uses a shell, captures stdout and stderr as bytes, and turns the two ways a
command can go wrong into errors that read as one sentence:

- the executable is not installed: :class:`CommandNotFound` (exit 2, fix your PATH);
- the command exited non-zero and the caller asked for ``check``: :class:`CommandFailed`,
  which keeps the argv, return code and output so callers can translate it into their own
  error (``GitError``, ``StepFailed`` ...).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.errors import OrchestratorError


class CommandNotFound(OrchestratorError):
    """The program to run is not installed or not on PATH."""

    def __init__(self, program: str) -> None:
        self.program = program
        super().__init__(f"'{program}' was not found; install it or put it on PATH.")


class CommandFailed(OrchestratorError):
    """A command exited with a non-zero status."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = last_line(stderr) or last_line(stdout)
        message = f"'{' '.join(self.argv)}' failed with exit code {returncode}"
        super().__init__(f"{message}: {detail}" if detail else f"{message}.")


def last_line(output: bytes) -> str:
    """The last non-empty line of a command's output, decoded for a message."""
    for line in reversed(output.decode("utf-8", "replace").splitlines()):
        if line.strip():
            return line.strip()
    return ""


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (no shell) and return its completed process with stdout/stderr bytes.

    ``env`` replaces the environment when given (``None`` inherits it). stdin is closed
    unless ``input`` is given, so a command can never wait on the terminal.
    """
    if not argv:
        raise ValueError("run() needs a command")
    try:
        completed = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        # Raised for a missing executable, but also for a missing cwd: say which.
        if cwd is not None and not Path(cwd).is_dir():
            raise OrchestratorError(f"directory '{cwd}' does not exist.") from exc
        raise CommandNotFound(argv[0]) from exc
    except PermissionError as exc:
        raise OrchestratorError(f"'{argv[0]}' cannot be executed: {exc.strerror}.") from exc
    if check and completed.returncode != 0:
        raise CommandFailed(argv, completed.returncode, completed.stdout, completed.stderr)
    return completed
