"""VAPID keys (RFC 8292): a P-256 key pair that identifies the hub to push services.

The public key is what browsers pass to `pushManager.subscribe()` as
`applicationServerKey`: base64url (no padding) of the 65-byte uncompressed point. The
private key is kept as base64url (no padding) of the raw 32-byte scalar; a PEM (PKCS#8 or
SEC1 "EC PRIVATE KEY") or base64 DER key, as py_vapid's tools write, is accepted too.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url or standard base64, padded or not (keys get copied around in both)."""
    text = "".join(text.split()).rstrip("=").replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_vapid_keys() -> tuple[str, str]:
    """(private_key, public_key), both base64url without padding."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return b64url_encode(private), public_key_of(key)


def load_private_key(private_key: str) -> ec.EllipticCurvePrivateKey:
    """Parse a raw base64url scalar, a PEM or a base64 DER P-256 private key.
    Errors are ValueError and never quote the key."""
    text = private_key.strip()
    try:
        if "-----BEGIN" in text:
            # Env files often carry a PEM on one line with literal "\n".
            key = serialization.load_pem_private_key(text.replace("\\n", "\n").encode(), password=None)
        else:
            raw = b64url_decode(text)
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise ValueError("VAPID private key: not a raw base64url, PEM or DER P-256 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("VAPID private key: must be an EC key on the P-256 curve")
    return key


def public_key_of(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b64url_encode(point)


def public_key_for(private_key: str) -> str:
    """The applicationServerKey (base64url, 65-byte uncompressed point) for a private key
    in any form load_private_key accepts."""
    return public_key_of(load_private_key(private_key))
