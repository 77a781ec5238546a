"""The redis-py client behind one storage URL: made lazily, pipelined, errors translated.

    connection = RedisConnection("redis://localhost:6379/0", cluster=False, url="redis://…")
    with connection.translate("reading buckets"):
        replies = connection.run([("HGETALL", key), evalsha("write_series", keys, args)])

Every batch of commands goes out as one non-transactional pipeline (one round trip per
node); a NOSCRIPT reply makes it load the script and resend only the commands that did not
run. A flush's commands (``plain=True``: idempotent, replies used as Redis sends them) are
written straight to a pooled connection per node, skipping redis-py's per-command pipeline
bookkeeping, which at a thousand scripts a flush costs more than packing them. Any
redis-py error leaves :meth:`RedisConnection.translate` as a
:class:`StorageUnavailable` (server down, timed out, cluster not serving) or a
:class:`StorageError` (anything else), naming the password-free URL.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeAlias

import redis
from redis.backoff import ConstantBackoff
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
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

    def run(self, commands: Sequence[Command], *, plain: bool = False) -> list[Any]:
        """Send ``commands`` pipelined (one round trip per node); return their replies.

        ``plain``: the replies need no parsing by redis-py (scripts, ZADD, EXPIRE, HSET) and
        the commands may be sent twice (a flush batch is idempotent), so on a single Redis
        they skip the pipeline's per-command bookkeeping. Call inside :meth:`translate`; a
        failed command raises its redis-py error.
        """
        results: list[Any] = []
        client = self.client()
        send: _Send = _send_pipelined
        if plain:
            send = _send_plain_cluster if isinstance(client, RedisCluster) else _send_plain
        for offset in range(0, len(commands), _PIPELINE_CHUNK):
            results += _pipeline(client, commands[offset : offset + _PIPELINE_CHUNK], send)
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


_Send: TypeAlias = "Callable[[Any, Sequence[Command]], list[Any]]"


def _pipeline(client: Client, commands: Sequence[Command], send: _Send) -> list[Any]:
    results = send(client, commands)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        # Redis restarted or its script cache was flushed: load once, then resend only the
        # commands that did not run (a NOSCRIPT reply means nothing was applied).
        for sha in {str(commands[i][1]) for i in missing}:
            client.script_load(_SCRIPT_BY_SHA[sha].source)
        resent = send(client, [commands[i] for i in missing])
        for i, result in zip(missing, resent, strict=True):
            results[i] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _send_pipelined(client: Client, commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        _queue(client, pipe, command)
    return list(pipe.execute(raise_on_error=False))


def _send_plain(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """What a pipeline does, on one pooled connection, without its per-command bookkeeping
    (a flush sends a script per series): replies come back as Redis sent them, errors as
    exceptions in their place. A dropped connection is retried once on a new one, as the
    client's ``Retry`` would retry a pipeline."""
    try:
        return _exchange(client.connection_pool, commands)
    except (redis.ConnectionError, redis.TimeoutError):
        return _exchange(client.connection_pool, commands)


def _exchange(pool: redis.ConnectionPool, commands: Sequence[Command]) -> list[Any]:
    connection = pool.get_connection()
    try:
        connection.send_packed_command(connection.pack_commands(commands))
        return _replies(connection, len(commands))
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # half a reply may be waiting: never reuse it
        raise
    finally:
        pool.release(connection)


def _replies(connection: Any, n: int) -> list[Any]:
    replies: list[Any] = []
    for _ in range(n):
        try:
            replies.append(connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


#: replies of a cluster node that mean "not here, not now": the cluster client sorts it out
_REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)


def _send_plain_cluster(client: RedisCluster, commands: Sequence[Command]) -> list[Any]:
    """:func:`_send_plain` on a cluster: each node's commands go out on one of its pooled
    connections, all nodes' before any reply is read, so the nodes work at once. Commands
    the node sends elsewhere (a slot moving), and every command if a connection drops, go
    through redis-py's cluster pipeline instead, which follows the cluster's changes."""
    cluster: Any = client  # typed in some redis-py versions, not in others
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, command in enumerate(commands):
        node = cluster.get_node_from_key(command[3] if command[0] == "EVALSHA" else command[1])
        by_node.setdefault(node.name, (node, []))[1].append(i)
    replies: list[Any] = [None] * len(commands)
    sent: list[tuple[Any, Any, list[int]]] = []
    try:
        for node, indexes in by_node.values():
            pool = cluster.get_redis_connection(node).connection_pool
            connection = pool.get_connection()
            sent.append((pool, connection, indexes))
            connection.send_packed_command(connection.pack_commands([commands[i] for i in indexes]))
        for _, connection, indexes in sent:
            for i, reply in zip(indexes, _replies(connection, len(indexes)), strict=True):
                replies[i] = reply
    except (redis.ConnectionError, redis.TimeoutError):
        for _, connection, _ in sent:
            connection.disconnect()
        return _send_pipelined(client, commands)  # a batch is idempotent: resend it all
    finally:
        for pool, connection, _ in sent:
            pool.release(connection)
    moved = [i for i, reply in enumerate(replies) if isinstance(reply, _REDIRECTED)]
    if moved:
        resent = _send_pipelined(client, [commands[i] for i in moved])
        for i, reply in zip(moved, resent, strict=True):
            replies[i] = reply
    return replies


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
