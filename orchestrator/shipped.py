"""The modules the trigger function shares with this package, copied next to it on deploy.

The function is deployed as its own directory; what it shares with the orchestrator (the
message schema, the bucket layer and its retry rules, the runs registry) is copied in as
``ct_<module>.py``, which ``function/main.py`` imports when ``orchestrator`` is not installed.
Standard library only.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

MODULES = ("message", "retrying", "objects", "runs")


def copy_into(directory: Path) -> list[str]:
    """Copy each shared module into ``directory`` as ``ct_<name>.py``; the names written."""
    written = []
    for name in MODULES:
        module = importlib.import_module(f"orchestrator.{name}")
        source = module.__file__
        if source is None:  # pragma: no cover - a namespace package would have no file
            raise FileNotFoundError(f"orchestrator/{name}.py")
        shutil.copyfile(source, directory / f"ct_{name}.py")
        written.append(f"ct_{name}.py")
    return written


def copy_command(python: str, directory: str) -> str:
    """A shell command that does :func:`copy_into` with ``python`` (a build step's venv)."""
    import shlex

    code = (
        "from pathlib import Path; import orchestrator.shipped as s; "
        f"s.copy_into(Path({directory!r}))"
    )
    return f"{python} -c {shlex.quote(code)}"
