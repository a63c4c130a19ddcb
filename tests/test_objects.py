"""The directory bucket (``orchestrator/objects.py``) when its writer is killed mid-write.

A child process writes an object and is paused half-way through the content (its
``_write_all`` writes half of the content, says so, and sleeps): the test then SIGKILLs it,
at a moment it knows, and looks at what is left. The pause is the only thing changed in the
child; the files are real and so is the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import objects

SIZE = 1 << 20
CHILD = r"""
import os, sys, time
from pathlib import Path
from orchestrator import objects

real = objects._write_all

def half_then_wait(fd, data):
    if len(data) < 4096:  # a generation sidecar: written whole
        return real(fd, data)
    os.write(fd, data[: len(data) // 2])
    print("half", flush=True)
    time.sleep(60)
    real(fd, data[len(data) // 2 :])

objects._write_all = half_then_wait
if sys.argv[1] == "named":  # a file system without O_TMPFILE: the hidden temporary file
    objects.create_file = objects._create_named
mode, root, uri = sys.argv[1:4]
data = bytes([int(sys.argv[4])]) * int(sys.argv[5])
env = {objects.LOCAL_BUCKET_ROOT_VAR: root}
path = objects.local_path(uri, env)
path.parent.mkdir(parents=True, exist_ok=True)
if mode == "replace":
    objects.write(uri, data, env, if_generation=None)
else:
    objects.create_file(path, data)
"""


def _killed_half_way(mode: str, root: Path, uri: str, fill: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(root), uri, str(fill), str(SIZE)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "half\n"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()


def _temporary(directory: Path) -> list[str]:
    """The temporary files of writers in ``directory`` (``objects._TEMP``)."""
    return sorted(p.name for p in directory.iterdir() if objects._TEMP.match(p.name))


@pytest.mark.parametrize("mode", ["tmpfile", "named"])
def test_an_upload_killed_half_way_leaves_no_object(tmp_path: Path, mode: str) -> None:
    env = {objects.LOCAL_BUCKET_ROOT_VAR: str(tmp_path)}
    uri = "gs://bucket/source/abc/training_src.tar.gz"

    _killed_half_way(mode if mode == "named" else "create", tmp_path, uri, 1)

    path = objects.local_path(uri, env)
    assert not path.exists()
    assert objects.read(uri, env) is None
    assert objects.list_keys("bucket", "source/", env) == []
    # an unnamed file leaves nothing behind; a named one stays until a writer sweeps it
    assert len(_temporary(path.parent)) == (1 if mode == "named" else 0)
    # the next writer completes the object, and sweeps what a dead writer left
    assert objects.create_file(path, b"\x02" * SIZE)
    objects.sweep(path.parent)
    assert path.read_bytes() == b"\x02" * SIZE
    assert _temporary(path.parent) == []


def test_a_replacement_killed_half_way_leaves_the_old_content(tmp_path: Path) -> None:
    env = {objects.LOCAL_BUCKET_ROOT_VAR: str(tmp_path)}
    uri = "gs://bucket/ct/ledger/main/default.json"
    first = objects.write(uri, b"\x01" * SIZE, env, if_generation=0)

    _killed_half_way("replace", tmp_path, uri, 3)

    stored = objects.read(uri, env)
    assert stored is not None and stored.data == b"\x01" * SIZE  # whole, and the old one
    # the generation was written first (objects._local_write): a compare-and-swap that read
    # the old generation fails, it never overwrites content it did not see
    with pytest.raises(objects.PreconditionFailed):
        objects.write(uri, b"lost update", env, if_generation=first)
    path = objects.local_path(uri, env)
    assert len(_temporary(path.parent)) == 1  # the dead writer's half-written content
    # the next write in the directory sweeps it
    objects.write(uri, b"\x04" * SIZE, env, if_generation=stored.generation)
    assert _temporary(path.parent) == []
    again = objects.read(uri, env)
    assert again is not None and again.data == b"\x04" * SIZE
