"""The storage adapter against fake-gcs-server and the local-directory bucket backend."""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from orchestrator import objects
from orchestrator.adapters import storage
from orchestrator.errors import InputError, ServiceUnreachable
from tests.fixtures._services import free_port
from tests.fixtures.faultproxy import Fault, FaultProxy
from tests.fixtures.gcs import GcsServer


@pytest.fixture(params=["local-dir", "emulator"])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], str]:
    """(env, bucket) for each backend that runs without a cloud account."""
    if request.param == "local-dir":
        return {storage.LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "buckets")}, "local-bucket"
    server: GcsServer = request.getfixturevalue("gcs_server")
    return dict(server.env), server.create_bucket()


@pytest.mark.parametrize("key", ["src/abc123/source.tar.gz", "odd/sp ace/$dollar/ünï+c%de#?.txt"])
def test_upload_then_download_round_trips(
    backend_env: tuple[dict[str, str], str], key: str
) -> None:
    env, bucket = backend_env
    uri = f"gs://{bucket}/{key}"
    data = b"payload \x00\xff"
    result = storage.upload_bytes(uri, data, env=env)
    assert result == storage.UploadResult(
        uri=uri,
        size=len(data),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        created=True,
    )
    assert storage.download_bytes(uri, env=env) == data
    assert _read_behind_the_adapter(env, bucket, key) == data


def _read_behind_the_adapter(env: dict[str, str], bucket: str, key: str) -> bytes:
    """Read the object straight from the backend, so the test does not trust the adapter."""
    if storage.LOCAL_BUCKET_ROOT_VAR in env:
        return Path(env[storage.LOCAL_BUCKET_ROOT_VAR], bucket, key).read_bytes()
    url = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{bucket}/o/{quote(key, safe='')}?alt=media"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def test_same_bytes_twice_is_an_idempotent_success(
    backend_env: tuple[dict[str, str], str],
) -> None:
    env, bucket = backend_env
    uri = f"gs://{bucket}/specs/pipeline.json"
    first = storage.upload_bytes(uri, b'{"a": 1}', env=env, content_type="application/json")
    second = storage.upload_bytes(uri, b'{"a": 1}', env=env, content_type="application/json")
    assert (first.created, second.created) == (True, False)
    assert first.md5 == second.md5


def test_different_bytes_are_refused_and_the_object_is_unchanged(
    backend_env: tuple[dict[str, str], str],
) -> None:
    env, bucket = backend_env
    uri = f"gs://{bucket}/specs/pipeline.json"
    storage.upload_bytes(uri, b"original", env=env)
    with pytest.raises(storage.ObjectConflict, match="already exists with different content"):
        storage.upload_bytes(uri, b"changed!", env=env)  # same length, different bytes
    with pytest.raises(storage.ObjectConflict):
        storage.upload_bytes(uri, b"longer content", env=env)
    assert storage.download_bytes(uri, env=env) == b"original"


def test_missing_object_is_reported(backend_env: tuple[dict[str, str], str]) -> None:
    env, bucket = backend_env
    with pytest.raises(storage.ObjectNotFound, match=f"gs://{bucket}/nope/missing does not exist"):
        storage.download_bytes(f"gs://{bucket}/nope/missing", env=env)


def test_upload_file(backend_env: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, bucket = backend_env
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"pipelineSpec: {}\n")
    result = storage.upload_file(f"gs://{bucket}/k/spec.yaml", path, env=env)
    assert result.created and result.size == path.stat().st_size
    assert storage.download_bytes(f"gs://{bucket}/k/spec.yaml", env=env) == path.read_bytes()


def test_local_backend_maps_uri_to_root_bucket_key(tmp_path: Path) -> None:
    env = {storage.LOCAL_BUCKET_ROOT_VAR: str(tmp_path)}
    storage.upload_bytes("gs://my-bucket/a/b c/$x.txt", b"hi", env=env)
    assert (tmp_path / "my-bucket" / "a" / "b c" / "$x.txt").read_bytes() == b"hi"
    # The temporary file used for the atomic create is gone.
    assert sorted(p.name for p in (tmp_path / "my-bucket" / "a" / "b c").iterdir()) == ["$x.txt"]


def test_a_local_bucket_object_is_described_by_its_file(tmp_path: Path) -> None:
    env = {storage.LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "work" / ".orchestrator" / "bucket")}
    uri = "gs://b/source/h/src.tar.gz"
    shown = "(gs://b/source/h/src.tar.gz in the local bucket)"
    inside = storage.describe_location(uri, env, cwd=tmp_path / "work")
    assert inside == f".orchestrator/bucket/b/source/h/src.tar.gz {shown}"
    outside = storage.describe_location(uri, env, cwd=tmp_path / "elsewhere")
    assert (
        outside
        == f"{(tmp_path / 'work/.orchestrator/bucket/b/source/h/src.tar.gz').resolve()} {shown}"
    )
    storage.upload_bytes(uri, b"one", env=env)
    with pytest.raises(
        storage.ObjectConflict, match=r"^\S+/bucket/b/source/h/src\.tar\.gz \(gs://"
    ):
        storage.upload_bytes(uri, b"two", env=env)


@pytest.mark.parametrize(
    "env", [{}, {storage.EMULATOR_HOST_VAR: "127.0.0.1:1"}], ids=["gcs", "emulator"]
)
def test_an_object_elsewhere_is_described_by_its_uri(env: dict[str, str]) -> None:
    assert storage.describe_location("gs://b/k", env) == "gs://b/k"


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a//b", "./a"])
def test_local_backend_refuses_keys_that_would_leave_the_bucket(tmp_path: Path, key: str) -> None:
    env = {storage.LOCAL_BUCKET_ROOT_VAR: str(tmp_path / "root")}
    with pytest.raises(InputError, match="local bucket directory"):
        storage.upload_bytes(f"gs://b/{key}", b"x", env=env)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()


def test_emulator_missing_bucket_is_reported(gcs_server: GcsServer) -> None:
    with pytest.raises(storage.ObjectNotFound, match="gs://no-such-bucket-xyz"):
        storage.upload_bytes("gs://no-such-bucket-xyz/k", b"x", env=gcs_server.env)


def test_unreachable_emulator_fails_fast_naming_it() -> None:
    env = {storage.EMULATOR_HOST_VAR: f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match="STORAGE_EMULATOR_HOST") as info:
        storage.upload_bytes("gs://bucket/key", b"x", env=env)
    assert time.monotonic() - started < 10
    assert env[storage.EMULATOR_HOST_VAR] in str(info.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "gcs"),
        ({"STORAGE_EMULATOR_HOST": "http://h:1"}, "emulator"),
        (
            {"ORCHESTRATOR_LOCAL_BUCKET_ROOT": "/d", "STORAGE_EMULATOR_HOST": "http://h:1"},
            "local-dir",
        ),
        ({"ORCHESTRATOR_LOCAL_BUCKET_ROOT": ""}, "gcs"),
    ],
)
def test_backend_choice(env: dict[str, str], expected: str) -> None:
    assert storage.backend_for(env) == expected


@pytest.mark.parametrize("uri", ["s3://b/k", "gs://b", "gs://b/", "gs:///k", "b/k"])
def test_bad_uris_are_input_errors(uri: str) -> None:
    with pytest.raises(InputError, match="gs://bucket/key"):
        storage.parse_gcs_uri(uri)


def test_parse_keeps_the_key_verbatim() -> None:
    assert storage.parse_gcs_uri("gs://b/a/b/c d") == storage.GcsUri("b", "a/b/c d")


# --- deterministic tarballs ---------------------------------------------------------------


def _make_tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(os.urandom(16))
    (root / "pkg" / "model.py").write_text("print('model')\n")
    (root / "pkg" / "sub" / "z.txt").write_text("z\n")
    (root / "pkg" / "sub" / "a.txt").write_text("a\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    (root / "ünï côde $.txt").write_text("u\n")
    (root / "link").symlink_to("pkg/model.py")


def test_same_tree_gives_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    _make_tree(first)
    shutil.copytree(first, second, symlinks=True)
    (second / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(os.urandom(16))
    for path in second.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    (second / "pkg" / "model.py").chmod(0o600)  # non-exec permission differences collapse

    a = storage.build_source_tarball(first)
    b = storage.build_source_tarball(second)
    assert a.data == b.data and a.sha256 == b.sha256
    assert a.files == 5

    (second / "pkg" / "sub" / "a.txt").write_text("A\n")
    assert storage.build_source_tarball(second).sha256 != a.sha256


def test_tarball_entries_are_normalized(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    tarball = storage.build_source_tarball(tmp_path)
    assert tarball.data[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime
    assert tarball.data[3] & 0x08 == 0  # gzip FNAME flag: no file name stored
    with tarfile.open(fileobj=io.BytesIO(tarball.data), mode="r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [
            "link",
            "pkg",
            "pkg/model.py",
            "pkg/sub",
            "pkg/sub/a.txt",
            "pkg/sub/z.txt",
            "run.sh",
            "ünï côde $.txt",
        ]
        for member in members:
            assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
                0,
                0,
                0,
                "",
                "",
            )
        by_name = {m.name: m for m in members}
        assert by_name["run.sh"].mode == 0o755
        assert by_name["pkg/model.py"].mode == 0o644
        assert by_name["link"].issym() and by_name["link"].linkname == "pkg/model.py"
        extracted = tar.extractfile("pkg/model.py")
        assert extracted is not None and extracted.read() == b"print('model')\n"
    assert gzip.decompress(tarball.data)  # a valid gzip stream


def test_tarball_of_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        storage.build_source_tarball(tmp_path / "missing")


# --- faults: fake-gcs-server behind the fault proxy ---------------------------------------


def _behind(
    gcs_server: GcsServer, fault_proxy: Callable[..., FaultProxy], deadline: str = "20"
) -> tuple[FaultProxy, dict[str, str], str]:
    proxy = fault_proxy(gcs_server.url.removeprefix("http://"), protocol="http")
    env = {storage.EMULATOR_HOST_VAR: proxy.url, "ORCHESTRATOR_RETRY_DEADLINE": deadline}
    return proxy, env, gcs_server.create_bucket()


def _stored(gcs_server: GcsServer, bucket: str, key: str) -> bytes:
    url = f"{gcs_server.url}/storage/v1/b/{bucket}/o/{quote(key, safe='')}?alt=media"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
    return data


@pytest.mark.parametrize(
    "fault",
    [Fault.status(503, first=2), Fault.status(429, first=1), Fault.reset(first=2),
     Fault.close(first=1), Fault.delay(1.5, first=1), Fault.stall(1.0, first=1)],
    ids=["503", "429", "reset", "closed", "slow", "cut-mid-body"],
)  # fmt: skip
# google-cloud-storage's media download streams its request and raises on an error status
# without closing the response (google/cloud/storage/_media/requests/download.py,
# retriable_request -> _process_response), so a retried 5xx leaves a socket for the garbage
# collector: a ResourceWarning, which this suite makes an error. Collected inside the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_transient_faults_on_upload_and_read_are_retried(
    gcs_server: GcsServer, fault_proxy: Callable[..., FaultProxy], fault: Fault
) -> None:
    proxy, env, bucket = _behind(gcs_server, fault_proxy)
    data = os.urandom(3000)
    proxy.inject(fault)

    result = storage.upload_bytes(f"gs://{bucket}/src/a.tar.gz", data, env=env)

    assert result.created
    assert proxy.stats.faulted == fault.count
    assert _stored(gcs_server, bucket, "src/a.tar.gz") == data
    proxy.inject(fault)
    assert storage.download_bytes(f"gs://{bucket}/src/a.tar.gz", env=env) == data
    assert proxy.stats.faulted == fault.count
    proxy.inject(fault)
    stored = objects.read(f"gs://{bucket}/src/a.tar.gz", env)
    assert stored is not None and stored.data == data
    gc.collect()  # the library's leaked responses warn here, under this test's filter


def test_an_upload_whose_answer_was_lost_is_not_written_twice(
    gcs_server: GcsServer, fault_proxy: Callable[..., FaultProxy]
) -> None:
    """The service stored the object, the answer never came: the retry meets the create-only
    precondition, the content is compared, and the upload is a success."""
    proxy, env, bucket = _behind(gcs_server, fault_proxy)
    proxy.inject(Fault.drop_response(first=1, match=r"^POST /upload/"))

    result = storage.upload_bytes(f"gs://{bucket}/k", b"once", env=env)

    assert proxy.stats.faulted == 1
    assert not result.created  # the retry found the object the lost attempt created
    assert _stored(gcs_server, bucket, "k") == b"once"


def test_a_compare_and_swap_write_whose_answer_was_lost_is_not_applied_twice(
    gcs_server: GcsServer, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy, env, bucket = _behind(gcs_server, fault_proxy)
    uri = f"gs://{bucket}/ledger.json"
    first = objects.write(uri, b"v1", env, if_generation=0)
    proxy.inject(Fault.drop_response(first=1, match=r"^POST /upload/"))

    with pytest.raises(objects.PreconditionFailed):
        objects.write(uri, b"v2", env, if_generation=first)

    # The lost attempt landed; its repeat was refused by the precondition (GCS's
    # "conditionally idempotent" writes), so the caller re-reads and sees its own write.
    stored = objects.read(uri, env)
    assert stored is not None and stored.data == b"v2"


def test_a_storage_emulator_that_keeps_failing_is_named_within_the_deadline(
    gcs_server: GcsServer, fault_proxy: Callable[..., FaultProxy]
) -> None:
    proxy, env, bucket = _behind(gcs_server, fault_proxy, deadline="3")
    proxy.inject(Fault.status(503))
    started = time.monotonic()

    with pytest.raises(ServiceUnreachable) as raised:
        storage.upload_bytes(f"gs://{bucket}/never", b"x", env=env)

    assert time.monotonic() - started < 6
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"the Cloud Storage emulator at {proxy.url} (STORAGE_EMULATOR_HOST)")
    assert re.search(r"kept failing: HTTP 503 .*gave up retrying after 3 s", text), text
    assert proxy.stats.faulted >= 2
    proxy.clear()
    assert not storage.object_exists(f"gs://{bucket}/never", env=env)
