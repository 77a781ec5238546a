"""The redis-py client behind one storage URL: made lazily, pipelined, errors translated.

    connection = RedisConnection("redis://localhost:6379/0", cluster=False, url="redis://…")
    with connection.translate("reading buckets"):
        replies = connection.run([("HGETALL", key), evalsha("write_series", keys, args)])

Every batch of commands goes out as one non-transactional pipeline (one round trip per
node); a NOSCRIPT reply makes it load the script and resend only the commands that did not
run. Any redis-py error leaves :meth:`RedisConnection.translate` as a
:class:`StorageUnavailable` (server down, timed out, cluster not serving) or a
:class:`StorageError` (anything else), naming the password-free URL.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

import redis
from redis.backoff import ConstantBackoff
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry

from queuelens.storage._redis_scripts import SCRIPTS
from queuelens.storage.base import StorageError, StorageUnavailable

__all__ = ["RAW", "Command", "RedisConnection", "evalsha", "pairs", "score", "trim"]

#: a down or unreachable Redis must fail a flush quickly, not hang the flusher
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0
#: commands per pipeline; bounds client memory on huge reads (a flush is far below it)
_PIPELINE_CHUNK = 20_000
_SCRIPT_BY_SHA = {script.sha: script for script in SCRIPTS.values()}

#: one Redis command as sent: name, then arguments
Command: TypeAlias = tuple[str | int | bytes, ...]
#: a command name starting with this (``"raw:HGETALL"``) gets its reply as bytes, undecoded
RAW = "raw:"
Client: TypeAlias = "redis.Redis | RedisCluster"


class RedisConnection:
    """A lazily made redis-py client (plain or cluster) that runs pipelines of commands."""

    def __init__(self, client_url: str, *, cluster: bool, url: str) -> None:
        self._client_url = client_url
        self.cluster = cluster
        #: the storage URL without its password, for messages
        self.url = url
        self._lock = threading.Lock()
        self._client_instance: Client | None = None

    def client(self) -> Client:
        """The redis-py client, made on first use (a cluster client connects on creation)."""
        with self._lock:
            if self._client_instance is None:
                options: dict[str, Any] = {
                    "decode_responses": True,
                    # names are arbitrary str; lone surrogates must round-trip too
                    "encoding_errors": "surrogatepass",
                    "socket_connect_timeout": CONNECT_TIMEOUT_S,
                    "socket_timeout": READ_TIMEOUT_S,
                    # one quick retry rides over a dropped pooled connection; more would
                    # only delay reporting a Redis that is really down
                    "retry": Retry(ConstantBackoff(0.1), 1),
                }
                if self.cluster:
                    self._client_instance = RedisCluster.from_url(self._client_url, **options)
                else:
                    self._client_instance = redis.Redis.from_url(self._client_url, **options)
            return self._client_instance

    def run(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` pipelined (one round trip per node); return their replies.

        Call inside :meth:`translate`; a failed command raises its redis-py error.
        """
        results: list[Any] = []
        client = self.client()
        for offset in range(0, len(commands), _PIPELINE_CHUNK):
            results += _pipeline(client, commands[offset : offset + _PIPELINE_CHUNK])
        return results

    def ping(self) -> None:
        with self.translate("ping"):
            self.client().ping()

    def close(self) -> None:
        with self._lock:
            client, self._client_instance = self._client_instance, None
        if client is not None:
            with contextlib.suppress(redis.RedisError, RedisClusterException, OSError):
                client.close()

    @contextlib.contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn redis-py errors (and undecodable data) into StorageError / StorageUnavailable."""
        try:
            yield
        except (AuthenticationError, AuthorizationError, NoPermissionError) as exc:
            raise StorageError(
                f"Redis at {self.url} refused {action}: {exc}; check the user and password "
                "in the storage URL"
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
                RedisClusterException) as exc:  # fmt: skip
            raise StorageUnavailable(
                f"Redis at {self.url} is unavailable ({action}): {exc}; check that it is "
                "running and reachable"
            ) from exc
        except redis.RedisError as exc:
            raise StorageError(f"Redis at {self.url} failed {action}: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"unexpected data in Redis at {self.url} while {action}: {exc!r}; is the "
                "prefix used by something other than queuelens?"
            ) from exc


def _pipeline(client: Client, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        _queue(client, pipe, command)
    results = list(pipe.execute(raise_on_error=False))
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        # Redis restarted or its script cache was flushed: load once, then resend only the
        # commands that did not run (a NOSCRIPT reply means nothing was applied).
        for sha in {str(commands[i][1]) for i in missing}:
            client.script_load(_SCRIPT_BY_SHA[sha].source)
        retry = client.pipeline(transaction=False)
        for i in missing:
            _queue(client, retry, commands[i])
        for i, result in zip(missing, retry.execute(raise_on_error=False), strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _queue(client: Client, pipe: Any, command: Command) -> None:
    """Add ``command`` to ``pipe``, routing scripts to their node ourselves on a cluster.

    redis-py's cluster pipeline would otherwise ask a server (COMMAND GETKEYS) where each
    EVALSHA goes: a round trip per script. Its first key names the slot of all of them.
    """
    name = command[0]
    if name == "EVALSHA" and isinstance(client, RedisCluster) and int(command[2]):
        cluster: Any = client  # typed in some redis-py versions, not in others
        pipe.execute_command(*command, target_nodes=cluster.get_node_from_key(command[3]))
    elif isinstance(name, str) and name.startswith(RAW):
        pipe.execute_command(name[len(RAW) :], *command[1:], **{NEVER_DECODE: True})
    else:
        pipe.execute_command(*command)


def evalsha(script: str, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Command:
    """An EVALSHA of one of :data:`SCRIPTS` by name."""
    return ("EVALSHA", SCRIPTS[script].sha, len(keys), *keys, *args)


def trim(index: str, cutoff: str, companion: str | None = None) -> Command:
    """Remove members scored below ``cutoff`` from ``index`` (and ``companion`` hash)."""
    keys = [index] if companion is None else [index, companion]
    return evalsha("trim_index", keys, [cutoff])


def score(value: float) -> str:
    """A ZSET score bound as Redis reads it."""
    if math.isnan(value):
        raise StorageError("a time range bound is NaN; pass unix seconds")
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return repr(float(value))


def pairs(reply: Any) -> list[tuple[str, float]]:
    """ZRANGE WITHSCORES as (member, score), whether redis-py paired it up or not."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(str(member), float(value)) for member, value in reply]
    return [(str(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]
