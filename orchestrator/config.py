"""rules.toml -> validated ``Rules``.

The only place that reads rules.toml. Every error is a ``ConfigError`` naming the file, the
line (TOML's own for syntax errors; found in the text for semantic ones) and the key or rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from orchestrator import toml_subset
from orchestrator.bounded import MAX_RULES_BYTES, read_capped
from orchestrator.errors import ConfigError
from orchestrator.gitignore import compile_pattern
from orchestrator.model import (
    DIRECTIVE_KINDS,
    BuildSettings,
    Component,
    DataSettings,
    Directive,
    FunctionSettings,
    PipelineSettings,
    ProjectSettings,
    Rule,
    Rules,
    SourceSettings,
    TestSettings,
    UnmatchedPolicy,
)
from orchestrator.objects import BadUri, check_key

SUPPORTED_VERSIONS = (1,)
UNMATCHED_POLICIES: tuple[UnmatchedPolicy, ...] = ("all", "skip", "error")
_COMPONENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # what a registry accepts as a repository
_TOP_KEYS = (
    "version", "project", "unmatched", "components", "rule", "test",
    "pipeline", "source", "function", "build", "data",
)  # fmt: skip
_TEST_KEYS = {"command": "argv", "setup": "str", "image": "str"}
_PIPELINE_KEYS = {"dir": "str", "compile": "argv", "params": "str"}
_FUNCTION_KEYS = {
    "dir": "str", "name": "str", "entry_point": "str", "runtime": "str",
    "service_account": "str", "trigger_service_account": "str", "env": "env",
    "memory": "str", "timeout": "str", "max_instances": "int", "min_instances": "int",
    "ingress": "str", "vpc_connector": "str", "egress": "str",
}  # fmt: skip
_BUILD_KEYS = {
    "machine_type": "str", "logging": "str", "logs_bucket": "str", "timeout": "str",
    "service_account": "str", "python_image": "str", "docker_image": "str",
    "gcloud_image": "str", "install": "str", "secret_env": "env",
}  # fmt: skip

# `gcloud functions deploy --help` (https://cloud.google.com/sdk/gcloud/reference/functions/deploy):
# --ingress-settings "must be one of: all, internal-only, internal-and-gclb"; --egress-settings
# "must be one of: private-ranges-only, all", and needs --vpc-connector.
INGRESS_SETTINGS = ("all", "internal-only", "internal-and-gclb")
EGRESS_SETTINGS = ("private-ranges-only", "all")
# --memory for 2nd gen: "<number><unit> with allowed units of k, M, G, Ki, Mi, Gi. Ending 'b' or
# 'B' is allowed"; the tiers run from 128 MiB to 32 GiB
# (https://cloud.google.com/functions/docs/configuring/memory).
_MEMORY = re.compile(r"^(\d+)(k|M|G|Ki|Mi|Gi)[bB]?$")
_MEMORY_UNITS = {"k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_MEMORY_RANGE = (128 * 2**20, 32 * 2**30)
# "The maximum timeout duration is ... 9 minutes (540 seconds) for event-driven functions"
# (https://cloud.google.com/functions/docs/configuring/timeout); gcloud's lower bound is 1s.
_TIMEOUT = re.compile(r"^(\d+)s$")
MAX_EVENT_FUNCTION_SECONDS = 540
# --vpc-connector: "ID of the connector or fully qualified identifier for the connector".
_VPC_CONNECTOR = re.compile(r"^(projects/[^/\s]+/locations/[^/\s]+/connectors/)?[^/\s]+$")
# Keys Cloud Run refuses or sets itself for a function
# (https://cloud.google.com/run/docs/configuring/services/overview-environment-variables):
# not empty, no '=', no X_GOOGLE_ prefix; FUNCTION_TARGET, FUNCTION_SIGNATURE_TYPE, K_SERVICE,
# K_REVISION and PORT are reserved.
RESERVED_ENV_KEYS = (
    "FUNCTION_TARGET",
    "FUNCTION_SIGNATURE_TYPE",
    "K_SERVICE",
    "K_REVISION",
    "PORT",
)
# BuildOptions.LoggingMode in google-cloud-build (tests check it against the client's enum).
LOGGING_MODES = (
    "LOGGING_UNSPECIFIED", "LEGACY", "GCS_ONLY", "STACKDRIVER_ONLY", "CLOUD_LOGGING_ONLY", "NONE",
)  # fmt: skip
# Cloud Build refuses a build with a user-specified service account unless it "(a) specify
# 'build.logs_bucket', (b) use the REGIONAL_USER_OWNED_BUCKET ... option, or (c) use either
# CLOUD_LOGGING_ONLY / NONE logging options" (its error; see
# https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts).
SERVICE_ACCOUNT_LOGGING = ("CLOUD_LOGGING_ONLY", "NONE")
# Logging modes that write nothing to Cloud Storage: a logs bucket would stay empty.
_NO_BUCKET_LOGGING = ("CLOUD_LOGGING_ONLY", "STACKDRIVER_ONLY", "NONE")
_LOGS_BUCKET = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$")
# [build] secret_env: NAME = "projects/<project>/secrets/<secret>/versions/<version>".
# Cloud Build's availableSecrets.secretManager[].versionName is the "Resource name of the
# SecretVersion. In format: projects/*/secrets/*/versions/*" (SecretManagerSecret,
# https://cloud.google.com/build/docs/api/reference/rest/v1/projects.builds#secretmanagersecret).
# A project is its id (6-30 lowercase letters, digits, hyphens; a legacy domain-scoped one is
# "example.com:id") or its number; a secret id is "uppercase and lowercase letters, numerals,
# hyphens, and underscores", at most 255 characters
# (https://cloud.google.com/secret-manager/docs/creating-and-accessing-secrets); a version is
# its number, "latest", or an alias: at most 63 letters, numerals, '-' and '_', starting with a
# letter (Secret.versionAliases,
# https://cloud.google.com/secret-manager/docs/reference/rest/v1/projects.secrets).
# gcloud's SECRET:VERSION shorthand (--set-secrets) is refused, naming the full form: the build
# config, the Secret Manager console and this file then spell a secret the same way.
SECRET_VERSION = re.compile(
    r"^projects/(?P<project>(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]+)"
    r"/secrets/(?P<secret>[A-Za-z0-9_-]{1,255})"
    r"/versions/(?P<version>[1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]{0,62})$"
)
_SECRET_SHORT_FORM = re.compile(r"^(projects/[^/]+/secrets/[^/:]+):([^/:]+)$")
# A secret reaches its steps as an environment variable, and the Cloud Build test step reads
# it back by name (bash's ${!NAME}): a portable shell variable name.
_SECRET_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT_KEYS = ("gcp_project", "region", "bucket", "registry", "topic", "prefix")
_DATA_KEYS = {"prefix": "str", "bucket": "str"}
_COMPONENT_KEYS = ("context", "dockerfile", "build_args")
_RULE_KEYS = ("name", "paths", "do")

_HEADER = re.compile(r"^\s*(\[\[?[^\]]*\]\]?)\s*(?:#.*)?$")
T = TypeVar("T")


def load_rules(path: Path) -> Rules:
    """Read and validate ``path``. Raises ``ConfigError`` for anything wrong.

    A leading UTF-8 byte-order mark (some Windows editors write one) is dropped; it is no
    line of its own, so line numbers in errors stay those of the file.
    """
    source = str(path)
    try:  # bounded: --rules may name a device that never ends (/dev/zero)
        text = read_capped(path, MAX_RULES_BYTES).decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; create it (see the README's rules.toml reference) or pass --rules",
            file=source,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file: {exc}", file=source) from None
    return parse_rules(text, source=source)


def parse_rules(text: str, *, source: str = "rules.toml") -> Rules:
    """Validate the TOML ``text``; ``source`` names it in errors."""
    try:
        data = toml_subset.loads(text)  # tomllib for anything but the usual shape
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError("invalid TOML: values are nested too deeply", file=source) from None
    except ValueError as exc:  # tomllib's errors, and the interpreter's integer limit
        import tomllib  # only on an error: the usual rules file never loads tomllib

        if isinstance(exc, tomllib.TOMLDecodeError):
            line = _toml_error_line(str(exc))
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
            raise ConfigError(f"invalid TOML: {message}", file=source, line=line) from None
        reason = (
            "an integer has more digits than Python converts (sys.get_int_max_str_digits())"
            if "integer string conversion" in str(exc)
            else str(exc)[:100]
        )
        raise ConfigError(f"invalid TOML: {reason}", file=source) from None
    return _Validator(text, source).rules(data)


def _toml_error_line(message: str) -> int | None:
    found = re.search(r"at line (\d+)", message)
    return int(found.group(1)) if found else None


class _Validator:
    """Turns the parsed TOML dict into records; knows where keys are in the text for messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = text.splitlines()
        self._headers: dict[str, list[int]] = {}  # "[[rule]]" -> the lines it stands on
        for number, line in enumerate(self.lines, start=1):
            found = _HEADER.match(line)
            if found:
                self._headers.setdefault(found.group(1).replace(" ", ""), []).append(number)

    # -- locating keys in the text -------------------------------------------------------

    def _header_line(self, header: str, occurrence: int = 0) -> int | None:
        lines = self._headers.get(header.replace(" ", ""), [])
        return lines[occurrence] if occurrence < len(lines) else None

    def _key_line(self, key: str, after: int | None) -> int | None:
        """The line of ``key = ...`` in the table that starts at line ``after`` (or the top)."""
        start = after or 0
        pattern = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=")
        for number in range(start + 1 if after else 1, len(self.lines) + 1):
            line = self.lines[number - 1]
            if after is not None and number > after and re.match(r"^\s*\[", line):
                break
            if after is None and re.match(r"^\s*\[", line):
                break
            if pattern.match(line):
                return number
        return after

    def fail(self, message: str, *, key: str, line: int | None) -> ConfigError:
        return ConfigError(message, file=self.source, line=line, key=key)

    # -- typed getters -------------------------------------------------------------------

    def _typed(
        self,
        table: Mapping[str, Any],
        key: str,
        kind: type[T],
        *,
        where: str,
        header: int | None,
        what: str,
        required: bool = False,
    ) -> T | None:
        if key not in table:
            if required:
                raise self.fail(f"missing required key '{key}'", key=where, line=header)
            return None
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(
                f"must be {what}, not {_describe(value)}",
                key=f"{where}.{key}" if where else key,
                line=self._key_line(key, header),
            )
        return value

    def _unknown_keys(
        self, table: Mapping[str, Any], allowed: tuple[str, ...], *, where: str, header: int | None
    ) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(
                    f"unknown key '{key}' (allowed: {', '.join(allowed)})",
                    key=f"{where}.{key}" if where else key,
                    line=self._key_line(key, header),
                )

    # -- the sections --------------------------------------------------------------------

    def rules(self, data: dict[str, Any]) -> Rules:
        self._unknown_keys(data, _TOP_KEYS, where="", header=None)
        version = self._typed(
            data, "version", int, where="", header=None, what="an integer", required=True
        )
        if version not in SUPPORTED_VERSIONS:
            raise self.fail(
                f"unsupported version {version}; this orchestrator reads version "
                + ", ".join(map(str, SUPPORTED_VERSIONS)),
                key="version",
                line=self._key_line("version", None),
            )
        self._inside_repository(data)
        project = self._project(data)
        unmatched = self._unmatched(data)
        components = self._components(data)
        test = self._test(data)
        rules = self._rules(data, components, test)
        pipeline = self._settings(data, "pipeline", _PIPELINE_KEYS)
        if "dir" in pipeline and "params" not in pipeline:
            pipeline["params"] = f"{pipeline['dir']}/params.toml"
        return Rules(
            source=self.source,
            version=version or 0,
            project=project,
            unmatched=unmatched,
            components=components,
            rules=rules,
            test=test,
            pipeline=PipelineSettings(**pipeline),
            training_source=SourceSettings(**self._settings(data, "source", {"dir": "str"})),
            function=self._function(data),
            build=self._build(data),
            data=self._data(data),
        )

    def _inside_repository(self, data: Mapping[str, Any]) -> None:
        """The paths rules.toml names stay in the repository: relative, and no '..' that
        climbs out (a Dockerfile may sit outside its context, never outside the repository).
        What a symbolic link makes of them is checked where they are read (``trees``)."""
        named = (
            ("pipeline", "dir"),
            ("pipeline", "params"),
            ("source", "dir"),
            ("function", "dir"),
        )
        for table, key in named:
            section = data.get(table)
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, str) and _leaves(value):
                raise self.fail(
                    "must be a path inside the repository, relative to its root (no leading "
                    "'/' and no '..' that climbs out of it)",
                    key=f"{table}.{key}",
                    line=self._key_line(key, self._header_line(f"[{table}]")),
                )
        components = data.get("components")
        for name, body in components.items() if isinstance(components, dict) else ():
            context = body.get("context") if isinstance(body, dict) else None
            dockerfile = body.get("dockerfile") if isinstance(body, dict) else None
            if (
                isinstance(context, str)
                and isinstance(dockerfile, str)
                and _leaves(f"{_normalise_dir(context) or '.'}/{dockerfile}")
            ):
                raise self.fail(
                    "must be a path inside the repository (relative to the context; no '..' "
                    "that climbs out of the repository)",
                    key=f"components.{name}.dockerfile",
                    line=self._key_line("dockerfile", self._header_line(f"[components.{name}]")),
                )

    def _table(self, data: Mapping[str, Any], key: str) -> tuple[dict[str, Any], int | None]:
        header = self._header_line(f"[{key}]")
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(
                f"must be a table ([{key}]), not {_describe(value)}",
                key=key,
                line=self._key_line(key, None),
            )
        return value, header

    def _project(self, data: Mapping[str, Any]) -> ProjectSettings:
        table, header = self._table(data, "project")
        self._unknown_keys(table, _PROJECT_KEYS, where="project", header=header)
        values = {
            key: self._typed(table, key, str, where="project", header=header, what="a string")
            for key in _PROJECT_KEYS
        }
        prefix = values.pop("prefix")
        if prefix is not None:
            try:
                check_key(prefix)
            except BadUri:
                raise self.fail(
                    "must be a clean object-name prefix such as 'ct' (no leading '/', and no "
                    "empty, '.' or '..' segments)",
                    key="project.prefix",
                    line=self._key_line("prefix", header),
                ) from None
        return ProjectSettings(**values, prefix=(prefix or "ct").strip("/"))

    def _data(self, data: Mapping[str, Any]) -> DataSettings:
        values = self._settings(data, "data", _DATA_KEYS)
        prefix = values.get("prefix")
        if prefix is not None:
            try:
                check_key(prefix.rstrip("/") or "x")
            except BadUri:
                raise self.fail(
                    "must be a clean object-name prefix such as 'data/'",
                    key="data.prefix",
                    line=self._key_line("prefix", self._header_line("[data]")),
                ) from None
        return DataSettings(**values)

    def _function(self, data: Mapping[str, Any]) -> FunctionSettings:
        values = self._settings(data, "function", _FUNCTION_KEYS)
        header = self._header_line("[function]")

        def fail(key: str, message: str) -> ConfigError:
            return self.fail(message, key=f"function.{key}", line=self._key_line(key, header))

        env_header = self._header_line("[function.env]")
        for key, _ in values.get("env", ()):
            if not key or "=" in key or key.startswith("X_GOOGLE_") or key in RESERVED_ENV_KEYS:
                raise self.fail(
                    f"{key!r} cannot be a function's environment variable: a key must not be "
                    "empty, contain '=' or start with X_GOOGLE_, and "
                    + ", ".join(RESERVED_ENV_KEYS)
                    + " are set by Cloud Run",
                    key="function.env",
                    line=self._key_line(key, env_header)
                    if env_header is not None
                    else self._key_line("env", header),
                )
        memory = values.get("memory")
        if memory is not None:
            found = _MEMORY.match(memory)
            amount = int(found.group(1)) * _MEMORY_UNITS[found.group(2)] if found else 0
            if not _MEMORY_RANGE[0] <= amount <= _MEMORY_RANGE[1]:
                raise fail(
                    "memory",
                    f"{memory!r} is not a function's memory: write a number and one of the units "
                    "k, M, G, Ki, Mi, Gi, from 128Mi to 32Gi (such as '512Mi' or '1Gi')",
                )
        timeout = values.get("timeout")
        if timeout is not None:
            found = _TIMEOUT.match(timeout)
            if not found or not 1 <= int(found.group(1)) <= MAX_EVENT_FUNCTION_SECONDS:
                raise fail(
                    "timeout",
                    f"{timeout!r} is not a function's timeout: write seconds such as '540s', "
                    f"from 1s to {MAX_EVENT_FUNCTION_SECONDS}s (the most an event-driven "
                    "function may run)",
                )
        max_instances = values.get("max_instances")
        if max_instances is not None and max_instances < 1:
            raise fail("max_instances", "must be at least 1")
        min_instances = values.get("min_instances")
        if min_instances is not None and min_instances < 0:
            raise fail("min_instances", "must be 0 or more")
        settings = FunctionSettings(**values)
        if settings.min_instances > settings.max_instances:
            key = "min_instances" if min_instances is not None else "max_instances"
            raise fail(
                key,
                f"min_instances ({settings.min_instances}) is more than max_instances "
                f"({settings.max_instances})",
            )
        if settings.ingress not in INGRESS_SETTINGS:
            raise fail(
                "ingress",
                f"{settings.ingress!r} is not an ingress setting; use one of: "
                + ", ".join(INGRESS_SETTINGS),
            )
        connector = settings.vpc_connector
        if connector is not None and not _VPC_CONNECTOR.match(connector):
            raise fail(
                "vpc_connector",
                f"{connector!r} is not a connector: write its id (in the function's region) or "
                "projects/<project>/locations/<region>/connectors/<id>",
            )
        if settings.egress is not None:
            if settings.egress not in EGRESS_SETTINGS:
                raise fail(
                    "egress",
                    f"{settings.egress!r} is not an egress setting; use one of: "
                    + ", ".join(EGRESS_SETTINGS),
                )
            if connector is None:
                raise fail("egress", "applies to a VPC connector: set vpc_connector too")
        return settings

    def _build(self, data: Mapping[str, Any]) -> BuildSettings:
        values = self._settings(data, "build", _BUILD_KEYS)
        header = self._header_line("[build]")

        def fail(key: str, message: str) -> ConfigError:
            return self.fail(message, key=f"build.{key}", line=self._key_line(key, header))

        self._secret_env(values.get("secret_env", ()), header)
        logging = values.get("logging")
        if logging is not None and logging not in LOGGING_MODES:
            raise fail(
                "logging",
                f"{logging!r} is not a Cloud Build logging mode; use one of: "
                + ", ".join(LOGGING_MODES),
            )
        bucket = values.get("logs_bucket")
        if bucket is not None:
            if not _LOGS_BUCKET.match(bucket):
                raise fail(
                    "logs_bucket",
                    f"{bucket!r} is not a bucket: write gs://<bucket> or gs://<bucket>/<path>",
                )
            if logging is None:
                values["logging"] = "GCS_ONLY"  # where a logs bucket is written to
            elif logging in _NO_BUCKET_LOGGING:
                raise fail(
                    "logs_bucket",
                    f"is never written with logging = {logging!r}; use GCS_ONLY or LEGACY, or "
                    "drop logs_bucket",
                )
        settings = BuildSettings(**values)
        if (
            settings.service_account
            and settings.logs_bucket is None
            and settings.logging not in SERVICE_ACCOUNT_LOGGING
        ):
            raise fail(
                "service_account",
                f"Cloud Build refuses a build with its own service account and logging = "
                f"{settings.logging!r}: set logging to "
                + " or ".join(repr(mode) for mode in SERVICE_ACCOUNT_LOGGING)
                + ", or logs_bucket",
            )
        return settings

    def _secret_env(self, pairs: tuple[tuple[str, str], ...], header: int | None) -> None:
        """Each NAME a variable name, each value a Secret Manager version's full name."""
        table_header = self._header_line("[build.secret_env]")
        for name, version in pairs:
            line = (
                self._key_line(name, table_header)
                if table_header is not None
                else self._key_line("secret_env", header)
            )
            if not _SECRET_ENV_NAME.match(name):
                raise self.fail(
                    f"{name!r} cannot be a secret's environment variable: write letters, digits "
                    "and '_', not starting with a digit",
                    key=f"build.secret_env.{name}",
                    line=line,
                )
            if SECRET_VERSION.match(version):
                continue
            short = _SECRET_SHORT_FORM.match(version)
            if short and SECRET_VERSION.match(f"{short.group(1)}/versions/{short.group(2)}"):
                hint = (
                    f"gcloud's SECRET:VERSION shorthand, which Cloud Build does not read: write "
                    f"{short.group(1)}/versions/{short.group(2)}"
                )
            else:
                hint = (
                    "not a Secret Manager secret version: write "
                    "projects/<project id or number>/secrets/<secret>/versions/<version> (a "
                    "version number, latest, or an alias)"
                )
            raise self.fail(f"{version!r} is {hint}", key=f"build.secret_env.{name}", line=line)

    def _unmatched(self, data: Mapping[str, Any]) -> UnmatchedPolicy:
        table, header = self._table(data, "unmatched")
        self._unknown_keys(table, ("do",), where="unmatched", header=header)
        value = self._typed(table, "do", str, where="unmatched", header=header, what="a string")
        if value is None:
            return "all"
        if value not in UNMATCHED_POLICIES:
            raise self.fail(
                f"'{value}' is not a policy; use one of: {', '.join(UNMATCHED_POLICIES)}",
                key="unmatched.do",
                line=self._key_line("do", header),
            )
        return value

    def _components(self, data: Mapping[str, Any]) -> tuple[Component, ...]:
        table, _ = self._table(data, "components")
        components = []
        for name, body in table.items():
            header = self._header_line(f"[components.{name}]") or self._header_line(
                f'[components."{name}"]'
            )
            where = f"components.{name}"
            if header is None:  # a dotted key or inline table under [components]
                header = self._key_line(name, self._header_line("[components]"))
            if not _COMPONENT_NAME.match(name):
                raise self.fail(
                    "a component name must be lowercase letters, digits, '.', '_' or '-' "
                    "(it becomes an image name)",
                    key=where,
                    line=header,
                )
            if not isinstance(body, dict):
                raise self.fail(f"must be a table, not {_describe(body)}", key=where, line=header)
            self._unknown_keys(body, _COMPONENT_KEYS, where=where, header=header)
            context = self._typed(
                body, "context", str, where=where, header=header, what="a string", required=True
            )
            # "." (or "" or "/") is the repository root: `docker build .` from the checkout
            given = cast(str, context)
            context = _normalise_dir(given)
            absolute = given.startswith(("/", "\\")) and context != ""
            if absolute or ".." in context.split("/"):
                raise self.fail(
                    "must be a directory inside the repository, relative to its root "
                    "('.' for the root itself)",
                    key=f"{where}.context",
                    line=self._key_line("context", header),
                )
            dockerfile = self._typed(
                body, "dockerfile", str, where=where, header=header, what="a string"
            )
            build_args = self._typed(
                body, "build_args", dict, where=where, header=header, what="a table of strings"
            )
            args: list[tuple[str, str]] = []
            args_header = self._header_line(f"[{where}.build_args]")
            for arg_name, arg_value in (build_args or {}).items():
                if not isinstance(arg_value, str):
                    raise self.fail(
                        f"must be a string, not {_describe(arg_value)}",
                        key=f"{where}.build_args.{arg_name}",
                        line=self._key_line(arg_name, args_header)
                        if args_header is not None
                        else self._key_line("build_args", header),
                    )
                args.append((arg_name, arg_value))
            components.append(
                Component(
                    name=name,
                    context=context,
                    dockerfile=dockerfile or "Dockerfile",
                    build_args=tuple(args),
                )
            )
        return tuple(components)

    def _test(self, data: Mapping[str, Any]) -> TestSettings | None:
        if "test" not in data:
            return None
        values = self._settings(data, "test", _TEST_KEYS)
        if "command" not in values:
            raise self.fail(
                "missing required key 'command'", key="test", line=self._header_line("[test]")
            )
        return TestSettings(**values)

    def _settings(
        self, data: Mapping[str, Any], key: str, kinds: Mapping[str, str]
    ) -> dict[str, Any]:
        """A flat settings table: each key is a string, an integer, an argv (list of strings) or
        a table of strings (environment variables)."""
        table, header = self._table(data, key)
        self._unknown_keys(table, tuple(kinds), where=key, header=header)
        values: dict[str, Any] = {}
        for name, value in table.items():
            kind = kinds[name]
            line = self._key_line(name, header)
            if kind == "str":
                if not isinstance(value, str) or not value:
                    raise self.fail(
                        f"must be a non-empty string, not {_describe(value)}",
                        key=f"{key}.{name}",
                        line=line,
                    )
                values[name] = value
            elif kind == "int":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self.fail(
                        f"must be an integer, not {_describe(value)}",
                        key=f"{key}.{name}",
                        line=line,
                    )
                values[name] = value
            elif kind == "argv":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(part, str) and part for part in value)
                ):
                    raise self.fail(
                        "must be a non-empty list of non-empty strings (an argv, run without "
                        "a shell)",
                        key=f"{key}.{name}",
                        line=line,
                    )
                values[name] = tuple(value)
            else:  # a table of strings, such as environment variables
                if not isinstance(value, dict) or not all(
                    isinstance(v, str) for v in value.values()
                ):
                    raise self.fail("must be a table of strings", key=f"{key}.{name}", line=line)
                values[name] = tuple(sorted(value.items()))
        return values

    def _rules(
        self,
        data: Mapping[str, Any],
        components: tuple[Component, ...],
        test: TestSettings | None,
    ) -> tuple[Rule, ...]:
        raw = data.get("rule", [])
        if not isinstance(raw, list):
            raise self.fail(
                "must be an array of tables ([[rule]])",
                key="rule",
                line=self._key_line("rule", None),
            )
        names: dict[str, int | None] = {}
        component_names = {c.name for c in components}
        rules = []
        for index, body in enumerate(raw):
            header = self._header_line("[[rule]]", index)
            if not isinstance(body, dict):
                raise self.fail(f"must be a table, not {_describe(body)}", key="rule", line=header)
            name = body.get("name")
            where = f"rule[{index}]" if not isinstance(name, str) else f"rule '{name}'"
            self._unknown_keys(body, _RULE_KEYS, where=where, header=header)
            name = cast(
                str,
                self._typed(
                    body, "name", str, where=where, header=header, what="a string", required=True
                ),
            )
            if not name.strip():
                raise self.fail("must not be empty", key=f"{where}.name", line=header)
            if name in names:  # lines are looked up only for an error: O(lines) each
                first = self._key_line("name", names[name]) or 0
                raise self.fail(
                    f"duplicate rule name '{name}' (first defined at line {first})",
                    key=f"{where}.name",
                    line=self._key_line("name", header),
                )
            names[name] = header
            patterns = self._patterns(body, where=where, header=header)
            directives = self._directives(
                body, where=where, header=header, components=component_names, test=test
            )
            rules.append(Rule(name=name, patterns=patterns, do=directives, line=header))
        return tuple(rules)

    def _string_list(
        self, body: Mapping[str, Any], key: str, *, where: str, header: int | None
    ) -> list[str]:
        """A required, non-empty string or list of strings (a string is a list of one)."""
        if key not in body:
            raise self.fail(f"missing required key '{key}'", key=where, line=header)
        value = body[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(
                f"must be a string or a list of strings, not {_describe(value)}",
                key=f"{where}.{key}",
                line=self._key_line(key, header),
            )
        if not value:
            raise self.fail(
                "must not be empty", key=f"{where}.{key}", line=self._key_line(key, header)
            )
        return value

    def _patterns(
        self, body: Mapping[str, Any], *, where: str, header: int | None
    ) -> tuple[str, ...]:
        value = self._string_list(body, "paths", where=where, header=header)
        for pattern in value:
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                line = self._value_line(pattern, self._key_line("paths", header))
                raise self.fail(str(exc), key=f"{where}.paths", line=line) from None
        return tuple(value)

    def _value_line(self, value: str, start: int | None) -> int | None:
        """The line, from ``start`` to the next table, where the string ``value`` is written
        (an array can span lines); ``start`` when it cannot be told."""
        if start is None:
            return None
        spellings = {f'"{value}"', f"'{value}'", json.dumps(value, ensure_ascii=False)}
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start and re.match(r"^\s*\[", line):
                break
            if any(spelling in line for spelling in spellings):
                return number
        return start

    def _directives(
        self,
        body: Mapping[str, Any],
        *,
        where: str,
        header: int | None,
        components: set[str],
        test: TestSettings | None,
    ) -> tuple[Directive, ...]:
        value = self._string_list(body, "do", where=where, header=header)
        directives = [self._directive(item, where, header, components, test) for item in value]
        if len(directives) > 1 and any(d.kind == "skip" for d in directives):
            raise self.fail(
                "'skip' cannot be combined with other actions",
                key=f"{where}.do",
                line=self._key_line("do", header),
            )
        return tuple(dict.fromkeys(directives))

    def _directive(
        self,
        item: str,
        where: str,
        header: int | None,
        components: set[str],
        test: TestSettings | None,
    ) -> Directive:
        kind, _, target = item.partition(":")
        if (
            kind in DIRECTIVE_KINDS
            and (not target or (kind == "build_image" and target in components))
            and (":" not in item or target)
            and (kind != "test" or test is not None)
        ):
            return Directive(kind=kind, target=target or None)
        line = self._key_line("do", header)  # an error: now find its line
        if kind not in DIRECTIVE_KINDS:
            raise self.fail(
                f"unknown action '{item}'; use one of: {', '.join(DIRECTIVE_KINDS)}"
                " (build_image may name a component: build_image:<name>)",
                key=f"{where}.do",
                line=line,
            )
        if target and kind != "build_image":
            raise self.fail(
                f"'{kind}' takes no ':{target}' (only build_image names a component)",
                key=f"{where}.do",
                line=line,
            )
        if ":" in item and not target:
            raise self.fail(f"'{item}' names no component", key=f"{where}.do", line=line)
        if target and target not in components:
            known = ", ".join(sorted(components)) or "none are declared"
            raise self.fail(
                f"unknown component '{target}' in '{item}' (components: {known})",
                key=f"{where}.do",
                line=line,
            )
        raise self.fail(
            "says 'test' but rules.toml has no [test] table with a command",
            key=f"{where}.do",
            line=line,
        )


def _leaves(path: str) -> bool:
    """Whether a repository-relative ``path`` is absolute or climbs above the root."""
    import posixpath

    path = path.replace("\\", "/")
    if path.startswith("/"):
        return True
    normal = posixpath.normpath(path or ".")
    return normal == ".." or normal.startswith("../")


def _normalise_dir(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _describe(value: object) -> str:
    names: dict[type, str] = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)
