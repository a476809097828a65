"""The APNs and FCM fakes of the tests (tests/apns_fake.py, tests/fcm_fake.py) in a process
of their own, for bench/mobile_push.py. Writes the CA, the .p8 key and the service-account
file into the directory given, prints one JSON line with the addresses, then serves until
killed. `GET /count` on the status port gives the messages each fake accepted."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.apns_fake import ApnsFake  # noqa: E402
from tests.fcm_fake import FcmFake  # noqa: E402
from tests.local_tls import LocalCA  # noqa: E402

KEY_ID, TEAM_ID, TOPIC = "BENCHKEY01", "BENCHTEAM1", "com.example.bench"


class Count(RequestHandler):
    def initialize(self, apns: ApnsFake, fcm: FcmFake) -> None:
        self.apns, self.fcm = apns, fcm

    def get(self) -> None:
        self.finish({"apns": len(self.apns.received), "fcm": len(self.fcm.received)})


async def main(directory: Path) -> None:
    ca = LocalCA()
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = directory / "AuthKey.p8"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    apns = ApnsFake(ca, key.public_key(), key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC)
    fcm = FcmFake(ca)
    await apns.start()
    await fcm.start()
    account_file = directory / "service-account.json"
    account_file.write_text(json.dumps(fcm.service_account()))
    sockets = bind_sockets(0, "127.0.0.1")
    HTTPServer(Application([(r"/count", Count, {"apns": apns, "fcm": fcm})])).add_sockets(sockets)
    print(json.dumps({
        "apns_url": apns.base_url, "fcm_url": fcm.base_url, "ca_file": ca.ca_file, "key_file": str(key_file),
        "account_file": str(account_file), "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC,
        "project": fcm.project, "status_url": f"http://127.0.0.1:{sockets[0].getsockname()[1]}/count",
    }), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
