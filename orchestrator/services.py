"""Which services a command talks to, decided once: a typed record, not variables passed around.

=================  =================================================  ======================
choice             storage and ledger                                 publish
=================  =================================================  ======================
``local``          the directory bucket ``<repo>/.orchestrator/bucket``  in-process to
(default)          (``STORAGE_EMULATOR_HOST``: that emulator)          ``function/``
                                                                      (``PUBSUB_EMULATOR_HOST``:
                                                                      that emulator)
``cloud``          Cloud Storage (application default credentials)     Pub/Sub
``auto``           the emulator or directory the environment names,    the emulator it names,
(``run --executor  else Cloud Storage                                  else Pub/Sub
cloudbuild``)
=================  =================================================  ======================

Images are pushed to ``[project].registry`` through the engine at ``DOCKER_HOST``, and looked
up through the registry's HTTP API (plain HTTP for a registry on localhost).

Adapters and the steps' subprocesses still take an environment mapping (the function and
the pipeline run in other processes); :meth:`Services.env` is that mapping, derived from the
record, and the only place that writes service variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

from orchestrator.errors import InputError
from orchestrator.objects import EMULATOR_HOST_VAR as STORAGE_EMULATOR_VAR
from orchestrator.objects import LOCAL_BUCKET_ROOT_VAR

PUBSUB_EMULATOR_VAR = "PUBSUB_EMULATOR_HOST"
STATE_DIR = ".orchestrator"
#: how the function's local backend runs the pipeline (``docker`` uses the built images)
LOCAL_RUNNER_VAR = "CT_LOCAL_RUNNER"

Choice = Literal["local", "cloud", "auto"]
StorageKind = Literal["local-dir", "emulator", "gcs"]
PublishKind = Literal["in-process", "emulator", "pubsub"]


class Services(NamedTuple):
    storage: StorageKind
    publish: PublishKind
    bucket_root: Path | None = None  # the directory bucket (storage "local-dir")
    #: the caller's environment, for credentials and the tools' own settings
    base_env: Mapping[str, str] = MappingProxyType({})

    @classmethod
    def resolve(cls, repo: Path, env: Mapping[str, str], choice: str | None = None) -> Services:
        """The services for ``choice`` (``local`` unless given), from the environment."""
        choice = choice or "local"
        if choice not in ("local", "cloud", "auto"):
            raise InputError(f"--services must be local or cloud, not {choice!r}")
        clean = {
            k: v for k, v in env.items() if k not in (LOCAL_BUCKET_ROOT_VAR, STORAGE_EMULATOR_VAR)
        }
        if choice == "cloud":
            clean.pop(PUBSUB_EMULATOR_VAR, None)
            return cls(storage="gcs", publish="pubsub", base_env=clean)
        if choice == "auto" and not (
            env.get(LOCAL_BUCKET_ROOT_VAR) or env.get(STORAGE_EMULATOR_VAR)
        ):
            publish_kind: PublishKind = "emulator" if env.get(PUBSUB_EMULATOR_VAR) else "pubsub"
            return cls(storage="gcs", publish=publish_kind, base_env=clean)
        if env.get(LOCAL_BUCKET_ROOT_VAR):
            storage: StorageKind = "local-dir"
            root: Path | None = Path(env[LOCAL_BUCKET_ROOT_VAR])
        elif env.get(STORAGE_EMULATOR_VAR):
            clean[STORAGE_EMULATOR_VAR] = env[STORAGE_EMULATOR_VAR]
            storage, root = "emulator", None
        else:
            storage, root = "local-dir", (repo / STATE_DIR / "bucket").resolve()
        if env.get(PUBSUB_EMULATOR_VAR):
            publish: PublishKind = "emulator"
        else:
            publish = "pubsub" if choice == "auto" else "in-process"
        return cls(storage=storage, publish=publish, bucket_root=root, base_env=clean)

    def env(self) -> dict[str, str]:
        """The environment adapters and the steps' processes read these services from."""
        env = dict(self.base_env)
        if self.storage == "local-dir" and self.bucket_root is not None:
            env[LOCAL_BUCKET_ROOT_VAR] = str(self.bucket_root)
        return env

    @property
    def images_required(self) -> bool:
        """Whether the run that a publish starts uses the component images: every backend
        but the embedded default's subprocess runner does."""
        return self.publish != "in-process" or self.base_env.get(LOCAL_RUNNER_VAR) == "docker"

    @property
    def registry_lookups(self) -> bool:
        """Whether image tags are looked up in a registry: with the cloud services, or where a
        Docker engine or a registry override says one is in use."""
        env = self.base_env
        return self.storage == "gcs" or bool(
            env.get("DOCKER_HOST") or env.get("ORCHESTRATOR_REGISTRY")
        )

    def describe(self) -> str:
        where = {
            "local-dir": f"the directory bucket {self.bucket_root}",
            "emulator": f"the storage emulator at {self.base_env.get(STORAGE_EMULATOR_VAR)}",
            "gcs": "Cloud Storage",
        }[self.storage]
        to = {
            "in-process": "function/ in this process",
            "emulator": f"the Pub/Sub emulator at {self.base_env.get(PUBSUB_EMULATOR_VAR)}",
            "pubsub": "Pub/Sub",
        }[self.publish]
        return f"artifacts and ledger in {where}; runs published to {to}"
