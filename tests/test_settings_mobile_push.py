"""The native push settings (CONTRACT v2 §5): APNs and FCM off when unset (said at start-up),
their files read at start-up, one-line errors naming the variable, https in production."""

from __future__ import annotations

import json
import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config.settings import SettingsError, load_settings
from hub.wiring.lifecycle import Hub

APNS = {"APNS_KEY_ID": "KEY1234567", "APNS_TEAM_ID": "TEAM123456", "APNS_TOPIC": "com.example.shop"}


@pytest.fixture
def p8(tmp_path):
    path = tmp_path / "AuthKey.p8"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


@pytest.fixture
def account(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = {"type": "service_account", "project_id": "shop-prod", "private_key_id": "k1",
            "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
            "client_email": "hub@shop-prod.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"}
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    return str(path)


def error(environ: dict) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_point_at_apple_and_google_and_leave_both_off():
    settings = load_settings({})
    assert settings.apns_base_url == "https://api.push.apple.com"
    assert settings.apns_sandbox_base_url == "https://api.sandbox.push.apple.com"
    assert settings.fcm_base_url == "https://fcm.googleapis.com"
    assert settings.apns_key_file is None and settings.fcm_service_account_file is None


def test_complete_settings_load(p8, account):
    settings = load_settings({"APNS_KEY_FILE": p8, **APNS, "FCM_SERVICE_ACCOUNT_FILE": account,
                              "APNS_BASE_URL": "https://apns.internal:8443/"})
    assert settings.apns_base_url == "https://apns.internal:8443"
    assert settings.fcm_project_id is None  # the file's project is used (channels/fcm.py)


@pytest.mark.parametrize("missing", list(APNS))
def test_apns_settings_go_together(p8, missing):
    environ = {"APNS_KEY_FILE": p8, **APNS}
    del environ[missing]
    assert error(environ).startswith(f"{missing}:")


def test_an_unreadable_or_wrong_apns_key_is_refused_at_start(tmp_path, p8):
    assert error({"APNS_KEY_FILE": str(tmp_path / "nope.p8"), **APNS}).startswith("APNS_KEY_FILE:")
    rsa_key = tmp_path / "rsa.p8"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert error({"APNS_KEY_FILE": str(rsa_key), **APNS}) == "APNS_KEY_FILE: not a P-256 (ES256) key"
    assert error({"APNS_KEY_FILE": p8, **APNS, "APNS_KEY_ID": "short"}).startswith("APNS_KEY_ID:")


def test_a_bad_service_account_is_refused_at_start(tmp_path, account):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert error({"FCM_SERVICE_ACCOUNT_FILE": str(bad)}) == "FCM_SERVICE_ACCOUNT_FILE: not JSON"
    info = json.loads(open(account).read())
    del info["project_id"]
    bad.write_text(json.dumps(info))
    assert "FCM_PROJECT_ID" in error({"FCM_SERVICE_ACCOUNT_FILE": str(bad)})
    assert load_settings({"FCM_SERVICE_ACCOUNT_FILE": str(bad), "FCM_PROJECT_ID": "shop-prod"})


def test_production_wants_https_provider_urls(p8):
    production = {"HUB_ENV": "production", "MONGODB_URI": "mongodb://db:27017", "REDIS_URL": "redis://r:6379/0",
                  "KAFKA_BOOTSTRAP_SERVERS": "k:9092", "JWT_SECRET": "x" * 40}
    assert load_settings(production)
    assert error({**production, "APNS_BASE_URL": "http://apns.internal"}).startswith("APNS_BASE_URL:")
    assert error({**production, "FCM_BASE_URL": "http://fcm.internal"}).startswith("FCM_BASE_URL:")


def test_unset_providers_are_said_at_start_up(caplog):
    hub = Hub(load_settings({}))
    with caplog.at_level(logging.WARNING, logger="hub.wiring.lifecycle"):
        hub._announce_channels()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "APNS_KEY_FILE is unset: apns is off" in said
    assert "FCM_SERVICE_ACCOUNT_FILE is unset: fcm is off" in said
