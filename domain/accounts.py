"""Accounts: registration, sign-in with lockout, refresh-token rotation with reuse
detection, profiles and the bootstrap admin.

The stores are passed in (see hub/store/users.py and hub/store/refresh_tokens.py);
this module decides, they persist.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from domain.clock import utcnow
from domain.errors import Conflict, Locked, NotFound, Unauthorized
from domain.tokens import AccessTokens, new_refresh_token, refresh_token_digest
from domain.users import DEFAULT_LOCALE, DEFAULT_TIMEZONE

log = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)


class Accounts:
    def __init__(self, users, refresh_tokens, access_tokens: AccessTokens, refresh_ttl_s: int,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.users = users
        self.refresh_tokens = refresh_tokens
        self.access_tokens = access_tokens
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self.clock = clock
        # OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): a brute-force guess stays
        # expensive while one sign-in costs ~25 ms of one core instead of ~150 ms.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self._dummy_hash: str | None = None

    # Passwords are hashed in a worker thread: argon2 takes tens of milliseconds by design
    # and must not stall the event loop.
    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def register(self, *, email: str, password: str, name: str | None = None, phone: str | None = None,
                       timezone: str | None = None, locale: str | None = None, roles: tuple[str, ...] = ("customer",)) -> dict:
        """Create a user and sign them in. A taken email raises Conflict (unique index)."""
        user = {
            "_id": uuid.uuid4().hex,
            "email": email,
            "password_hash": await self._hash(password),
            "name": name,
            "phone": phone,
            "timezone": timezone or DEFAULT_TIMEZONE,
            "locale": locale or DEFAULT_LOCALE,
            "roles": list(roles),
            "failed_logins": 0,
            "locked_until": None,
            "created_at": self.clock(),
        }
        await self.users.insert(user)
        return await self._session(user)

    async def login(self, email: str, password: str) -> dict:
        now = self.clock()
        user = await self.users.by_email(email)
        if user is None:
            # Spend the same time as a real check so response times do not reveal which emails exist.
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(uuid.uuid4().hex)
            await self._verify(self._dummy_hash, password)
            raise Unauthorized("Email or password is wrong.", code="invalid_credentials")
        locked_until = user.get("locked_until")
        if locked_until and locked_until > now:
            retry_after = int((locked_until - now).total_seconds()) + 1
            raise Locked("Too many failed sign-ins; the account is locked for a while.",
                         details={"retry_after": retry_after, "locked_until": locked_until.isoformat()})
        if not await self._verify(user["password_hash"], password):
            locked = await self.users.record_failed_login(user["_id"], MAX_FAILED_LOGINS, now + LOCKOUT)
            if locked:
                log.warning("account locked after repeated failed sign-ins", extra={"user_id": user["_id"]})
            raise Unauthorized("Email or password is wrong.", code="invalid_credentials")
        await self.users.record_successful_login(user["_id"])
        if self._hasher.check_needs_rehash(user["password_hash"]):
            await self.users.set_password_hash(user["_id"], await self._hash(password))
        return await self._session(user)

    async def refresh(self, token: str) -> dict:
        """Trade a refresh token for a new pair. Each token works once; presenting a used
        one again means it leaked, so the whole family (every token descended from that
        sign-in) is revoked."""
        now = self.clock()
        digest = refresh_token_digest(token)
        record = await self.refresh_tokens.consume(digest, now)
        if record is None:
            known = await self.refresh_tokens.get(digest)
            if known and known.get("used_at") and not known.get("revoked"):
                await self.refresh_tokens.revoke_family(known["family"])
                log.warning("refresh token reused; family revoked", extra={"user_id": known["user_id"]})
                raise Unauthorized("This refresh token was already used; its sessions are signed out.",
                                   code="refresh_token_reused")
            raise Unauthorized("The refresh token is invalid or expired.", code="invalid_refresh_token")
        user = await self.users.get(record["user_id"])
        if user is None:
            raise Unauthorized("The refresh token is invalid or expired.", code="invalid_refresh_token")
        return await self._session(user, family=record["family"])

    async def user(self, user_id: str) -> dict:
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound("No such user.", code="user_not_found")
        return user

    async def update_profile(self, user_id: str, changes: dict) -> dict:
        user = await self.users.update_profile(user_id, changes)
        if user is None:
            raise NotFound("No such user.", code="user_not_found")
        return user

    async def ensure_admin(self, email: str, password: str) -> None:
        """Create the bootstrap admin if missing; an existing user with that email is made
        admin. Its password is never overwritten, so an operator's later change sticks."""
        if await self.users.by_email(email) is None:
            try:
                await self.register(email=email, password=password, roles=("customer", "admin"))
                log.info("bootstrap admin created", extra={"email": email})
                return
            except Conflict:  # another hub process created it first
                pass
        await self.users.add_role(email, "admin")

    async def _session(self, user: dict, family: str | None = None) -> dict:
        now = self.clock()
        token, digest = new_refresh_token()
        await self.refresh_tokens.insert(
            digest=digest, user_id=user["_id"], family=family or uuid.uuid4().hex,
            created_at=now, expires_at=now + self.refresh_ttl,
        )
        return {
            "user": user,
            "access_token": self.access_tokens.issue(user, now),
            "refresh_token": token,
            "token_type": "Bearer",
            "expires_in": self.access_tokens.ttl_s,
        }
