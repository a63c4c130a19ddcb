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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Rules

HASH_LENGTH = 20
ParamValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Artifacts:
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
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(
                commit=str(data["commit"]),
                ref=str(data["ref"]),
                bucket=str(data["bucket"]),
                images=tuple(sorted((str(k), str(v)) for k, v in data["images"].items())),
                source_uri=str(data["source_uri"]),
                spec_uri=str(data["spec_uri"]),
                parameters=tuple(sorted(data["parameters"].items())),
                function_input=str(data.get("function_input", "")),
                data_uri=str(data.get("data_uri", "")),
                data_version=str(data.get("data_version", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"the artifacts description is not valid: {exc}") from None


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
    """The params file: a flat TOML table of scalar pipeline parameters."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from None
    params: dict[str, ParamValue] = {}
    for name, value in data.items():
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                "a pipeline parameter must be a string, number or boolean, "
                f"not {type(value).__name__}",
                file=source,
                key=name,
            )
        params[name] = value
    return params
