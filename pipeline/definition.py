"""The pipeline graph, defined once, over two interchangeable sets of components.

``container_components(images)`` are KFP container components that run the component images
(and, for the train step, the uploaded training source inside the ``trainer`` image); they are
what gets compiled for Vertex AI and Kubeflow. ``lightweight_components()`` run the very same
``components/*/main.py`` and ``pipeline/fetch_and_train.py`` as subprocesses of a lightweight
Python component, so ``kfp.local.SubprocessRunner`` runs the pipeline with no Docker engine.
Both sets have the same inputs and outputs, so ``build_pipeline`` wires either.
"""

# No ``from __future__ import annotations``: KFP reads the component annotations at runtime.
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output, OutputPath

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = Path(__file__).resolve().parent / "params.toml"
PIPELINE_NAME = "ct-digits"
BOOTSTRAP = Path(__file__).resolve().parent / "fetch_and_train.py"
RECORD_OUTPUTS = Path(__file__).resolve().parent / "record_outputs.py"

#: Images a compile needs, and those it may be given. ``trainer`` is the runtime of the train
#: step; by default the validator image, which ships the same stack (see requirements.txt).
#: Only recorded in the local components (SubprocessRunner ignores it); pinned to stay stable.
LOCAL_BASE_IMAGE = "python:3.11"
REQUIRED_IMAGES = ("validator", "evaluator")
OPTIONAL_IMAGES = ("trainer",)
#: kfp.local 2.17 resolves a ``dsl.If`` on a task output only when that output is named
#: ``Output`` (any other name reads as a missing pipeline input, so the condition is false and
#: the register step is silently skipped). Both sets of components name the gate so.
GATE_OUTPUT = "Output"
#: The executor input placeholder: the launcher puts the task's executor input (JSON) there,
#: including ``outputs.outputFile``, where a step reports its output artifacts' metadata.
EXECUTOR_INPUT = "{{$}}"


def load_defaults(path: Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


DEFAULTS = load_defaults()


@dataclass(frozen=True)
class Components:
    validate: Callable[..., Any]
    train: Callable[..., Any]
    evaluate: Callable[..., Any]  # its gate ("pass" or "fail") is its output named GATE_OUTPUT
    register: Callable[..., Any]


def container_components(images: Mapping[str, str], *, record_outputs: bool = False) -> Components:
    """The components that get compiled; ``record_outputs`` only for kfp.local's DockerRunner.

    With ``record_outputs`` every command runs under ``record_outputs.py``, which reports the
    output artifacts to kfp.local (see there); compiled specs never have it.
    """
    validator, evaluator = images["validator"], images["evaluator"]
    trainer = images.get("trainer", validator)
    bootstrap = BOOTSTRAP.read_text()
    prefix = ["python3", "-c", RECORD_OUTPUTS.read_text(), EXECUTOR_INPUT] if record_outputs else []

    @dsl.container_component
    def validate_data(data_uri: str, num_classes: int, report: Output[Artifact]):  # type: ignore[no-untyped-def]
        return dsl.ContainerSpec(
            image=validator,
            command=[*prefix, "python3", "/app/main.py"],
            args=[
                "--data-uri",
                data_uri,
                "--num-classes",
                num_classes,
                "--report-path",
                report.path,
            ],
        )

    @dsl.container_component
    def train(  # type: ignore[no-untyped-def]
        source_uri: str,
        data_uri: str,
        hidden_units: int,
        alpha: float,
        learning_rate: float,
        max_iter: int,
        test_fraction: float,
        seed: int,
        model: Output[Model],
        metrics: Output[Metrics],
    ):
        return dsl.ContainerSpec(
            image=trainer,
            command=[*prefix, "python3", "-c", bootstrap],
            args=[
                # The metrics file's scalars become the Metrics artifact's metadata, which is
                # what Vertex AI and the Kubeflow UI show (fetch_and_train.py).
                "--source-uri", source_uri, "--executor-input", EXECUTOR_INPUT,
                "--log-metrics", metrics.path, "--",
                "--data-uri", data_uri,
                "--model-dir", model.path,
                "--metrics-path", metrics.path,
                "--hidden-units", hidden_units,
                "--alpha", alpha,
                "--learning-rate", learning_rate,
                "--max-iter", max_iter,
                "--test-fraction", test_fraction,
                "--seed", seed,
            ],
        )  # fmt: skip

    @dsl.container_component
    def evaluate(  # type: ignore[no-untyped-def]
        metrics: Input[Metrics],
        threshold: float,
        gate: OutputPath(str),
        evaluation: Output[Artifact],
    ):
        return dsl.ContainerSpec(
            image=evaluator,
            command=[*prefix, "python3", "/app/main.py", "evaluate"],
            args=[
                "--metrics-path", metrics.path, "--threshold", threshold,
                "--gate-path", gate, "--evaluation-path", evaluation.path,
            ],
        )  # fmt: skip

    @dsl.container_component
    def register(model: Input[Model], metrics: Input[Metrics], registered_model: Output[Model]):  # type: ignore[no-untyped-def]
        return dsl.ContainerSpec(
            image=evaluator,
            command=[*prefix, "python3", "/app/main.py", "register"],
            args=[
                "--model-dir", model.path, "--metrics-path", metrics.path,
                "--output-dir", registered_model.path,
            ],
        )  # fmt: skip

    evaluate = rename_output_parameter(evaluate, "gate", GATE_OUTPUT)
    return Components(validate_data, train, evaluate, register)


def rename_output_parameter(component: Any, old: str, new: str) -> Any:
    """``component`` with its output parameter ``old`` named ``new``, through its IR.

    For ``GATE_OUTPUT``: a container component cannot declare an output named ``Output`` in
    Python (its signature has no return value and the name is reserved), but the pipeline IR
    can, and loading that IR back gives an ordinary component.
    """
    from google.protobuf import json_format
    from kfp import components

    spec = json_format.MessageToDict(component.pipeline_spec)
    for outputs in (
        spec["components"][f"comp-{component.name}"]["outputDefinitions"],
        spec["root"]["outputDefinitions"],
    ):
        outputs["parameters"][new] = outputs["parameters"].pop(old)
    selectors = spec["root"]["dag"]["outputs"]["parameters"]
    selectors[new] = selectors.pop(old)
    selectors[new]["valueFromParameter"]["outputParameterKey"] = new
    container = spec["deploymentSpec"]["executors"][f"exec-{component.name}"]["container"]
    placeholder = "{{$.outputs.parameters['%s'].output_file}}"
    container["args"] = [
        placeholder % new if arg == placeholder % old else arg for arg in container["args"]
    ]
    return components.load_component_from_text(json.dumps(spec))


def lightweight_components() -> Components:
    """Components for ``kfp.local.SubprocessRunner``: no packages to install, no network.

    Each runs the same command line as its container counterpart with the local interpreter;
    ``code_dir`` (the repository root) is bound by ``build_pipeline``.
    """

    @dsl.component(base_image=LOCAL_BASE_IMAGE, packages_to_install=[], install_kfp_package=False)
    def validate_data(code_dir: str, data_uri: str, num_classes: int, report: Output[Artifact]):  # type: ignore[no-untyped-def]
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, f"{code_dir}/components/validator/main.py", "--data-uri", data_uri,
             "--num-classes", str(num_classes), "--report-path", report.path],
            check=True,
        )  # fmt: skip

    @dsl.component(base_image=LOCAL_BASE_IMAGE, packages_to_install=[], install_kfp_package=False)
    def train(  # type: ignore[no-untyped-def]
        code_dir: str,
        source_uri: str,
        data_uri: str,
        hidden_units: int,
        alpha: float,
        learning_rate: float,
        max_iter: int,
        test_fraction: float,
        seed: int,
        model: Output[Model],
        metrics: Output[Metrics],
    ):
        import json
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, f"{code_dir}/pipeline/fetch_and_train.py",
             "--source-uri", source_uri, "--", "--data-uri", data_uri,
             "--model-dir", model.path, "--metrics-path", metrics.path,
             "--hidden-units", str(hidden_units), "--alpha", str(alpha),
             "--learning-rate", str(learning_rate), "--max-iter", str(max_iter),
             "--test-fraction", str(test_fraction), "--seed", str(seed)],
            check=True,
        )  # fmt: skip
        # The same scalars the container step reports (this executor writes the metadata).
        sys.path.insert(0, f"{code_dir}/pipeline")
        from fetch_and_train import scalar_metrics

        with open(metrics.path) as f:
            for name, value in scalar_metrics(json.load(f)).items():
                metrics.log_metric(name, value)

    @dsl.component(base_image=LOCAL_BASE_IMAGE, packages_to_install=[], install_kfp_package=False)
    def evaluate(  # type: ignore[no-untyped-def]
        code_dir: str,
        metrics: Input[Metrics],
        threshold: float,
        evaluation: Output[Artifact],
    ) -> str:
        import os
        import subprocess
        import sys
        import tempfile

        gate = os.path.join(tempfile.mkdtemp(), "gate")  # noqa: PTH118 - kept minimal
        subprocess.run(
            [sys.executable, f"{code_dir}/components/evaluator/main.py", "evaluate",
             "--metrics-path", metrics.path, "--threshold", str(threshold),
             "--gate-path", gate, "--evaluation-path", evaluation.path],
            check=True,
        )  # fmt: skip
        with open(gate) as f:
            return f.read()

    @dsl.component(base_image=LOCAL_BASE_IMAGE, packages_to_install=[], install_kfp_package=False)
    def register(  # type: ignore[no-untyped-def]
        code_dir: str, model: Input[Model], metrics: Input[Metrics], registered_model: Output[Model]
    ):
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, f"{code_dir}/components/evaluator/main.py", "register",
             "--model-dir", model.path, "--metrics-path", metrics.path,
             "--output-dir", registered_model.path],
            check=True,
        )  # fmt: skip

    # A lightweight component's return value is its output named ``Output`` (GATE_OUTPUT).
    return Components(validate_data, train, evaluate, register)


class PipelineOutputs(NamedTuple):
    metrics: Metrics
    gate: str


def build_pipeline(
    components: Components, code_dir: str | None = None, env: Mapping[str, str] | None = None
) -> Any:
    """The pipeline over ``components``; ``code_dir`` is given only for lightweight ones.

    ``env`` is set on every step (local runs use it for the storage settings).
    """
    bind: dict[str, str] = {} if code_dir is None else {"code_dir": code_dir}
    d = DEFAULTS

    def step(task: Any) -> Any:
        for name, value in sorted((env or {}).items()):
            task.set_env_variable(name, value)
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Validate data, train from the uploaded source, evaluate, register if good.",
    )
    def ct_pipeline(
        source_uri: str,
        data_uri: str = "",
        hidden_units: int = d["hidden_units"],
        alpha: float = d["alpha"],
        learning_rate: float = d["learning_rate"],
        max_iter: int = d["max_iter"],
        test_fraction: float = d["test_fraction"],
        seed: int = d["seed"],
        num_classes: int = d["num_classes"],
        accuracy_threshold: float = d["accuracy_threshold"],
    ) -> PipelineOutputs:
        validated = step(components.validate(**bind, data_uri=data_uri, num_classes=num_classes))
        trained = step(
            components.train(
                **bind,
                source_uri=source_uri,
                data_uri=data_uri,
                hidden_units=hidden_units,
                alpha=alpha,
                learning_rate=learning_rate,
                max_iter=max_iter,
                test_fraction=test_fraction,
                seed=seed,
            )
        ).after(validated)
        evaluated = step(
            components.evaluate(
                **bind, metrics=trained.outputs["metrics"], threshold=accuracy_threshold
            )
        )
        with dsl.If(evaluated.outputs[GATE_OUTPUT] == "pass", name="accuracy-gate"):
            step(
                components.register(
                    **bind, model=trained.outputs["model"], metrics=trained.outputs["metrics"]
                )
            )
        return PipelineOutputs(
            metrics=trained.outputs["metrics"], gate=evaluated.outputs[GATE_OUTPUT]
        )

    return ct_pipeline
