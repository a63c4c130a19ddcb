"""``setup-gcp --print``: the exact gcloud commands for a rules.toml, and docs/gcp-setup.md.

The commands rest on Google's documentation, cited in ``orchestrator/gcp_setup.py`` and in
docs/gcp-setup.md. These tests pin the exact command lines, check the printed script with
``bash -n``, and regenerate every command block of docs/gcp-setup.md from the rules.toml that
page shows, so the page and the tool cannot drift apart.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import load_rules
from orchestrator.gcp_setup import (
    Repository,
    build_needs,
    cloud_values,
    setup_sections,
    shell_word,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "gcp-setup.md"

#: defaults for every account, the registry in another project, data in a bucket of its own
SAMPLE_RULES = """\
version = 1
[project]
gcp_project = "demo-project"
region = "us-central1"
bucket = "demo-ct"
registry = "us-docker.pkg.dev/shared-images/ct"
topic = "training-runs"
[data]
prefix = "incoming/"
bucket = "demo-data"
[[rule]]
name = "all"
paths = ["*"]
do = "all"
"""

EXPECTED_COMMANDS = r"""set -euo pipefail
PROJECT_NUMBER="$(gcloud projects describe demo-project --format='value(projectNumber)')"
gcloud services enable artifactregistry.googleapis.com \
    cloudbuild.googleapis.com \
    cloudfunctions.googleapis.com \
    run.googleapis.com \
    eventarc.googleapis.com \
    logging.googleapis.com \
    pubsub.googleapis.com \
    storage.googleapis.com \
    aiplatform.googleapis.com \
    iam.googleapis.com \
    iamcredentials.googleapis.com \
    sts.googleapis.com \
    cloudresourcemanager.googleapis.com \
    --project=demo-project
gcloud artifacts repositories create ct \
    --repository-format=docker \
    --location=us \
    --project=shared-images
gcloud storage buckets create gs://demo-ct \
    --project=demo-project \
    --location=us-central1 \
    --uniform-bucket-level-access
gcloud pubsub topics create training-runs --project=demo-project
gcloud iam service-accounts create ct-build \
    --project=demo-project \
    --display-name='ct-orchestrator builds (and GitHub Actions)'
gcloud iam service-accounts create ct-function \
    --project=demo-project \
    --display-name='ct-orchestrator trigger function'
gcloud iam service-accounts create ct-invoker \
    --project=demo-project \
    --display-name='ct-orchestrator trigger identity (Eventarc)'
gcloud iam service-accounts create ct-pipeline \
    --project=demo-project \
    --display-name='ct-orchestrator pipeline runs (Vertex AI)'
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/cloudbuild.builds.editor
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/logging.logWriter
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/cloudfunctions.developer
gcloud storage buckets add-iam-policy-binding gs://demo-ct \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectAdmin
gcloud pubsub topics add-iam-policy-binding training-runs \
    --project=demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/pubsub.publisher
gcloud artifacts repositories add-iam-policy-binding ct \
    --location=us \
    --project=shared-images \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/artifactregistry.writer
gcloud iam service-accounts add-iam-policy-binding ct-build@demo-project.iam.gserviceaccount.com \
    --project=demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/iam.serviceAccountUser
gcloud iam service-accounts add-iam-policy-binding ct-function@demo-project.iam.gserviceaccount.com \
    --project=demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/iam.serviceAccountUser
gcloud iam service-accounts add-iam-policy-binding ct-invoker@demo-project.iam.gserviceaccount.com \
    --project=demo-project \
    --member=serviceAccount:ct-build@demo-project.iam.gserviceaccount.com \
    --role=roles/iam.serviceAccountUser
gcloud storage buckets add-iam-policy-binding gs://demo-ct \
    --member=serviceAccount:ct-function@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectAdmin
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-function@demo-project.iam.gserviceaccount.com \
    --role=roles/aiplatform.user
gcloud iam service-accounts add-iam-policy-binding ct-pipeline@demo-project.iam.gserviceaccount.com \
    --project=demo-project \
    --member=serviceAccount:ct-function@demo-project.iam.gserviceaccount.com \
    --role=roles/iam.serviceAccountUser
gcloud storage buckets add-iam-policy-binding gs://demo-data \
    --member=serviceAccount:ct-function@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectViewer
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-invoker@demo-project.iam.gserviceaccount.com \
    --role=roles/run.invoker
gcloud projects add-iam-policy-binding demo-project \
    --member=serviceAccount:ct-pipeline@demo-project.iam.gserviceaccount.com \
    --role=roles/aiplatform.user
gcloud storage buckets add-iam-policy-binding gs://demo-ct \
    --member=serviceAccount:ct-pipeline@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectViewer
gcloud storage buckets add-iam-policy-binding gs://demo-ct \
    --member=serviceAccount:ct-pipeline@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectCreator
gcloud storage buckets add-iam-policy-binding gs://demo-data \
    --member=serviceAccount:ct-pipeline@demo-project.iam.gserviceaccount.com \
    --role=roles/storage.objectViewer
gcloud iam workload-identity-pools create github \
    --project=demo-project \
    --location=global \
    --display-name='GitHub Actions'
gcloud iam workload-identity-pools providers create-oidc ct-orchestrator \
    --project=demo-project \
    --location=global \
    --workload-identity-pool=github \
    --display-name='ct-orchestrator repository' \
    --issuer-uri=https://token.actions.githubusercontent.com \
    --attribute-mapping=google.subject=assertion.sub,attribute.repository=assertion.repository \
    --attribute-condition="assertion.repository == 'octo-org/ct-demo'"
gcloud iam service-accounts add-iam-policy-binding ct-build@demo-project.iam.gserviceaccount.com \
    --project=demo-project \
    --member="principalSet://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/github/attribute.repository/octo-org/ct-demo" \
    --role=roles/iam.workloadIdentityUser
STORAGE_AGENT="$(gcloud storage service-agent --project=demo-project)"
gcloud pubsub topics add-iam-policy-binding training-runs \
    --project=demo-project \
    --member="serviceAccount:${STORAGE_AGENT}" \
    --role=roles/pubsub.publisher
gcloud storage buckets notifications create gs://demo-data \
    --topic=projects/demo-project/topics/training-runs \
    --event-types=OBJECT_FINALIZE \
    --object-prefix=incoming/ \
    --payload-format=json
echo "GCP_WORKLOAD_IDENTITY_PROVIDER=projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/github/providers/ct-orchestrator"
"""  # noqa: E501 (single shell words longer than a line)


def _setup(tmp_path: Path, rules: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "setup-gcp", "--repo", str(tmp_path), *args],
        capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )  # fmt: skip


def test_setup_gcp_prints_the_exact_commands(tmp_path: Path) -> None:
    done = _setup(tmp_path, SAMPLE_RULES, "--print", "--github-repo", "octo-org/ct-demo")
    assert (done.returncode, done.stderr) == (0, "")
    commands = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert "\n".join(commands) + "\n" == EXPECTED_COMMANDS
    assert done.stdout.startswith("#!/usr/bin/env bash\n")
    # the lines to add to rules.toml for the default accounts, and the GitHub variables
    assert '#   [build]    service_account = "ct-build@demo-project.iam.gserviceaccount.com"' in (
        done.stdout
    )
    assert "#   GCP_SERVICE_ACCOUNT = ct-build@demo-project.iam.gserviceaccount.com" in done.stdout


def test_printed_script_is_valid_bash_and_runs_nothing_itself(tmp_path: Path) -> None:
    done = _setup(tmp_path, SAMPLE_RULES, "--print", "--github-repo", "octo-org/ct-demo")
    script = tmp_path / "setup.sh"
    script.write_text(done.stdout, encoding="utf-8")
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.toml", "setup.sh"]


def test_without_print_it_says_it_only_prints(tmp_path: Path) -> None:
    done = _setup(tmp_path, SAMPLE_RULES, "--github-repo", "octo-org/ct-demo")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "orchestrator: error: setup-gcp only prints the gcloud commands, it runs nothing: pass "
        "--print, read the script, then run it (python -m orchestrator setup-gcp --print > "
        "setup.sh)\n"
    )


def test_the_github_repository_is_required_and_checked(tmp_path: Path) -> None:
    done = _setup(tmp_path, SAMPLE_RULES, "--print")
    assert done.returncode == 2
    assert "pass --github-repo OWNER/REPOSITORY" in done.stderr
    hostile = "octo/ct'; touch pwned; '"
    done = _setup(tmp_path, SAMPLE_RULES, "--print", "--github-repo", hostile)
    assert (done.returncode, done.stdout) == (2, "")
    assert "expected OWNER/REPOSITORY" in done.stderr


def test_missing_project_keys_are_named(tmp_path: Path) -> None:
    rules = 'version = 1\n[project]\nbucket = "b"\n'
    done = _setup(tmp_path, rules, "--print", "--github-repo", "o/r")
    assert done.returncode == 2
    assert done.stderr.endswith(
        "[project] the Google Cloud setup needs [project] gcp_project, region, topic, registry\n"
    )


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("plain-value_1.2/x:y@z", "plain-value_1.2/x:y@z"),
        ("GitHub Actions", "'GitHub Actions'"),
        ("a == 'b/c'", "\"a == 'b/c'\""),
        ("x/${PROJECT_NUMBER}/y", '"x/${PROJECT_NUMBER}/y"'),
        ("it's $HOME", "'it'\"'\"'s $HOME'"),
    ],
)
def test_shell_words(value: str, word: str) -> None:
    assert shell_word(value) == word
    echoed = subprocess.run(
        ["bash", "-c", f"printf %s {word}"], capture_output=True, text=True,
        env={"PROJECT_NUMBER": "${PROJECT_NUMBER}", "HOME": "$HOME"},
    )  # fmt: skip
    assert echoed.stdout == value  # the shell gives back exactly the value


def test_registry_host_names_the_repository() -> None:
    assert Repository.parse("europe-west4-docker.pkg.dev/acme/ct/sub") == Repository(
        "europe-west4", "acme", "ct"
    )
    assert Repository.parse("gcr.io/acme") is None
    assert Repository.parse("localhost:5000") is None


# --- docs/gcp-setup.md ----------------------------------------------------------------------


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_every_command_in_the_doc_is_the_generators_for_its_rules(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    [rules_text] = _blocks(text, "toml")
    (tmp_path / "rules.toml").write_text(rules_text, encoding="utf-8")
    values = cloud_values(load_rules(tmp_path / "rules.toml"))
    sections = setup_sections(values, "acme/ml-models")
    assert "setup-gcp --print --github-repo acme/ml-models" in text
    assert _blocks(text, "bash") == [section.text() for section in sections]
    # no gcloud command anywhere else on the page but the ones the tool prints or explains
    shown = {line.strip() for block in _blocks(text, "bash") for line in block.splitlines()}
    for line in text.splitlines():
        if line.startswith("gcloud ") and line.strip() not in shown:
            assert line.startswith(("gcloud auth application-default login",)), line


def test_the_doc_names_the_permissions_validate_checks() -> None:
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    values = cloud_values(load_rules(ROOT / "rules.toml"))
    for need in build_needs(values):
        for permission in need.permissions:
            short = permission.rsplit(".", 1)[-1]
            assert f"`{permission}`" in text or f"`{short}`" in text, permission
