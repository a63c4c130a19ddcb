"""Docker: build an image from a context directory and push it, returning its digest.

Talks to the engine named by ``DOCKER_HOST`` in the environment mapping passed in (TLS settings
``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH`` from the same mapping), or the local socket
``unix:///var/run/docker.sock`` when it is unset. Base images are never pulled implicitly
(``pull=False``): what the Dockerfile names must already be in the engine or reachable through
its own configuration. Pushes use the engine's usual credentials (``~/.docker/config.json``,
credential helpers such as ``gcloud auth configure-docker``).

Faults (``orchestrator.retrying``): the engine retries a layer upload that fails by itself
(``Retrying in 5 seconds``), not the manifest. A push that fails on a transient fault (an HTTP
408, 429 or 5xx answer, a reset, closed or timed-out connection, as the engine words them:
``received unexpected HTTP status: 503 Service Unavailable``, ``connection reset by peer``) is
pushed again, with backoff, for at most ``ORCHESTRATOR_RETRY_DEADLINE`` seconds (60, or 10 for
a registry on this machine). That is safe: layers are content-addressed (those already there
are skipped) and the manifest is put under its tag with the same bytes. Anything else (a
refused connection, 401/403, an unknown repository) fails at once.

docker is imported inside the functions, so the planning path never pays for it.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator import retrying
from orchestrator.errors import InputError, ServiceUnreachable, StepFailed

DOCKER_HOST_VAR = "DOCKER_HOST"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

_PING_TIMEOUT = 10
# Socket timeout while building and pushing: a RUN step may print nothing for a long time.
_BUILD_TIMEOUT = 3600

LogSink = Callable[[str], None]

# How the engine words a transient failure of the registry (moby's distribution client:
# "received unexpected HTTP status: 503 Service Unavailable"; Go's net errors for the rest).
_TRANSIENT_PUSH = re.compile(
    r"\b(?:408|429|500|502|503|504) [A-Z][A-Za-z ]+$|connection reset by peer|broken pipe"
    r"|unexpected EOF|: EOF$|i/o timeout|TLS handshake timeout|server closed idle connection"
)


class _TransientPush(StepFailed):
    """A push failed on a fault worth pushing again for (``_TRANSIENT_PUSH``)."""


def build_and_push(
    context: Path,
    dockerfile: str,
    image: str,
    build_args: Mapping[str, str],
    *,
    env: Mapping[str, str],
    on_log: LogSink | None = None,
    network_mode: str | None = None,
) -> str:
    """Build ``image`` (``repository:tag``) from ``context`` and push it.

    ``dockerfile`` is relative to ``context``. Each line of build and push output goes to
    ``on_log`` as it arrives. ``network_mode`` is passed to ``RUN`` steps (for example
    ``"host"`` or ``"none"`` on engines without a bridge network).

    Returns the pushed image pinned by digest: ``repository@sha256:...``.

    Raises ``ServiceUnreachable`` (naming ``DOCKER_HOST``) when the engine cannot be reached,
    ``StepFailed`` when the build or the push fails, and ``InputError`` for a bad image name or
    a missing context or Dockerfile.
    """
    repository, tag = _split_image(image)
    if not context.is_dir():
        raise InputError(f"Docker build context {context} is not a directory.")
    if not (context / dockerfile).is_file():
        raise InputError(f"Dockerfile {dockerfile} not found in build context {context}.")
    log = on_log or (lambda _line: None)

    import docker.errors

    client = engine(env)
    try:
        client.api.timeout = _BUILD_TIMEOUT
        try:
            _build(client, context, dockerfile, image, build_args, network_mode, log)
            digest = _push_until_done(client, repository, tag, log, env)
        except docker.errors.APIError as exc:
            raise StepFailed(f"Docker could not build and push {image}: {_explain(exc)}") from exc
        except docker.errors.DockerException as exc:
            raise ServiceUnreachable(
                f"Lost the Docker engine at {_host(env)} ({DOCKER_HOST_VAR}) "
                f"while building {image}: {exc}"
            ) from exc
        except OSError as exc:  # the connection dropped in the middle of a stream
            raise ServiceUnreachable(
                f"Lost the Docker engine at {_host(env)} ({DOCKER_HOST_VAR}) "
                f"while building {image}: {exc}"
            ) from exc
    finally:
        client.close()
    return f"{repository}@{digest}"


def engine(env: Mapping[str, str]) -> Any:
    """A ``docker.DockerClient`` for the engine in ``env``, checked with a ping.

    Raises ``ServiceUnreachable`` naming ``DOCKER_HOST`` when nothing answers there.
    """
    import docker
    import docker.errors

    environment = dict(env)
    environment.setdefault(DOCKER_HOST_VAR, DEFAULT_DOCKER_HOST)
    _check_unix_socket(env)
    # Ask the engine for its API version with a client we can close on failure (letting
    # docker-py auto-detect it inside the constructor leaks the socket when nothing answers),
    # then talk to it in that version.
    try:
        probe = docker.from_env(
            environment=environment,
            version=docker.constants.DEFAULT_DOCKER_API_VERSION,
            timeout=_PING_TIMEOUT,
        )
    except docker.errors.DockerException as exc:  # a malformed DOCKER_HOST or TLS setting
        raise InputError(f"{DOCKER_HOST_VAR}={_host(env)} is not usable: {exc}") from exc
    try:
        api_version = str(probe.api.version(api_version=False)["ApiVersion"])
    except (docker.errors.DockerException, OSError, KeyError) as exc:
        raise ServiceUnreachable(
            f"Cannot reach the Docker engine at {_host(env)} ({DOCKER_HOST_VAR}); "
            f"start Docker or point {DOCKER_HOST_VAR} at a running engine."
        ) from exc
    finally:
        probe.close()
    return docker.from_env(environment=environment, version=api_version, timeout=_PING_TIMEOUT)


def _check_unix_socket(env: Mapping[str, str]) -> None:
    """Fail fast, and without leaking a socket, when a unix:// engine socket does not answer.

    docker-py's unix transport does not close its socket when connecting fails, which leaves an
    unclosed-socket warning behind; connecting once ourselves avoids handing it a dead path.
    """
    host = _host(env)
    if not host.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_PING_TIMEOUT)
        try:
            sock.connect(host.removeprefix("unix://"))
        except OSError as exc:
            raise ServiceUnreachable(
                f"Cannot reach the Docker engine at {host} ({DOCKER_HOST_VAR}): "
                f"{exc.strerror or exc}; start Docker or point {DOCKER_HOST_VAR} at a running "
                "engine."
            ) from exc


def _build(
    client: Any,
    context: Path,
    dockerfile: str,
    image: str,
    build_args: Mapping[str, str],
    network_mode: str | None,
    log: LogSink,
) -> None:
    stream = client.api.build(
        path=str(context),
        dockerfile=dockerfile,
        tag=image,
        buildargs=dict(build_args),
        network_mode=network_mode,
        pull=False,
        rm=True,
        forcerm=True,
        decode=True,
    )
    step = ""

    def sink(line: str) -> None:
        nonlocal step
        if line.startswith("Step "):  # "Step 2/5 : RUN ...": named in the error if it fails
            step = line
        log(line)

    lines = _LineBuffer(sink)
    for chunk in stream:
        if "stream" in chunk:
            lines.feed(chunk["stream"])
        if "error" in chunk:
            lines.flush()
            detail = _one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"])
            where = f" at {_one_line(_expand_from(step, build_args))}" if step else ""
            raise StepFailed(f"docker build of {image} failed{where}: {detail}")
    lines.flush()


def _push_until_done(
    client: Any, repository: str, tag: str, log: LogSink, env: Mapping[str, str]
) -> str:
    registry = repository.split("/", 1)[0]

    def again(exc: BaseException, pause: float) -> None:
        log(f"{exc}; pushing again in {pause:.1f} s")

    try:
        return retrying.call(
            lambda _seconds: _push(client, repository, tag, log),
            transient=lambda exc: isinstance(exc, _TransientPush),
            total=retrying.deadline(env, local=retrying.is_loopback(registry)),
            on_retry=again,
        )
    except retrying.GaveUp as exc:
        raise ServiceUnreachable(
            f"the registry {registry} kept failing the push of {repository}:{tag}: "
            f"{_one_line(exc.last).removeprefix(f'docker push of {repository}:{tag} failed: ')} "
            f"({exc.summary})"
        ) from exc


def _push(client: Any, repository: str, tag: str, log: LogSink) -> str:
    digest = ""
    stream: Iterable[dict[str, Any]] = client.api.push(
        repository, tag=tag, stream=True, decode=True
    )
    error: StepFailed | None = None
    for chunk in stream:  # read to its end even after an error: the answer is then released
        if "error" in chunk:
            detail = _one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"])
            failed = _TransientPush if _TRANSIENT_PUSH.search(detail) else StepFailed
            error = error or failed(f"docker push of {repository}:{tag} failed: {detail}")
            continue
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = str(aux["Digest"])
        status = chunk.get("status")
        # Per-layer byte counts ("Pushing" with progressDetail) would flood the log.
        if status and not chunk.get("progressDetail"):
            layer = chunk.get("id")
            log(f"{layer}: {status}" if layer else str(status))
    if error is not None:
        raise error
    if not digest:
        raise StepFailed(f"docker push of {repository}:{tag} reported no digest.")
    return digest


class _LineBuffer:
    """Build output arrives in arbitrary pieces; hand the sink whole lines."""

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink
        self._pending = ""

    def feed(self, text: str) -> None:
        *complete, self._pending = (self._pending + text).split("\n")
        for line in complete:
            self._sink(line.rstrip("\r"))

    def flush(self) -> None:
        if self._pending:
            self._sink(self._pending.rstrip("\r"))
            self._pending = ""


def _expand_from(step: str, build_args: Mapping[str, str]) -> str:
    """Show ``FROM ${BASE_IMAGE}`` as the image it names, so a missing base image is named."""
    if " : FROM " not in step:
        return step

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return build_args.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, step)


def _split_image(image: str) -> tuple[str, str]:
    """``registry:5000/repo/name:tag`` -> (``registry:5000/repo/name``, ``tag``)."""
    if "@" in image:
        raise InputError(f"Image {image!r} must be repository:tag, not a digest reference.")
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        raise InputError(f"Image {image!r} needs an explicit tag (repository:tag).")
    repository, tag = image.rsplit(":", 1)
    if not repository or not tag:
        raise InputError(f"Image {image!r} is not repository:tag.")
    return repository, tag


def _host(env: Mapping[str, str]) -> str:
    return env.get(DOCKER_HOST_VAR) or DEFAULT_DOCKER_HOST


def _explain(exc: Any) -> str:
    return _one_line(getattr(exc, "explanation", None) or exc)


def _one_line(value: object) -> str:
    text = str(value).strip()
    return " ".join(text.split()) if text else type(value).__name__
