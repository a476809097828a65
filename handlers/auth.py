"""POST /api/v1/auth/register, /login, /refresh and /logout."""

from __future__ import annotations

from pydantic import Field

from domain.accounts import client_key
from domain.errors import DomainError, Unauthorized
from domain.users import public_user
from handlers.base import BaseHandler
from handlers.schemas import Body, Email, Locale, Name, Password, Phone, Timezone
from hub.wiring.metrics import AUTH_EVENTS


class RegisterBody(Body):
    email: Email
    password: Password
    name: Name | None = None
    phone: Phone | None = None
    timezone: Timezone | None = None
    locale: Locale | None = None


class LoginBody(Body):
    email: Email
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(Body):
    refresh_token: str = Field(min_length=1, max_length=512)


class AuthHandler(BaseHandler):
    async def limit(self, account: str | None = None) -> None:
        """Per-IP and (for sign-in) per-account rate limits, across hub processes."""
        settings = self.config
        await self.services.rate_limiter.hit(f"auth-ip:{self.client_ip}", settings.auth_rate_per_ip)
        if account:
            await self.services.rate_limiter.hit(f"auth-account:{account}", settings.auth_rate_per_account)

    def send_session(self, session: dict, status: int = 200) -> None:
        self.send({**session, "user": public_user(session["user"])}, status)


class RegisterHandler(AuthHandler):
    openapi = {"post": {"summary": "Create an account and sign in", "body": RegisterBody, "status": 201, "auth": None}}

    async def post(self) -> None:
        await self.limit()
        body = self.parse(RegisterBody)
        session = await self.services.accounts.register(**body.model_dump())
        AUTH_EVENTS.labels("registered").inc()
        self.send_session(session, 201)


class LoginHandler(AuthHandler):
    openapi = {"post": {"summary": "Sign in with email and password", "body": LoginBody, "auth": None}}

    async def post(self) -> None:
        body = self.parse(LoginBody)
        await self.limit(body.email)
        # Password spraying (a few guesses at many accounts) passes every per-account lock:
        # failures from one client, whatever the account, are capped per hour.
        spraying = f"auth-failures:{client_key(self.client_ip)}"
        await self.services.rate_limiter.check(spraying, self.config.auth_failures_per_ip, window_s=3600)
        try:
            session = await self.services.accounts.login(body.email, body.password, self.client_ip)
        except DomainError as exc:
            AUTH_EVENTS.labels(exc.code).inc()
            if isinstance(exc, Unauthorized):
                await self.services.rate_limiter.count(spraying, window_s=3600)
            raise
        AUTH_EVENTS.labels("login").inc()
        self.send_session(session)


class RefreshHandler(AuthHandler):
    openapi = {"post": {"summary": "Trade a refresh token for a new pair (the old one dies)", "body": RefreshBody, "auth": None}}

    async def post(self) -> None:
        await self.limit()
        body = self.parse(RefreshBody)
        try:
            session = await self.services.accounts.refresh(body.refresh_token)
        except DomainError as exc:
            AUTH_EVENTS.labels(exc.code).inc()
            raise
        AUTH_EVENTS.labels("refresh").inc()
        self.send_session(session)


class LogoutHandler(AuthHandler):
    openapi = {"post": {"summary": "Sign out: every refresh token of this session dies", "body": RefreshBody,
                        "status": 204, "auth": None}}

    async def post(self) -> None:
        await self.limit()
        body = self.parse(RefreshBody)
        await self.services.accounts.logout(body.refresh_token)
        AUTH_EVENTS.labels("logout").inc()
        self.set_status(204)
        self.finish()
