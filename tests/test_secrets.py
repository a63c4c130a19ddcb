"""Secrets: rules.toml's [build] secret_env (file:line:key errors), the redactor, and which
steps of a plan need them. Pure: literals only."""

from __future__ import annotations

import io
import json

import pytest

from orchestrator import secrets
from orchestrator.config import parse_rules
from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Action, Plan
from orchestrator.output import REDACTED, Redactor, error_line, one_line, secret_masks

V1 = "version = 1\n"
VERSION = "projects/demo-project/secrets/hf-token/versions/latest"
NOT_A_VERSION = (
    "is not a Secret Manager secret version: write projects/<project id or number>/secrets/"
    "<secret>/versions/<version> (a version number, latest, or an alias)"
)

# -- rules.toml ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('secret_env = { HF_TOKEN = "' + VERSION + '" }', (("HF_TOKEN", VERSION),)),
        (  # a project number, a version number, an alias; sorted by name
            'secret_env = { B = "projects/123456/secrets/b_1/versions/7", '
            'A = "projects/example.com:my-project/secrets/A-b/versions/prod-2024" }',
            (
                ("A", "projects/example.com:my-project/secrets/A-b/versions/prod-2024"),
                ("B", "projects/123456/secrets/b_1/versions/7"),
            ),
        ),
        ("secret_env = {}", ()),
        ("", ()),
    ],
)
def test_secret_env_loads(table: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert parse_rules(V1 + "[build]\n" + table + "\n").build.secret_env == expected


def test_secret_env_as_its_own_table() -> None:
    text = V1 + '[build]\ntimeout = "600s"\n\n[build.secret_env]\nTOKEN = "' + VERSION + '"\n'
    assert parse_rules(text).build.secret_env == (("TOKEN", VERSION),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # the short form: refused, naming the full one
            '[build]\nsecret_env = { TOKEN = "projects/demo-project/secrets/hf-token:latest" }\n',
            "rules.toml:3: [build.secret_env.TOKEN] 'projects/demo-project/secrets/hf-token:latest'"
            " is gcloud's SECRET:VERSION shorthand, which Cloud Build does not read: write "
            "projects/demo-project/secrets/hf-token/versions/latest",
        ),
        (
            '[build]\nsecret_env = { TOKEN = "hf-token" }\n',
            f"rules.toml:3: [build.secret_env.TOKEN] 'hf-token' {NOT_A_VERSION}",
        ),
        (  # rules.toml is not substituted: $PROJECT_ID would reach Secret Manager as written
            '[build]\nsecret_env = { T = "projects/$PROJECT_ID/secrets/s/versions/1" }\n',
            f"rules.toml:3: [build.secret_env.T] 'projects/$PROJECT_ID/secrets/s/versions/1' "
            f"{NOT_A_VERSION}",
        ),
        (
            '[build]\nsecret_env = { T = "projects/demo-project/secrets/s/versions/0" }\n',
            f"rules.toml:3: [build.secret_env.T] 'projects/demo-project/secrets/s/versions/0' "
            f"{NOT_A_VERSION}",
        ),
        (  # regional secrets are not what Cloud Build's versionName takes
            '[build]\nsecret_env = { T = "projects/demo-project/locations/us/secrets/s/versions/1"'
            " }\n",
            "rules.toml:3: [build.secret_env.T] "
            f"'projects/demo-project/locations/us/secrets/s/versions/1' {NOT_A_VERSION}",
        ),
        (
            '[build]\nsecret_env = { T = "projects/demo-project/secrets/a.b/versions/1" }\n',
            "rules.toml:3: [build.secret_env.T] 'projects/demo-project/secrets/a.b/versions/1' "
            f"{NOT_A_VERSION}",
        ),
        (
            '[build]\nlogging = "NONE"\n\n[build.secret_env]\nOK = "' + VERSION + '"\n'
            '"1X" = "' + VERSION + '"\n',
            "rules.toml:7: [build.secret_env.1X] '1X' cannot be a secret's environment "
            "variable: write letters, digits and '_', not starting with a digit",
        ),
        (
            '[build]\nsecret_env = { "MY-TOKEN" = "' + VERSION + '" }\n',
            "rules.toml:3: [build.secret_env.MY-TOKEN] 'MY-TOKEN' cannot be a secret's "
            "environment variable: write letters, digits and '_', not starting with a digit",
        ),
        (
            "[build]\nsecret_env = { T = 1 }\n",
            "rules.toml:3: [build.secret_env] must be a table of strings",
        ),
        (
            '[build]\nsecret_env = "' + VERSION + '"\n',
            "rules.toml:3: [build.secret_env] must be a table of strings",
        ),
    ],
)
def test_a_bad_secret_is_one_error_naming_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(V1 + text)
    assert str(caught.value) == expected


# -- which steps need them -----------------------------------------------------------------

RULES = parse_rules(
    V1
    + '[test]\ncommand = ["pytest"]\n[build]\nsecret_env = { A = "'
    + VERSION
    + '", B = "projects/1/secrets/b/versions/2" }\n'
)


def _plan(*kinds: str) -> Plan:
    actions = tuple(Action(id=k, kind=k, target=None, needs=(), reasons=()) for k in kinds)
    return Plan(base=None, head="h" * 40, base_reason="explicit", changes=(), actions=actions)


@pytest.mark.parametrize(
    ("kinds", "needed"),
    [
        (("test", "upload_source", "publish"), ("A", "B")),
        (("compile_pipeline", "publish"), ("A", "B")),
        (("build_image", "upload_source", "deploy_function", "publish"), ()),
        (("publish",), ()),
    ],
)
def test_only_steps_that_run_the_repositorys_commands_need_secrets(
    kinds: tuple[str, ...], needed: tuple[str, ...]
) -> None:
    assert secrets.needed(RULES, _plan(*kinds)) == needed
    env = {"A": "a-value", "B": "b-value", "PATH": "/bin"}
    for kind in kinds:
        step_env = secrets.step_env(RULES, kind, env)
        gets = kind in secrets.RECEIVES_SECRETS
        assert ("A" in step_env, "B" in step_env, step_env["PATH"]) == (gets, gets, "/bin")


def test_a_missing_secret_is_named_with_how_to_set_it() -> None:
    with pytest.raises(InputError) as caught:
        secrets.require(RULES, _plan("test"), {"A": "x", "B": ""})
    assert str(caught.value) == (
        "the secret B is not set in the environment: rules.toml [build] secret_env declares it "
        "(projects/1/secrets/b/versions/2) for the test and compile_pipeline steps; export it "
        'before a local run, for example B="$(gcloud secrets versions access 2 --secret=b '
        '--project=1)"'
    )
    with pytest.raises(InputError, match=r"^the secrets A, B are not set in the environment"):
        secrets.require(RULES, _plan("compile_pipeline"), {})
    secrets.require(RULES, _plan("publish"), {})  # no step of this plan gets them
    secrets.require(RULES, _plan("test"), {"A": "x", "B": "y"})


# -- the redactor ------------------------------------------------------------------------

REGEX = "p@ss.*w(o)rd[0-9]+?$^|\\d{2}"
MULTILINE = "-----BEGIN KEY-----\n  first-line-of-key\n  ab\n\tsecond \\ line\r\n-----END KEY-----"


def test_a_value_is_replaced_literally_wherever_it_appears() -> None:
    redactor = Redactor([REGEX])
    assert redactor.redact(f"a{REGEX}b {REGEX}") == f"a{REDACTED}b {REDACTED}"
    assert redactor.redact("pXssword1") == "pXssword1"  # regex characters are characters
    assert redactor.redact(json.dumps({"k": REGEX})) == json.dumps({"k": REDACTED})
    assert redactor.redact_data({"k": [REGEX, (1, REGEX)], REGEX: None}) == {
        "k": [REDACTED, (1, REDACTED)],
        REDACTED: None,
    }


def test_each_line_of_a_multiline_value_is_masked_too() -> None:
    assert secret_masks(MULTILINE) == (
        MULTILINE,
        "-----BEGIN KEY-----",
        "first-line-of-key",
        "second \\ line",
        "-----END KEY-----",
    )
    redactor = Redactor([MULTILINE])
    assert redactor.redact(f"<{MULTILINE}>") == f"<{REDACTED}>"
    # a tool that prints one line, or re-indents it, still shows nothing of it
    assert redactor.redact("key: first-line-of-key\n") == f"key: {REDACTED}\n"
    # ...as the JSON report and a one-line error write it
    assert REDACTED in redactor.redact(json.dumps(MULTILINE))
    assert MULTILINE not in redactor.redact(json.dumps(MULTILINE))
    assert redactor.redact(error_line(f"failed: {MULTILINE}")) == (
        f"orchestrator: error: failed: {REDACTED}\n"
    )
    assert one_line(MULTILINE) not in redactor.redact(one_line(MULTILINE))


def test_longer_values_win_over_values_inside_them() -> None:
    redactor = Redactor(["token", "token-and-more"])
    assert redactor.redact("token-and-more token") == f"{REDACTED} {REDACTED}"


def test_an_empty_redactor_changes_nothing() -> None:
    redactor = Redactor(["", ""])
    assert not redactor
    assert redactor.redact("a***b") == "a***b"
    assert redactor.redact_data({"a": 1}) == {"a": 1}


# -- the executor and the report ---------------------------------------------------------


def test_every_step_message_is_redacted_before_it_is_shown_or_reported() -> None:
    from orchestrator.errors import StepFailed
    from orchestrator.run.local import PlainProgress, execute
    from orchestrator.run.report import PipelineRun, RunReport
    from orchestrator.run.steps import StepOutcome

    redactor = Redactor([MULTILINE, REGEX])

    def run_step(action: Action) -> StepOutcome:
        if action.kind == "test":
            raise StepFailed(f"the tests printed {MULTILINE}")
        return StepOutcome(message=f"done with {REGEX}")

    shown = io.StringIO()
    report = execute(
        _plan("test", "upload_source"),
        run_step,
        progress=PlainProgress(shown),
        redact=redactor.redact,
    )
    assert [s.message for s in report.steps] == [
        f"the tests printed {REDACTED}",
        f"done with {REDACTED}",
    ]
    assert MULTILINE not in shown.getvalue() and REGEX not in shown.getvalue()

    published = RunReport(
        status="succeeded",
        published={"parameters": {"note": REGEX}},
        pipeline_run=PipelineRun(status="failed", run_id=f"run {REGEX}"),
    ).redacted(redactor)
    assert REGEX not in published.to_json()
    assert published.to_dict()["published"] == {"parameters": {"note": REDACTED}}
