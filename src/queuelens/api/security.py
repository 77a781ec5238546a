"""Bearer tokens with roles, and the dependencies that guard every route.

    guard = Guard.from_settings(settings)       # api_tokens and rate limits
    router.add_api_route(path, endpoint, dependencies=guard.dependencies(Role.operator))
    guard.identify(token)                       # Principal(role=viewer, name='viewer#9f86d081')

Settings hold only ``<role>:sha256:<hex>`` digests (see :mod:`queuelens.api.tokens`). A
presented token is hashed and compared with every configured digest in constant time. With no
token configured the API is anonymous (every request gets the admin role) and ``serve`` binds
to a loopback address only. No token is ever written to a log; a principal's name carries
the first eight digits of its digest, which reveal nothing usable.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from queuelens.api.ratelimit import RateLimiter
from queuelens.api.tokens import hash_token
from queuelens.config import TOKEN_ROLES, Settings

__all__ = ["BEARER", "Guard", "Principal", "Role"]

log = logging.getLogger("queuelens.api.security")

#: the bearer scheme as the OpenAPI document names it
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from `python -m queuelens.api.tokens <role>`; see docs/security.md.",
)
_REALM = 'Bearer realm="queuelens"'


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    #: read every figure, the live stream and /metrics
    viewer = "viewer"
    #: also export raw figures in bulk
    operator = "operator"
    #: also run maintenance such as pruning
    admin = "admin"

    @property
    def rank(self) -> int:
        return TOKEN_ROLES.index(self.value)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a token's role and a short, non-secret name for logs."""

    role: Role
    #: ``viewer#9f86d081``: the role and the first eight digits of the digest
    name: str
    #: ``sha256:<hex>``, the key of the per-token rate limit
    digest: str


class Guard:
    """Authenticates requests, checks roles and applies per-address and per-token limits."""

    def __init__(
        self,
        tokens: Sequence[str] = (),
        *,
        ip_limiter: RateLimiter | None = None,
        token_limiter: RateLimiter | None = None,
    ) -> None:
        self._digests: list[tuple[bytes, Role, str]] = []
        for entry in tokens:
            role, digest = entry.split(":", 1)
            self._digests.append((digest.encode("ascii"), Role(role), digest))
        self.ip_limiter = ip_limiter
        self.token_limiter = token_limiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        burst = settings.rate_limit_burst
        ip, token = settings.rate_limit_ip_per_min, settings.rate_limit_token_per_min
        return cls(
            settings.api_tokens,
            ip_limiter=RateLimiter(ip, burst, "client address") if ip > 0 else None,
            token_limiter=RateLimiter(token, burst, "token") if token > 0 else None,
        )

    @property
    def anonymous(self) -> bool:
        """True when no token is configured: every request is let in as admin."""
        return not self._digests

    def identify(self, token: str) -> Principal | None:
        """The principal ``token`` belongs to, or None. Compares with every digest, always."""
        presented = hash_token(token).encode("ascii")
        found: Principal | None = None
        for digest, role, text in self._digests:
            if hmac.compare_digest(presented, digest):
                found = Principal(role, f"{role}#{text[7:15]}", text)
        return found

    def dependencies(self, role: Role | None) -> list[Any]:
        """Route dependencies: the per-address limit, then (with tokens) ``role`` or better;
        ``role`` None: the limit only (a public route)."""
        if self.anonymous or role is None:
            return [Depends(self._limit_address)]
        return [Depends(self._limit_address), Security(self._requirement(role))]

    # The dependencies are cheap and async, so they run on the event loop: a sync one
    # would cost a trip to the thread pool on every request.
    async def _limit_address(self, request: Request) -> None:
        if self.ip_limiter is not None:
            client = request.client.host if request.client else "unknown"
            self.ip_limiter.check(client)

    def _requirement(self, role: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
        async def require(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
        ) -> Principal:
            if credentials is None:
                raise HTTPException(
                    401,
                    "this endpoint needs a bearer token: Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": _REALM},
                )
            principal = self.identify(credentials.credentials)
            client = request.client.host if request.client else "unknown"
            if principal is None:
                log.info("queuelens: rejected an unknown bearer token from %s", client)
                raise HTTPException(
                    401,
                    "the bearer token is not one of the configured api_tokens",
                    headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
                )
            if principal.role.rank < role.rank:
                log.info(
                    "queuelens: %s from %s needs role %s for %s",
                    principal.name,
                    client,
                    role,
                    request.url.path,
                )
                raise HTTPException(
                    403,
                    f"this endpoint needs the {role} role; the token has {principal.role}",
                    headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope"'},
                )
            if self.token_limiter is not None:
                self.token_limiter.check(principal.digest)
            return principal

        require.__name__ = f"require_{role}"
        return require
