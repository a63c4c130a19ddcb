"""Secret environment variables: rules.toml's ``[build] secret_env``. Pure.

Each secret is a Secret Manager version. On Cloud Build it reaches its steps through the build's
``availableSecrets`` and each step's ``secretEnv`` (``emit.cloudbuild``); on this machine its
value comes from the process environment (``run.local``). Only the steps that run the
repository's own commands get it (:data:`RECEIVES_SECRETS`), and its value is never shown:
the redactor (``output.Redactor``) replaces it in every line, report and error.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.errors import InputError
from orchestrator.model import Plan, Rules

#: The action kinds whose steps get the secrets: those that run a command from rules.toml, the
#: repository's own code. ``test`` runs ``[test] setup`` and ``command`` (tests that call a
#: private API, a private package index); ``compile_pipeline`` runs ``[pipeline] compile``.
#: Cloud Build gives a secret only to the steps that list it in ``secretEnv`` ("In the build
#: step where you want to use the secret ... add a secretEnv field":
#: https://cloud.google.com/build/docs/securing-builds/use-secrets), so the others never see
#: it: ``build_image`` runs Docker, whose build gets no step environment and would bake a
#: secret passed as a build argument into the image's history ("Build arguments ... are
#: visible in the image history": https://docs.docker.com/reference/dockerfile/#arg);
#: ``upload_source``, ``deploy_function`` and ``publish`` run this tool and gcloud only (the
#: function gets its own secrets at deploy time, ``--set-secrets``).
RECEIVES_SECRETS = ("test", "compile_pipeline")


def names(rules: Rules) -> tuple[str, ...]:
    """Every declared secret's variable name, sorted."""
    return tuple(name for name, _ in rules.build.secret_env)


def needed(rules: Rules, plan: Plan) -> tuple[str, ...]:
    """The secrets ``plan`` needs: all of them when a step that gets them is planned, else
    none (Cloud Build refuses a secret no step uses, and a run must not ask for one)."""
    if any(action.kind in RECEIVES_SECRETS for action in plan.actions):
        return names(rules)
    return ()


def values(rules: Rules, env: Mapping[str, str]) -> list[str]:
    """The values of the declared secrets that ``env`` holds: what is never shown."""
    return [env[name] for name in names(rules) if env.get(name)]


def require(rules: Rules, plan: Plan, env: Mapping[str, str]) -> None:
    """Raise ``InputError`` (exit 2) naming each secret ``plan`` needs that ``env`` lacks."""
    missing = [name for name in needed(rules, plan) if not env.get(name)]
    if not missing:
        return
    versions = dict(rules.build.secret_env)
    project, _, rest = versions[missing[0]].removeprefix("projects/").partition("/secrets/")
    secret, _, version = rest.partition("/versions/")
    one = len(missing) == 1
    raise InputError(
        f"the secret{'' if one else 's'} {', '.join(missing)} {'is' if one else 'are'} not set "
        f"in the environment: {rules.source} [build] secret_env declares "
        f"{'it' if one else 'them'} ({', '.join(versions[name] for name in missing)}) for the "
        f"{' and '.join(RECEIVES_SECRETS)} steps; export {'it' if one else 'each'} before a "
        f'local run, for example {missing[0]}="$(gcloud secrets versions access {version} '
        f'--secret={secret} --project={project})"'
    )


def step_env(rules: Rules, kind: str, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a step of ``kind``: ``env``, less the secrets unless it gets them."""
    if kind in RECEIVES_SECRETS:
        return dict(env)
    hidden = set(names(rules))
    return {key: value for key, value in env.items() if key not in hidden}
