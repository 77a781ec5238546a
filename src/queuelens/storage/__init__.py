"""Storage drivers behind one protocol, chosen by URL.

storage = open_storage("sqlite:///queuelens.db")          # the embedded default
storage = open_storage("postgresql://user@db/queuelens")  # pip install 'queuelens[postgres]'
storage = open_storage("redis://localhost:6379/0")         # pip install 'queuelens[redis]'
"""

from __future__ import annotations

from queuelens.storage.base import (
    GaugeStat,
    PruneReport,
    QueueInfo,
    Retention,
    SchemaError,
    Storage,
    StorageError,
    StorageUnavailable,
    WorkerRecord,
)

__all__ = [
    "SCHEMES",
    "GaugeStat",
    "PruneReport",
    "QueueInfo",
    "Retention",
    "SchemaError",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "WorkerRecord",
    "open_storage",
    "redact_url",
    "scheme_of",
]

#: URL scheme -> (driver family, extra that installs its client library)
SCHEMES: dict[str, tuple[str, str | None]] = {
    "sqlite": ("sql", None),
    "postgresql": ("sql", "postgres"),
    "postgres": ("sql", "postgres"),
    "mysql": ("sql", "mysql"),
    "mariadb": ("sql", "mysql"),
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "redis+cluster": ("redis", "redis"),
    "rediss+cluster": ("redis", "redis"),
}


def scheme_of(url: str) -> str:
    """The scheme of ``url`` without any ``+driver`` suffix of SQLAlchemy (``mysql+pymysql``)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme.startswith(("redis+", "rediss+")):
        return scheme
    return scheme.split("+", 1)[0]


def open_storage(
    url: str,
    *,
    relative_accuracy: float = 0.01,
    retention: Retention | None = None,
    migrate: bool | None = None,
) -> Storage:
    """Open the storage at ``url``.

    SQL schemas are created or upgraded automatically for SQLite; for PostgreSQL and MySQL
    run ``queuelens migrate`` once (or pass ``migrate=True``).
    """
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        known = ", ".join(sorted({s + "://" for s in SCHEMES}))
        raise StorageError(
            f"storage URL {redact_url(url)!r} has an unknown scheme {scheme!r}; use one of {known}"
        )
    family, extra = SCHEMES[scheme]
    retention = retention or Retention()
    try:
        if family == "sql":
            from queuelens.storage.sql import SQLStorage

            return SQLStorage(
                url, relative_accuracy=relative_accuracy, retention=retention, migrate=migrate
            )
        from queuelens.storage.redis import RedisStorage

        return RedisStorage(url, relative_accuracy=relative_accuracy, retention=retention)
    except ModuleNotFoundError as exc:
        hint = (
            f"pip install 'queuelens[{extra}]'"
            if extra
            else "pip install --force-reinstall queuelens"
        )
        raise StorageError(
            f"storage URL {redact_url(url)!r} needs the Python package {exc.name!r}; "
            f"install it with: {hint}"
        ) from None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" in credentials:
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
