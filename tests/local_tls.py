"""A test certificate authority (trustme) for the local TLS fakes: the server side gets a
certificate for 127.0.0.1 and localhost; the hub trusts the CA through HUB_EXTRA_CA_FILE."""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

import trustme


class LocalCA:
    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="hub-test-ca-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self, alpn: list[str]) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        context.set_alpn_protocols(alpn)
        return context

    def close(self) -> None:
        self._dir.cleanup()
