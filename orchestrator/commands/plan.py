"""``plan`` and ``--dry-run``: plan the range and print it in the chosen format.

``--dry-run`` also shows the Cloud Build config the plan emits, after the plan, for the human
formats (table, markdown); ``json`` keeps the plan schema unchanged and ``github`` adds nothing.
"""

from __future__ import annotations

import re

from orchestrator import render, secrets
from orchestrator.commands.io import CommandIO
from orchestrator.errors import EXIT_OK, ConfigError, InputError
from orchestrator.model import Plan
from orchestrator.output import make_console, wants_rich
from orchestrator.services import Services
from orchestrator.workflow import Prepared, Target, prepare


def run(
    target: Target,
    fmt: str,
    io: CommandIO,
    services: str | None = None,
    *,
    show_config: bool = False,
    all_paths: bool = False,
) -> int:
    """The finished plan (``workflow.prepare``): what ``run`` with the same ``--services``
    would execute."""
    prepared = prepare(target, io.env, Services.resolve(target.repo, io.env, services))
    io.redactor.add(secrets.values(prepared.rules, io.env))  # never shown, even in a plan
    show(prepared.plan, fmt, io, all_paths=all_paths)
    if show_config and fmt in ("table", "markdown"):
        _show_config(prepared, fmt, io)
    return EXIT_OK


def _show_config(prepared: Prepared, fmt: str, io: CommandIO) -> None:
    from orchestrator.commands import emit

    try:
        build = emit.build_config(prepared)
    except ConfigError as exc:
        io.stdout.write(f"\nCloud Build config: not shown: {exc}\n")
        return
    plan = prepared.plan
    if build is None:
        io.stdout.write("\nCloud Build config: none (the plan has no actions)\n")
        return
    text = emit.config_yaml(plan, build)
    if fmt == "markdown":
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", text)), default=0))
        io.stdout.write(f"\n### Cloud Build config\n\n{fence}yaml\n{text}{fence}\n")
    else:
        io.stdout.write(f"\nCloud Build config (python -m orchestrator emit):\n\n{text}")


def show(plan: Plan, fmt: str, io: CommandIO, *, all_paths: bool = False) -> None:
    if fmt == "json":
        io.stdout.write(render.render_json(plan, all_paths=all_paths))
    elif fmt == "markdown":
        io.stdout.write(render.render_markdown(plan))
    elif fmt == "github":
        _write_github(plan, io)
        io.stdout.write(render.render_text(plan))
    elif wants_rich(io.stdout, io.env):
        render.print_table(plan, make_console(io.stdout))
    else:
        io.stdout.write(render.render_text(plan))


def _write_github(plan: Plan, io: CommandIO) -> None:
    output_path = io.env.get("GITHUB_OUTPUT")
    summary_path = io.env.get("GITHUB_STEP_SUMMARY")
    if not output_path and not summary_path:
        raise InputError(
            "--format github needs GITHUB_OUTPUT or GITHUB_STEP_SUMMARY "
            "(set by GitHub Actions); use --format markdown elsewhere"
        )
    try:
        with (
            open(output_path, "a", encoding="utf-8") if output_path else _null() as out,
            open(summary_path, "a", encoding="utf-8") if summary_path else _null() as summary,
        ):
            render.write_github(plan, out, summary)
    except OSError as exc:
        raise InputError(f"cannot write the GitHub outputs: {exc}") from None


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
