"""Unit tests of config.settings.load_settings (CONTRACT §1): defaults, one-line errors
naming the variable, secrets never echoed, and what HUB_ENV=production insists on."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.settings import Settings, SettingsError, load_settings

# A complete production environment; tests take pieces away or spoil one of them.
PRODUCTION = {
    "HUB_ENV": "production",
    "MONGODB_URI": "mongodb://db.example.com:27017",
    "REDIS_URL": "redis://cache.example.com:6379/0",
    "KAFKA_BOOTSTRAP_SERVERS": "k1.example.com:9092,k2.example.com:9092",
    "JWT_SECRET": "prod-signing-key-0123456789abcdefghij",
}


def settings_error(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    return str(info.value)


def assert_one_line_naming(message: str, variable: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{variable}:"), message
    assert message[len(variable) + 1:].strip(), f"no explanation after the variable name: {message!r}"


# Defaults ---------------------------------------------------------------------------
def test_defaults():
    settings = load_settings({})
    assert isinstance(settings, Settings)
    assert settings.port == 8888
    assert settings.host == "127.0.0.1"
    assert settings.env == "development"
    assert not settings.production
    assert settings.mongodb_db == "hub"
    # Unset means "use the embedded stand-in".
    assert settings.mongodb_uri is None
    assert settings.redis_url is None
    assert settings.kafka_bootstrap_servers is None
    assert settings.kafka_topic_prefix == ""
    assert settings.order_payment_timeout_s == 1800
    assert settings.points_per_unit == Decimal(1)
    assert settings.service_key_list == []


def test_development_jwt_secret_is_random_per_load():
    first, second = load_settings({}).jwt_secret, load_settings({}).jwt_secret
    assert isinstance(first, str) and len(first) >= 32
    assert len(second) >= 32
    assert first != second


def test_explicit_jwt_secret_is_kept_in_development():
    assert load_settings({"JWT_SECRET": "my-own-secret"}).jwt_secret == "my-own-secret"


def test_empty_values_mean_unset():
    settings = load_settings({"HUB_PORT": "", "HUB_ENV": "", "MONGODB_URI": "", "JWT_SECRET": ""})
    assert settings.port == 8888
    assert settings.env == "development"
    assert settings.mongodb_uri is None
    assert len(settings.jwt_secret) >= 32


@pytest.mark.parametrize("prefix, expected", [(None, "orders"), ("acme.", "acme.orders"), ("t-1_", "t-1_orders")])
def test_topic_prefix(prefix, expected):
    environ = {} if prefix is None else {"KAFKA_TOPIC_PREFIX": prefix}
    assert load_settings(environ).topic("orders") == expected


def test_values_are_parsed():
    settings = load_settings({
        "HUB_HOST": "0.0.0.0", "HUB_PORT": "9000", "HUB_ENV": "test", "MONGODB_DB": "shop",
        "KAFKA_BOOTSTRAP_SERVERS": " a:1 , b:2 ", "HUB_SERVICE_KEYS": "k1, k2,,",
        "ORDER_PAYMENT_TIMEOUT_S": "60", "POINTS_PER_UNIT": "2.5",
    })
    assert (settings.host, settings.port, settings.env, settings.mongodb_db) == ("0.0.0.0", 9000, "test", "shop")
    assert settings.kafka_bootstrap_servers == "a:1,b:2"
    assert settings.service_key_list == ["k1", "k2"]
    assert settings.order_payment_timeout_s == 60
    assert settings.points_per_unit == Decimal("2.5")


# Bad values: one line, starting with the variable's name ------------------------------
@pytest.mark.parametrize("environ, variable", [
    ({"HUB_PORT": "abc"}, "HUB_PORT"),
    ({"HUB_PORT": "70000"}, "HUB_PORT"),
    ({"HUB_PORT": "-1"}, "HUB_PORT"),
    ({"HUB_ENV": "staging"}, "HUB_ENV"),
    ({"MONGODB_URI": "http://x"}, "MONGODB_URI"),
    ({"MONGODB_URI": "mongodb://db.example.com:port/hub"}, "MONGODB_URI"),
    ({"MONGODB_DB": "a/b"}, "MONGODB_DB"),
    ({"REDIS_URL": "foo"}, "REDIS_URL"),
    ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"KAFKA_BOOTSTRAP_SERVERS": "a:1,\nb"}, "KAFKA_BOOTSTRAP_SERVERS"),
    ({"KAFKA_TOPIC_PREFIX": "bad prefix"}, "KAFKA_TOPIC_PREFIX"),
    ({"HUB_KAFKA_FETCH_MAX_WAIT_MS": "0"}, "HUB_KAFKA_FETCH_MAX_WAIT_MS"),
    ({"HUB_WS_HISTORY_SIZE": "0"}, "HUB_WS_HISTORY_SIZE"),
    ({"HUB_WS_SEND_BUFFER_BYTES": "1000"}, "HUB_WS_SEND_BUFFER_BYTES"),
    ({"HUB_WS_MAX_CONNECTIONS_PER_IP": "zero"}, "HUB_WS_MAX_CONNECTIONS_PER_IP"),
    ({"SMTP_URL": "http://x"}, "SMTP_URL"),
    ({"STRIPE_API_BASE": "ftp://stripe.example.com"}, "STRIPE_API_BASE"),
    ({"ORDER_PAYMENT_TIMEOUT_S": "-1"}, "ORDER_PAYMENT_TIMEOUT_S"),
    ({"POINTS_PER_UNIT": "abc"}, "POINTS_PER_UNIT"),
    ({"HUB_LOG_LEVEL": "LOUD"}, "HUB_LOG_LEVEL"),
    ({"HUB_ADMIN_EMAIL": "admin@example.com"}, "HUB_ADMIN_PASSWORD"),
    ({"HUB_ADMIN_PASSWORD": "correct-horse"}, "HUB_ADMIN_EMAIL"),
    ({"HUB_ADMIN_EMAIL": "not-an-email", "HUB_ADMIN_PASSWORD": "correct-horse"}, "HUB_ADMIN_EMAIL"),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={val!r}" for k, val in v.items()))
def test_bad_value_is_one_line_naming_the_variable(environ, variable):
    assert_one_line_naming(settings_error(environ), variable)


# Secrets are never echoed -----------------------------------------------------------
@pytest.mark.parametrize("environ, variable, secret", [
    ({"MONGODB_URI": "mongodb://user:hunter2@host:xx"}, "MONGODB_URI", "hunter2"),
    ({"MONGODB_URI": "http://user:hunter2@host"}, "MONGODB_URI", "hunter2"),
    ({"REDIS_URL": "redis://:hunter2@cache:notaport/0"}, "REDIS_URL", "hunter2"),
    ({"SMTP_URL": "smtp://mailer:hunter2@mail.example.com:port"}, "SMTP_URL", "hunter2"),
    ({"HUB_ADMIN_EMAIL": "admin@example.com", "HUB_ADMIN_PASSWORD": "hunter2"}, "HUB_ADMIN_PASSWORD", "hunter2"),
    ({**PRODUCTION, "JWT_SECRET": "hunter2-but-too-short"}, "JWT_SECRET", "hunter2"),
    ({**PRODUCTION, "HUB_SERVICE_KEYS": "a-long-enough-service-key-0001,hunter2"}, "HUB_SERVICE_KEYS", "hunter2"),
], ids=["mongodb-bad-port", "mongodb-bad-scheme", "redis", "smtp", "admin-password", "jwt-secret", "service-key"])
def test_secrets_are_not_echoed(environ, variable, secret):
    message = settings_error(environ)
    assert_one_line_naming(message, variable)
    assert secret not in message


@pytest.mark.parametrize("uri", [
    "admin:hunter2@db.example.com:27017",        # scheme forgotten
    "mongodb://user:hun/ter2@db.example.com:27017",  # unencoded '/' in the password
    "redis://h:xx/0?password=hunter2",
])
def test_credentials_in_malformed_uri_are_not_echoed(uri):
    message = settings_error({"MONGODB_URI": uri})
    assert_one_line_naming(message, "MONGODB_URI")
    assert "hunter2" not in message and "ter2" not in message


# Production ---------------------------------------------------------------------------
def test_complete_production_environment_loads():
    settings = load_settings({**PRODUCTION, "HUB_SERVICE_KEYS": "service-key-0123456789,other-key-0123456789"})
    assert settings.production
    assert settings.jwt_secret == PRODUCTION["JWT_SECRET"]
    assert settings.mongodb_uri == PRODUCTION["MONGODB_URI"]
    assert settings.redis_url == PRODUCTION["REDIS_URL"]
    assert settings.kafka_bootstrap_servers == PRODUCTION["KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.service_key_list == ["service-key-0123456789", "other-key-0123456789"]


@pytest.mark.parametrize("variable", ["MONGODB_URI", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "JWT_SECRET"])
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_production_requires(variable, how):
    environ = dict(PRODUCTION)
    if how == "absent":
        del environ[variable]
    else:
        environ[variable] = ""
    assert_one_line_naming(settings_error(environ), variable)


def test_production_with_nothing_else_names_the_first_missing_variable():
    assert_one_line_naming(settings_error({"HUB_ENV": "production"}), "MONGODB_URI")


@pytest.mark.parametrize("length, ok", [(31, False), (32, True)])
def test_production_jwt_secret_length(length, ok):
    environ = {**PRODUCTION, "JWT_SECRET": "s" * length}
    if ok:
        assert load_settings(environ).jwt_secret == "s" * length
    else:
        assert_one_line_naming(settings_error(environ), "JWT_SECRET")


def test_production_refuses_a_short_service_key():
    environ = {**PRODUCTION, "HUB_SERVICE_KEYS": "service-key-0123456789,short"}
    assert_one_line_naming(settings_error(environ), "HUB_SERVICE_KEYS")


def test_short_service_key_is_fine_outside_production():
    assert load_settings({"HUB_SERVICE_KEYS": "short"}).service_key_list == ["short"]
