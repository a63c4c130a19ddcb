"""Secrets in the emitted Cloud Build config: named in availableSecrets and the steps' secretEnv,
never carried; the test step masks their values in its own output (run here by bash, after
Cloud Build's substitution)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from orchestrator.adapters.cloudbuild import build_from_dict
from orchestrator.emit import yaml_text
from orchestrator.emit.cloudbuild import emit_build
from orchestrator.model import Rules
from orchestrator.output import REDACTED
from tests.integration.test_cloudbuild_entry import substitute
from tests.test_emit_cloudbuild import PLANS, RULES, _artifacts, _plan, _rules, _strings

TOKEN = "projects/demo-project/secrets/hf-token/versions/latest"  # noqa: S105 - a name
KEY = "projects/123456/secrets/signing_key/versions/3"
SECRET_RULES = RULES.replace(
    'machine_type = "E2_HIGHCPU_8"',
    'machine_type = "E2_HIGHCPU_8"\n'
    f'secret_env = {{ HF_TOKEN = "{TOKEN}", SIGNING_KEY = "{KEY}" }}',
)
NAMES = ["HF_TOKEN", "SIGNING_KEY"]
#: the action kinds whose steps run the repository's own commands, and only those
GETS_SECRETS = {"test", "compile_pipeline"}


@pytest.fixture(scope="module")
def rules() -> Rules:
    return _rules(SECRET_RULES)


@pytest.mark.parametrize("paths", PLANS.values(), ids=PLANS.keys())
def test_secrets_are_named_for_the_steps_that_run_the_repositorys_commands(
    rules: Rules, paths: tuple[str, ...]
) -> None:
    plan = _plan(rules, *paths)
    config = emit_build(plan, rules, _artifacts(rules))
    assert config is not None
    assert config["availableSecrets"] == {
        "secretManager": [
            {"versionName": TOKEN, "env": "HF_TOKEN"},
            {"versionName": KEY, "env": "SIGNING_KEY"},
        ]
    }
    kinds = {a.id: a.kind for a in plan.actions}
    for step in config["steps"]:
        gets = kinds.get(step["id"]) in GETS_SECRETS
        assert step.get("secretEnv") == (NAMES if gets else None), step["id"]
        assert "env" not in step  # never as plain environment
    # the client's Build reads it back, with no unknown field
    build = build_from_dict(config)
    assert [(s.env, s.version_name) for s in build.available_secrets.secret_manager] == [
        ("HF_TOKEN", TOKEN),
        ("SIGNING_KEY", KEY),
    ]
    assert {s.id: list(s.secret_env) for s in build.steps if s.secret_env} == {
        a.id: NAMES for a in plan.actions if a.kind in GETS_SECRETS
    }
    assert yaml.safe_load(yaml_text.dump(config)) == config


def test_a_build_no_step_of_which_gets_them_declares_none() -> None:
    # Cloud Build: each secret "must be used by at least one build step"
    rules = _rules(
        'version = 1\n[project]\nbucket = "b-bucket"\nregistry = "r.example/p"\n'
        'topic = "runs"\n[build]\nsecret_env = { HF_TOKEN = "' + TOKEN + '" }\n'
        '[components.trainer]\ncontext = "components/trainer"\n'
        '[[rule]]\nname = "p"\npaths = ["pipeline/params.toml"]\ndo = "retrain"\n'
        '[[rule]]\nname = "f"\npaths = ["function/"]\ndo = "deploy_function"\n'
    )
    for path in ("pipeline/params.toml", "function/main.py"):
        plan = _plan(rules, path)
        assert plan.actions and not {a.kind for a in plan.actions} & GETS_SECRETS
        config = emit_build(plan, rules, _artifacts(rules))
        assert config is not None
        assert "availableSecrets" not in config
        assert not any("secretEnv" in step for step in config["steps"])
        build_from_dict(config)


def test_without_secrets_the_test_step_is_the_command_alone() -> None:
    rules = _rules()
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    assert "availableSecrets" not in config
    assert config["steps"][0]["args"] == [
        "-euo",
        "pipefail",
        "-c",
        "pip install -e . && python -m pytest -k 'not $$slow'",
    ]


REGEX = "p@ss.*w(o)rd[0-9]+?$^|\\d{2} &amp; \\\\ 'q' \"dq\""
MULTILINE = "-----BEGIN KEY-----\n  first-line-of-key\n  ab\n\tsecond \\ line\r\n-----END KEY-----"
#: a test command that prints both secrets (stdout and stderr, whole and line by line) and fails
PRINTS = (
    "import os, sys\n"
    "t, k = os.environ['HF_TOKEN'], os.environ['SIGNING_KEY']\n"
    "print('token:', t)\n"
    "print('key:', k, file=sys.stderr)\n"
    "print('one line of it:', k.splitlines()[1].strip())\n"
    "print('short lines are kept: ab')\n"
    "sys.exit(3)\n"
)


def _step(config: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in config["steps"] if s["id"] == step_id)


def test_the_test_step_masks_the_secrets_in_what_it_prints() -> None:
    """The step as Cloud Build runs it: its args substituted, by bash, with secretEnv set."""
    rules = _rules(
        SECRET_RULES.replace(
            'command = ["python", "-m", "pytest", "-k", "not $slow"]',
            f"command = {json.dumps(['python3', '-c', PRINTS])}",
        ).replace('setup = "pip install -e ."', 'setup = "echo setting up with $HF_TOKEN"')
    )
    config = emit_build(_plan(rules, "src/app.py"), rules, _artifacts(rules))
    assert config is not None
    step = _step(config, "test")
    assert step["entrypoint"] == "bash"
    args = [substitute(arg, {}) for arg in step["args"]]
    env = {"PATH": "/usr/bin:/bin", "HF_TOKEN": REGEX, "SIGNING_KEY": MULTILINE}
    done = subprocess.run(["bash", *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 3  # the command's own status (pipefail)
    out = done.stdout
    assert REGEX not in out and MULTILINE not in out
    for line in MULTILINE.splitlines():
        if len(line.strip()) >= 4:
            assert line.strip() not in out
    # stderr (unbuffered) comes first: the key's first line with its label, then its other
    # lines, each masked but the one too short to matter; stdout at exit
    assert out.splitlines() == [
        f"setting up with {REDACTED}",
        f"key: {REDACTED}",
        f"  {REDACTED}",
        "  ab",
        f"\t{REDACTED}",
        REDACTED,
        f"token: {REDACTED}",
        f"one line of it: {REDACTED}",
        "short lines are kept: ab",
    ]
    assert done.stderr == ""


def test_no_secret_value_can_reach_the_config() -> None:
    """The emitter never sees a value: only names and version names are in the config."""
    rules = _rules(SECRET_RULES)
    config = emit_build(_plan(rules, *PLANS["mixed"]), rules, _artifacts(rules))
    assert config is not None
    strings = _strings(config)
    assert TOKEN in strings and KEY in strings
    assert not [s for s in strings if "HF_TOKEN=" in s or "SIGNING_KEY=" in s]
