"""Engines, transactions, error translation and migrations of the SQL storage driver.

    db = Database.open("postgres://user:secret@db/queuelens")
    db.ensure_schema(migrate=None)              # SchemaError unless migrated (SQLite: auto)
    total = db.run(lambda conn: conn.execute(stmt).scalar(), write=False, action="counting")

:class:`Database` owns one SQLAlchemy engine and runs each unit of work in one transaction,
retrying the whole transaction on deadlocks, serialization failures and lost connections,
and turning every driver exception into :class:`StorageError` (or a subclass) that names
the redacted URL and what to check.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import column, create_engine, event, select, table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from queuelens.sketch import SketchError
from queuelens.storage.base import SchemaError, StorageError, StorageUnavailable
from queuelens.storage.sql_schema import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

if sys.platform != "win32":
    import fcntl

__all__ = ["Database", "RollbackWith", "engine_url", "head_revision"]

T = TypeVar("T")

#: seconds to wait for a TCP connection / login before reporting the server unreachable
CONNECT_TIMEOUT_S = 5
#: seconds a SQLite writer waits for another process's write transaction to finish
SQLITE_BUSY_TIMEOUT_S = 60
#: tries of one transaction when it deadlocks, fails to serialize or loses its connection
ATTEMPTS = 5

_PG_RETRY_STATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_MYSQL_RETRY_CODES = {1205, 1213}  # lock wait timeout, deadlock
#: connection refused, too many connections, access denied, unknown database, shutdown
_MYSQL_CONNECT_CODES = {1040, 1044, 1045, 1049, 1053, 1129, 1130, 1698}
#: connection exception, invalid authorization; database missing, too many connections,
#: server shutting down
_PG_CONNECT_CLASSES = ("08", "28")
_PG_CONNECT = {"3D000", "53300", "57P01", "57P02", "57P03"}
#: SQLite errors about the file or its lock, not about a statement
_SQLITE_UNAVAILABLE = ("locked", "busy", "unable to open", "readonly", "disk i/o", "is full")


class RollbackWith(Exception):
    """Raise inside :meth:`Database.run` to roll the transaction back and return ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL for a storage URL: default drivers, utf8mb4 on MySQL.

    ``postgres://`` and ``postgresql://`` use psycopg 3, ``mysql://`` and ``mariadb://``
    PyMySQL, ``sqlite://`` the standard library; an explicit ``+driver`` is kept.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"cannot parse storage URL {_redact_text(url)!r}; "
            "expected e.g. sqlite:///queuelens.db or postgresql://user@host/db"
        ) from None
    base, _, driver = parsed.drivername.partition("+")
    if base in ("postgres", "postgresql"):
        return parsed.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if base in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        return parsed.set(drivername=f"mysql+{driver or 'pymysql'}", query=query)
    if base == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or "uri" in parsed.query:
            raise StorageError(
                f"SQLite storage needs a database file, e.g. sqlite:///queuelens.db, not "
                f"{url!r}: an in-memory database would be private to one connection"
            )
        return parsed.set(drivername=f"sqlite+{driver or 'pysqlite'}")
    raise StorageError(
        f"storage URL {_redact_text(url)!r} is not a SQL URL; use sqlite://, postgresql:// "
        "or mysql://"
    )


def _redact_text(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration built in code: scripts from the package, no alembic.ini."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "queuelens.storage:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


#: the newest migration in ``migrations/versions`` (a test checks that Alembic agrees). Kept
#: as a constant so that opening an up-to-date database never imports Alembic (~11 MB of RSS
#: in every worker process).
HEAD_REVISION = "0003"


def head_revision() -> str:
    """The newest schema revision this queuelens knows."""
    return HEAD_REVISION


def current_revision(conn: Connection) -> str | None:
    """The schema revision recorded in the database, None when never migrated."""
    if not sa_inspect(conn).has_table(VERSION_TABLE):
        return None
    version = table(VERSION_TABLE, column("version_num"))
    revisions = conn.execute(select(version.c.version_num)).scalars().all()
    return str(revisions[0]) if revisions else None


# A fork while another thread is inside a SQLite transaction leaves the child with SQLite's
# process-wide lock state held forever (a write there would hang). So SQLite work holds this
# lock, and a fork waits (up to 1 s) for the current transaction to end. If it could not,
# the child refuses SQLite instead of hanging.
_SQLITE_FORK_LOCK = threading.RLock()
_fork_took_lock = False
_sqlite_unusable_after_fork = False
# Alembic keeps the migration context in module globals: one migration at a time per process.
_ALEMBIC_LOCK = threading.Lock()


def _before_fork() -> None:
    global _fork_took_lock
    _fork_took_lock = _SQLITE_FORK_LOCK.acquire(timeout=1.0)


def _after_fork_in_parent() -> None:
    if _fork_took_lock:
        _SQLITE_FORK_LOCK.release()


def _after_fork_in_child() -> None:
    global _SQLITE_FORK_LOCK, _ADOPT_LOCK, _sqlite_unusable_after_fork
    _SQLITE_FORK_LOCK = threading.RLock()
    _ADOPT_LOCK = threading.Lock()
    _sqlite_unusable_after_fork = not _fork_took_lock


# Serialises a forked child's threads dropping the parent's connections (Database._adopt).
_ADOPT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class Database:
    """One engine plus the transaction, retry and error policy of the SQL driver."""

    def __init__(self, engine: Engine, url: str, password: str | None) -> None:
        self.engine = engine
        #: the storage URL as given, password replaced by ``***``
        self.url = url
        self._password = password
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_mysql = engine.dialect.name in ("mysql", "mariadb")
        self._pid = os.getpid()

    @classmethod
    def open(cls, url: str) -> Database:
        """Create the engine for ``url`` (no connection is made yet)."""
        target = engine_url(url)
        redacted = _redact_text(url)
        kwargs: dict[str, Any] = {}
        if target.get_backend_name() == "sqlite":
            path = os.path.abspath(target.database or "")
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create the directory of SQLite database {redacted}: {exc}; "
                    "check the path and its permissions"
                ) from None
            target = target.set(database=path)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        elif target.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {
                "connect_timeout": CONNECT_TIMEOUT_S,
                "application_name": "queuelens",
            }
            kwargs.update(pool_pre_ping=True, isolation_level="READ COMMITTED")
        else:
            kwargs["connect_args"] = {
                "connect_timeout": CONNECT_TIMEOUT_S,
                # bytes as _binary'..' literals: no charset warnings for hashes and sketches
                "binary_prefix": True,
                # strict: an over-long or invalid value is an error, never silently truncated
                "init_command": "SET SESSION sql_mode = 'TRADITIONAL'",
            }
            # READ COMMITTED: no gap locks, and reads after a lock see the latest commit.
            kwargs.update(pool_pre_ping=True, pool_recycle=3600, isolation_level="READ COMMITTED")
        try:
            engine = create_engine(target, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            if isinstance(exc, ModuleNotFoundError):
                raise  # open_storage turns this into "pip install 'queuelens[...]'"
            raise StorageError(f"cannot set up storage {redacted}: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        return cls(engine, redacted, target.password)

    # -- transactions ----------------------------------------------------------------------

    def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        action: str,
        retry_disconnect: bool = True,
    ) -> T:
        """Run ``work`` in one transaction and commit; retry it whole on transient failures.

        ``write`` takes SQLite's write lock up front (``BEGIN IMMEDIATE``), so two writers
        queue on the busy timeout instead of failing to upgrade a read lock. Pass
        ``retry_disconnect=False`` for work that is not idempotent: a connection lost
        during COMMIT leaves unknown whether it was applied.
        """
        if self._pid != os.getpid():
            self._adopt()
        if not self.is_sqlite:
            return self._run(work, write=write, action=action, retry_disconnect=retry_disconnect)
        if _sqlite_unusable_after_fork:
            raise StorageUnavailable(
                f"{self.url}: this process was forked while another thread of its parent was "
                "inside a SQLite transaction, so SQLite's locks are unusable here; use a "
                "server storage (PostgreSQL, MySQL, Redis) for workers that fork this way"
            )
        with _SQLITE_FORK_LOCK:
            return self._run(work, write=write, action=action, retry_disconnect=retry_disconnect)

    def _run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        action: str,
        retry_disconnect: bool,
    ) -> T:
        delay = 0.01
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.engine.connect() as conn:
                    if write:
                        conn.execution_options(ql_write=True)
                    with conn.begin():
                        return work(conn)
            except RollbackWith as signal:
                return signal.value  # type: ignore[no-any-return]
            except DBAPIError as exc:
                if attempt < ATTEMPTS and self._retryable(exc, retry_disconnect, attempt):
                    time.sleep(delay * (1.0 + random.random()))
                    delay *= 2
                    continue
                raise self.translate(exc, action) from None
            except (SQLAlchemyError, SketchError, OSError, UnicodeError) as exc:
                raise self.translate(exc, action) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _retryable(self, exc: DBAPIError, retry_disconnect: bool, attempt: int) -> bool:
        if exc.connection_invalidated:
            return retry_disconnect
        orig = exc.orig
        if self.is_sqlite:
            # The busy timeout has already waited for the lock; one more try, not five.
            return attempt == 1 and ("locked" in str(orig) or "busy" in str(orig))
        if self.is_mysql:
            args: tuple[Any, ...] = getattr(orig, "args", ())
            return bool(args) and args[0] in _MYSQL_RETRY_CODES
        return getattr(orig, "sqlstate", None) in _PG_RETRY_STATES

    def translate(self, exc: BaseException, action: str) -> StorageError:
        """``exc`` as a StorageError that says what failed, where, and what to check."""
        if isinstance(exc, StorageError):
            return exc
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = detail[0] if detail else type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        lowered = text.lower()
        if isinstance(exc, DBAPIError) and self._is_missing_table(exc, lowered):
            return SchemaError(
                f"{self.url}: the queuelens schema is missing or incomplete ({text}) while "
                f"{action}; run `queuelens migrate` against this database"
            )
        if self.is_sqlite:
            if isinstance(exc, OSError) or any(s in lowered for s in _SQLITE_UNAVAILABLE):
                hint = (
                    "another process held the write lock too long"
                    if "locked" in lowered or "busy" in lowered
                    else "check that the file's directory exists, is writable and has space"
                )
                return StorageUnavailable(
                    f"SQLite database {self.url} failed {action}: {text}; {hint}"
                )
        elif isinstance(exc, DBAPIError) and self._is_connection_error(exc):
            where = self.engine.url
            port = where.port or (3306 if self.is_mysql else 5432)
            return StorageUnavailable(
                f"cannot reach {self.url} while {action}: {text}. Check that the server is "
                f"running and reachable at {where.host or 'localhost'}:{port} (firewall, DNS),"
                " and the user, password and database name in the URL"
            )
        return StorageError(f"{self.url}: {action} failed: {text}")

    def _is_missing_table(self, exc: DBAPIError, lowered: str) -> bool:
        if self.is_sqlite:
            return "no such table" in lowered
        if self.is_mysql:
            args: tuple[Any, ...] = getattr(exc.orig, "args", ())
            return bool(args) and args[0] == 1146  # ER_NO_SUCH_TABLE
        return getattr(exc.orig, "sqlstate", None) == "42P01"  # undefined_table

    def _is_connection_error(self, exc: DBAPIError) -> bool:
        """Could the server not be reached, or not let us in? (Not: a failed statement.)

        Drivers raise deadlocks and other statement failures as OperationalError too, so
        this goes by error code rather than exception class.
        """
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if self.is_mysql:
            args: tuple[Any, ...] = getattr(orig, "args", ())
            code = args[0] if args and isinstance(args[0], int) else 2000
            return code >= 2000 or code in _MYSQL_CONNECT_CODES  # 2xxx: client-side errors
        if not isinstance(exc, OperationalError | InterfaceError):
            return False
        state = getattr(orig, "sqlstate", None)
        return state is None or state.startswith(_PG_CONNECT_CLASSES) or state in _PG_CONNECT

    # -- schema ----------------------------------------------------------------------------

    def ensure_schema(self, migrate: bool | None) -> None:
        """Check the schema is at the head revision; migrate first if asked (SQLite: default).

        Raises SchemaError when the schema is missing or behind and migrating was not asked
        for, or when it is newer than this queuelens.
        """
        do_migrate = self.is_sqlite if migrate is None else migrate
        revision = self.run(current_revision, write=False, action="reading the schema revision")
        head = head_revision()
        if revision == head:
            return
        if revision is not None and _script_directory().get_revision(revision) is None:
            raise SchemaError(
                f"{self.url} has queuelens schema revision {revision!r}, newer than this "
                f"queuelens knows (head {head!r}); upgrade queuelens on this host"
            )
        if not do_migrate:
            state = "has no queuelens schema" if revision is None else f"is at {revision!r}"
            raise SchemaError(
                f"{self.url} {state}; this queuelens needs schema revision {head!r}. Run "
                "`queuelens migrate` with this storage URL (or open it with migrate=True)"
            )
        self.upgrade()

    def upgrade(self) -> str:
        """Migrate to the head revision and return it; safe to run from several processes
        and threads (Alembic's ``op`` and ``context`` are process-global, hence the lock)."""
        with _ALEMBIC_LOCK, self._migration_lock():
            return self.run(self._upgrade, write=True, action="migrating the schema")

    @staticmethod
    def _upgrade(conn: Connection) -> str:
        from alembic import command

        command.upgrade(alembic_config(conn), "head")
        return head_revision()

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """For SQLite, a file lock next to the database so first opens migrate one at a time.

        PostgreSQL and MySQL migrations are run on purpose by one `queuelens migrate`.
        """
        database = self.engine.url.database
        if not self.is_sqlite or not database or sys.platform == "win32":
            yield
            return
        try:
            handle = open(database + ".lock", "a")  # noqa: SIM115 - held across the yield
        except OSError as exc:
            raise self.translate(exc, "locking the database for migration") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def dispose(self, close: bool = True) -> None:
        if self._pid != os.getpid():
            self._adopt()  # close only this process's own connections
        self.engine.dispose(close=close)

    def _adopt(self) -> None:
        """In a forked child, on first use: drop the pooled connections inherited from the
        parent without closing them, which would end the parent's sessions. Done here rather
        than at fork, so children that never use storage (RQ's work horses) pay nothing."""
        with _ADOPT_LOCK:
            if self._pid != os.getpid():
                self.engine.dispose(close=False)
                self._pid = os.getpid()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module: SQLAlchemy's "begin" hook below
    # emits BEGIN itself, IMMEDIATE for writers.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        # WAL: readers never block the writer; NORMAL sync is durable against process
        # crashes (a power cut may lose the last commits, acceptable for metrics).
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("ql_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
