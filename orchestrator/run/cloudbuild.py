"""The ``cloudbuild`` executor: run the emitted build on Cloud Build and follow it to the end.

The same plan and the same emitted steps as ``orchestrator emit`` (and, step for step, as the
local executor). Cloud Build runs the steps in ``/workspace``, so the build needs the
repository as its source, chosen as ``gcloud builds submit`` chooses it (``.gcloudignore``,
or gcloud's default for it: :mod:`orchestrator.gcloudignore`) from the files git tracks at
the plan's head (the checkout must be at it), or with ``--working-tree`` the tracked and
untracked, not ignored files on disk, or without git every file on disk. Credentials files
are never sent (each is named in one line): google-github-actions/auth writes its
``gha-creds-*.json`` into the workspace. The files are packed as a deterministic tarball and
uploaded with the storage adapter to ``gs://<bucket>/cloudbuild-source/<sha256>.tar.gz``.

Ctrl-C while the build runs cancels it (``CancelBuild``) and exits 130 with one line naming
it (:func:`orchestrator.adapters.cloudbuild.submit_build`).

Project and region come from rules.toml ``[project]``, overridden by ``ORCHESTRATOR_PROJECT``
/ ``ORCHESTRATOR_REGION`` (which the ``run`` command's ``--project`` / ``--region`` set).
``ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS`` sets how often the build is polled (default 5).

The build id and log URL are printed as soon as the build exists, then each step's status as
it changes: plain lines when the stream is not a terminal, coloured ones when it is. Nothing
printed comes from credentials: only ids, statuses, URLs and Cloud Build's status detail.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator import gcloudignore
from orchestrator.adapters.git import Git
from orchestrator.artifacts import Artifacts
from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Plan, Rules
from orchestrator.output import wants_rich
from orchestrator.run.report import BuildInfo, RunReport, StepReport, StepStatus
from orchestrator.workflow import Target, open_checkout

POLL_VAR = "ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS"
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_REGION = "global"
SOURCE_PREFIX = "cloudbuild-source"
_LINK = "120000"
_SUBMODULE = "160000"

_FAILED_STEP_STATUSES = frozenset({"FAILURE", "INTERNAL_ERROR", "TIMEOUT"})
_STYLES = {"SUCCESS": "green", "WORKING": "cyan", "QUEUED": "dim"}


def run_cloudbuild(
    target: Target,
    rules: Rules,
    plan: Plan,
    artifacts: Artifacts,
    build: Mapping[str, Any] | None,
    env: Mapping[str, str],
    stream: IO[str],
) -> RunReport:
    """Submit ``build`` (``emit_build``'s output for ``plan``) and wait for it to finish."""
    if build is None or not plan.actions:
        return RunReport(status="nothing-to-do")
    from orchestrator.adapters import cloudbuild

    project, region = _location(rules)
    poll = _poll_seconds(env)
    printer = _Printer(stream, env)
    config = {**build, "source": _upload_source(target, plan, artifacts, env, printer)}

    def submitted(record: cloudbuild.BuildRecord) -> None:
        printer.line(f"Cloud Build build {record.build_id} in {project}/{region}")
        printer.line(f"logs: {record.log_url}")

    final = cloudbuild.submit_build(
        project,
        region,
        config,
        env=env,
        on_submitted=submitted,
        on_status=printer.status,
        poll_interval=poll,
    )
    printer.finished(final)
    steps = tuple(_step_report(step, final) for step in final.steps)
    return RunReport(
        status="succeeded" if final.succeeded else "failed",
        steps=steps,
        build=BuildInfo(id=final.build_id, log_url=final.log_url or None),
    )


def _location(rules: Rules) -> tuple[str, str]:
    project = rules.project.gcp_project
    if not project:
        raise ConfigError(
            "[project] gcp_project is required for --executor cloudbuild "
            "(or pass --project, or set ORCHESTRATOR_PROJECT)",
            file=rules.source,
            key="project.gcp_project",
        )
    return project, rules.project.region or DEFAULT_REGION


def _poll_seconds(env: Mapping[str, str]) -> float:
    raw = env.get(POLL_VAR)
    if not raw:
        return DEFAULT_POLL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise InputError(f"{POLL_VAR} must be a number of seconds in (0, 600], not {raw!r}")
    return value


def _upload_source(
    target: Target, plan: Plan, artifacts: Artifacts, env: Mapping[str, str], printer: _Printer
) -> dict[str, Any]:
    """Pack the build source (see :func:`source_files`) and upload it; the build's ``source``."""
    from orchestrator.adapters import storage

    files = source_files(target, plan.head, lambda text: printer.line(text, "bold yellow"))
    tarball = pack_source(files)
    key = f"{SOURCE_PREFIX}/{tarball.sha256}.tar.gz"
    result = storage.upload_bytes(
        f"gs://{artifacts.bucket}/{key}", tarball.data, env=env, content_type="application/gzip"
    )
    printer.line(f"source ({tarball.files} files): {storage.describe_location(result.uri, env)}")
    return {"storageSource": {"bucket": artifacts.bucket, "object": key}}


@dataclass(frozen=True)
class SourceFile:
    """One file of the build source: its path, git mode and content (a link's target)."""

    path: str
    mode: str  # 100644, 100755 or 120000 (a symbolic link)
    data: bytes


def source_files(target: Target, head: str, warn: Callable[[str], None]) -> list[SourceFile]:
    """The files ``gcloud builds submit`` would send for commit ``head``, never credentials.

    With git: the files git tracks at ``head``, as committed (``--working-tree``: the
    tracked files as they are on disk plus the untracked ones git does not ignore); without
    git (a Cloud Build workspace from a GitHub-app trigger): every file on disk. Then, in
    every case, whatever ``.gcloudignore`` (or gcloud's default for it) leaves out is left
    out, and so is every credentials file, each named in one line through ``warn``.
    """
    root = target.repo
    git = open_checkout(root)
    # gcloud asks whether .git exists at the top (a worktree's .git is a file)
    has_git_dir = (root / ".git").exists()
    choose = gcloudignore.chooser(lambda name: _read_top(root, name), has_git_dir=has_git_dir)
    found = _disk_files(root, choose) if git is None else _git_files(git, target, head, choose)
    committed = git is not None and not target.working_tree
    kept = []
    for file in found:
        kind = gcloudignore.credential_kind(file.path, file.data)
        if kind is None:
            kept.append(file)
            continue
        how = " (it is committed: remove it from the repository)" if committed else ""
        warn(f"not uploaded: {file.path} is {kind}; credentials never go into a build{how}")
    return kept


def _git_files(
    git: Git, target: Target, head: str, choose: gcloudignore.FileChooser
) -> list[SourceFile]:
    if target.working_tree:
        entries = git.working_tree_entries("")
    else:
        checked_out = git.read_commit("HEAD")
        if checked_out is None or checked_out.sha != head:
            raise InputError(
                f"--executor cloudbuild sends the checked-out files as the build source, but "
                f"{target.repo} is not at {head[:12]}: check out the head first "
                "(or use --working-tree)"
            )
        entries = git.tree_entries(head, "")
    # a submodule is a commit, not files: git tracks none of its files here
    wanted = [e for e in entries if e.mode != _SUBMODULE and choose.included(e.path)]
    if target.working_tree:
        return [SourceFile(e.path, e.mode, _read_disk(target.repo / e.path, e.mode))
                for e in wanted]  # fmt: skip
    blobs = git.read_files(head, [e.path for e in wanted])
    files = []
    for entry in wanted:
        data = blobs.get(entry.path)
        if data is None:  # a name read_files cannot ask for in a batch (a newline in it)
            data = git.read_file(head, entry.path)
        if data is None:
            raise InputError(f"{entry.path} is in {head[:12]} but git cannot read it")
        files.append(SourceFile(entry.path, entry.mode, data))
    return files


def _disk_files(root: Path, choose: gcloudignore.FileChooser) -> list[SourceFile]:
    """Every file below ``root`` that ``choose`` keeps; a directory it leaves out is not
    entered (as gcloud does), a symbolic link is stored as a link, never followed."""
    files = []
    for current, dirs, names in os.walk(root):
        here = Path(current)
        prefix = here.relative_to(root).as_posix()
        prefix = "" if prefix == "." else f"{prefix}/"
        for name in sorted(dirs):
            full = here / name
            if full.is_symlink():  # os.walk lists a link to a directory as a directory
                dirs.remove(name)
                names.append(name)
            elif not choose.included(f"{prefix}{name}", is_dir=True):
                dirs.remove(name)
        for name in sorted(names):
            path = f"{prefix}{name}"
            if not choose.included(path):
                continue
            full = here / name
            mode = _disk_mode(full)
            files.append(SourceFile(path, mode, _read_disk(full, mode)))
    return files


def _disk_mode(full: Path) -> str:
    info = full.lstat()
    if stat.S_ISLNK(info.st_mode):
        return _LINK
    if stat.S_ISREG(info.st_mode):
        return "100755" if info.st_mode & 0o111 else "100644"
    raise InputError(f"{full} is not a file, directory or symbolic link.")


def _read_disk(full: Path, mode: str) -> bytes:
    return os.fsencode(full.readlink()) if mode == _LINK else full.read_bytes()


def _read_top(root: Path, name: str) -> bytes | None:
    path = root / name
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


@dataclass(frozen=True)
class SourceTarball:
    """A deterministic ``.tar.gz`` of the build source and the SHA-256 of its bytes."""

    data: bytes
    sha256: str
    files: int


def pack_source(files: Sequence[SourceFile]) -> SourceTarball:
    """The files as a gzip tarball whose bytes depend on their paths, modes and content only.

    Each directory that holds a file comes before what is in it, entries in path order; every
    timestamp is 0, owners are uid/gid 0 with no names, modes are 0644/0755 (files), 0755
    (directories) and 0777 (links), and the gzip header has no name and mtime 0.
    """
    by_path = {f.path: f for f in files}
    dirs = {"/".join(f.path.split("/")[:i]) for f in files for i in range(1, f.path.count("/") + 1)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(dirs | set(by_path), key=lambda p: p.split("/")):
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            file = by_path.get(path)
            if file is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif file.mode == _LINK:
                info.type, info.mode = tarfile.SYMTYPE, 0o777
                info.linkname = os.fsdecode(file.data)
                tar.addfile(info)
            else:
                info.mode = 0o755 if file.mode == "100755" else 0o644
                info.size = len(file.data)
                tar.addfile(info, io.BytesIO(file.data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    data = out.getvalue()
    return SourceTarball(data=data, sha256=hashlib.sha256(data).hexdigest(), files=len(by_path))


def _step_report(step: Any, final: Any) -> StepReport:
    status: StepStatus
    if step.status == "SUCCESS":
        status, message = "succeeded", ""
    elif step.status in _FAILED_STEP_STATUSES:
        status, message = "failed", final.status_detail or step.status.lower()
    else:  # QUEUED, CANCELLED, ...: never ran, or was stopped because another step failed
        status, message = "skipped", f"not run ({step.status.lower()})"
    return StepReport(id=step.id or step.name, status=status, seconds=step.seconds or 0.0,
                      message=message)  # fmt: skip


class _Printer:
    """Build and step status lines, printed only when something changed."""

    def __init__(self, stream: IO[str], env: Mapping[str, str]) -> None:
        self._stream = stream
        self._console: Any = None
        if wants_rich(stream, env) and not env.get("CI"):
            from orchestrator.output import make_console

            self._console = make_console(stream)
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def line(self, text: str, style: str | None = None) -> None:
        with self._lock:
            if self._console is not None:
                from rich.text import Text

                self._console.print(Text(text, style=style or ""))
            else:
                self._stream.write(text + "\n")
                self._stream.flush()

    def status(self, record: Any) -> None:
        for key, label, status in [
            ("", "build", record.status),
            *((f"step:{s.id or s.name}", f"[{s.id or s.name}]", s.status) for s in record.steps),
        ]:
            if self._seen.get(key, "QUEUED" if key else "") != status:
                self._seen[key] = status
                self.line(f"{label} {status}", _STYLES.get(status, "red"))

    def finished(self, record: Any) -> None:
        self.status(record)
        if not record.succeeded:
            detail = f": {record.status_detail}" if record.status_detail else ""
            self.line(f"build {record.build_id} {record.status}{detail}", "bold red")
