"""The one-time Google Cloud setup, as gcloud commands, and what the build's account must hold.

Pure: rules.toml's values in, commands and permission lists out. ``setup-gcp --print`` prints
:func:`setup_script`; docs/gcp-setup.md shows the same commands (a test regenerates them);
``validate --cloud`` checks :func:`build_needs` with ``testIamPermissions``.

One service account per role, each with the least the documentation says it needs:

- the **build** (``[build] service_account``, default ``ct-build``): GitHub Actions impersonates
  it through Workload Identity Federation, submits builds that run as it, and the build
  pushes images, uploads artifacts, publishes the run request and deploys the function;
- the **function** (``[function] service_account``, default ``ct-function``): the trigger
  function's runtime identity, which keeps the runs registry and starts Vertex AI runs;
- the **trigger identity** (``[function] trigger_service_account``, default ``ct-invoker``):
  what Eventarc calls the function as (the
  function refuses unauthenticated calls, so it needs Cloud Run Invoker);
- the **pipeline** (``CT_SERVICE_ACCOUNT`` in ``[function] env``, default ``ct-pipeline``): the
  account Vertex AI runs the pipeline's steps as.

Each role below names the page it rests on.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.errors import ConfigError, InputError
from orchestrator.model import Rules

#: Google's role references, cited next to each grant (and in docs/gcp-setup.md).
DOCS = {
    "apis-functions": "https://cloud.google.com/run/docs/deploy-functions",
    "artifact-registry": "https://cloud.google.com/iam/docs/roles-permissions/artifactregistry",
    "storage-overwrite": "https://cloud.google.com/storage/docs/access-control/iam-permissions",
    "pubsub": "https://cloud.google.com/pubsub/docs/access-control",
    "functions-deploy": "https://cloud.google.com/functions/docs/reference/iam/roles",
    "eventarc-functions": (
        "https://cloud.google.com/eventarc/standard/docs/functions/roles-permissions"
    ),
    "build-account": (
        "https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts"
    ),
    "vertex-pipelines": "https://cloud.google.com/vertex-ai/docs/pipelines/configure-project",
    "vertex-pipeline-account": (
        "https://cloud.google.com/vertex-ai/docs/tabular-data/tabular-workflows/service-accounts"
    ),
    "wif-github": (
        "https://cloud.google.com/iam/docs/workload-identity-federation-with-deployment-pipelines"
    ),
    "storage-notifications": "https://cloud.google.com/storage/docs/reporting-changes",
    "storage-agent": "https://cloud.google.com/storage/docs/getting-service-agent",
}

#: The APIs the setup and the runs use (Cloud Run functions' deploy page lists Artifact
#: Registry, Cloud Build, Cloud Run, Logging and, for event triggers, Eventarc; Workload
#: Identity Federation needs IAM, IAM Service Account Credentials, Security Token Service and
#: Resource Manager).
APIS = (
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "eventarc.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "aiplatform.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
    "cloudresourcemanager.googleapis.com",
)

WIF_POOL = "github"
WIF_PROVIDER = "ct-orchestrator"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

_REGISTRY = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)"
)
_GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_ACCOUNT = re.compile(
    r"(?P<id>[a-z][a-z0-9-]{4,28}[a-z0-9])@(?P<project>[^.@]+)\.iam\.gserviceaccount\.com"
)


@dataclass(frozen=True, slots=True)
class Repository:
    """An Artifact Registry Docker repository, from ``[project] registry``."""

    location: str
    project: str
    name: str

    @property
    def resource(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/repositories/{self.name}"

    @classmethod
    def parse(cls, registry: str) -> Repository | None:
        """``LOCATION-docker.pkg.dev/PROJECT/REPOSITORY[/...]``, else ``None`` (another
        registry: Container Registry, a local one)."""
        match = _REGISTRY.match(registry)
        if match is None:
            return None
        return cls(match["location"], match["project"], match["repo"])


@dataclass(frozen=True, slots=True)
class Accounts:
    """The four service accounts, by email."""

    build: str
    function: str
    invoker: str
    pipeline: str


@dataclass(frozen=True, slots=True)
class CloudValues:
    """What the setup and the cloud checks need from rules.toml."""

    project: str
    region: str
    bucket: str
    topic: str
    registry: str
    repository: Repository | None
    function: str
    accounts: Accounts
    data_bucket: str
    data_prefix: str | None

    @property
    def topic_resource(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"


def account_email(account: str) -> str:
    """``projects/P/serviceAccounts/EMAIL`` or ``EMAIL`` -> ``EMAIL``."""
    return account.rsplit("/", 1)[-1]


def cloud_values(rules: Rules) -> CloudValues:
    """The values of ``[project]``, ``[function]``, ``[build]`` and ``[data]``; a ConfigError
    naming every ``[project]`` key that must be set and is not."""
    project = rules.project
    required = {
        "gcp_project": project.gcp_project,
        "region": project.region,
        "bucket": project.bucket,
        "topic": project.topic,
        "registry": project.registry,
    }
    missing = [key for key, value in required.items() if not value]
    if missing:
        keys = ", ".join(missing)
        raise ConfigError(
            f"the Google Cloud setup needs [project] {keys}", file=rules.source, key="project"
        )
    gcp = str(project.gcp_project)

    def default(name: str) -> str:
        return f"{name}@{gcp}.iam.gserviceaccount.com"

    env = dict(rules.function.env)
    accounts = Accounts(
        build=account_email(rules.build.service_account or default("ct-build")),
        function=account_email(rules.function.service_account or default("ct-function")),
        invoker=account_email(rules.function.trigger_service_account or default("ct-invoker")),
        pipeline=env.get("CT_SERVICE_ACCOUNT") or default("ct-pipeline"),
    )
    bucket = str(project.bucket)
    return CloudValues(
        project=gcp,
        region=str(project.region),
        bucket=bucket,
        topic=str(project.topic),
        registry=str(project.registry),
        repository=Repository.parse(str(project.registry)),
        function=rules.function.name,
        accounts=accounts,
        data_bucket=rules.data.bucket or bucket,
        data_prefix=rules.data.prefix,
    )


# --- what the build's account must hold (validate --cloud) ----------------------------------


@dataclass(frozen=True, slots=True)
class Need:
    """Permissions the build's account must hold on one resource, and the role that grants
    them in the setup."""

    kind: str  # project | bucket | topic | repository | service-account
    name: str  # the resource as its API names it (a bucket's name, a topic's path ...)
    permissions: tuple[str, ...]
    role: str

    @property
    def label(self) -> str:
        if self.kind == "bucket":
            return f"bucket gs://{self.name}"
        return f"{self.kind.replace('-', ' ')} {self.name}"


def build_needs(values: CloudValues) -> list[Need]:
    """Everything a build does, as permissions on the resources it touches.

    A bucket object is replaced (the ledger, the runs registry) only with both create and
    delete (Cloud Storage IAM permissions); a build that runs as a service account, and a
    function deployed to run as one, need ``actAs`` on it.
    """
    needs = [
        Need(
            "project",
            values.project,
            (
                "cloudbuild.builds.create",
                "cloudbuild.builds.get",
                "cloudfunctions.functions.create",
                "cloudfunctions.functions.get",
                "cloudfunctions.functions.update",
                "logging.logEntries.create",
            ),
            "roles/cloudbuild.builds.editor, roles/cloudfunctions.developer, "
            "roles/logging.logWriter",
        ),
        Need(
            "bucket",
            values.bucket,
            (
                "storage.objects.create",
                "storage.objects.delete",
                "storage.objects.get",
                "storage.objects.list",
            ),
            "roles/storage.objectAdmin",
        ),
        Need("topic", values.topic_resource, ("pubsub.topics.publish",), "roles/pubsub.publisher"),
    ]
    if values.repository is not None:
        needs.append(
            Need(
                "repository",
                values.repository.resource,
                (
                    "artifactregistry.repositories.downloadArtifacts",
                    "artifactregistry.repositories.uploadArtifacts",
                ),
                "roles/artifactregistry.writer",
            )
        )
    for account in dict.fromkeys((values.accounts.function, values.accounts.build)):
        needs.append(
            Need(
                "service-account",
                account,
                ("iam.serviceAccounts.actAs",),
                "roles/iam.serviceAccountUser",
            )
        )
    return needs


# --- the setup, as commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """``gcloud <path...> <args...> <--flag=value...>``; ``assign`` makes it
    ``NAME="$(...)"``."""

    path: tuple[str, ...]
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    assign: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    why: tuple[str, ...]
    commands: tuple[Command, ...]

    def text(self) -> str:
        """The commands as a shell would run them (what docs/gcp-setup.md shows)."""
        return "".join(render_command(c) + "\n" for c in self.commands)


def _member(account: str) -> str:
    return f"serviceAccount:{account}"


def _project_role(project: str, account: str, role: str) -> Command:
    flags = (f"--member={_member(account)}", f"--role={role}")
    return Command(("projects", "add-iam-policy-binding"), (project,), flags)


def _bucket_role(bucket: str, account: str, role: str) -> Command:
    flags = (f"--member={_member(account)}", f"--role={role}")
    return Command(("storage", "buckets", "add-iam-policy-binding"), (f"gs://{bucket}",), flags)


def _account_role(project: str, account: str, member: str, role: str) -> Command:
    flags = (f"--project={project}", f"--member={member}", f"--role={role}")
    return Command(("iam", "service-accounts", "add-iam-policy-binding"), (account,), flags)


def _creatable(account: str, project: str) -> str | None:
    """The account id to create, for a user-managed account of ``project``."""
    match = _ACCOUNT.fullmatch(account)
    return match["id"] if match and match["project"] == project else None


def check_github_repository(repository: str) -> str:
    if not _GITHUB_REPO.fullmatch(repository):
        raise InputError(f"--github-repo {repository!r}: expected OWNER/REPOSITORY")
    return repository


def setup_sections(values: CloudValues, github_repository: str) -> list[Section]:
    """The one-time setup, in the order it must run."""
    repo_name = check_github_repository(github_repository)
    p = values.project
    project_flag = f"--project={p}"
    accounts = values.accounts
    build, function, invoker, pipeline = (
        accounts.build,
        accounts.function,
        accounts.invoker,
        accounts.pipeline,
    )
    pool = f"projects/${{PROJECT_NUMBER}}/locations/global/workloadIdentityPools/{WIF_POOL}"
    sections = [
        Section(
            "The project's number (Workload Identity Federation names the pool by it)",
            (),
            (
                Command(
                    ("projects", "describe"),
                    (p,),
                    ("--format=value(projectNumber)",),
                    assign="PROJECT_NUMBER",
                ),
            ),
        ),
        Section(
            "APIs",
            (
                f"Cloud Run functions: {DOCS['apis-functions']}",
                f"Vertex AI: {DOCS['vertex-pipelines']}",
                f"Workload Identity Federation: {DOCS['wif-github']}",
            ),
            (Command(("services", "enable"), APIS, (project_flag,)),),
        ),
    ]
    resources: list[Command] = []
    if values.repository is not None:
        registry = values.repository
        resources.append(
            Command(
                ("artifacts", "repositories", "create"),
                (registry.name,),
                (
                    "--repository-format=docker",
                    f"--location={registry.location}",
                    f"--project={registry.project}",
                ),
            )
        )
    resources += [
        Command(
            ("storage", "buckets", "create"),
            (f"gs://{values.bucket}",),
            (project_flag, f"--location={values.region}", "--uniform-bucket-level-access"),
        ),
        Command(("pubsub", "topics", "create"), (values.topic,), (project_flag,)),
    ]
    sections.append(
        Section("The Artifact Registry repository, the bucket and the topic", (), tuple(resources))
    )
    names = {
        build: "ct-orchestrator builds (and GitHub Actions)",
        function: "ct-orchestrator trigger function",
        invoker: "ct-orchestrator trigger identity (Eventarc)",
        pipeline: "ct-orchestrator pipeline runs (Vertex AI)",
    }
    creations = []
    for account, display in names.items():
        account_id = _creatable(account, p)
        if account_id is not None:
            creations.append(
                Command(
                    ("iam", "service-accounts", "create"),
                    (account_id,),
                    (project_flag, f"--display-name={display}"),
                )
            )
    sections.append(Section("One service account per role", (), tuple(creations)))

    topic_flags = (project_flag,)
    build_grants = [
        _project_role(p, build, "roles/cloudbuild.builds.editor"),
        _project_role(p, build, "roles/logging.logWriter"),
        _project_role(p, build, "roles/cloudfunctions.developer"),
        _bucket_role(values.bucket, build, "roles/storage.objectAdmin"),
        Command(
            ("pubsub", "topics", "add-iam-policy-binding"),
            (values.topic,),
            (*topic_flags, f"--member={_member(build)}", "--role=roles/pubsub.publisher"),
        ),
    ]
    if values.repository is not None:
        registry = values.repository
        build_grants.append(
            Command(
                ("artifacts", "repositories", "add-iam-policy-binding"),
                (registry.name,),
                (
                    f"--location={registry.location}",
                    f"--project={registry.project}",
                    f"--member={_member(build)}",
                    "--role=roles/artifactregistry.writer",
                ),
            )
        )
    for account in dict.fromkeys((build, function, invoker)):
        build_grants.append(
            _account_role(p, account, _member(build), "roles/iam.serviceAccountUser")
        )
    sections.append(
        Section(
            f"The build: {build}",
            (
                "submits and follows builds (Cloud Build Editor) that run as itself, so it is a "
                "Service Account User of itself; a user-specified build account must write its "
                f"own logs (Logs Writer): {DOCS['build-account']}",
                "pushes images (Artifact Registry Writer), writes artifacts and replaces the "
                "ledger (Storage Object Admin: replacing an object takes create and delete, "
                f"{DOCS['storage-overwrite']}), publishes the run request (Pub/Sub Publisher)",
                "deploys the function (Cloud Functions Developer) as the function's account with "
                "its trigger identity (Service Account User on both): "
                f"{DOCS['functions-deploy']}, {DOCS['eventarc-functions']}",
            ),
            tuple(build_grants),
        )
    )
    function_grants = [
        _bucket_role(values.bucket, function, "roles/storage.objectAdmin"),
        _project_role(p, function, "roles/aiplatform.user"),
        _account_role(p, pipeline, _member(function), "roles/iam.serviceAccountUser"),
    ]
    if values.data_bucket != values.bucket:
        function_grants.append(
            _bucket_role(values.data_bucket, function, "roles/storage.objectViewer")
        )
    sections.append(
        Section(
            f"The trigger function: {function}",
            (
                "keeps the runs registry and records new data in the ledger (Storage Object "
                "Admin on the bucket), starts Vertex AI pipeline runs (Vertex AI User) as the "
                f"pipeline's account (Service Account User on it): {DOCS['vertex-pipelines']}",
            ),
            tuple(function_grants),
        )
    )
    sections.append(
        Section(
            f"The trigger identity: {invoker}",
            (
                "Eventarc calls the function as this account, and the function refuses "
                f"unauthenticated calls: it needs Cloud Run Invoker ({DOCS['eventarc-functions']})",
                "granted on the project so that it holds before the first deploy; once the "
                "function exists, `gcloud functions add-invoker-policy-binding` can grant it on "
                "the function alone",
                "the deploy names it with --trigger-service-account ([function] "
                "trigger_service_account); without that setting Eventarc calls as the Compute "
                "Engine default service account",
            ),
            (_project_role(p, invoker, "roles/run.invoker"),),
        )
    )
    pipeline_grants = [
        _project_role(p, pipeline, "roles/aiplatform.user"),
        _bucket_role(values.bucket, pipeline, "roles/storage.objectViewer"),
        _bucket_role(values.bucket, pipeline, "roles/storage.objectCreator"),
    ]
    if values.data_bucket != values.bucket:
        pipeline_grants.append(
            _bucket_role(values.data_bucket, pipeline, "roles/storage.objectViewer")
        )
    sections.append(
        Section(
            f"The pipeline's run-as account: {pipeline}",
            (
                "Vertex AI User, and get and create on the bucket for the pipeline root (Storage "
                f"Object Viewer and Creator: it can add objects, never replace them): "
                f"{DOCS['vertex-pipeline-account']}",
                "no registry role: Vertex AI pulls the images with its own service agent",
            ),
            tuple(pipeline_grants),
        )
    )
    sections.append(
        Section(
            f"Workload Identity Federation for GitHub Actions in {repo_name}",
            (
                "a pool, an OIDC provider that admits tokens of this repository only "
                "(an attribute condition), and the repository's principalSet may impersonate "
                f"the build's account: {DOCS['wif-github']}",
            ),
            (
                Command(
                    ("iam", "workload-identity-pools", "create"),
                    (WIF_POOL,),
                    (project_flag, "--location=global", "--display-name=GitHub Actions"),
                ),
                Command(
                    ("iam", "workload-identity-pools", "providers", "create-oidc"),
                    (WIF_PROVIDER,),
                    (
                        project_flag,
                        "--location=global",
                        f"--workload-identity-pool={WIF_POOL}",
                        "--display-name=ct-orchestrator repository",
                        f"--issuer-uri={GITHUB_ISSUER}",
                        "--attribute-mapping=google.subject=assertion.sub,"
                        "attribute.repository=assertion.repository",
                        f"--attribute-condition=assertion.repository == '{repo_name}'",
                    ),
                ),
                _account_role(
                    p,
                    build,
                    f"principalSet://iam.googleapis.com/{pool}/attribute.repository/{repo_name}",
                    "roles/iam.workloadIdentityUser",
                ),
            ),
        )
    )
    if values.data_prefix:
        sections.append(
            Section(
                f"New data under gs://{values.data_bucket}/{values.data_prefix} starts a run",
                (
                    "the bucket's Cloud Storage service agent delivers the notifications, so it "
                    f"publishes to the topic: {DOCS['storage-notifications']}",
                ),
                (
                    Command(
                        ("storage", "service-agent"), (), (project_flag,), assign="STORAGE_AGENT"
                    ),
                    Command(
                        ("pubsub", "topics", "add-iam-policy-binding"),
                        (values.topic,),
                        (
                            *topic_flags,
                            "--member=serviceAccount:${STORAGE_AGENT}",
                            "--role=roles/pubsub.publisher",
                        ),
                    ),
                    Command(
                        ("storage", "buckets", "notifications", "create"),
                        (f"gs://{values.data_bucket}",),
                        (
                            f"--topic={values.topic_resource}",
                            "--event-types=OBJECT_FINALIZE",
                            f"--object-prefix={values.data_prefix}",
                            "--payload-format=json",
                        ),
                    ),
                ),
            )
        )
    return sections


def setup_script(rules: Rules, github_repository: str, *, source: str) -> str:
    """The whole setup as a bash script to read, then run."""
    values = cloud_values(rules)
    sections = setup_sections(values, github_repository)
    accounts = values.accounts
    provider = (
        f"projects/${{PROJECT_NUMBER}}/locations/global/workloadIdentityPools/{WIF_POOL}"
        f"/providers/{WIF_PROVIDER}"
    )
    lines = [
        "#!/usr/bin/env bash",
        f"# One-time Google Cloud setup for ct-orchestrator, from {source}.",
        "# Printed by `python -m orchestrator setup-gcp --print`, which runs nothing: read it,",
        "# then run it once with an owner's credentials (`bash setup.sh`). docs/gcp-setup.md",
        "# explains every grant.",
        "set -euo pipefail",
        "",
    ]
    for number, section in enumerate(sections, 1):
        lines.append(f"# {number}. {section.title}")
        for why in section.why:
            wrapped = textwrap.wrap(why, width=_WIDTH - 5, break_long_words=False)
            lines += [f"#    {part}" for part in wrapped]
        lines.append(section.text())
    settings = []
    if not rules.build.service_account:
        settings.append(f'#   [build]    service_account = "{accounts.build}"')
    if not rules.function.service_account:
        settings.append(f'#   [function] service_account = "{accounts.function}"')
    if not rules.function.trigger_service_account:
        settings.append(f'#   [function] trigger_service_account = "{accounts.invoker}"')
    if "CT_SERVICE_ACCOUNT" not in dict(rules.function.env):
        settings.append(
            f'#   [function] env = {{ CT_SERVICE_ACCOUNT = "{accounts.pipeline}", ... }}'
        )
    lines += [
        "# Then, in the GitHub repository's variables (Settings > Secrets and variables >",
        "# Actions > Variables):",
        f"#   GCP_WORKLOAD_IDENTITY_PROVIDER = {provider}",
        f"#   GCP_SERVICE_ACCOUNT = {accounts.build}",
        'echo "GCP_WORKLOAD_IDENTITY_PROVIDER=' + provider + '"',
    ]
    if settings:
        lines += [f"# and in {source}:", *settings]
    lines.append("# Check it: python -m orchestrator validate --cloud (as the build's account)")
    return "\n".join(lines) + "\n"


# --- rendering --------------------------------------------------------------------------------

_SAFE = re.compile(r"[\w@%+=:,./-]+")
_WIDTH = 100


def shell_word(value: str) -> str:
    """``value`` as one shell word: bare when safe, double-quoted when it expands one of the
    script's own variables (``${NAME}``), single-quoted otherwise."""
    if _SAFE.fullmatch(value):
        return value
    if "${" in value and not any(c in value for c in '"`\\'):
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    if not any(c in value for c in '"$`\\'):
        return f'"{value}"'
    return shlex.quote(value)


def _word(arg: str) -> str:
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={shell_word(value)}"
    return shell_word(arg)


def render_command(command: Command) -> str:
    """One line when it fits in 100 columns, else one argument per continued line."""
    head = ["gcloud", *command.path]
    rest = [_word(a) for a in (*command.args, *command.flags)]
    if command.assign is not None:
        return f'{command.assign}="$({" ".join([*head, *rest])})"'
    one_line = " ".join([*head, *rest])
    if len(one_line) <= _WIDTH or not rest:
        return one_line
    first, *others = rest
    return " \\\n    ".join([" ".join([*head, first]), *others])


def command_lines(sections: Sequence[Section]) -> list[str]:
    """Every command of the setup, one string each (continuations joined)."""
    return [render_command(c) for s in sections for c in s.commands]
