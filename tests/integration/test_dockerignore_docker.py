"""orchestrator.dockerignore against the real Docker engine: what actually lands in the image.

Each case writes a build context (nested directories, dotfiles, spaces, unicode and
punctuation in names), an ignore file and a Dockerfile ``FROM scratch`` + ``COPY . /ctx/``,
builds it with the real ``docker`` CLI against the session's engine (``docker_engine`` from
``tests/fixtures/docker.py``), lists the regular files under ``/ctx`` with ``docker create``
+ ``docker export``, and requires them to be exactly the files the module says that builder
sends. The Dockerfile and ``.dockerignore`` are left out of the comparison: Docker sends them
whatever the patterns say and the daemon then hides them from ``COPY`` when excluded.

The CLI decides the behaviour (it walks the context for both builders), so every docker CLI
found is used, as the :class:`Builder` its version stands for:

- Debian's ``docker.io`` 20.10 (``/usr/bin/docker``, what ``.ci/run`` installs):
  ``DOCKER_BUILDKIT=0`` is ``CLASSIC_20_10``; ``DOCKER_BUILDKIT=1`` is ``BUILDKIT_20_10``
  (that CLI drives the daemon's built-in BuildKit itself).
- a docker CLI >= 23 elsewhere on ``PATH``: ``DOCKER_BUILDKIT=0`` is ``CLASSIC``. It runs
  BuildKit only through the buildx plugin, which Debian 12 does not package, so ``BUILDKIT``
  is checked only where ``docker buildx`` works; elsewhere its rules rest on fsutil's source
  and the literal tables of ``tests/test_dockerignore.py``.

File names never contain CR or LF: BuildKit 0.8's file transfer breaks on a CR in a name.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.dockerignore import (
    IGNORE_FILE,
    Builder,
    DockerIgnoreError,
    ignore_file_candidates,
    parse_dockerignore,
)

if TYPE_CHECKING:
    from tests.fixtures.docker import DockerEngine

pytestmark = pytest.mark.docker

DOCKERFILE_TEXT = "FROM scratch\nCOPY . /ctx/\n"
SPECIAL = frozenset({"Dockerfile", IGNORE_FILE})


@dataclass(frozen=True)
class Cli:
    """One docker CLI and builder: the environment selects the builder."""

    path: str
    builder: Builder
    env: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"{self.path} ({self.builder.value})"


@dataclass(frozen=True)
class Context:
    files: tuple[str, ...]
    ignore: str | None  # the context's .dockerignore
    dockerfile: str = "Dockerfile"
    extra: Mapping[str, str] = field(default_factory=dict)  # more files, with content


@dataclass(frozen=True)
class Build:
    ok: bool
    files: frozenset[str] = frozenset()
    error: str = ""


def _clis(engine: DockerEngine, home: Path) -> list[Cli]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "DOCKER_HOST": engine.host,
    }
    found: dict[str, int] = {}
    for candidate in (shutil.which("docker"), "/usr/bin/docker", "/usr/local/bin/docker"):
        if candidate and os.access(candidate, os.X_OK):
            real = os.path.realpath(candidate)
            out = subprocess.run([real, "--version"], capture_output=True, text=True, env=env)
            version = re.search(r"version (\d+)\.", out.stdout)
            if version and real not in found:
                found[real] = int(version.group(1))
    clis: list[Cli] = []
    for path, major in found.items():
        if major == 20:
            clis.append(Cli(path, Builder.CLASSIC_20_10, {**env, "DOCKER_BUILDKIT": "0"}))
            clis.append(Cli(path, Builder.BUILDKIT_20_10, {**env, "DOCKER_BUILDKIT": "1"}))
        elif major >= 23:
            clis.append(Cli(path, Builder.CLASSIC, {**env, "DOCKER_BUILDKIT": "0"}))
            buildx = subprocess.run([path, "buildx", "version"], capture_output=True, env=env)
            if buildx.returncode == 0:
                clis.append(Cli(path, Builder.BUILDKIT, {**env, "DOCKER_BUILDKIT": "1"}))
    return clis


@pytest.fixture(scope="module")
def clis(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> list[Cli]:
    found = _clis(docker_engine, tmp_path_factory.mktemp("docker-home"))
    if not found:
        pytest.fail("no docker CLI of version 20.10 or >= 23 found", pytrace=False)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("contexts")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=6) as executor:
        yield executor


def _write(root: Path, context: Context) -> None:
    for name in context.files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name, encoding="utf-8")
    for name, text in context.extra.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if context.ignore is not None:
        (root / IGNORE_FILE).write_text(context.ignore, encoding="utf-8", newline="")
    dockerfile = root / context.dockerfile
    dockerfile.parent.mkdir(parents=True, exist_ok=True)
    dockerfile.write_text(DOCKERFILE_TEXT, encoding="utf-8")


def _build(engine: DockerEngine, cli: Cli, root: Path, dockerfile: str) -> Build:
    """Build with the real CLI, then list the regular files that landed under /ctx."""
    done = subprocess.run(
        [cli.path, "build", "-q", "-f", str(root / dockerfile), str(root)],
        capture_output=True,
        text=True,
        env=dict(cli.env),
        timeout=300,
    )
    if done.returncode != 0:
        return Build(ok=False, error=done.stderr.strip()[-2000:])
    image = done.stdout.strip().splitlines()[-1]
    api = engine.client.api
    container = api.create_container(image, command="unused")  # created, never started
    try:
        data = b"".join(api.export(container["Id"]))
    finally:
        api.remove_container(container["Id"], force=True)
        api.remove_image(image, force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return Build(
            ok=True,
            files=frozenset(
                m.name.removeprefix("ctx/")
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith("ctx/")
            ),
        )


def _ignore_text(root: Path, context: Context, builder: Builder) -> str:
    """The ignore file this builder reads: the first candidate that exists."""
    for candidate in ignore_file_candidates(context.dockerfile, builders=[builder]):
        path = root / candidate
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return ""


def _must_fail(error: DockerIgnoreError, builder: Builder) -> bool | None:
    """Whether a build with this refused pattern must fail (None: depends on the walk)."""
    if "does not model" in error.problem:
        return None
    if not builder.current:
        return True  # Docker 20.10 tries every pattern on every path
    if "regular expression" not in error.problem:
        return True  # patternmatcher.New refuses the line before the walk
    return None  # current Docker compiles a regexp only when a path first needs it


def _check(engine: DockerEngine, clis: list[Cli], workdir: Path, pool: ThreadPoolExecutor,
           context: Context) -> list[str]:  # fmt: skip
    """Build ``context`` with every CLI; the differences from the module, as messages."""
    root = Path(tempfile.mkdtemp(dir=workdir))
    try:
        _write(root, context)
        all_files = {*context.files, *context.extra, context.dockerfile}
        builds = list(pool.map(lambda cli: _build(engine, cli, root, context.dockerfile), clis))
        problems = []
        for cli, build in zip(clis, builds, strict=True):
            text = _ignore_text(root, context, cli.builder)
            try:
                ignore = parse_dockerignore(
                    text, source="ignore", dockerfile=context.dockerfile, builders=[cli.builder]
                )
            except DockerIgnoreError as error:
                expected = _must_fail(error, cli.builder)
                if expected and build.ok:
                    problems.append(f"{cli.label}: built although {error}")
                continue
            if not build.ok:
                problems.append(f"{cli.label}: build failed: {build.error}")
                continue
            special = {*SPECIAL, context.dockerfile}
            want = {f for f in all_files if not ignore.excluded_by(f, cli.builder)} - special
            got = set(build.files) - special
            if got != want:
                problems.append(
                    f"{cli.label}: sent but not predicted {sorted(got - want)!r}, "
                    f"predicted but not sent {sorted(want - got)!r}"
                )
            if any(ignore.excludes(f) for f in got):
                problems.append(f"{cli.label}: excludes() is true for a file that was sent")
        return problems
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- a fixed table of tricky cases -----------------------------------------------------------

TRICKY = {
    "docs example": Context(
        files=("somedir/temporary.txt", "somedir/temp/x", "somedir/subdir/temporary.txt",
               "tempa", "temp", "tempab", "a/b/c/temp", "# comment"),
        ignore="# comment\n*/temp*\n*/*/temp*\ntemp?\n",
    ),
    "last line decides": Context(
        files=("CHANGES.md", "README.md", "README-x.md", "README-secret.md", "docs/x.md"),
        ignore="*.md\n!README*.md\nREADME-secret.md\n",
    ),
    "re-include below an excluded dir": Context(
        files=("a/keep/x", "a/keep/deep/y", "a/x", "b"),
        ignore="a\n!a/keep\n",
    ),
    "wildcard exception": Context(
        files=("keep", "sub/keep", "x/y/keep", "sub/other", ".hidden/keep"),
        ignore="*\n!**/keep\n",
    ),
    "skipped pattern keeps no parent result": Context(
        files=("a/x/y", "a/z", "b"), ignore="a\n!a/x\na\n"
    ),
    "ancestor at the pattern's depth": Context(
        files=("x/y/foo/z", "x/y/foo/keep", "foo", "w"),
        ignore="**/foo\n!x/y/foo/keep\n",
    ),
    "leading double star": Context(
        files=("ab.go", "x/cd.go", "e.goo", ".go", "x/.go"), ignore="**.go\n"
    ),
    "regexp characters": Context(
        files=("a+b", "aab", "(c|d)", "c", "d", "e{2}", "ee", "f^g", "fg", "h$", "h"),
        ignore="a+b\n(c|d)\ne{2}\nf^g\nh$\n",
    ),
    "unescaped | and braces": Context(
        files=("x", "xz", "zy", "x|yz", "q", "d/zy", "bb1", "b{2}1", "a+bc", "aabc"),
        ignore="x|y*\nb{2}?\na+b?\n",
    ),
    "regexp escapes and classes": Context(
        files=("1", "d", "ax", "1x", "]", "x]", "b/]", "k/l", "kl", "q[^", "qz", "é", "1é"),
        ignore="\\d\n[[:alpha:]]x\n[*]\nk[/]l\n\\Qq[^\n\\pL\n",
    ),
    "double star everywhere": Context(
        files=("a/b", "a/x/y/b", "a/xb", "m/n/o", "z/a/q", "p/q/r.pyc", "p/q/r.py"),
        ignore="a/**/b\nm/**\n**/a/**\n**/*.py[co]\n",
    ),
    "reading: BOM, CRLF, indented #, spaces, ./ and ..": Context(
        files=("# c", "# x", "keep", "abs", "other", "sp ace/f", "t/u"),
        ignore="\ufeff# c\r\n*\r\n # x\r\n!  ./d/../keep\r\n!/abs\r\n! sp ace/ \r\n!t//./u\r\n",
    ),
    "unicode, dotfiles and spaces": Context(
        files=("é", "日", "ab", ".hidden", "x/.env", ".keep", "éa", "a b", "a  b", "d i r/f"),
        ignore="?\n**/.*\n!.keep\n[é]*\n \t a b \t\n",
    ),
    "excluded nested Dockerfile": Context(
        files=("sub/keep", "sub/other", "x/keep"),
        ignore="*\n!**/keep\n",
        dockerfile="sub/Dockerfile",
    ),
    "Dockerfile below an excluded directory": Context(
        files=("x/y/foo/a", "b"), ignore="**/foo\n", dockerfile="x/y/foo/Dockerfile"
    ),
    "excluded Dockerfile whose path has pattern characters": Context(
        files=("+/?", "?", "+/a"), ignore="?\n", dockerfile="+/?.d/Dockerfile"
    ),
    "Dockerfile-specific ignore file": Context(
        files=("a", "b", "c", "sub/d"),
        ignore="a\n",
        dockerfile="sub/x.Dockerfile",
        extra={"sub/x.Dockerfile.dockerignore": "b\nsub/d\n"},
    ),
    "empty Dockerfile-specific ignore file": Context(
        files=("a", "b"), ignore="a\n", extra={"Dockerfile.dockerignore": ""}
    ),
    "malformed for every builder": Context(files=("a", "z"), ignore="[z-a]\n"),
    "malformed for Docker 20.10 only": Context(files=("c++", "c", "cc"), ignore="c++\n"),
    "lone exception": Context(files=("a",), ignore="a\n! \n"),
}  # fmt: skip


@pytest.fixture(scope="module")
def tricky_results(
    docker_engine: DockerEngine, clis: list[Cli], workdir: Path, pool: ThreadPoolExecutor
) -> dict[str, list[str]]:
    """Every fixed case built at once (a separate pool: its tasks wait on ``pool``)."""
    with ThreadPoolExecutor(max_workers=3) as cases:
        futures = {
            name: cases.submit(_check, docker_engine, clis, workdir, pool, context)
            for name, context in TRICKY.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(TRICKY))
def test_tricky_cases_against_the_engine(name: str, tricky_results: dict[str, list[str]]) -> None:
    problems = tricky_results[name]
    assert not problems, "\n".join(problems)


# --- generated cases --------------------------------------------------------------------------

_PLAIN = "abcab.-_" * 3  # mostly plain names, sometimes with what patterns treat specially
_ODD = " #!é日+()[]{}|^$*?\\"
_name = st.text(alphabet=st.sampled_from(_PLAIN + _ODD), min_size=1, max_size=5).filter(
    lambda n: n not in (".", "..")
)


def _tree(paths: list[list[str]]) -> tuple[str, ...]:
    """Files from name lists, dropping any that would need a file to also be a directory."""
    files: set[str] = set()
    dirs: set[str] = set()
    for names in paths:
        path = "/".join(names)
        parents = {"/".join(names[:i]) for i in range(1, len(names))}
        if path in dirs or path in files or parents & files or path in SPECIAL:
            continue
        if names[0] in SPECIAL:
            continue
        files.add(path)
        dirs |= parents
    return tuple(sorted(files))


def _escape(name: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in name)


@st.composite
def _pattern(draw: st.DrawFn, files: tuple[str, ...]) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(alphabet="ab*?/.!", min_size=1, max_size=6))
    target = draw(st.sampled_from(files)).split("/")
    target = target[: draw(st.integers(1, len(target)))]
    parts = []
    for name in target:
        how = draw(st.sampled_from(["keep", "keep", "keep", "*", "**", "?", "class", "head*"]))
        if how == "keep":
            parts.append(_escape(name))
        elif how == "?":
            at = draw(st.integers(0, len(name) - 1))
            parts.append(_escape(name[:at]) + "?" + _escape(name[at + 1 :]))
        elif how == "class":
            at = draw(st.integers(0, len(name) - 1))
            inside = draw(st.sampled_from([_escape(name[at]), "^x", "a-c", "[:alpha:]"]))
            parts.append(_escape(name[:at]) + f"[{inside}]" + _escape(name[at + 1 :]))
        elif how == "head*":
            parts.append(_escape(name[:1]) + "*")
        else:
            parts.append(how)
    lead = draw(st.sampled_from(["", "", "", "**/", "/", "./"]))
    tail = draw(st.sampled_from(["", "", "", "/", "/**", "*"]))
    return lead + "/".join(parts) + tail


@st.composite
def _contexts(draw: st.DrawFn) -> Context:
    names = st.lists(_name, min_size=1, max_size=3)
    files = _tree(draw(st.lists(names, min_size=4, max_size=10)))
    assume(len(files) >= 2)
    lines = []
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["pattern"] * 6 + ["comment", "blank"]))
        if kind == "comment":
            lines.append("#" + draw(_name))
            continue
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
            continue
        pattern = draw(_pattern(files))
        if lines and draw(st.booleans()):
            pattern = "!" + pattern
        pad = draw(st.sampled_from(["", "", " ", "\t"]))
        lines.append(pad + pattern + pad)
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    # Sometimes below a directory of the context: the classic CLI then keeps it walked
    # when the patterns exclude it.
    dockerfile = draw(st.sampled_from(["Dockerfile", "Dockerfile", f"{files[0]}.d/Dockerfile"]))
    return Context(files=files, ignore=newline.join(lines) + newline, dockerfile=dockerfile)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
@given(context=_contexts())
def test_generated_contexts_against_the_engine(
    context: Context,
    docker_engine: DockerEngine,
    clis: list[Cli],
    workdir: Path,
    pool: ThreadPoolExecutor,
) -> None:
    problems = _check(docker_engine, clis, workdir, pool, context)
    assert not problems, f"{context!r}\n" + "\n".join(problems)
