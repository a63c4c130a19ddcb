"""The subprocess helper: output as bytes, clear errors for missing programs and failures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.adapters.process import CommandFailed, CommandNotFound, last_line, run
from orchestrator.errors import EXIT_BAD_INPUT, OrchestratorError

PY = sys.executable


def test_run_captures_stdout_and_stderr_as_bytes(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); print('warn', file=sys.stderr)"
    completed = run([PY, "-c", code], cwd=tmp_path)
    assert completed.returncode == 0
    assert completed.stdout.decode().strip() == str(tmp_path)
    assert completed.stderr == b"warn\n"


def test_run_passes_input_and_closes_stdin_otherwise() -> None:
    echo = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"
    assert run([PY, "-c", echo], input=b"a\0b").stdout == b"a\0b"
    assert run([PY, "-c", echo]).stdout == b""  # no input: EOF at once, never the terminal


def test_run_replaces_the_environment_when_given() -> None:
    code = "import os; print(os.environ.get('ONLY', '-'), 'HOME' in os.environ)"
    assert run([PY, "-c", code], env={"ONLY": "x"}).stdout == b"x False\n"


def test_failure_raises_command_failed_with_the_last_stderr_line() -> None:
    code = "import sys; print('out'); sys.stderr.write('first\\nthe reason\\n\\n'); sys.exit(3)"
    with pytest.raises(CommandFailed) as info:
        run([PY, "-c", code])
    error = info.value
    assert (error.returncode, error.stdout) == (3, b"out\n")
    assert str(error).endswith("failed with exit code 3: the reason")
    assert error.exit_code == EXIT_BAD_INPUT


def test_failure_without_check_returns_the_result() -> None:
    assert run([PY, "-c", "raise SystemExit(4)"], check=False).returncode == 4


def test_missing_executable_is_a_clear_error() -> None:
    with pytest.raises(CommandNotFound, match=r"'no-such-program-xyz' was not found; install it"):
        run(["no-such-program-xyz", "--version"])
    with pytest.raises(CommandNotFound, match="'git' was not found"):
        run(["git", "--version"], env={"PATH": ""})


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(OrchestratorError, match=r"directory '.*nowhere' does not exist"):
        run([PY, "-c", "pass"], cwd=tmp_path / "nowhere")


def test_empty_command_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs a command"):
        run([])


@pytest.mark.parametrize(
    ("output", "expected"),
    [(b"", ""), (b"a\nb\n\n  \n", "b"), (b"only", "only"), (b"\xffbad\n", "\ufffdbad")],
)
def test_last_line(output: bytes, expected: str) -> None:
    assert last_line(output) == expected
