"""Command line: argparse, ``main(argv) -> exit code``. Wires commands to adapters; no logic.

Exit codes: 0 ok or nothing to do; 1 a step failed; 2 bad input or config; 3 internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, NoReturn, cast

from orchestrator import __version__
from orchestrator.commands.io import CommandIO
from orchestrator.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_STEP_FAILED,
    InputError,
    OrchestratorError,
)
from orchestrator.objects import BadUri, ObjectError
from orchestrator.output import RedactingStream, Redactor, SafeStream, error_line
from orchestrator.workflow import Target

FORMATS = ("table", "json", "markdown", "github")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` owns every exit code."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see {self.prog} --help)")


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None

    def d(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--repo", type=Path, default=d(Path()), help="repository (default: .)")
    parser.add_argument("--rules", type=Path, default=default, help="default: <repo>/rules.toml")
    parser.add_argument("--base", default=default, help="base ref (default: from CI, else HEAD^)")
    parser.add_argument("--head", default=d("HEAD"), help="head ref (default: HEAD)")
    parser.add_argument(
        "--working-tree",
        action="store_true",
        default=d(False),
        help="also include staged, unstaged and untracked files",
    )
    parser.add_argument(
        "--changed",
        action="append",
        metavar="PATH",
        default=d([]),
        help="plan as if PATH changed at head (repeatable); replaces the diff",
    )
    parser.add_argument(
        "--since-deployed",
        action="store_true",
        default=d(None),
        help="diff from the commit the deploy ledger records (the default in CI)",
    )
    parser.add_argument(
        "--services",
        choices=("local", "cloud"),
        default=default,
        help="where artifacts, the deploy ledger and runs live: the embedded local default "
        "and emulators (local), or Cloud Storage, Pub/Sub and the registry (cloud; the "
        "default with --executor cloudbuild)",
    )
    parser.add_argument("--format", choices=FORMATS, default=d("table"), help="output format")
    parser.add_argument(
        "--all-paths",
        action="store_true",
        default=d(False),
        help="json: list every path in reasons and skipped (default: one per rule and "
        "pattern, with a count)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=d(False), help="show tracebacks on errors"
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line. ``only`` names the one command whose options are added (``""``:
    none, each command a bare name, enough to find which one a command line names); ``None``
    adds every command's. argparse spends about 0.1 ms on each option, so ``main`` builds
    only the command it runs."""
    parser = _Parser(
        prog="orchestrator",
        description="Plan (and later run) the minimal build for a commit range, from rules.toml.",
        epilog="exit codes: 0 ok or nothing to do, 1 a step failed, 2 bad input or config, "
        "3 internal error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan the auto-detected range and print it; execute nothing",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, text, options in _COMMANDS:
        if only is None or only == name:
            command = sub.add_parser(name, help=text, description=text)
            _common(command, suppress=True)
            options(command)
        else:
            sub.add_parser(name, help=text, description=text, add_help=False)
    return parser


def _no_options(parser: argparse.ArgumentParser) -> None:
    pass


def _validate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cloud",
        action="store_true",
        help="also check, with the credentials in use, that the Google Cloud resources exist "
        "and every permission a build needs is held (exit 2 if not, 1 if unreachable)",
    )


def _explain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH")


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor", choices=("local", "cloudbuild"), default="local", help="default: local"
    )
    for flag, var in (("--project", "ORCHESTRATOR_PROJECT"), ("--region", "ORCHESTRATOR_REGION")):
        parser.add_argument(flag, help=f"Cloud Build {flag[2:]} (default: ${var}, then rules.toml)")


def _step_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action_id", metavar="ACTION_ID")
    parser.add_argument("--artifacts", required=True, metavar="JSON")


def _emit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", type=Path, help="write to FILE (default: stdout)")


def _trigger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", choices=("manual", "schedule", "data"), default="manual")
    parser.add_argument(
        "--params", type=Path, metavar="FILE", help="a params.toml whose values replace these"
    )
    parser.add_argument(
        "--data", metavar="URI", help="train on this data (gs://..., or a local file locally)"
    )
    parser.add_argument("--branch", help="whose deployed state (default: this branch)")


def _setup_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the commands (required: setup-gcp runs nothing)",
    )
    parser.add_argument(
        "--github-repo",
        metavar="OWNER/REPOSITORY",
        help="the repository whose workflows may impersonate the build's account "
        "(default: $GITHUB_REPOSITORY)",
    )


def _ledger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ledger_command", choices=("show", "set", "history"))
    parser.add_argument("--branch", help="whose ledger (default: this branch)")
    parser.add_argument(
        "--commit", metavar="REF", help="ledger set: record this commit's artifacts as deployed"
    )
    parser.add_argument(
        "--file", type=Path, metavar="FILE", help="ledger set: record this JSON state as it is"
    )


#: (command, what it does, its own options), in the order --help lists them
_COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("plan", "print the plan for a commit range", _no_options),
    ("validate", "check rules.toml (exit 0 or 2)", _validate_options),
    ("explain", "show which rules match the given paths", _explain_options),
    ("run", "plan the range, then run the minimal steps (exit 1 if a step fails)", _run_options),
    ("step", "perform one action of a build (what the Cloud Build steps run)", _step_options),
    (
        "emit",
        "write the Cloud Build config for the plan (for gcloud builds submit --config)",
        _emit_options,
    ),
    (
        "trigger",
        "start a run of the deployed state, with new parameters or data if given",
        _trigger_options,
    ),
    (
        "setup-gcp",
        "print the one-time Google Cloud setup for rules.toml as gcloud commands",
        _setup_options,
    ),
    ("ledger", "inspect or repair the deploy ledger", _ledger_options),
)


def parse_command_line(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as ``build_parser()`` would, building the options of its command only:
    a first pass with bare command names finds which command it is."""
    named, _ = build_parser("").parse_known_args(argv)
    return build_parser(named.command or "").parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    # every byte written is valid in the stream's encoding (SafeStream), and no secret value a
    # command learned is written at all (RedactingStream)
    redactor = Redactor()
    io = CommandIO(
        stdout=cast(IO[str], RedactingStream(SafeStream(stdout or sys.stdout), redactor)),
        stderr=cast(IO[str], RedactingStream(SafeStream(stderr or sys.stderr), redactor)),
        env=os.environ if env is None else env,
        redactor=redactor,
    )
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        try:
            # --help and --version print (to our stdout) and exit 0 through SystemExit
            with contextlib.redirect_stdout(io.stdout):
                args = parse_command_line(args_list)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else EXIT_OK
        return _dispatch(args, io)
    except OrchestratorError as exc:
        if debug:
            _traceback(io)
        io.stderr.write(error_line(redactor.redact(str(exc))))
        return exc.exit_code
    except ObjectError as exc:  # the bucket layer is shared with the function: no exit codes
        if debug:
            _traceback(io)
        io.stderr.write(error_line(redactor.redact(str(exc))))
        return EXIT_BAD_INPUT if isinstance(exc, BadUri) else EXIT_STEP_FAILED
    except KeyboardInterrupt:
        io.stderr.write(error_line("interrupted"))
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into exit 3
        if debug:
            _traceback(io)
        io.stderr.write(
            error_line(
                redactor.redact(
                    f"internal error: {type(exc).__name__}: {exc} "
                    "(rerun with --debug for the traceback, and please report it)"
                )
            )
        )
        return EXIT_INTERNAL


def _traceback(io: CommandIO) -> None:
    import traceback

    traceback.print_exc(file=io.stderr)


def _dispatch(args: argparse.Namespace, io: CommandIO) -> int:
    # each command's modules are imported when it runs: plan's path stays light
    from orchestrator.commands import plan

    repo: Path = args.repo
    target = Target(
        repo=repo,
        rules_path=args.rules if args.rules is not None else repo / "rules.toml",
        base=args.base,
        head=args.head,
        working_tree=args.working_tree,
        changed=tuple(args.changed),
        since_deployed=True if args.since_deployed else None,
    )
    services_choice: str | None = args.services
    command = args.command
    if command is None:
        if not args.dry_run:
            raise InputError("nothing to do: give a command (plan, explain, validate) or --dry-run")
        return plan.run(
            target, args.format, io, services_choice, show_config=True, all_paths=args.all_paths
        )
    if args.dry_run and command != "plan":
        raise InputError(f"--dry-run does not apply to '{command}'")
    if command == "plan":
        return plan.run(
            target, args.format, io, services_choice, show_config=args.dry_run,
            all_paths=args.all_paths,
        )  # fmt: skip
    if command == "emit":
        from orchestrator.commands import emit

        return emit.run(target, args.output, io, services_choice)
    if command == "run":
        from orchestrator.commands import run as run_command

        # --project/--region win over the environment, which wins over rules.toml [project]
        flags = {"ORCHESTRATOR_PROJECT": args.project, "ORCHESTRATOR_REGION": args.region}
        if any(flags.values()):
            env = {**io.env, **{var: value for var, value in flags.items() if value}}
            io = io._replace(env=env)
        if services_choice is None:
            services_choice = "auto" if args.executor == "cloudbuild" else "local"
        return run_command.run(target, args.executor, args.format, io, services_choice)
    if command == "trigger":
        from orchestrator.commands import trigger

        return trigger.run(
            target,
            io,
            services_choice or "local",
            reason=args.reason,
            params_file=args.params,
            data=args.data,
            branch=args.branch,
        )
    if command == "ledger":
        from orchestrator.commands import ledger_command

        return ledger_command.run(
            target,
            io,
            services_choice or "local",
            args.ledger_command,
            branch=args.branch,
            commit=args.commit,
            file=args.file,
        )
    if command == "setup-gcp":
        from orchestrator.commands import setup_gcp

        return setup_gcp.run(
            target, io, print_only=args.print_only, github_repository=args.github_repo
        )
    if command == "step":
        from orchestrator.commands import step as step_command

        return step_command.run(target, args.action_id, args.artifacts, io)
    if command == "validate":
        from orchestrator.commands import validate

        return validate.run(target, io, cloud=args.cloud)
    if command == "explain":
        from orchestrator.commands import explain

        return explain.run(target, args.paths, io)
    raise InputError(f"unknown command {command!r}")


def main_entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
