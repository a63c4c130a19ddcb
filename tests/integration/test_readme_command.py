"""The README's first command, in a fresh clone in a temporary directory, on a machine with no
cloud account, emulator or Docker engine: it completes and prints the model's accuracy.

The command's ``pip install`` part is left out: CI installed the project already, and an
editable install pointing at a temporary clone would outlive the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.workload_repo import SERVICE_VARS

PROJECT = Path(__file__).resolve().parents[2]


def readme_main_command() -> str:
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("**Run the main job**", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README lost its main-job command"
    command = block.group(1).strip()
    assert command.startswith("pip install"), command
    return command.split("&&", 1)[1].strip()


@pytest.mark.slow
def test_the_readme_main_command_runs_the_loop_and_prints_the_accuracy(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", str(PROJECT), str(clone)], check=True, capture_output=True
    )
    env = {
        k: v for k, v in os.environ.items() if k not in SERVICE_VARS and not k.startswith("GITHUB_")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"

    result = subprocess.run(
        ["bash", "-c", readme_main_command()],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    accuracy = re.search(r"accuracy (0\.\d+)", result.stdout)
    assert accuracy is not None, output[-4000:]
    assert float(accuracy.group(1)) > 0.9
    assert "Traceback" not in output
