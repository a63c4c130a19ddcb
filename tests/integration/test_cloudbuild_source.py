"""What ``run --executor cloudbuild`` uploads as the build source, member by member.

Driven through ``main`` against the local Cloud Build API; the tarball is read back from the
directory bucket the storage adapter uploaded it to. The workspace holds what
google-github-actions/auth leaves there (an untracked ``gha-creds-*.json``), one committed by
mistake, a service-account key, a ``.gcloudignore`` with negations and an include of
``.gitignore``, a file git tracks although ``.gitignore`` ignores it, and untracked files.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from orchestrator.adapters.storage import LOCAL_BUCKET_ROOT_VAR
from orchestrator.cli import main
from orchestrator.run.cloudbuild import SourceFile, pack_source
from tests.fixtures.cloudbuild_server import LocalCloudBuild
from tests.fixtures.gitrepo import GitRepo
from tests.samples import SMALL_RULES

CREDENTIAL_JSON = '{"type": "external_account", "audience": "//iam.googleapis.com/x"}\n'
SA_KEY = json.dumps(
    {"type": "service_account", "project_id": "demo-project", "private_key_id": "k1",
     "private_key": "-----BEGIN PRIVATE KEY-----\nTOPSECRET\n-----END PRIVATE KEY-----\n",
     "client_email": "ci@demo-project.iam.gserviceaccount.com"}
)  # fmt: skip
GITIGNORE = "*.log\nbuild/\n"
GCLOUDIGNORE = """\
# what gcloud builds submit leaves out
.gcloudignore
#!include:.gitignore
docs/
!docs/keep.md
*.tmp
!src/important.tmp
"""


def _workspace(repo: GitRepo) -> GitRepo:
    repo.commit(
        {
            "rules.toml": SMALL_RULES,
            "README.md": "# demo\n",
            ".gitignore": GITIGNORE,
            ".gcloudignore": GCLOUDIGNORE,
            "src/app.py": "x = 1\n",
            "src/important.tmp": "kept by a negation\n",
            "src/scratch.tmp": "left out\n",
            "src/link": GitRepo.Symlink("app.py"),
            "docs/guide.md": "left out\n",
            "docs/keep.md": "left out too: docs/ is left out, so a negation cannot reach it\n",
            "components/trainer/Dockerfile": "FROM scratch\n",
            # committed by mistake
            "gha-creds-0123abcd.json": CREDENTIAL_JSON,
            "keys/ci.json": SA_KEY,
        },
        message="root",
    )
    repo.write("server.log", "tracked although .gitignore ignores it\n")
    repo.git("add", "-f", "server.log")
    repo.commit({"components/trainer/Dockerfile": "FROM x\n"})
    # what the workflow leaves in the workspace: never committed
    repo.write("gha-creds-fedcba98.json", CREDENTIAL_JSON)
    repo.write("notes.txt", "untracked, not ignored\n")
    repo.write("debug.log", "untracked, ignored\n")
    repo.write("build/out.bin", "untracked, ignored\n")
    return repo


def _run(repo: GitRepo, api: LocalCloudBuild, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {
        **api.env,
        "ORCHESTRATOR_CLOUDBUILD_POLL_SECONDS": "0.01",
        LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets"),
    }
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--repo", str(repo.path), "--executor", "cloudbuild", *args]
    return main(argv, stdout=out, stderr=err, env=env), out.getvalue(), err.getvalue()


def _uploaded(api: LocalCloudBuild, tmp_path: Path) -> dict[str, tarfile.TarInfo | bytes]:
    [request] = api.requests
    source = request.build.source.storage_source
    members: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(tmp_path / "buckets" / source.bucket / source.object_) as tar:
        for info in tar.getmembers():
            fh = tar.extractfile(info) if info.isfile() else None
            members[info.name] = fh.read() if fh is not None else info
    return members


def test_only_what_git_tracks_at_head_less_what_gcloudignore_leaves_out(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _workspace(git_repo)
    repo.write("src/app.py", "x = 'edited, not committed'\n")
    code, out, err = _run(repo, cloudbuild_api, tmp_path)
    assert (code, err) == (0, ""), out + err
    members = _uploaded(cloudbuild_api, tmp_path)
    assert list(members) == [
        ".gitignore",
        "README.md",
        "components",
        "components/trainer",
        "components/trainer/Dockerfile",
        "rules.toml",
        "src",
        "src/app.py",
        "src/important.tmp",
        "src/link",
    ]
    assert members["src/app.py"] == b"x = 1\n"  # as committed at head, not as on disk
    link = members["src/link"]
    assert isinstance(link, tarfile.TarInfo) and (link.issym(), link.linkname) == (True, "app.py")
    lines = out.splitlines()
    warned = [line for line in lines if line.startswith("not uploaded: ")]
    assert warned == [
        "not uploaded: gha-creds-0123abcd.json is a google-github-actions/auth credentials "
        "file; credentials never go into a build (it is committed: remove it from the "
        "repository)",
        "not uploaded: keys/ci.json is a service-account private key; credentials never go "
        "into a build (it is committed: remove it from the repository)",
    ]
    assert "source (7 files): " in out
    assert "TOPSECRET" not in out and "external_account" not in out


def test_working_tree_adds_untracked_files_git_does_not_ignore(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    repo = _workspace(git_repo)
    repo.write("src/app.py", "x = 'edited, not committed'\n")
    code, out, err = _run(repo, cloudbuild_api, tmp_path, "--working-tree")
    assert (code, err) == (0, ""), out + err
    members = _uploaded(cloudbuild_api, tmp_path)
    assert list(members) == [
        ".gitignore",
        "README.md",
        "components",
        "components/trainer",
        "components/trainer/Dockerfile",
        "notes.txt",
        "rules.toml",
        "src",
        "src/app.py",
        "src/important.tmp",
        "src/link",
    ]
    assert members["src/app.py"] == b"x = 'edited, not committed'\n"
    warned = sorted(line for line in out.splitlines() if line.startswith("not uploaded: "))
    assert warned == [
        "not uploaded: gha-creds-0123abcd.json is a google-github-actions/auth credentials "
        "file; credentials never go into a build",
        "not uploaded: gha-creds-fedcba98.json is a google-github-actions/auth credentials "
        "file; credentials never go into a build",
        "not uploaded: keys/ci.json is a service-account private key; credentials never go "
        "into a build",
    ]


def test_without_a_gcloudignore_gclouds_default_applies(
    git_repo: GitRepo, cloudbuild_api: LocalCloudBuild, tmp_path: Path
) -> None:
    """``.git``, ``.gitignore`` and ``.gcloudignore`` at any depth stay home, and what
    ``.gitignore`` ignores does too, even when git tracks it."""
    repo = _workspace(git_repo)
    repo.write("src/.gitignore", "nothing\n")
    repo.git("add", "src/.gitignore")
    repo.git("rm", "-q", ".gcloudignore")
    repo.git("commit", "-q", "-m", "no .gcloudignore")  # the untracked files stay untracked
    assert _run(repo, cloudbuild_api, tmp_path)[0] == 0
    assert list(_uploaded(cloudbuild_api, tmp_path)) == [
        "README.md",
        "components",
        "components/trainer",
        "components/trainer/Dockerfile",
        "docs",
        "docs/guide.md",
        "docs/keep.md",
        "rules.toml",
        "src",
        "src/app.py",
        "src/important.tmp",
        "src/link",
        "src/scratch.tmp",
    ]


def test_a_workspace_without_git_sends_every_file_gcloudignore_keeps(tmp_path: Path) -> None:
    """The files of a Cloud Build workspace from a GitHub-app trigger (no .git): see
    tests/integration/test_cloudbuild_entry.py for the whole run from cloudbuild.yaml."""
    from orchestrator.run.cloudbuild import source_files
    from orchestrator.workflow import Target

    root = tmp_path / "workspace"
    for rel, text in {
        ".gitignore": GITIGNORE, ".gcloudignore": GCLOUDIGNORE, "a.txt": "a",
        "debug.log": "l", "build/out.bin": "b", "docs/keep.md": "k", "src/x.tmp": "t",
        "src/important.tmp": "i", "gha-creds-77.json": CREDENTIAL_JSON, "sa": SA_KEY,
    }.items():  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    warned: list[str] = []
    files = source_files(Target(root, root / "rules.toml"), "0" * 40, warned.append)
    assert [f.path for f in files] == [".gitignore", "a.txt", "src/important.tmp"]
    assert [w.split(" is ")[0] for w in warned] == [
        "not uploaded: gha-creds-77.json",
        "not uploaded: sa",
    ]


def test_the_tarball_depends_on_paths_modes_and_content_only() -> None:
    files = [
        SourceFile("b/c.txt", "100644", b"c"),
        SourceFile("a.sh", "100755", b"#!/bin/sh\n"),
        SourceFile("b/link", "120000", b"c.txt"),
        SourceFile("a-b", "100644", b""),
    ]
    first, second = pack_source(files), pack_source(list(reversed(files)))
    assert first.data == second.data and first.sha256 == second.sha256 and first.files == 4
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        infos = tar.getmembers()
    assert [(i.name, i.mode, i.mtime, i.uid, i.uname) for i in infos] == [
        ("a-b", 0o644, 0, 0, ""),
        ("a.sh", 0o755, 0, 0, ""),
        ("b", 0o755, 0, 0, ""),
        ("b/c.txt", 0o644, 0, 0, ""),
        ("b/link", 0o777, 0, 0, ""),
    ]
