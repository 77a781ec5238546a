"""A real three-master Redis Cluster on free local ports, for tests and quick benchmarks.

    with redis_cluster(tmp_path) as base_url:        # "redis+cluster://127.0.0.1:21234/"
        storage = RedisStorage(base_url + "?prefix=mytest")

The yielded URL is exactly ``redis+cluster://127.0.0.1:<port of the first master>/`` — no
query string, ending in ``/`` — so callers append ``?prefix=NAME`` to get a key namespace of
their own. The servers (``redis-server`` and ``redis-cli`` from PATH) keep no data on disk
beyond their ``nodes-<port>.conf`` in ``workdir``, and are always stopped on exit, even when
the body raises. Every wait is bounded and fails with the command to run by hand.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import redis

__all__ = ["ClusterStartError", "redis_cluster"]

#: Redis Cluster talks node-to-node on the client port + 10000
_BUS_OFFSET = 10000
_MASTERS = 3
_READY_TIMEOUT_S = 30.0


class ClusterStartError(RuntimeError):
    """The test cluster could not be started; the message names the step and its output."""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` ports whose cluster-bus twins (port + 10000) are free too.

    Picked from 20000-30999 rather than the OS's ephemeral range, because an ephemeral
    port + 10000 can exceed 65535.
    """
    chosen: list[int] = []
    candidates = random.sample(range(20000, 31000), 400)
    for port in candidates:
        if _port_free(port) and _port_free(port + _BUS_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise ClusterStartError(f"found only {len(chosen)} free port pairs in 20000-41000")


def _wait(what: str, check: Callable[[], bool], timeout_s: float, hint: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise ClusterStartError(f"timed out after {timeout_s:.0f}s waiting for {what}; {hint}")


def _answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        info = client.cluster("INFO")
    except redis.RedisError:
        return False
    finally:
        client.close()
    # redis-py parses the reply into a dict; older versions hand back the raw text
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _server_up(port: int, process: subprocess.Popen[bytes], log: pathlib.Path) -> bool:
    if process.poll() is not None:
        raise ClusterStartError(
            f"redis-server on port {port} exited with {process.returncode}: {_log_tail(log)}"
        )
    return _answers(port)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _log_tail(path: pathlib.Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-2000:]
    return ""


@contextlib.contextmanager
def redis_cluster(workdir: pathlib.Path) -> Iterator[str]:
    """Start a 3-master cluster with state in ``workdir``; yield its base URL; stop it.

    Raises :class:`ClusterStartError` when a binary is missing, a server does not answer,
    ``redis-cli --cluster create`` fails or the cluster does not reach ``cluster_state:ok``
    within 30 s.
    """
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            raise ClusterStartError(f"{binary} is not on PATH; install it: apt-get install redis")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(_MASTERS)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            log = workdir / f"redis-{port}.log"
            argv = [
                "redis-server", "--port", str(port), "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf", "--dir", str(workdir),
                "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
                "--logfile", str(log),
            ]  # fmt: skip
            processes.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            )
        for port, process in zip(ports, processes, strict=True):
            log = workdir / f"redis-{port}.log"
            up = functools.partial(_server_up, port, process, log)
            _wait(f"redis-server on port {port}", up, _READY_TIMEOUT_S, f"see {log}")
        create = [
            "redis-cli", "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                create, capture_output=True, timeout=_READY_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise ClusterStartError(f"`{' '.join(create)}` did not finish in 30 s") from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise ClusterStartError(f"`{' '.join(create)}` failed: {output}")
        for port in ports:
            _wait(
                f"cluster_state:ok on port {port}",
                functools.partial(_cluster_ok, port),
                _READY_TIMEOUT_S,
                f"check with: redis-cli -p {port} cluster info",
            )
        yield f"redis+cluster://127.0.0.1:{ports[0]}/"
    finally:
        _stop(processes)
