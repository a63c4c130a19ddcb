"""``ledger show|set|history``: inspect and repair the deploy ledger.

* ``show``: the state recorded for the branch (JSON), with its URI and generation;
* ``history``: every state ever recorded for it, oldest first, one line each;
* ``set --commit REF``: record REF's artifacts as deployed (names from REF's files; images
  pinned by digest where the registry can tell), which also repairs a corrupt record; the
  next planned range then starts at REF;
* ``set --file FILE``: record the state in FILE as it is (``show``'s output, edited).
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator import ledger
from orchestrator.bounded import MAX_MESSAGE_FILE_BYTES, read_capped
from orchestrator.changes import require_head
from orchestrator.commands.io import CommandIO
from orchestrator.config import load_rules
from orchestrator.deploying import pinned_images, state_of
from orchestrator.errors import EXIT_OK, ConfigError, InputError
from orchestrator.message import DeployedState, StateError, decode_state, encode_state
from orchestrator.model import ChangeSet, Rules
from orchestrator.planning import plan_changes
from orchestrator.services import Services
from orchestrator.trees import CommitTree, check_confined
from orchestrator.workflow import (
    StoreProbe,
    Target,
    detect_ref,
    ledger_location,
    name_build,
    open_checkout,
    open_repo,
    with_overrides,
)


def run(
    target: Target,
    io: CommandIO,
    services_choice: str,
    command: str,
    *,
    branch: str | None,
    commit: str | None,
    file: Path | None,
) -> int:
    services = Services.resolve(target.repo, io.env, services_choice)
    env = services.env()
    rules = with_overrides(load_rules(target.rules_path), io.env)
    git = open_checkout(target.repo)
    ref = f"refs/heads/{branch}" if branch else detect_ref(io.env, git)
    location = ledger_location(rules, ref)
    if location is None:
        raise ConfigError("[project] bucket is required to find the deploy ledger",
                          file=rules.source, key="project.bucket")  # fmt: skip
    if command == "show":
        entry = ledger.read(location, env)
        if entry is None:
            io.stdout.write(f"{location.uri}: nothing deployed yet\n")
            return EXIT_OK
        io.stdout.write(f"{location.uri} (generation {entry.generation}):\n")
        io.stdout.write(json.dumps(json.loads(encode_state(entry.state)), indent=2) + "\n")
        return EXIT_OK
    if command == "history":
        states = ledger.history(location, env)
        if not states:
            io.stdout.write(f"{location.uri}: no history\n")
        for state in states:
            params = ", ".join(f"{k}={v}" for k, v in sorted(state.parameters.items()))
            data = f" data={state.data_uri}" if state.data_uri else ""
            io.stdout.write(
                f"{state.updated}  {state.commit[:12]}  {state.run_id or '-'}  {params}{data}\n"
            )
        return EXIT_OK
    # set
    if (commit is None) == (file is None):
        raise InputError("ledger set takes exactly one of --commit REF or --file FILE")
    if file is not None:
        try:
            state = decode_state(read_capped(file, MAX_MESSAGE_FILE_BYTES), source=str(file))
        except OSError as exc:
            raise InputError(f"--file {file}: {exc.strerror or exc}") from None
        except StateError as exc:
            raise InputError(str(exc)) from None
    else:
        state = _state_at(target, rules, services, ref, commit or "HEAD")
    ledger.overwrite(location, state, env)
    io.stdout.write(f"{location.uri}: recorded {state.commit[:12]} as deployed\n")
    return EXIT_OK


def _state_at(
    target: Target, rules: Rules, services: Services, ref: str, commit: str
) -> DeployedState:
    """The state ``commit``'s files name, as if it had been deployed."""
    git = open_repo(target.repo)
    head = require_head(git, commit).sha
    plan = plan_changes(ChangeSet(None, head, "ledger-set", ()), rules, ())
    tree = CommitTree(git, head)
    check_confined(tree, rules)
    names = name_build(tree, rules, plan, ref)
    return state_of(names, pinned_images(names, StoreProbe(services, rules)), services.env())
