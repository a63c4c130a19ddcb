"""run.steps against a real directory bucket and this project's workload (no services)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.adapters import storage
from orchestrator.errors import InputError, StepFailed
from orchestrator.run import steps
from orchestrator.services import Services
from orchestrator.workflow import Target, name_build, plan_target
from tests.fixtures.gitrepo import GitRepo
from tests.integration.workload_repo import append_line, run_env, workload_repo


def context(repo: GitRepo, *, publish_mode: steps.PublishMode = "in-process") -> steps.StepContext:
    services = Services.resolve(repo.path, run_env())
    target = Target(repo=repo.path, rules_path=repo.path / "rules.toml")
    planned = plan_target(target, services.env(), services)
    return steps.StepContext(
        repo=repo.path,
        rules=planned.rules,
        artifacts=name_build(planned.tree, planned.rules, planned.plan, planned.ref),
        env=services.env(),
        publish_mode=publish_mode,
        plan=planned.plan,
    )


@pytest.fixture
def repo(make_git_repo: Callable[..., GitRepo]) -> GitRepo:
    repo = workload_repo(make_git_repo)
    append_line(repo, "training_src/train.py", "# change")
    repo.commit()
    return repo


def test_upload_source_is_immutable_and_idempotent(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path)  # where a newcomer runs it: the file is shown relative to here
    ctx = context(repo)
    action = steps.action_from_id("upload_source")

    first = steps.run_step(action, ctx)
    again = steps.run_step(action, ctx)

    uri = ctx.artifacts.source_uri
    where = f".orchestrator/bucket/{uri.removeprefix('gs://')} ({uri} in the local bucket)"
    assert re.fullmatch(rf"uploaded the training source \(\d+ files\) to {re.escape(where)}",
                        first.message)  # fmt: skip
    assert again.message == f"the training source was already uploaded, unchanged: {where}"
    data = storage.download_bytes(ctx.artifacts.source_uri, env=ctx.env)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert "training_src/__main__.py" in names  # unpacks to training_src/ for python -m


def test_compile_pipeline_keeps_an_existing_spec_of_the_same_inputs(repo: GitRepo) -> None:
    ctx = context(repo)
    storage.upload_bytes(ctx.artifacts.spec_uri, b"an earlier compile", env=ctx.env)

    outcome = steps.run_step(steps.action_from_id("compile_pipeline"), ctx)

    assert outcome.message.startswith("kept the existing spec, an earlier compile")
    assert outcome.message.endswith(storage.describe_location(ctx.artifacts.spec_uri, ctx.env))
    assert storage.download_bytes(ctx.artifacts.spec_uri, env=ctx.env) == b"an earlier compile"


def test_compile_pipeline_uses_the_digest_this_build_recorded(repo: GitRepo) -> None:
    ctx = context(repo)
    digest = "registry.example/ct/validator@sha256:" + "a" * 64
    out = repo.path / ".orchestrator/outputs/build_image-validator.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"image": digest}))

    steps.run_step(steps.action_from_id("compile_pipeline"), ctx)

    spec = storage.download_bytes(ctx.artifacts.spec_uri, env=ctx.env).decode()
    assert digest in spec
    assert ctx.artifacts.image("evaluator") in spec  # not built here: its content tag
    assert steps.image_refs(ctx) == {
        "validator": digest,
        "evaluator": ctx.artifacts.image("evaluator"),
    }


def test_publish_without_a_compiled_spec_says_how_to_fix_it(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path.parent)  # the repository is a directory below this one
    ctx = context(repo)
    with pytest.raises(StepFailed, match="no compiled pipeline exists for these inputs") as error:
        steps.run_step(steps.action_from_id("publish"), ctx)
    assert "compile_pipeline" in str(error.value)
    uri = ctx.artifacts.spec_uri
    spec = f"{repo.path.name}/.orchestrator/bucket/{uri.removeprefix('gs://')}"
    assert f", {spec} ({uri} in the local bucket) is missing; " in str(error.value)
    assert not (repo.path / ".orchestrator" / "pipeline-root").exists()


def test_a_failing_test_command_names_it_and_its_output(
    make_git_repo: Callable[..., GitRepo],
) -> None:
    repo = workload_repo(
        make_git_repo, test_command=["python", "-c", "raise SystemExit('2 failed')"]
    )
    with pytest.raises(StepFailed) as error:
        steps.run_step(steps.action_from_id("test"), context(repo))
    assert str(error.value).startswith("the test command 'python -c ")
    assert str(error.value).endswith("failed with exit code 1: 2 failed")


def test_deploy_function_stages_the_function_with_the_message_module(repo: GitRepo) -> None:
    outcome = steps.run_step(steps.action_from_id("deploy_function"), context(repo))

    stage = repo.path / ".orchestrator" / "function"
    assert outcome.message == "staged the function in .orchestrator/function/"
    assert (stage / "main.py").read_bytes() == (repo.path / "function/main.py").read_bytes()
    assert (stage / "requirements.txt").is_file()
    import orchestrator.message
    import orchestrator.objects
    import orchestrator.runs

    for name in ("message", "objects", "runs"):  # what the deployed function imports
        module = getattr(orchestrator, name)
        assert (stage / f"ct_{name}.py").read_text() == Path(module.__file__).read_text()
    assert repo.git("status", "--porcelain") == ""


def test_python_in_a_configured_command_is_this_interpreter() -> None:
    assert steps.python_argv(("python", "-m", "x")) == [sys.executable, "-m", "x"]
    assert steps.python_argv(("pytest", "-q")) == ["pytest", "-q"]


@pytest.mark.parametrize("action_id", ["build_image", "compile", "upload_source:x", ""])
def test_unknown_action_ids_are_input_errors(action_id: str) -> None:
    with pytest.raises(InputError, match="unknown action"):
        steps.action_from_id(action_id)


def test_the_step_command_performs_one_action(repo: GitRepo) -> None:
    """``python -m orchestrator step`` as the emitted Cloud Build step runs it."""
    from orchestrator.adapters import process
    from orchestrator.emit.cloudbuild import tool_step_args

    ctx = context(repo)
    argv = [sys.executable, *tool_step_args("upload_source", ctx.rules, ctx.artifacts)]
    bucket = repo.path.parent / "bucket-for-step"
    completed = process.run(argv, cwd=repo.path,
                            env=run_env(ORCHESTRATOR_LOCAL_BUCKET_ROOT=str(bucket)))  # fmt: skip
    uri = storage.parse_gcs_uri(ctx.artifacts.source_uri)
    assert (bucket / uri.bucket / uri.key).is_file()
    shown = f"{(bucket / uri.bucket / uri.key).resolve()} ({uri} in the local bucket)"
    assert re.search(
        rf"^\[upload_source\] uploaded the training source \(\d+ files\) to {re.escape(shown)}$",
        completed.stdout.decode(),
        re.M,
    )
    shutil.rmtree(bucket)


def test_the_staged_function_imports_without_the_orchestrator_package(repo: GitRepo) -> None:
    steps.run_step(steps.action_from_id("deploy_function"), context(repo))
    stage = repo.path / ".orchestrator" / "function"
    code = (
        "import sys; sys.modules['orchestrator'] = None; "  # as when deployed: not installed
        f"sys.path.insert(0, {str(stage)!r}); import main; "
        "print(main.message.__name__, main.objects.__name__, main.decide.__module__)"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=stage
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ct_message", "ct_objects", "ct_runs"]
