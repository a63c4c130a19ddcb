"""The errors a user can see, each mapped to one exit code in ``cli.main``.

Exit codes: 0 ok or nothing to do; 1 a step failed; 2 bad input or config; 3 internal error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


class OrchestratorError(Exception):
    """Base of the errors shown to users as one sentence, never a traceback."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(OrchestratorError):
    """rules.toml is missing or invalid. Carries the file, line and key it concerns."""

    def __init__(self, message: str, *, file: str, line: int | None = None, key: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" [{self.key}]" if self.key else ""
        return f"{where}:{key} {self.message}"


class GitError(OrchestratorError):
    """A ref is unknown, history is missing, or git itself failed."""


class InputError(OrchestratorError):
    """Bad command-line input or a bad CI event payload."""


class StepFailed(OrchestratorError):
    """A build step failed (exit 1)."""

    exit_code = EXIT_STEP_FAILED


class ServiceUnreachable(OrchestratorError):
    """A service the run needs (Docker, GCS, Pub/Sub, Cloud Build) cannot be reached."""

    exit_code = EXIT_STEP_FAILED
