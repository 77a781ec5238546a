"""API tokens: random strings for clients, ``<role>:sha256:<hex>`` digests for the settings.

    token, entry = new_token_entry("viewer")    # ('ql_3Jx…', 'viewer:sha256:9f86…')
    hash_token(token)                           # 'sha256:9f86…', the part after the role

Or from a shell: ``python -m queuelens.api.tokens viewer``. The server keeps only digests,
so a leaked settings file or environment reveals no usable token. SHA-256 without a salt is
enough here because tokens are 256 random bits, not passwords a person chose.
Imports nothing beyond the standard library and the settings.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Sequence

from queuelens.config import TOKEN_ROLES

__all__ = ["hash_token", "new_token_entry"]


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of ``token``: what follows ``<role>:`` in ``api_tokens``."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token_entry(role: str) -> tuple[str, str]:
    """A new random token and its settings entry ``<role>:sha256:<hex>``."""
    if role not in TOKEN_ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
    token = "ql_" + secrets.token_urlsafe(32)
    return token, f"{role}:{hash_token(token)}"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0] not in TOKEN_ROLES:
        print(
            f"usage: python -m queuelens.api.tokens <role>; roles: {', '.join(TOKEN_ROLES)}",
            file=sys.stderr,
        )
        return 2
    token, entry = new_token_entry(argv[0])
    print(f"token (give it to the client; it is not stored): {token}")
    print(f"api_tokens entry (put it in the settings):        {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
