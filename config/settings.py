"""Every setting of the hub, read once from the environment at start-up.

`load_settings()` either returns a complete, validated `Settings` or raises
`SettingsError` whose message is one line naming the offending variable; `run.py`
prints it and exits with code 2.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import ssl
from decimal import Decimal
from typing import Literal, Mapping
from urllib.parse import urlsplit

from domain.users import normalize_email
from hub.adapters.outgoing import parse_allowed_hosts
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def _url_with_scheme(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    try:
        parts.port  # raises on a non-numeric port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


class Settings(BaseModel):
    """Field aliases are the environment variable names (see README, CONTRACT §1)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    host: str = Field("127.0.0.1", alias="HUB_HOST", min_length=1)
    port: int = Field(8888, alias="HUB_PORT", ge=0, le=65535)
    env: Literal["development", "test", "production"] = Field("development", alias="HUB_ENV")

    mongodb_uri: str | None = Field(None, alias="MONGODB_URI")
    mongodb_db: str = Field("hub", alias="MONGODB_DB", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    redis_prefix: str = Field("hub:", alias="HUB_REDIS_PREFIX", max_length=64)
    kafka_bootstrap_servers: str | None = Field(None, alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_topic_prefix: str = Field("", alias="KAFKA_TOPIC_PREFIX", pattern=r"^[A-Za-z0-9._-]*$")
    kafka_partitions: int = Field(3, alias="HUB_KAFKA_PARTITIONS", ge=1)
    kafka_replication_factor: int = Field(1, alias="HUB_KAFKA_REPLICATION_FACTOR", ge=1)
    kafka_session_timeout_ms: int | None = Field(None, alias="HUB_KAFKA_SESSION_TIMEOUT_MS", ge=1000, le=300_000)
    kafka_fetch_max_wait_ms: int | None = Field(None, alias="HUB_KAFKA_FETCH_MAX_WAIT_MS", ge=1, le=10_000)

    jwt_secret: str | None = Field(None, alias="JWT_SECRET")
    access_token_ttl_s: int = Field(900, alias="HUB_ACCESS_TOKEN_TTL_S", gt=0)
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, alias="HUB_REFRESH_TOKEN_TTL_S", gt=0)
    admin_email: str | None = Field(None, alias="HUB_ADMIN_EMAIL")
    admin_password: str | None = Field(None, alias="HUB_ADMIN_PASSWORD")
    service_keys: str | None = Field(None, alias="HUB_SERVICE_KEYS")

    smtp_url: str | None = Field(None, alias="SMTP_URL")
    smtp_from: str | None = Field(None, alias="SMTP_FROM")
    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_from: str | None = Field(None, alias="TWILIO_FROM")
    twilio_api_base: str = Field("https://api.twilio.com", alias="TWILIO_API_BASE")
    vapid_private_key: str | None = Field(None, alias="VAPID_PRIVATE_KEY")
    vapid_public_key: str | None = Field(None, alias="VAPID_PUBLIC_KEY")
    vapid_subject: str | None = Field(None, alias="VAPID_SUBJECT")
    stripe_api_key: str | None = Field(None, alias="STRIPE_API_KEY")
    stripe_webhook_secret: str | None = Field(None, alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str = Field("https://api.stripe.com", alias="STRIPE_API_BASE")

    order_payment_timeout_s: int = Field(1800, alias="ORDER_PAYMENT_TIMEOUT_S", gt=0)
    currency: str = Field("USD", alias="HUB_CURRENCY", pattern=r"^[A-Z]{3}$")
    event_source: str = Field("/hub", alias="HUB_EVENT_SOURCE", min_length=1, max_length=200)
    sweep_interval_s: float = Field(5.0, alias="HUB_SWEEP_INTERVAL_S", gt=0)
    points_per_unit: Decimal = Field(Decimal(1), alias="POINTS_PER_UNIT", ge=0)
    points_ttl_days: int = Field(365, alias="POINTS_TTL_DAYS", gt=0)

    # Operational extras beyond the contract.
    cors_origins: str | None = Field(None, alias="HUB_CORS_ORIGINS")
    max_body_bytes: int = Field(1024 * 1024, alias="HUB_MAX_BODY_BYTES", gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="HUB_LOG_LEVEL")
    auth_rate_per_ip: int = Field(300, alias="HUB_AUTH_RATE_PER_IP", gt=0)
    auth_rate_per_account: int = Field(30, alias="HUB_AUTH_RATE_PER_ACCOUNT", gt=0)
    public_url: str | None = Field(None, alias="HUB_PUBLIC_URL")
    provider_timeout_s: float = Field(10.0, alias="HUB_PROVIDER_TIMEOUT_S", gt=0)
    notify_retry_base_s: float = Field(40.0, alias="HUB_NOTIFY_RETRY_BASE_S", gt=0)
    notify_max_attempts: int = Field(5, alias="HUB_NOTIFY_MAX_ATTEMPTS", ge=1, le=20)
    notify_concurrency: int = Field(256, alias="HUB_NOTIFY_CONCURRENCY", ge=1)
    ws_history_size: int = Field(1000, alias="HUB_WS_HISTORY_SIZE", ge=1, le=100_000)
    ws_history_ttl_s: int = Field(86400, alias="HUB_WS_HISTORY_TTL_S", ge=1)
    ws_max_connections_per_user: int = Field(20, alias="HUB_WS_MAX_CONNECTIONS_PER_USER", ge=1)
    ws_max_connections_per_ip: int = Field(1000, alias="HUB_WS_MAX_CONNECTIONS_PER_IP", ge=1)
    ws_send_buffer_bytes: int = Field(1024 * 1024, alias="HUB_WS_SEND_BUFFER_BYTES", ge=64 * 1024)
    demo: bool = Field(False, alias="HUB_DEMO")  # seed demo products and accounts (hub/wiring/demo.py)
    push_allowed_hosts: str | None = Field(None, alias="HUB_PUSH_ALLOWED_HOSTS")  # hub/adapters/outgoing.py
    extra_ca_file: str | None = Field(None, alias="HUB_EXTRA_CA_FILE")

    # Native mobile push (CONTRACT v2 §5; docs/notifications.md "Mobile push").
    apns_key_file: str | None = Field(None, alias="APNS_KEY_FILE")
    apns_key_id: str | None = Field(None, alias="APNS_KEY_ID", pattern=r"^[A-Z0-9]{10}$")
    apns_team_id: str | None = Field(None, alias="APNS_TEAM_ID", pattern=r"^[A-Z0-9]{10}$")
    apns_topic: str | None = Field(None, alias="APNS_TOPIC", pattern=r"^[A-Za-z0-9.-]{1,200}$")
    apns_base_url: str = Field("https://api.push.apple.com", alias="APNS_BASE_URL")
    apns_sandbox_base_url: str = Field("https://api.sandbox.push.apple.com", alias="APNS_SANDBOX_BASE_URL")
    fcm_service_account_file: str | None = Field(None, alias="FCM_SERVICE_ACCOUNT_FILE")
    fcm_project_id: str | None = Field(None, alias="FCM_PROJECT_ID", pattern=r"^[a-z0-9-]{1,100}$")
    fcm_base_url: str = Field("https://fcm.googleapis.com", alias="FCM_BASE_URL")

    # Cart, coupons and points at checkout (CONTRACT v2 §5; docs/cart.md).
    points_per_currency_unit: int = Field(100, alias="HUB_POINTS_PER_CURRENCY_UNIT", ge=1, le=1_000_000)
    cart_reminder_after_s: int = Field(3600, alias="HUB_CART_REMINDER_AFTER_S", gt=0)
    cart_max_items: int = Field(50, alias="HUB_CART_MAX_ITEMS", ge=1, le=100)
    kafka_idle_fetch_max_wait_ms: int | None = Field(None, alias="HUB_KAFKA_IDLE_FETCH_MAX_WAIT_MS", ge=1, le=10_000)

    # Accounts and SMS abuse limits (issue 12; docs/security.md).
    auth_failures_per_ip: int = Field(100, alias="HUB_AUTH_FAILURES_PER_IP", gt=0)  # failed sign-ins per client per hour
    sms_allowed_countries: str | None = Field(None, alias="HUB_SMS_ALLOWED_COUNTRIES")
    sms_max_per_day: int = Field(20, alias="HUB_SMS_MAX_PER_DAY", ge=0, le=10_000)

    redis_cluster: bool = Field(False, alias="REDIS_CLUSTER")  # REDIS_URL names one node of a Redis Cluster

    # Abuse limits (docs/security.md).
    trusted_proxies: str | None = Field(None, alias="HUB_TRUSTED_PROXIES")
    order_rate_per_user: int = Field(60, alias="HUB_ORDER_RATE_PER_USER", ge=1)
    max_unpaid_orders: int = Field(10, alias="HUB_MAX_UNPAID_ORDERS", ge=1)
    max_line_quantity: int = Field(100, alias="HUB_MAX_LINE_QUANTITY", ge=1, le=1000)  # domain.orders.MAX_QUANTITY
    body_timeout_s: float = Field(30.0, alias="HUB_BODY_TIMEOUT_S", gt=0)
    max_connections: int = Field(10_000, alias="HUB_MAX_CONNECTIONS", ge=1)
    max_connections_per_ip: int = Field(256, alias="HUB_MAX_CONNECTIONS_PER_IP", ge=1)
    ws_anonymous_max_subscriptions: int = Field(20, alias="HUB_WS_ANONYMOUS_MAX_SUBSCRIPTIONS", ge=1)
    ws_anonymous_idle_s: float = Field(120.0, alias="HUB_WS_ANONYMOUS_IDLE_S", gt=0)
    # Broadcasts (CONTRACT v2 §5; docs/notifications.md).
    broadcast_batch_size: int = Field(500, alias="HUB_BROADCAST_BATCH_SIZE", ge=1, le=10_000)
    broadcast_concurrency: int = Field(128, alias="HUB_BROADCAST_CONCURRENCY", ge=1, le=10_000)

    @field_validator("apns_base_url", "apns_sandbox_base_url", "fcm_base_url")
    @classmethod
    def _provider_url(cls, v: str) -> str:
        return _url_with_scheme(v, ("http", "https")).rstrip("/")

    @model_validator(mode="after")
    def _apns_together(self) -> Settings:
        apns = {"APNS_KEY_FILE": self.apns_key_file, "APNS_KEY_ID": self.apns_key_id,
                "APNS_TEAM_ID": self.apns_team_id, "APNS_TOPIC": self.apns_topic}
        if any(apns.values()) and not all(apns.values()):
            missing = next(name for name, value in apns.items() if not value)
            raise ValueError(f"{missing}: APNs needs {', '.join(apns)} set together")
        return self
    @field_validator("admin_email")
    @classmethod
    def _admin_email(cls, v: str | None) -> str | None:
        return v and normalize_email(v)

    @field_validator("mongodb_uri")
    @classmethod
    def _mongo(cls, v: str | None) -> str | None:
        return v and _url_with_scheme(v, ("mongodb", "mongodb+srv"))

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        return v and _url_with_scheme(v, ("redis", "rediss", "unix"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, v: str | None) -> str | None:
        return v and _url_with_scheme(v, ("smtp", "smtps"))

    @field_validator("twilio_api_base", "stripe_api_base", "public_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        return v and _url_with_scheme(v, ("http", "https")).rstrip("/")

    @field_validator("push_allowed_hosts")
    @classmethod
    def _push_hosts(cls, v: str | None) -> str | None:
        if v is not None:
            parse_allowed_hosts(v)
        return v

    @field_validator("extra_ca_file")
    @classmethod
    def _ca_file(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ssl.create_default_context().load_verify_locations(cafile=v)
            except (OSError, ssl.SSLError):
                raise ValueError("must be a readable file of PEM certificates") from None
        return v

    @field_validator("sms_allowed_countries")
    @classmethod
    def _calling_codes(cls, v: str | None) -> str | None:
        if v is None:
            return None
        codes = [code.removeprefix("+") for code in _split_list(v)]
        if not codes or not all(re.fullmatch(r"[1-9]\d{0,2}", code) for code in codes):
            raise ValueError("must be a comma-separated list of country calling codes such as 1,44")
        return ",".join(codes)
    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return ",".join(str(ipaddress.ip_network(item, strict=False)) for item in _split_list(v))
        except ValueError:
            raise ValueError("must be a comma-separated list of IP addresses or CIDRs") from None

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _kafka(cls, v: str | None) -> str | None:
        if v is None:
            return None
        servers = _split_list(v)
        if not servers or not all(re.fullmatch(r"[^:,\s]+:\d{1,5}", s) for s in servers):
            raise ValueError("must be a comma-separated list of host:port")
        return ",".join(servers)

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        if bool(self.admin_email) != bool(self.admin_password):
            missing = "HUB_ADMIN_PASSWORD" if self.admin_email else "HUB_ADMIN_EMAIL"
            raise ValueError(f"{missing}: must be set together with the other admin variable")
        if self.admin_password is not None and len(self.admin_password) < 8:
            raise ValueError("HUB_ADMIN_PASSWORD: must be at least 8 characters")
        return self

    @model_validator(mode="after")
    def _redis_cluster(self) -> Settings:
        if self.redis_cluster and not (self.redis_url or "").startswith(("redis://", "rediss://")):
            raise ValueError("REDIS_CLUSTER: needs REDIS_URL, redis:// or rediss:// (a node of the cluster)")
        # Keys carry a hash tag in braces (hub/live/realtime.py); a brace in the prefix would break it.
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            raise ValueError("HUB_REDIS_PREFIX: must not contain { or }")
        return self

    # Derived views ------------------------------------------------------------
    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def public_base_url(self) -> str:
        """HUB_PUBLIC_URL, else where this process listens: the base of links the hub sends."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def service_key_list(self) -> list[str]:
        return _split_list(self.service_keys)

    @property
    def cors_origin_list(self) -> list[str]:
        return _split_list(self.cors_origins)

    @property
    def push_allowed_host_list(self) -> tuple[str, ...]:
        return parse_allowed_hosts(self.push_allowed_hosts)

    @property
    def sms_country_codes(self) -> tuple[str, ...]:
        return tuple(_split_list(self.sms_allowed_countries))

    def topic(self, name: str) -> str:
        """The Kafka topic name for a CONTRACT §3 topic, with the configured prefix."""
        return f"{self.kafka_topic_prefix}{name}"


# Production must be told where every real service is and every secret it signs with.
_REQUIRED_IN_PRODUCTION = ("MONGODB_URI", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET")


def load_settings(environ: Mapping[str, str]) -> Settings:
    values = {k: v for k, v in environ.items() if v != ""}
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    settings = _with_vapid_keys(settings)
    _check_mobile_push(settings)

    if settings.demo and (settings.production or not _loopback(settings.host)):
        # The demo's accounts have published passwords: never where others can reach them.
        raise SettingsError("HUB_DEMO: demo data (python run.py --demo) is only for development, with HUB_HOST "
                            "on loopback (127.0.0.1, ::1 or localhost), never with HUB_ENV=production")
    if settings.production:
        _production_guard(settings, values)
        return settings

    if settings.jwt_secret is None:
        # Random per run: tokens die with the process, which is what development wants.
        settings = settings.model_copy(update={"jwt_secret": secrets.token_urlsafe(32)})
    return settings


# Where provider requests go (CONTRACT §1 and §5): production sends them over https only.
_PROVIDER_BASE_URLS = ("TWILIO_API_BASE", "STRIPE_API_BASE")  # APNs and FCM: _check_mobile_push
# Passwords, words and key runs that make an admin password trivially guessable.
_COMMON_PASSWORD_PARTS = ("password", "passwort", "passw", "admin", "administrator", "changeme", "letmein",
                          "welcome", "secret", "default", "qwerty", "qwertz", "azerty", "asdfgh", "zxcvbn", "iloveyou",
                          "monkey", "dragon", "master", "login", "root", "hub")
_LEET = str.maketrans("@4310$57!", "aaeiossti")


def _production_guard(settings: Settings, values: Mapping[str, str]) -> None:
    """What HUB_ENV=production insists on; the first unsafe setting raises SettingsError."""
    for name in _REQUIRED_IN_PRODUCTION:
        if name not in values:
            raise SettingsError(f"{name}: required when HUB_ENV=production (no embedded fallback or default)")
    if len(settings.jwt_secret or "") < 32:
        raise SettingsError("JWT_SECRET: must be at least 32 characters when HUB_ENV=production")
    if any(len(key) < 16 for key in settings.service_key_list):
        raise SettingsError("HUB_SERVICE_KEYS: every key must be at least 16 characters when HUB_ENV=production")
    for name in _PROVIDER_BASE_URLS:
        if name in values and urlsplit(values[name]).scheme != "https":
            raise SettingsError(f"{name}: must be an https:// URL when HUB_ENV=production")
    # A provider whose callbacks cannot be verified would take anyone's word for a payment or a delivery.
    if settings.stripe_api_key and not settings.stripe_webhook_secret:
        raise SettingsError("STRIPE_WEBHOOK_SECRET: required with STRIPE_API_KEY when HUB_ENV=production "
                            "(webhooks could not be verified)")
    if settings.twilio_account_sid and not settings.twilio_auth_token:
        raise SettingsError("TWILIO_AUTH_TOKEN: required with TWILIO_ACCOUNT_SID when HUB_ENV=production "
                            "(status callbacks could not be verified)")
    if settings.admin_password is not None and _weak_password(settings.admin_password, settings.admin_email or ""):
        raise SettingsError("HUB_ADMIN_PASSWORD: too weak for HUB_ENV=production (at least 12 characters, not "
                            "built on a common password, a run of keys or the admin address)")


def _weak_password(password: str, email: str) -> bool:
    """Shorter than 12, or trivial once common words, the address's name and look-alike
    digits are taken out (what is left must be 8 characters, 5 of them different), or
    mostly a run of neighbouring characters (123456789012, abcdefghijkl)."""
    if len(password) < 12:
        return True
    rest = password.lower().translate(_LEET)
    for word in sorted((*_COMMON_PASSWORD_PARTS, email.partition("@")[0].translate(_LEET)), key=len, reverse=True):
        if len(word) >= 3:
            rest = rest.replace(word, "")
    steps = [abs(ord(b) - ord(a)) for a, b in zip(password, password[1:])]
    return len(rest) < 8 or len(set(rest)) < 5 or sum(step <= 1 for step in steps) >= 0.75 * len(steps)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _with_vapid_keys(settings: Settings) -> Settings:
    """The public key is derived from the private one (a mismatch is refused). In
    development keys are generated per run when unset; production without them has no
    web push (said at start-up)."""
    from channels.vapid import generate_vapid_keys, public_key_for

    if settings.vapid_private_key is None:
        if settings.production:
            return settings
        private, public = generate_vapid_keys()
        return settings.model_copy(update={"vapid_private_key": private, "vapid_public_key": public})
    try:
        public = public_key_for(settings.vapid_private_key)
    except ValueError:
        raise SettingsError("VAPID_PRIVATE_KEY: not a P-256 private key (base64url raw key, PEM or DER)") from None
    if settings.vapid_public_key not in (None, public):
        raise SettingsError("VAPID_PUBLIC_KEY: does not match VAPID_PRIVATE_KEY")
    return settings.model_copy(update={"vapid_public_key": public})


def _check_mobile_push(settings: Settings) -> None:
    """The APNs key and the FCM service account are read now, so a bad file stops start-up
    with one line instead of failing every send. Production talks to providers over https only."""
    from channels.apns import load_signing_key
    from channels.fcm import load_service_account

    if settings.apns_key_file:
        try:
            load_signing_key(settings.apns_key_file)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"APNS_KEY_FILE: {exc}") from None
    if settings.fcm_service_account_file:
        try:
            load_service_account(settings.fcm_service_account_file, settings.fcm_project_id)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"FCM_SERVICE_ACCOUNT_FILE: {exc}") from None
    if settings.production:
        for name, url in (("APNS_BASE_URL", settings.apns_base_url),
                          ("APNS_SANDBOX_BASE_URL", settings.apns_sandbox_base_url),
                          ("FCM_BASE_URL", settings.fcm_base_url)):
            if not url.startswith("https://"):
                raise SettingsError(f"{name}: must be https when HUB_ENV=production")


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else ""
    message = error["msg"].removeprefix("Value error, ")
    if not name and ":" in message:  # model-level checks name their variable themselves
        return message
    value = error.get("input")
    # Values are echoed to help the operator, except where they may hold a secret (URLs
    # carry credentials in many malformed shapes, so they are never echoed either).
    sensitive = any(marker in name for marker in ("SECRET", "PASSWORD", "TOKEN", "KEY", "SID", "URI", "URL"))
    shown = f" (got {value!r})" if isinstance(value, str) and not sensitive else ""
    return f"{name}: {message}{shown}"
