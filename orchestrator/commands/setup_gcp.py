"""``setup-gcp --print``: the one-time Google Cloud setup for rules.toml, as gcloud commands.

It only prints (a script to read, then run with an owner's credentials); it never calls
Google Cloud. docs/gcp-setup.md explains each command and the documentation it rests on.
"""

from __future__ import annotations

from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.errors import EXIT_OK, InputError
from orchestrator.gcp_setup import setup_script
from orchestrator.workflow import Target, with_overrides


def run(target: Target, io: CommandIO, *, print_only: bool, github_repository: str | None) -> int:
    if not print_only:
        raise InputError(
            "setup-gcp only prints the gcloud commands, it runs nothing: pass --print, read the "
            "script, then run it (python -m orchestrator setup-gcp --print > setup.sh)"
        )
    repository = github_repository or io.env.get("GITHUB_REPOSITORY", "")
    if not repository:
        raise InputError(
            "setup-gcp needs the GitHub repository whose workflows may impersonate the build's "
            "account: pass --github-repo OWNER/REPOSITORY"
        )
    rules = with_overrides(load_rules(target.rules_path), io.env)
    io.stdout.write(setup_script(rules, repository, source=rules.source))
    return EXIT_OK
