"""Hostile input to the CLI, through ``main`` on real repositories: every one is exit 2 and
one line, never exit 3 (a bug), and nothing is read without a bound."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from orchestrator.artifacts import Artifacts
from orchestrator.bounded import MAX_EVENT_PAYLOAD_BYTES, TooLarge, load_json, read_capped
from orchestrator.ci_env import read_event_payload
from orchestrator.cli import main
from orchestrator.config import parse_rules
from orchestrator.errors import ConfigError, InputError
from tests.fixtures.gitrepo import GitRepo

ENV = {"PATH": os.environ["PATH"]}
RULES = """\
version = 1

[project]
bucket = "hostile-bucket"
registry = "registry.invalid/ct"

[[rule]]
name = "source"
paths = ["training_src/"]
do = "upload_source"
"""
SHA = "0123456789abcdef0123456789abcdef01234567"


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=ENV if env is None else env)
    return code, out.getvalue(), err.getvalue()


def one_line(stderr: str) -> str:
    """The error's text, asserting it is exactly one line with no traceback."""
    assert stderr.startswith("orchestrator: error: "), stderr
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    return stderr[len("orchestrator: error: ") : -1]


@pytest.fixture
def repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit({"rules.toml": RULES, "training_src/train.py": "x = 1\n"})
    git_repo.commit({"training_src/train.py": "x = 2\n"})
    return git_repo


# -- item 3: Python's recursion and integer limits, and unbounded reads -----------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version = 1\nx = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("version = 1\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", "nested too deeply"),
        ("version = " + "9" * 5000 + "\n", "an integer has more digits than Python converts"),
    ],
    ids=["arrays-5000-deep", "tables-5000-deep", "5000-digits"],
)
def test_rules_toml_beyond_pythons_limits_is_a_config_error(
    git_repo: GitRepo, text: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        parse_rules(text)
    git_repo.commit({"rules.toml": text})
    code, out, err = run("validate", "--repo", str(git_repo.path))
    assert (code, out) == (2, "")
    assert reason in one_line(err)


def test_rules_file_that_never_ends_is_read_up_to_a_cap(repo: GitRepo) -> None:
    code, _, err = run("validate", "--repo", str(repo.path), "--rules", "/dev/zero")
    assert code == 2
    assert (
        one_line(err)
        == "/dev/zero: cannot read the file: it holds more than the 4194304-byte limit"
    )


def _event(tmp_path: Path, content: bytes) -> dict[str, str]:
    path = tmp_path / "event.json"
    path.write_bytes(content)
    return {**ENV, "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(path)}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply"),
        (b'{"before": ' * 100_000 + b"1" + b"}" * 100_000, "is nested too deeply"),
        (b'{"before": ' + b"9" * 5000 + b"}", "holds an integer of 5000 digits (at most 64)"),
        (b'{"before": NaN}', "holds NaN, which is not a JSON number"),
        (b'{"before": 1e999}', "holds a number too large for a double: '1e999'"),
        (b'{"a": 1, "a": 2}', "repeats the key 'a'"),
        (b"\xff\xfe{}", "is not valid JSON (not UTF-8 at byte 0)"),
    ],
    ids=["deep-arrays", "deep-objects", "digits", "nan", "overflow", "repeated-key", "not-utf8"],
)
def test_hostile_github_event_payloads_are_input_errors(
    repo: GitRepo, tmp_path: Path, content: bytes, reason: str
) -> None:
    env = _event(tmp_path, content)
    with pytest.raises(InputError, match=re.escape(reason)):
        read_event_payload(env["GITHUB_EVENT_PATH"])
    code, out, err = run("plan", "--repo", str(repo.path), env=env)
    assert (code, out) == (2, "")
    line = one_line(err)
    assert line.startswith(f"the GitHub event payload {env['GITHUB_EVENT_PATH']} {reason}")
    assert line.endswith("check GITHUB_EVENT_PATH or pass --base.")


def test_a_github_event_payload_that_never_ends_is_read_up_to_25_mb(repo: GitRepo) -> None:
    env = {**ENV, "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": "/dev/zero"}
    code, _, err = run("plan", "--repo", str(repo.path), env=env)
    assert code == 2
    assert one_line(err) == (
        "cannot read the GitHub event payload /dev/zero (it holds more than the "
        f"{MAX_EVENT_PAYLOAD_BYTES}-byte limit); check GITHUB_EVENT_PATH or pass --base."
    )


def test_a_huge_sha_in_an_event_is_not_echoed_whole(repo: GitRepo, tmp_path: Path) -> None:
    env = _event(tmp_path, json.dumps({"before": "z" * 100_000, "after": SHA}).encode())
    code, _, err = run("plan", "--repo", str(repo.path), env=env)
    assert code == 2
    assert len(one_line(err)) < 300


def test_read_capped_reads_at_most_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_capped(path, 10) == b"x" * 10
    with pytest.raises(TooLarge, match="holds more than the 9-byte limit"):
        read_capped(path, 9)
    with pytest.raises(TooLarge):
        read_capped("/dev/zero", 1000)


def test_load_json_is_strict_and_bounded() -> None:
    assert load_json(b'{"a": [1, 2.5, "x"]}', "it", limit=100) == {"a": [1, 2.5, "x"]}
    with pytest.raises(InputError, match=r"^it is 101 bytes, more than the 100-byte limit$"):
        load_json(b" " * 101, "it", limit=100)
    with pytest.raises(InputError, match=r"^it holds Infinity, which is not a JSON number$"):
        load_json("[Infinity]", "it", limit=100)


@pytest.mark.parametrize(
    ("artifacts", "reason"),
    [
        ("[" * 5000 + "]" * 5000, "is nested too deeply"),
        ('{"commit": ' + "9" * 5000 + "}", "holds an integer of 5000 digits (at most 64)"),
        ("[]", "is not valid: expected a JSON object, not a list"),
        ('{"commit": "c"}', "is not valid: it has no 'ref'"),
        ("x" * (1 << 21), "is 2097152 bytes, more than the 1048576-byte limit"),
    ],
    ids=["deep", "digits", "list", "missing", "huge"],
)
def test_step_artifacts_beyond_limits_are_input_errors(
    repo: GitRepo, artifacts: str, reason: str
) -> None:
    with pytest.raises(InputError, match=re.escape(reason)):
        Artifacts.from_json(artifacts)
    code, out, err = run(
        "step", "upload_source", "--repo", str(repo.path), "--artifacts", artifacts
    )
    assert (code, out) == (2, "")
    assert one_line(err) == f"the artifacts description (--artifacts) {reason}"


def _artifacts(**changes: object) -> str:
    data: dict[str, object] = {
        "commit": SHA, "ref": "refs/heads/main", "bucket": "hostile-bucket", "images": {},
        "source_uri": "gs://hostile-bucket/source/x/training_src.tar.gz",
        "spec_uri": "gs://hostile-bucket/pipelines/x/pipeline.yaml", "parameters": {},
    }  # fmt: skip
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"parameters": {"a": [1]}},
            "parameter 'a' must be a string, a finite number or a boolean",
        ),
        ({"parameters": {"a": {"b": 1}}}, "parameter 'a' must be a string"),
        ({"parameters": {"a": 2**70}}, "parameter 'a' must be a string"),
        ({"parameters": {"a": "x\0y"}}, "parameter 'a' must be a string"),
        ({"commit": 5}, "'commit' must be a string, not a number"),
        ({"images": {"x": 1}}, "'images' must map component names to image references"),
        ({"parameters": []}, "'parameters' must be a JSON object, not a list"),
    ],
)
def test_step_artifacts_of_the_wrong_shape_are_input_errors(
    repo: GitRepo, changes: dict[str, object], reason: str
) -> None:
    code, _, err = run(
        "step", "upload_source", "--repo", str(repo.path), "--artifacts", _artifacts(**changes)
    )
    assert code == 2
    assert reason in one_line(err)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("x = " + "[" * 5000 + "]" * 5000, "invalid TOML: values are nested too deeply"),
        ("x = " + "9" * 5000, "invalid TOML: an integer has more digits than Python converts"),
        (
            "x = " + "9" * 30,
            "[x] a pipeline parameter's integer must fit in 64 bits (TOML integers do)",
        ),
        ("x = nan", "[x] a pipeline parameter must be a finite number, not nan"),
        ('x = "a\\u0000b"', "[x] a pipeline parameter's text must not hold NUL"),
    ],
    ids=["deep", "5000-digits", "30-digits", "nan", "nul"],
)
def test_a_hostile_params_file_is_exit_2(repo: GitRepo, params: str, reason: str) -> None:
    repo.commit({"pipeline/params.toml": params + "\n"})
    code, _, err = run("emit", "--repo", str(repo.path))  # plan shows it as a warning
    assert code == 2
    assert one_line(err) == f"pipeline/params.toml: {reason}"


def test_ledger_set_file_that_never_ends_is_read_up_to_a_cap(repo: GitRepo) -> None:
    code, _, err = run("ledger", "set", "--repo", str(repo.path), "--file", "/dev/zero")
    assert code == 2
    assert one_line(err) == "--file /dev/zero: it holds more than the 1048576-byte limit"


def test_trigger_data_whose_path_cannot_travel_in_a_message_is_exit_2(
    repo: GitRepo, tmp_path: Path
) -> None:
    code, _, err = run("ledger", "set", "--repo", str(repo.path), "--commit", "HEAD")
    assert (code, err) == (0, "")
    for name in ("new\nline.csv", "bad-\udcff.csv"):
        data = tmp_path / name
        data.write_text("label\n1\n")
        code, _, err = run("trigger", "--repo", str(repo.path), "--data", str(data))
        assert code == 2
        assert one_line(err).endswith(
            "a path that is not UTF-8 or holds control characters cannot travel in a run "
            "request; rename the file"
        )


# -- item 2: nothing read or built from outside the repository ---------------------------------

CONFINED_RULES = """\
version = 1

[project]
bucket = "hostile-bucket"
registry = "registry.invalid/ct"

[components.trainer]
context = "components/trainer"

[[rule]]
name = "all"
paths = ["*"]
do = ["upload_source", "build_image"]
"""
HOST_DIR = "/etc"


def confined_repo(git_repo: GitRepo) -> GitRepo:
    git_repo.commit(
        {
            "rules.toml": CONFINED_RULES,
            "training_src/train.py": "x = 1\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
            "pipeline/params.toml": "alpha = 1\n",
            "function/main.py": "",
        }
    )
    return git_repo


def _swap_for_link(repo: GitRepo, path: str, target: str) -> None:
    """Replace the directory or file ``path`` in the working tree with a symbolic link."""
    import shutil

    full = repo.path / path
    if full.is_dir() and not full.is_symlink():
        shutil.rmtree(full)
    else:
        full.unlink()
    full.symlink_to(target)


LINKS = [
    ("components/trainer", HOST_DIR, "[components.trainer] context components/trainer"),
    ("components", HOST_DIR, "[components.trainer] context components/trainer"),
    ("components/trainer/Dockerfile", "/etc/hostname",
     "[components.trainer] dockerfile components/trainer/Dockerfile"),
    ("components/trainer/.dockerignore", "/etc/hostname",
     "[components.trainer] ignore file components/trainer/.dockerignore"),
    ("training_src", "../../..", "[source] dir training_src"),
    ("function", HOST_DIR, "[function] dir function"),
    ("pipeline", HOST_DIR, "[pipeline] dir pipeline"),
    ("pipeline/params.toml", "/etc/hostname", "[pipeline] params pipeline/params.toml"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "target", "named"), LINKS, ids=[x[0] for x in LINKS])
def test_a_committed_link_out_of_the_repository_is_refused_in_every_mode(
    git_repo: GitRepo, path: str, target: str, named: str
) -> None:
    repo = confined_repo(git_repo)
    if (repo.path / path).exists():
        _swap_for_link(repo, path, target)
    else:
        repo.write(path, GitRepo.Symlink(target))
    repo.commit()
    link = next(p for p in (path, "components") if (repo.path / p).is_symlink())
    named_path = named.rsplit(" ", 1)[1]
    resolved = (repo.path / named_path).resolve()
    for mode, argv, detail in [
        ("commit", [], f"{link} is a symbolic link to {target}"),
        ("working tree", ["--working-tree"], f"{named_path} resolves to {resolved}"),
    ]:
        code, out, err = run("plan", "--repo", str(repo.path), "--changed", "x", *argv)
        assert (code, out) == (2, ""), mode
        assert one_line(err) == f"{named} leaves the repository: {detail}", mode


def test_links_inside_the_repository_are_fine(git_repo: GitRepo) -> None:
    repo = confined_repo(git_repo)
    repo.commit({"src/train.py": "x = 1\n"})
    _swap_for_link(repo, "training_src", "src")
    repo.write("components/trainer/.dockerignore", GitRepo.Symlink("../../.gitignore"))
    repo.commit()
    for argv in ([], ["--working-tree"]):
        code, _, err = run("plan", "--repo", str(repo.path), "--changed", "x", *argv)
        assert (code, err) == (0, "")


def test_a_chain_of_committed_links_is_followed_to_its_end(git_repo: GitRepo) -> None:
    repo = confined_repo(git_repo)
    repo.commit({"a": GitRepo.Symlink("b/c"), "b/c": GitRepo.Symlink("../../outside")})
    _swap_for_link(repo, "training_src", "a")
    repo.commit()
    code, _, err = run("plan", "--repo", str(repo.path), "--changed", "x")
    assert code == 2
    assert one_line(err) == (
        "[source] dir training_src leaves the repository: b/c is a symbolic link to ../../outside"
    )


def test_a_loop_of_committed_links_is_refused(git_repo: GitRepo) -> None:
    repo = confined_repo(git_repo)
    repo.commit({"a": GitRepo.Symlink("b"), "b": GitRepo.Symlink("a")})
    _swap_for_link(repo, "training_src", "a")
    repo.commit()
    code, _, err = run("plan", "--repo", str(repo.path), "--changed", "x")
    assert code == 2
    assert "leaves the repository: " in one_line(err)
    assert "a loop of symbolic links" in one_line(err)


def test_a_checkout_without_git_refuses_a_link_out_of_it(git_repo: GitRepo, tmp_path: Path) -> None:
    import shutil

    repo = confined_repo(git_repo)
    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket"), "BRANCH_NAME": "main"}
    rules = CONFINED_RULES.replace('[components.trainer]\ncontext = "components/trainer"\n', "")
    repo.commit({"rules.toml": rules.replace('"build_image"', '"upload_source"')})
    code, _, err = run("ledger", "set", "--repo", str(repo.path), "--commit", "HEAD", env=env)
    assert (code, err) == (0, "")
    _swap_for_link(repo, "training_src", HOST_DIR)
    head = repo.commit()
    copy = tmp_path / "copy"
    shutil.copytree(repo.path, copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    code, out, err = run("plan", "--repo", str(copy), "--head", head, env=env)
    assert (code, out) == (2, "")
    assert one_line(err) == (
        f"[source] dir training_src leaves the repository: training_src resolves to {HOST_DIR}"
    )


def test_the_executors_refuse_to_build_or_upload_through_a_link_made_after_planning(
    git_repo: GitRepo,
) -> None:
    """The plan reads the commit; the steps read the disk, where the directory may since have
    become a link: each step checks again, before Docker or the bucket sees anything."""
    repo = confined_repo(git_repo)
    repo.commit({"training_src/train.py": "x = 2\n", "components/trainer/Dockerfile": "FROM x\n"})
    code, out, _ = run("plan", "--repo", str(repo.path), "--format", "json")
    assert code == 0
    artifacts = json.loads(out)  # only to be sure the plan builds both
    assert {a["id"] for a in artifacts["actions"]} >= {"upload_source", "build_image:trainer"}
    _swap_for_link(repo, "training_src", HOST_DIR)
    _swap_for_link(repo, "components/trainer", HOST_DIR)
    code, _, err = run("run", "--repo", str(repo.path))
    assert code == 2
    assert one_line(err) == (
        "[components.trainer] context components/trainer leaves the repository: "
        f"components/trainer resolves to {HOST_DIR}"
    )
    names = _artifacts(images={"trainer": "registry.invalid/ct/trainer:c-x"})
    for action, named in (
        ("upload_source", f"[source] dir training_src leaves the repository: training_src "
                          f"resolves to {HOST_DIR}"),
        ("build_image:trainer", "[components.trainer] context components/trainer leaves the "
                                f"repository: components/trainer resolves to {HOST_DIR}"),
    ):  # fmt: skip
        code, _, err = run("step", action, "--repo", str(repo.path), "--artifacts", names)
        assert code == 2
        assert one_line(err) == named
    assert not (repo.path / ".orchestrator" / "bucket" / "hostile-bucket" / "source").exists()


@pytest.mark.parametrize(
    ("table", "value", "key"),
    [
        ("[pipeline]\ndir", '"../elsewhere"', "pipeline.dir"),
        ("[pipeline]\nparams", '"/etc/params.toml"', "pipeline.params"),
        ("[source]\ndir", '"src/../../x"', "source.dir"),
        ("[function]\ndir", '"/srv/function"', "function.dir"),
        (
            '[components.a]\ncontext = "a"\ndockerfile',
            '"../../Dockerfile"',
            "components.a.dockerfile",
        ),
    ],
)
def test_rules_toml_paths_that_climb_out_are_config_errors(
    table: str, value: str, key: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"\[{re.escape(key)}\] must be a path inside the repository"
    ):
        parse_rules(f"version = 1\n{table} = {value}\n")
    parse_rules('version = 1\n[components.a]\ncontext = "a/b"\ndockerfile = "../Dockerfile"\n')
