"""The README's first command, exactly as a newcomer types it, on a fresh machine.

A clone of this repository's HEAD in a temporary directory, a new virtualenv made there with
``python -m venv`` (nothing installed but pip), and the command from the README's "Run the main
job" block, ``pip install`` included, run by bash with that virtualenv first on PATH. Nothing
says where a Docker engine, an emulator or the cloud is, and there are no credentials: the run
must complete on the embedded local default and print the model's accuracy.

Everything the run writes stays under ``tmp_path``: the editable install goes into the
temporary virtualenv, pip's cache and every other cache into a temporary XDG cache directory,
sockets into a temporary XDG runtime directory, and temporary files (the inner test run's
pytest directories among them) into a temporary TMPDIR. pip reaches the package index and
nothing else (no self version check).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.workload_repo import SERVICE_VARS

PROJECT = Path(__file__).resolve().parents[2]
#: a fresh install (cold cache) plus the run took about 3 minutes on a 2-core machine
TIMEOUT = 1800
#: variables a newcomer's machine does not have: they would point the run somewhere else
FOREIGN_PREFIXES = ("GITHUB_", "ORCHESTRATOR_", "PYTEST_", "CLOUDSDK_", "VIRTUAL_ENV")
FOREIGN_VARS = (
    *SERVICE_VARS,
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "PYTHONPATH",
    "PYTHONHOME",
)


def readme_main_command() -> str:
    """The README's "Run the main job" command, verbatim."""
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("**Run the main job**", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README lost its main-job command"
    command = block.group(1).strip()
    assert command.startswith("pip install"), command
    assert "python -m orchestrator run" in command, command
    return command


def newcomer_env(venv: Path, scratch: Path) -> dict[str, str]:
    """This process's environment as a fresh machine would have it, with ``venv`` activated."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in FOREIGN_VARS and not name.startswith(FOREIGN_PREFIXES)
    }
    for folder in ("cache", "tmp", "run"):
        (scratch / folder).mkdir(parents=True, mode=0o700)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        NO_COLOR="1",
        XDG_CACHE_HOME=str(scratch / "cache"),
        PIP_CACHE_DIR=str(scratch / "cache" / "pip"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        TMPDIR=str(scratch / "tmp"),
        # gunicorn (under functions-framework, in the workload tests) puts its control socket
        # here, else in ~/.gunicorn/
        XDG_RUNTIME_DIR=str(scratch / "run"),
    )
    return env


@pytest.mark.slow
def test_the_readme_main_command_works_in_a_fresh_clone_and_virtualenv(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", str(PROJECT), str(clone)], check=True, capture_output=True
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    command = readme_main_command()

    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=newcomer_env(venv, tmp_path / "scratch"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - started

    output = result.stdout + result.stderr
    context = f"{command!r} took {seconds:.0f}s and exited {result.returncode}:\n{output[-6000:]}"
    assert result.returncode == 0, context
    accuracy = re.search(r"accuracy (0\.\d+)", result.stdout)
    assert accuracy is not None, context
    assert float(accuracy.group(1)) > 0.9, context
    assert "Traceback" not in output, context
    # the uploads say where the files are: the directory bucket inside the clone
    assert "to .orchestrator/bucket/" in result.stdout, context
    assert "uploaded gs://" not in result.stdout, context
    assert "the paths given with --changed" in result.stdout, context
