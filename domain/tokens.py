"""Access tokens (HS256 JWTs that authenticate by themselves, without a store lookup)
and refresh tokens (opaque random strings; only their SHA-256 is stored)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

import jwt

from domain.callers import Caller
from domain.errors import Unauthorized

ISSUER = "hub"
_ALGORITHM = "HS256"


class AccessTokens:
    def __init__(self, secret: str, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, user: dict, now: datetime) -> str:
        claims = {
            "iss": ISSUER,
            "sub": user["_id"],
            "roles": list(user.get("roles", ["customer"])),
            "typ": "access",
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_s)).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> tuple[Caller, int]:
        """The caller a token stands for and its expiry (epoch seconds)."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("The access token is invalid.", code="invalid_token") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("roles"), list):
            raise Unauthorized("The access token is invalid.", code="invalid_token")
        return Caller(kind="user", id=str(claims["sub"]), roles=frozenset(claims["roles"])), int(claims["exp"])


def new_refresh_token() -> tuple[str, str]:
    """A fresh refresh token and the digest under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_digest(token)


def refresh_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
