"""Content-addressed names for everything a build produces. Pure.

Every artifact is named by a hash of what it is built from, never by the commit, so:

* the same inputs always give the same name (a rebuild is idempotent, uploads are immutable);
* a build that does not rebuild an artifact can still name it: a retrain-only commit publishes
  the pipeline spec and images that an earlier build made from the same inputs.

=================  ===========================================================================
artifact           name
=================  ===========================================================================
component image    ``<registry>/<component>:c-<hash(the files Docker sends from the context,
                   dockerfile, build args)>``
training source    ``gs://<bucket>/source/<hash(source files)>/<dir>.tar.gz``
pipeline spec      ``gs://<bucket>/pipelines/<hash(pipeline files but params, compile argv,
                   image names)>/pipeline.yaml``
=================  ===========================================================================
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import NamedTuple

from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Rules

HASH_LENGTH = 20
ParamValue = str | int | float | bool


class Artifacts(NamedTuple):
    """What one build reads and writes, by name. Travels to Cloud Build steps as JSON."""

    commit: str
    ref: str
    bucket: str
    images: tuple[tuple[str, str], ...]  # component -> image reference (content tag)
    source_uri: str
    spec_uri: str
    parameters: tuple[tuple[str, ParamValue], ...]
    #: the content id of the function's files (what the ledger compares to decide a deploy)
    function_input: str = ""
    #: the data the run trains on ("" for the pipeline's default); set by ``trigger --data``
    data_uri: str = ""
    #: which version of that data (an object's generation, a local file's hash)
    data_version: str = ""

    def image(self, component: str) -> str:
        return dict(self.images)[component]

    def to_json(self) -> str:
        return json.dumps(
            {
                "commit": self.commit,
                "ref": self.ref,
                "bucket": self.bucket,
                "images": dict(self.images),
                "source_uri": self.source_uri,
                "spec_uri": self.spec_uri,
                "parameters": dict(self.parameters),
                "function_input": self.function_input,
                "data_uri": self.data_uri,
                "data_version": self.data_version,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Artifacts:
        """``step --artifacts``: bounded, strict JSON (:mod:`orchestrator.bounded`) holding
        exactly what :meth:`to_json` writes; InputError naming what is wrong otherwise."""
        from orchestrator.bounded import MAX_ARTIFACTS_BYTES, load_json, shown

        what = "the artifacts description (--artifacts)"
        data = load_json(text, what, limit=MAX_ARTIFACTS_BYTES)

        def fail(reason: str) -> InputError:
            return InputError(f"{what} is not valid: {reason}")

        if not isinstance(data, dict):
            raise fail(f"expected a JSON object, not {_json_kind(data)}")
        for key in ("commit", "ref", "bucket", "images", "source_uri", "spec_uri", "parameters"):
            if key not in data:
                raise fail(f"it has no {key!r}")
        texts = {}
        for key in sorted(_ARTIFACT_KEYS - {"images", "parameters"}):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise fail(f"{key!r} must be a string, not {_json_kind(value)}")
            texts[key] = value
        images, parameters = data["images"], data["parameters"]
        if not isinstance(images, dict) or not all(isinstance(v, str) for v in images.values()):
            raise fail("'images' must map component names to image references")
        if not isinstance(parameters, dict):
            raise fail(f"'parameters' must be a JSON object, not {_json_kind(parameters)}")
        for name, value in parameters.items():
            if not isinstance(value, str | int | float | bool) or _parameter_problem(value):
                raise fail(
                    f"parameter {shown(name, 60)} must be a string, a finite number or a "
                    f"boolean, not {shown(value, 60)}"
                )
        return cls(
            commit=texts["commit"],
            ref=texts["ref"],
            bucket=texts["bucket"],
            images=tuple(sorted(images.items())),
            source_uri=texts["source_uri"],
            spec_uri=texts["spec_uri"],
            parameters=tuple(sorted(parameters.items())),
            function_input=texts["function_input"],
            data_uri=texts["data_uri"],
            data_version=texts["data_version"],
        )


_ARTIFACT_KEYS = frozenset(
    {"commit", "ref", "bucket", "images", "source_uri", "spec_uri", "parameters",
     "function_input", "data_uri", "data_version"}
)  # fmt: skip


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return kinds.get(type(value), type(value).__name__)


def short_hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return digest[:HASH_LENGTH]


def name_artifacts(
    rules: Rules,
    *,
    commit: str,
    ref: str,
    image_inputs: Mapping[str, str | None],
    source_input: str | None,
    pipeline_inputs: str,
    parameters: Mapping[str, ParamValue],
    function_input: str = "",
) -> Artifacts:
    """Name every artifact for ``commit``.

    ``image_inputs`` maps each component to the content id of what Docker sends from its
    context (:func:`orchestrator.contexts.image_input`), ``source_input`` identifies the
    training source directory and ``pipeline_inputs`` the pipeline's files except its params
    file.
    """
    bucket = _required(rules, "bucket", rules.project.bucket)
    images = []
    for component in rules.components:
        registry = _required(rules, "registry", rules.project.registry)
        content = image_inputs.get(component.name) or "missing"
        tag = short_hash(
            content,
            component.dockerfile,
            *(f"{k}={v}" for k, v in component.build_args),
        )
        images.append((component.name, f"{registry.rstrip('/')}/{component.name}:c-{tag}"))
    source_dir = rules.training_source.dir
    source_hash = short_hash(source_input or "missing")
    source_name = source_dir.rstrip("/").rsplit("/", 1)[-1] or "source"
    spec_hash = short_hash(
        pipeline_inputs,
        *rules.pipeline.compile,
        *(f"{name}={image}" for name, image in images),
    )
    return Artifacts(
        commit=commit,
        ref=ref,
        bucket=bucket,
        images=tuple(images),
        source_uri=f"gs://{bucket}/source/{source_hash}/{source_name}.tar.gz",
        spec_uri=f"gs://{bucket}/pipelines/{spec_hash}/pipeline.yaml",
        parameters=tuple(sorted(parameters.items())),
        function_input=function_input,
    )


def _required(rules: Rules, key: str, value: str | None) -> str:
    if not value:
        raise ConfigError(
            f"[project] {key} is required to build (it names where artifacts go)",
            file=rules.source,
            key=f"project.{key}",
        )
    return value


def parse_parameters(text: str, *, source: str) -> dict[str, ParamValue]:
    """The params file: a flat TOML table of scalar pipeline parameters, each one a message
    can carry (``orchestrator.message``): finite numbers, 64-bit integers, text without NUL."""
    from orchestrator import toml_subset  # tomllib only when the file leaves the usual shape

    try:
        data = toml_subset.loads(text)
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError("invalid TOML: values are nested too deeply", file=source) from None
    except ValueError as exc:  # tomllib's errors, and the interpreter's integer limit
        import tomllib

        if isinstance(exc, tomllib.TOMLDecodeError):
            raise ConfigError(f"invalid TOML: {exc}", file=source) from None
        raise ConfigError(
            "invalid TOML: an integer has more digits than Python converts", file=source
        ) from None
    params: dict[str, ParamValue] = {}
    for name, value in data.items():
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                "a pipeline parameter must be a string, number or boolean, "
                f"not {type(value).__name__}",
                file=source,
                key=name,
            )
        problem = _parameter_problem(value) or (
            "a parameter's name must not hold NUL" if "\0" in name else ""
        )
        if problem:
            raise ConfigError(problem, file=source, key=name)
        params[name] = value
    return params


#: "Arbitrary 64-bit signed integers (from -2^63 to 2^63-1) should be accepted and handled
#: losslessly. If an integer cannot be represented losslessly, an error must be thrown."
#: (https://toml.io/en/v1.0.0#integer); tomllib itself reads any size.
_INT64 = (-(2**63), 2**63 - 1)


def _parameter_problem(value: ParamValue) -> str:
    if isinstance(value, bool):
        return ""
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return "a pipeline parameter's integer must fit in 64 bits (TOML integers do)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"a pipeline parameter must be a finite number, not {value}"
    if isinstance(value, str) and "\0" in value:
        return "a pipeline parameter's text must not hold NUL"
    return ""
