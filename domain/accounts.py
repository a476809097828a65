"""Accounts: registration, sign-in with lockout, refresh-token rotation with reuse
detection, logout, profiles and the bootstrap admin.

The stores are passed in (see hub/stores/users.py, hub/stores/refresh_tokens.py and
hub/stores/login_failures.py); this module decides, they persist.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from domain.clock import utcnow
from domain.errors import Conflict, Invalid, Locked, NotFound, Unauthorized
from domain.tokens import AccessTokens, new_refresh_token, refresh_token_digest
from domain.unsubscribe import without_category
from domain.users import DEFAULT_LOCALE, DEFAULT_TIMEZONE, sms_allowed

log = logging.getLogger(__name__)

# Failed sign-ins in a row, per account and client address, that lock the account for
# that address (CONTRACT §2 v2: a stranger elsewhere cannot lock the owner out). Failures
# older than LOCKOUT are forgotten.
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)


def client_key(address: str) -> str:
    """The client a lockout counts against: the IPv4 address, or the IPv6 /64 (one host
    commonly holds a whole /64, so its addresses are one client)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Accounts:
    def __init__(self, users, refresh_tokens, access_tokens: AccessTokens, refresh_ttl_s: int,
                 clock: Callable[[], datetime] = utcnow, *, login_failures,
                 sms_countries: tuple[str, ...] = ()) -> None:
        self.users = users
        self.refresh_tokens = refresh_tokens
        self.login_failures = login_failures
        self.sms_countries = sms_countries  # calling codes a phone number may have; empty: any
        self.access_tokens = access_tokens
        self.refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self.clock = clock
        # OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): a brute-force guess stays
        # expensive while one sign-in costs ~25 ms of one core instead of ~150 ms.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        # One core is left to the event loop, so a flood of sign-ins slows sign-ins, not the hub.
        self._hashing = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1),
                                           thread_name_prefix="password-hash")
        self._dummy_hash: str | None = None

    def close(self) -> None:
        """Let the password-hashing threads go (at shutdown)."""
        self._hashing.shutdown(wait=False, cancel_futures=True)

    # Passwords are hashed in worker threads of their own: argon2 takes tens of milliseconds
    # by design and must not stall the event loop, and a flood of sign-ins must not queue
    # ahead of what else runs in the loop's default executor (DNS lookups among them).
    async def _hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._hashing, self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._hashing, self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def register(self, *, email: str, password: str, name: str | None = None, phone: str | None = None,
                       timezone: str | None = None, locale: str | None = None, roles: tuple[str, ...] = ("customer",)) -> dict:
        """Create a user and sign them in. A taken email raises Conflict (unique index)."""
        self._check_phone(phone)
        user = {
            "_id": uuid.uuid4().hex,
            "email": email,
            "password_hash": await self._hash(password),
            "name": name,
            "phone": phone,
            "timezone": timezone or DEFAULT_TIMEZONE,
            "locale": locale or DEFAULT_LOCALE,
            "roles": list(roles),
            "created_at": self.clock(),
        }
        await self.users.insert(user)
        return await self._session(user)

    async def login(self, email: str, password: str, client: str) -> dict:
        """Sign in from client address `client`. Unknown addresses are answered, counted and
        locked exactly like known ones, so neither timing nor lockout tells which exist."""
        now = self.clock()
        client = client_key(client)
        failures = await self.login_failures.get(email, client)
        locked_until = failures and failures.get("locked_until")
        if locked_until and locked_until > now:
            retry_after = int((locked_until - now).total_seconds()) + 1
            raise Locked("Too many failed sign-ins from here; the account is locked for a while.",
                         details={"retry_after": retry_after, "locked_until": locked_until.isoformat()})
        user = await self.users.by_email(email)
        if user is None:
            # Spend the same time as a real check so response times do not reveal which emails exist.
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(uuid.uuid4().hex)
            await self._verify(self._dummy_hash, password)
        if user is None or not await self._verify(user["password_hash"], password):
            if await self.login_failures.record_failure(email, client, MAX_FAILED_LOGINS, now + LOCKOUT):
                log.warning("account locked for one client address after repeated failed sign-ins",
                            extra={"user_id": user and user["_id"], "client": client})
            raise Unauthorized("Email or password is wrong.", code="invalid_credentials")
        if failures:
            await self.login_failures.clear(email, client)
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

    async def logout(self, token: str) -> None:
        """Sign out the session `token` belongs to: every token of its family dies, whether
        this one is current or already used. An unknown token is ignored (RFC 7009)."""
        known = await self.refresh_tokens.get(refresh_token_digest(token))
        if known is not None:
            await self.refresh_tokens.revoke_family(known["family"])

    async def user(self, user_id: str) -> dict:
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound("No such user.", code="user_not_found")
        return user

    async def update_profile(self, user_id: str, changes: dict) -> dict:
        self._check_phone(changes.get("phone"))
        user = await self.users.update_profile(user_id, changes)
        if user is None:
            raise NotFound("No such user.", code="user_not_found")
        return user

    async def unsubscribe(self, user_id: str, channel: str, category: str) -> None:
        """Turns one category off on one channel (a one-click unsubscribe link, no sign-in)."""
        user = await self.user(user_id)
        await self.users.set_channel_preference(
            user_id, channel, without_category(user.get("preferences"), channel, category))

    async def ensure_admin(self, email: str, password: str) -> None:
        """Create the bootstrap admin if missing. An existing admin is left as it is (its
        password is never overwritten, so an operator's later change sticks). An existing
        non-admin raises Conflict: promoting it would make admin whoever registered the
        address first (CONTRACT §5)."""
        user = await self.users.by_email(email)
        if user is None:
            try:
                await self.register(email=email, password=password, roles=("customer", "admin"))
                log.info("bootstrap admin created", extra={"email": email})
                return
            except Conflict:  # another hub process created it first
                user = await self.users.by_email(email)
        if "admin" not in user.get("roles", []):
            raise Conflict(f"{email} belongs to an account that is not an admin (someone registered it); "
                           "it is never promoted: remove that account or choose another address",
                           code="admin_email_taken")

    def _check_phone(self, phone: str | None) -> None:
        if phone and not sms_allowed(phone, self.sms_countries):
            raise Invalid("Some fields are invalid.", details=[{
                "field": "phone",
                "message": f"SMS cannot go to this country; allowed calling codes: {', '.join(self.sms_countries)}"}])

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
