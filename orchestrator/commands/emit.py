"""``emit``: the Cloud Build config for the plan, as YAML for ``gcloud builds submit --config``.

Also builds the config that ``--dry-run`` shows after the plan. Pure apart from writing the
output: no google-cloud import, so ``--dry-run`` stays on the light planning path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator import secrets
from orchestrator.commands.io import CommandIO
from orchestrator.emit import yaml_text
from orchestrator.emit.cloudbuild import emit_build
from orchestrator.errors import EXIT_OK, InputError
from orchestrator.model import Plan
from orchestrator.render import describe_range
from orchestrator.services import Services
from orchestrator.workflow import Prepared, Target, prepare

NOTHING_TO_EMIT = "nothing to do: the plan has no actions, so no build was emitted"


def run(target: Target, output: Path | None, io: CommandIO, services: str | None = None) -> int:
    prepared = prepare(target, io.env, Services.resolve(target.repo, io.env, services))
    io.redactor.add(secrets.values(prepared.rules, io.env))  # the config names them only
    build = build_config(prepared)
    plan = prepared.plan
    if build is None:
        io.stderr.write(NOTHING_TO_EMIT + (f" ({output} left as it was)" if output else "") + "\n")
        return EXIT_OK
    text = config_yaml(plan, build)
    if output is None:
        io.stdout.write(text)
    else:
        _write_atomically(output, text)
        io.stderr.write(f"wrote the Cloud Build config for {plan.head[:12]} to {output}\n")
    return EXIT_OK


def build_config(prepared: Prepared) -> dict[str, Any] | None:
    """The Build dict for the finished plan (``None`` when it has no actions)."""
    if not prepared.plan.actions:
        return None
    return emit_build(prepared.plan, prepared.rules, prepared.artifacts)


def config_yaml(plan: Plan, build: Mapping[str, Any]) -> str:
    header = (
        f"# Cloud Build config emitted by ct-orchestrator for {describe_range(plan)}.\n"
        "# Submit with: gcloud builds submit --config FILE\n"
    )
    return header + yaml_text.dump(build)


def _write_atomically(path: Path, text: str) -> None:
    """Readers never see half a config: write a sibling temporary file, then rename it."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            tmp.chmod(0o644)  # mkstemp makes 0600; a build config is not a secret
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InputError(f"cannot write --output {path}: {exc.strerror or exc}") from None
