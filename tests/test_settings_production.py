"""The production guard (issue 12, docs/security.md "Production guard"): with
HUB_ENV=production the hub refuses unsafe settings, each with one line naming the
setting (and exit code 2 from run.py); SMTP credentials never travel without TLS; demo
data only outside production and on loopback. The shape follows tests/test_settings.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from domain.delivery import Message, TransientError
from channels.email import EmailChannel
from config.settings import load_settings
from tests.peers import SmtpSink
from tests.test_process import ROOT, hub_environ
from tests.test_settings import PRODUCTION, assert_one_line_naming, settings_error


# Provider base URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize("variable", ["TWILIO_API_BASE", "STRIPE_API_BASE", "APNS_BASE_URL", "APNS_SANDBOX_BASE_URL",
                                      "FCM_BASE_URL"])
def test_provider_base_urls_must_be_https(variable):
    message = settings_error({**PRODUCTION, variable: "http://provider.example.com"})
    assert_one_line_naming(message, variable)
    assert "https" in message
    load_settings({**PRODUCTION, variable: "https://provider.example.com"})  # the same, over https, is fine


def test_http_provider_urls_are_fine_outside_production():
    settings = load_settings({"TWILIO_API_BASE": "http://127.0.0.1:9999", "STRIPE_API_BASE": "http://127.0.0.1:9998"})
    assert settings.twilio_api_base == "http://127.0.0.1:9999"


# Webhook secrets ------------------------------------------------------------------------------
def test_a_stripe_key_needs_its_webhook_secret():
    message = settings_error({**PRODUCTION, "STRIPE_API_KEY": "sk_live_0123456789"})
    assert_one_line_naming(message, "STRIPE_WEBHOOK_SECRET")
    assert "sk_live" not in message
    load_settings({**PRODUCTION, "STRIPE_API_KEY": "sk_live_0123456789", "STRIPE_WEBHOOK_SECRET": "whsec_0123456789"})


def test_a_twilio_account_needs_its_auth_token():
    message = settings_error({**PRODUCTION, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_FROM": "+15005550006"})
    assert_one_line_naming(message, "TWILIO_AUTH_TOKEN")
    load_settings({**PRODUCTION, "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t" * 32})


# The admin password ---------------------------------------------------------------------------
@pytest.mark.parametrize("password", [
    "short-pass1",  # 11 characters
    "aaaaaaaaaaaaaaaa", "abababababababab", "123456789012", "abcdefghijklmnop", "zyxwvutsrqponm",
    "Password1234", "P@ssword-2026!", "admin-password-1", "Administrator1", "qwertyuiop12", "changeme-changeme",
    "LetMeIn!LetMeIn!", "operator.2026!x",  # holds the admin address's local part
])
def test_a_weak_admin_password_is_refused(password):
    message = settings_error({**PRODUCTION, "HUB_ADMIN_EMAIL": "operator@example.com", "HUB_ADMIN_PASSWORD": password})
    assert_one_line_naming(message, "HUB_ADMIN_PASSWORD")
    assert password not in message


@pytest.mark.parametrize("password", ["correct horse battery staple", "vT9#qLm2!xRw", "Kd8s-Wq2n-Zp4r"])
def test_a_strong_admin_password_is_accepted(password):
    settings = load_settings({**PRODUCTION, "HUB_ADMIN_EMAIL": "operator@example.com", "HUB_ADMIN_PASSWORD": password})
    assert settings.admin_password == password


def test_a_weak_admin_password_is_fine_outside_production():
    assert load_settings({"HUB_ADMIN_EMAIL": "a@example.com", "HUB_ADMIN_PASSWORD": "admin-password-1"}).admin_password


# Demo data ------------------------------------------------------------------------------------
@pytest.mark.parametrize("environ", [
    {"HUB_HOST": "0.0.0.0"}, {"HUB_HOST": "192.0.2.10"}, {"HUB_HOST": "::"}, {"HUB_HOST": "shop.example.com"},
    {**PRODUCTION, "HUB_HOST": "127.0.0.1"},
], ids=["any-v4", "public-v4", "any-v6", "hostname", "production"])
def test_demo_data_only_outside_production_on_loopback(environ):
    assert_one_line_naming(settings_error({**environ, "HUB_DEMO": "1"}), "HUB_DEMO")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_demo_data_on_loopback_in_development(host):
    assert load_settings({"HUB_DEMO": "1", "HUB_HOST": host}).demo


def test_run_py_refuses_demo_on_a_public_address_with_exit_2():
    result = subprocess.run([sys.executable, "run.py", "--demo"], cwd=ROOT, env=hub_environ(HUB_HOST="0.0.0.0"),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("hub: configuration error: HUB_DEMO:"), line


def test_run_py_refuses_a_weak_admin_password_with_exit_2():
    env = hub_environ(**PRODUCTION, HUB_ADMIN_EMAIL="ops@example.com", HUB_ADMIN_PASSWORD="Password1234")
    result = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("hub: configuration error: HUB_ADMIN_PASSWORD:") and "Password1234" not in line


# SMTP credentials need TLS --------------------------------------------------------------------
async def test_smtp_credentials_are_never_sent_without_tls_in_production():
    """A server (or a man in the middle) that offers no STARTTLS gets no password: the send
    fails as unreachable and is retried later, and nothing was logged in."""
    sink = SmtpSink(credentials=("mailer", "mail-secret")).start()
    try:
        url = f"smtp://mailer:mail-secret@127.0.0.1:{sink.port}"
        channel = EmailChannel(url, "Shop <shop@example.com>", 2, require_tls=True)
        try:
            with pytest.raises(TransientError):
                await channel.send(Message(notification_id="n1", user_id="u1", address="ann@example.com",
                                           content={"subject": "Hi", "text": "Hello"}))
        finally:
            await channel.close()
        assert sink.logins == [] and sink.messages == []
        # Outside production (require_tls off) the same server is used as before.
        plain = EmailChannel(url, "Shop <shop@example.com>", 2)
        try:
            await plain.send(Message(notification_id="n2", user_id="u1", address="ann@example.com",
                                     content={"subject": "Hi", "text": "Hello"}))
        finally:
            await plain.close()
        assert sink.logins == ["mailer"] and len(sink.messages) == 1
    finally:
        sink.stop()
