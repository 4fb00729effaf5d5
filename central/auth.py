"""API access: bearer tokens with a role (viewer < operator < admin), and the one check.

Tokens are 256-bit random strings shown once at creation; only their SHA-256 is stored. A
slow KDF (bcrypt, scrypt, argon2) protects low-entropy passwords against guessing after a
database leak; a 256-bit random token cannot be guessed whatever the hash costs, so a fast
hash loses nothing and lets every request be checked with one indexed lookup.

Routers declare ``Depends(require("operator"))``; ``require`` finds the ``Authenticator``
that ``create_app`` put on ``app.state.auth``, so other modules' routers need no wiring.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from central.db import Database

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
TOKEN_PREFIX = "slt_"


def role_rank(role: str) -> int:
    return ROLES.index(role) + 1 if role in ROLES else 0  # type: ignore[arg-type]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    role: Role
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a token's name and role, or the anonymous reader."""

    name: str
    role: Role
    token_id: str | None = None


ANONYMOUS = "anonymous"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class TokenStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def create(self, name: str, role: Role) -> tuple[TokenRecord, str]:
        """A new token; the plaintext is returned here and never again."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not name.strip():
            raise ValueError("a token needs a name")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(f"tok-{uuid.uuid4().hex[:12]}", name, role, self._clock(), None)
        self.db.execute(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES (?,?,?,?,?)",
            (record.id, record.name, record.role, hash_token(token), record.created_at),
        )
        return record, token

    def lookup(self, token: str) -> TokenRecord | None:
        """The live (not revoked) token with this plaintext, or None."""
        if "\x00" in token or len(token) > 200:  # never a token of ours; keep it off the DB
            return None
        digest = hash_token(token)
        row = self.db.execute(
            "SELECT id, name, role, created_at, revoked_at, token_hash FROM api_tokens"
            " WHERE token_hash = ?",
            (digest,),
        ).fetchone()
        # The index found the row; compare_digest keeps the final check constant-time anyway.
        if row is None or row[4] is not None or not hmac.compare_digest(row[5], digest):
            return None
        return TokenRecord(row[0], row[1], row[2], row[3], row[4])

    def list(self) -> list[TokenRecord]:
        rows = self.db.execute(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY created_at, id"
        ).fetchall()
        return [TokenRecord(*r) for r in rows]

    def get(self, token_id: str) -> TokenRecord | None:
        row = self.db.execute(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens WHERE id = ?",
            (token_id,),
        ).fetchone()
        return TokenRecord(*row) if row else None

    def revoke(self, token_id: str) -> bool:
        """True if the token was live and is now revoked."""
        cursor = self.db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (self._clock(), token_id),
        )
        return cursor.rowcount > 0


class Authenticator:
    """Turns a request's credentials into a Principal (or refuses it)."""

    def __init__(self, tokens: TokenStore, anonymous_role: Literal["none", "viewer"] = "none"):
        self.tokens = tokens
        self.anonymous_role = anonymous_role

    def principal(self, token: str | None) -> Principal | None:
        if token:
            record = self.tokens.lookup(token)
            if record is None:
                raise HTTPException(401, "invalid or revoked token", _CHALLENGE)
            return Principal(record.name, record.role, record.id)
        if self.anonymous_role == "viewer":
            return Principal(ANONYMOUS, "viewer")
        return None


# Declared as security schemes so OpenAPI documents them; neither fails on its own.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_query_token = APIKeyQuery(
    name="access_token",
    auto_error=False,
    description="for GET streams only (EventSource cannot set headers)",
)


def require(role: Role) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's Principal, if its role is at least ``role``.

    401 without (valid) credentials, 403 with a role too low. ``?access_token=`` counts only
    on GET requests, so a token in a URL (logs, history) can never change anything.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        query_token: Annotated[str | None, Depends(_query_token)],
    ) -> Principal:
        auth: Authenticator = request.app.state.auth
        token = bearer.credentials if bearer is not None else None
        if bearer is None and request.headers.get("authorization"):
            raise HTTPException(401, "Authorization must be 'Bearer <token>'", _CHALLENGE)
        if token is None and query_token and request.method in ("GET", "HEAD"):
            token = query_token
        principal = auth.principal(token)
        if principal is None:
            raise HTTPException(401, "a bearer token is required", _CHALLENGE)
        if role_rank(principal.role) < role_rank(role):
            if principal.token_id is None:  # anonymous: a token could help, so 401
                raise HTTPException(401, f"needs a token with role '{role}'", _CHALLENGE)
            raise HTTPException(403, f"needs role '{role}' (token has '{principal.role}')")
        return principal

    return check
