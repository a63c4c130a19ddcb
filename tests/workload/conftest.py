"""A local bucket holding what a build uploads: the training source and a compiled spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.compile import compile_pipeline
from pipeline.source import build_source_tarball, source_key

BUCKET = "ct-test-bucket"
FAKE_IMAGES = {
    "validator": "127.0.0.1:5000/ct/validator@sha256:" + "a" * 64,
    "evaluator": "127.0.0.1:5000/ct/evaluator@sha256:" + "b" * 64,
}


@dataclass(frozen=True)
class LocalBucket:
    root: Path  # ORCHESTRATOR_LOCAL_BUCKET_ROOT
    bucket: str
    source_uri: str
    spec_uri: str
    spec_path: Path

    def path(self, uri: str) -> Path:
        return self.root / uri.removeprefix("gs://")


@pytest.fixture(scope="session")
def local_bucket(tmp_path_factory: pytest.TempPathFactory) -> LocalBucket:
    root = tmp_path_factory.mktemp("bucket-root")
    key = source_key()
    source = root / BUCKET / key
    source.parent.mkdir(parents=True)
    source.write_bytes(build_source_tarball())
    spec = root / BUCKET / "pipelines" / "spec.yaml"
    compile_pipeline(FAKE_IMAGES, spec)
    return LocalBucket(
        root=root,
        bucket=BUCKET,
        source_uri=f"gs://{BUCKET}/{key}",
        spec_uri=f"gs://{BUCKET}/pipelines/spec.yaml",
        spec_path=spec,
    )
