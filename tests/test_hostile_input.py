"""Hostile input to the CLI, through ``main`` on real repositories: every one is exit 2 and
one line, never exit 3 (a bug), and nothing is read without a bound."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from orchestrator import output
from orchestrator.artifacts import Artifacts
from orchestrator.bounded import MAX_EVENT_PAYLOAD_BYTES, TooLarge, load_json, read_capped
from orchestrator.ci_env import read_event_payload
from orchestrator.cli import main
from orchestrator.config import parse_rules
from orchestrator.errors import ConfigError, InputError
from orchestrator.output import error_line
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


# -- messages that say too little: a shallow clone whose origin is gone ------------------------


def test_a_shallow_clone_whose_origin_is_gone_says_why_the_base_cannot_be_fetched(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    import shutil

    git_repo.commit({"rules.toml": RULES, "training_src/train.py": "x = 0\n"})
    shas = [git_repo.commit({"training_src/train.py": f"x = {i}\n"}) for i in range(1, 4)]
    clone = git_repo.clone(tmp_path / "clone", depth=1)
    origin = git_repo.path.resolve()
    shutil.rmtree(origin)
    for argv, missing in (
        (["--base", shas[0]], f"{shas[0]} (--base)"),
        ([], f"{shas[1]} (the parent of {shas[2]})"),
    ):
        code, out, err = run("plan", "--repo", str(clone.path), *argv)
        assert (code, out) == (2, ""), err
        assert one_line(err) == (
            f"{missing} is not in the shallow clone at {clone.path}, and fetching more history "
            f"from 'origin' failed: '{origin}' does not appear to be a git repository; fetch the "
            "full history (GitHub Actions: actions/checkout with fetch-depth: 0), or fetch the "
            "commit into the clone (git fetch origin <sha>), or pass a --base that is in it."
        )


# -- found by fuzzing and by reading what the fuzzers reach --------------------------------------


@pytest.mark.parametrize(
    ("branch", "reason"),
    [
        ("a" * 300, "cannot have a deploy ledger: a branch name must be 1 to 256 characters"),
        ("x\ny", "cannot have a deploy ledger: a branch name must be 1 to 256 characters"),
        # found by fuzzing: an argument that is not UTF-8 (exit 3 from urllib's quote)
        (b"\xed\xb3\xbf".decode("utf-8", "surrogateescape"), "cannot have a deploy ledger"),
        # 200 characters, 1200 once quoted into the key: too long for a file name on disk
        ("é" * 200, "the object name is too long for the local bucket directory "),
    ],
    ids=["300-characters", "newline", "not-utf8", "too-long-on-disk"],
)
def test_a_branch_the_ledger_cannot_hold_is_exit_2_not_3(
    repo: GitRepo, tmp_path: Path, branch: str, reason: str
) -> None:
    """Was exit 3 (the record's own check, a StateError, at encoding) or a bare OSError."""
    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket")}
    for argv in (["set", "--commit", "HEAD"], ["show"], ["history"]):
        code, out, err = run("ledger", *argv, "--repo", str(repo.path), "--branch", branch, env=env)
        if code == 0:  # looking finds nothing there, which is no error
            assert argv != ["set", "--commit", "HEAD"]
            assert reason.startswith("the object name"), out
            assert out.endswith(("nothing deployed yet\n", "no history\n")), out
            continue
        assert code == 2, err
        assert reason in one_line(err)
    code, _, err = run("plan", "--repo", str(repo.path), env={**env, "BRANCH_NAME": "a" * 300})
    assert code == 2
    assert "cannot have a deploy ledger" in one_line(err)


def test_the_directory_bucket_names_the_object_not_a_path_when_the_disk_refuses(
    tmp_path: Path,
) -> None:
    """Every OSError of the local directory backend (a key longer than a file name, a file
    where a folder of the key should be) is an error naming the gs:// URI, never a bare
    OSError (exit 3 in the CLI, a redelivered message in the function)."""
    from orchestrator import objects

    env = {objects.LOCAL_BUCKET_ROOT_VAR: str(tmp_path)}
    long = f"gs://fuzz-bucket/{'a' * 300}"
    for call in (
        lambda: objects.read(long, env),
        lambda: objects.write(long, b"x", env, if_generation=None),
        lambda: objects.generation(long, env),
        lambda: objects.exists(long, env),
    ):
        (tmp_path / "fuzz-bucket").mkdir(exist_ok=True)
        with pytest.raises(objects.BadUri, match=rf"^{long}: the object name is too long for"):
            call()
    objects.write("gs://fuzz-bucket/file", b"x", env, if_generation=None)
    with pytest.raises(objects.ObjectError) as error:
        objects.write("gs://fuzz-bucket/file/below", b"x", env, if_generation=None)
    assert str(error.value).startswith(
        f"writing gs://fuzz-bucket/file/below in the local bucket directory {tmp_path} failed: "
    )
    assert error_line(str(error.value)).count("\n") == 1


def test_validate_escapes_a_line_break_in_a_missing_context(repo: GitRepo) -> None:
    """validate wrote its problems without error_line: a context holding a newline made two."""
    rules = RULES + '\n[components.a]\ncontext = "a\\nb"\n'
    repo.commit({"rules.toml": rules})
    code, _, err = run("validate", "--repo", str(repo.path))
    assert code == 2
    assert one_line(err) == (
        f"{repo.path / 'rules.toml'}: [components.a] context 'a\\nb' does not exist at HEAD"
    )


# -- every JSON output stays JSON, whatever the file names ---------------------------------------

HOSTILE_NAMES = {
    "not-utf8": "training_src/bad-" + b"\xff\xfe".decode("utf-8", "surrogateescape") + ".py",
    "newline": "training_src/new\nline.py",
    "control": "training_src/tab\tand\x1b[2Jescape.py",
    "quote-backslash": 'training_src/q"uote\\back.py',
    "line-separators": "training_src/nel\x85csi\x9b[2Jls\u2028ps\u2029.py",
}
JSON_COMMANDS = {
    "plan-json": ["plan", "--format", "json"],
    "plan-json-all-paths": ["plan", "--format", "json", "--all-paths"],
    "dry-run-json": ["--dry-run", "--format", "json"],
    "plan-github": ["plan", "--format", "github"],
    "ledger-show": ["ledger", "show"],
}


def _json_documents(command: str, out: str, github_output: Path) -> list[object]:
    """The JSON each command writes: its stdout, or (github) the JSON step outputs; the
    ledger's after its header line."""
    if command == "plan-github":
        text = github_output.read_bytes().decode("utf-8")  # strict: valid UTF-8
        outputs = dict(line.split("=", 1) for line in text.splitlines())
        return [json.loads(outputs["actions"]), json.loads(outputs["images"])]
    if command == "ledger-show":
        header, _, body = out.partition("\n")
        assert header.endswith("):"), out
        return [json.loads(body)]
    assert out.count("\n") == 1, out  # one line of compact JSON
    return [json.loads(out)]


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
@pytest.mark.parametrize("command", sorted(JSON_COMMANDS))
def test_every_json_output_stays_valid_json_whatever_the_file_names(
    repo: GitRepo, tmp_path: Path, command: str, name: str
) -> None:
    path = HOSTILE_NAMES[name]
    repo.commit({path: "x = 3\n"})
    github_output = tmp_path / "github_output"
    env = {
        **ENV,
        "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket"),
        "GITHUB_OUTPUT": str(github_output),
    }
    if command == "ledger-show":
        code, _, err = run("ledger", "set", "--repo", str(repo.path), "--commit", "HEAD", env=env)
        assert (code, err) == (0, "")
    # a strict UTF-8 stream: what a pipe to a JSON reader gets
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")
    err_stream = io.StringIO()
    code = main(
        [*JSON_COMMANDS[command], "--repo", str(repo.path)],
        stdout=stdout,
        stderr=err_stream,
        env=env,
    )
    stdout.flush()
    assert (code, err_stream.getvalue()) == (0, "")
    out = raw.getvalue().decode("utf-8")
    documents = _json_documents(command, out, github_output)
    if command.startswith(("plan-json", "dry-run")):
        [plan] = documents
        assert isinstance(plan, dict)
        # the name as given, but for bytes that are not UTF-8: \xNN (output.undecodable)
        expected = path.replace("\udcff", "\\xff").replace("\udcfe", "\\xfe")
        assert expected in [change["path"] for change in plan["changes"]]


@pytest.mark.parametrize("name", sorted(HOSTILE_NAMES))
@pytest.mark.parametrize("command", ["plan", "dry-run", "explain"])
def test_text_outputs_show_a_hostile_file_name_on_one_line(
    repo: GitRepo, command: str, name: str
) -> None:
    """The plain-text plan and explain wrote a path's newline or escape sequence raw: a file
    name could forge lines of the plan, or clear the terminal."""
    path = HOSTILE_NAMES[name]
    repo.commit({path: "x = 4\n"})
    argv = {"plan": ["plan"], "dry-run": ["--dry-run"], "explain": ["explain", path]}[command]
    code, out, err = run(*argv, "--repo", str(repo.path))
    assert (code, err) == (0, "")
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]", out), out
    escaped = output.one_line(path)
    assert any(line.lstrip(" -").startswith(escaped) for line in out.splitlines()), out


@pytest.mark.parametrize(
    ("action", "uri", "code", "reason"),
    [
        ("upload_source", "gs://hostile-bucket/" + "a" * 256, 2,
         "gs://hostile-bucket/" + "a" * 256 + ": the object name is too long for the local "),
        ("publish", "gs://hostile-bucket/" + "a" * 256, 2,
         "gs://hostile-bucket/" + "a" * 256 + ": the object name is too long for the local "),
        ("publish", "gs://hostile-bucket/folder", 1,
         "reading gs://hostile-bucket/folder in the local bucket directory "),
        ("upload_source", "gs://hostile-bucket/folder", 1,
         "writing gs://hostile-bucket/folder in the local bucket directory "),
    ],
    ids=["upload-long-key", "publish-long-key", "publish-directory", "upload-directory"],
)  # fmt: skip
def test_a_step_naming_an_object_the_directory_bucket_cannot_hold_names_it(
    repo: GitRepo, tmp_path: Path, action: str, uri: str, code: int, reason: str
) -> None:
    """Found by fuzzing step --artifacts: the storage adapter's directory backend let the
    OSError through (exit 3, naming a path on disk, not the object)."""
    bucket = tmp_path / "bucket"
    (bucket / "hostile-bucket" / "folder").mkdir(parents=True)
    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(bucket)}
    artifacts = _artifacts(source_uri=uri, spec_uri=uri)
    got, _, err = run("step", action, "--repo", str(repo.path), "--artifacts", artifacts, env=env)
    assert got == code, err
    assert one_line(err).startswith(reason)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"schema": 1, "branch": "ma', "the record is not JSON"),
        (b"", "the record is empty"),
        (b"[1]", "it must be a JSON object, not a list"),
        (b"\xff\xfe", "the record is not UTF-8"),
    ],
    ids=["truncated", "empty", "list", "not-utf8"],
)
def test_a_corrupt_ledger_object_is_named_by_its_uri_in_every_command(
    repo: GitRepo, tmp_path: Path, content: bytes, reason: str
) -> None:
    from orchestrator import objects

    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket"), "BRANCH_NAME": "main"}
    uri = "gs://hostile-bucket/ct/ledger/main/default.json"
    objects.write(uri, content, env, if_generation=None)
    objects.write(uri.replace(".json", ".history/1.json"), content, env, if_generation=None)
    for argv in (["ledger", "show"], ["ledger", "history"], ["plan", "--since-deployed"]):
        code, out, err = run(*argv, "--repo", str(repo.path), env=env)
        assert (code, out) == (2, ""), argv
        line = one_line(err)
        assert line.startswith("the deploy-ledger record gs://hostile-bucket/ct/ledger/main/"), line
        assert f"is unusable: {reason}" in line, line


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"source_uri": "gs://hostile-bucket/."}, "field 'source_uri': 'gs://hostile-bucket/.' is"),
        ({"commit": "not-a-sha"}, "field 'commit' must be a 40-character lowercase hex sha"),
        ({"ref": "main"}, "field 'ref' must be a full git ref like refs/heads/main"),
    ],
    ids=["unclean-source-uri", "commit", "ref"],
)
def test_publishing_artifacts_the_function_would_reject_is_exit_2(
    repo: GitRepo, tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    """Found by fuzzing step --artifacts: publish built the run request and its validation
    (MessageError, the function's own rules) surfaced as exit 3."""
    from orchestrator import objects

    env = {**ENV, "ORCHESTRATOR_LOCAL_BUCKET_ROOT": str(tmp_path / "bucket")}
    spec = "gs://hostile-bucket/pipelines/x/pipeline.yaml"
    objects.write(spec, b"not a spec", env, if_generation=None)
    artifacts = _artifacts(spec_uri=spec, **changes)
    code, _, err = run(
        "step", "publish", "--repo", str(repo.path), "--artifacts", artifacts, env=env
    )
    assert code == 2, err
    assert one_line(err).startswith(
        f"cannot publish the run request these artifacts make: {reason}"
    )


def test_an_argument_holding_a_unicode_line_break_makes_one_error_line(repo: GitRepo) -> None:
    """Found by fuzzing: NEL (U+0085) is a line break to str.splitlines() and some readers,
    and C1's CSI (U+009B) starts a terminal escape sequence: both are escaped now."""
    code, _, err = run("plan", "--branch", "\x85\x9b[2J\u2028", "--repo", str(repo.path))
    assert code == 2
    assert len(err.splitlines()) == 1
    assert one_line(err) == (
        "unrecognized arguments: --branch \\x85\\x9b[2J\\u2028 (see orchestrator --help)"
    )
