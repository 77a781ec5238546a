"""Storage URLs of the Redis driver: scheme, key prefix and a password-free form.

    client_url, prefix, cluster = parse_url("redis+cluster://:pw@node1:7000/?prefix=prod")
    # ("redis://:pw@node1:7000/", "prod", True)
    redact("redis://:pw@host/0")   # "redis://:***@host/0"

The URL forms are described in :mod:`queuelens.storage.redis`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from queuelens.storage.base import StorageError

__all__ = ["DEFAULT_PREFIX", "parse_url", "redact"]

#: key namespace when the URL has no ``?prefix=``
DEFAULT_PREFIX = "queuelens"
_SCHEMES = {"redis", "rediss", "redis+cluster", "rediss+cluster"}


def parse_url(url: str, redacted: str) -> tuple[str, str, bool]:
    """(URL for redis-py, key prefix, is cluster) from a queuelens storage URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise StorageError(
            f"storage URL {redacted!r} is not a Redis URL; expected e.g. "
            "redis://localhost:6379/0 or redis+cluster://node1:6379/?prefix=prod"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    prefix = prefixes[-1] if prefixes else DEFAULT_PREFIX
    if not prefix or "{" in prefix or "}" in prefix:
        raise StorageError(
            f"storage URL {redacted!r} has prefix {prefix!r}; a prefix must be non-empty and "
            "free of braces (they would change Redis Cluster hash slots), e.g. ?prefix=prod"
        )
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    base = scheme.removesuffix("+cluster")
    return urlunsplit((base, parts.netloc, parts.path, rest, "")), prefix, base != scheme


def redact(url: str) -> str:
    """``url`` with the password (in the user info or a ``password=`` query) as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        user, has_password, _ = credentials.partition(":")
        # a lone user info may be a password (redis://secret@host): hide it all
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    query = parts.query
    if "password=" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
