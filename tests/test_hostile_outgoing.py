"""The outgoing-HTTP policy (hub/adapters/outgoing.py) attacked directly: an SSRF matrix of schemes,
userinfo, loopback/private/link-local/multicast/reserved addresses in IPv4 and IPv6 (IPv4
inside IPv6 too), host names that resolve to them (also after a check passed: DNS
rebinding), redirects; and peers that flood or trickle their answer. Every refused call is
also checked not to have reached the local server it aimed at."""

from __future__ import annotations

import asyncio
import resource

import httpx
import pytest

from hub.adapters.outgoing import (DEFAULT_PUSH_HOSTS, OutgoingPolicy, OutgoingRefused, ResponseTooLarge, address_allowed,
                          parse_allowed_hosts, read_capped)
from tests.notify_e2e import extra_env, hub_env, push, sink, twilio  # noqa: F401  (fixtures)
from tests.notify_e2e import customer, deliveries, inbox_item, request_notification



class RawPeer:
    """A local HTTP/1.1 server written on raw sockets, so it can misbehave: it records every
    request's head and answers with `answer(writer)`."""

    def __init__(self, answer=None) -> None:
        self.requests: list[bytes] = []
        self.answer = answer or self.ok
        self.server = None
        self.port = 0
        self._tasks: set[asyncio.Task] = set()

    @staticmethod
    async def ok(writer) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nLocation: /m/1\r\n\r\nok")

    async def start(self, host: str = "127.0.0.1") -> RawPeer:
        self.server = await asyncio.start_server(self._handle, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer) -> None:
        self._tasks.add(asyncio.current_task())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            self.requests.append(head)
            await self.answer(writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(asyncio.current_task())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def peer():
    made = []

    async def make(answer=None, host="127.0.0.1") -> RawPeer:
        made.append(await RawPeer(answer).start(host))
        return made[-1]

    yield make
    for p in made:
        await p.stop()


def static_resolver(table: dict[str, list]):
    """A DNS stand-in: each name gives its list of answers, one list per lookup in turn
    (the last one repeats)."""
    calls: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[str]:
        answers = table[host]
        n = calls.get(host, 0)
        calls[host] = n + 1
        return answers[min(n, len(answers) - 1)]

    return resolve


# Addresses ------------------------------------------------------------------------------

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fe80::1%1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
    "2001:db8::1", "100::1",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address):
    assert not address_allowed(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "142.250.180.10", "2a00:1450:4001:80b::200a", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(address)


# URLs without DNS -----------------------------------------------------------------------

def refused(policy: OutgoingPolicy, url: str, **kw) -> str:
    with pytest.raises(OutgoingRefused) as caught:
        policy.check_url(url, **kw)
    return caught.value.reason


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://fcm.googleapis.com/x", "gopher://fcm.googleapis.com/", "javascript:alert(1)",
    "data:text/plain,hi", "ws://fcm.googleapis.com/", "//fcm.googleapis.com/fcm/send/x", "fcm.googleapis.com/x",
])
def test_only_http_and_https_schemes(url):
    assert refused(OutgoingPolicy(), url, push_endpoint=True) == "scheme_not_allowed"


def test_production_allows_https_only():
    policy = OutgoingPolicy(https_only=True)
    assert refused(policy, "http://fcm.googleapis.com/fcm/send/x", push_endpoint=True) == "scheme_not_allowed"
    policy.check_url("https://fcm.googleapis.com/fcm/send/x", push_endpoint=True)
    assert refused(policy, "http://127.0.0.1:9/", trusted=("127.0.0.1",)) == "scheme_not_allowed"


@pytest.mark.parametrize("url", [
    "https://user:pass@fcm.googleapis.com/fcm/send/x", "https://user@fcm.googleapis.com/fcm/send/x",
    "https://fcm.googleapis.com@127.0.0.1/x", "https://:@fcm.googleapis.com/x",
])
def test_userinfo_is_refused(url):
    assert refused(OutgoingPolicy(), url, push_endpoint=True) == "userinfo_not_allowed"


@pytest.mark.parametrize("url", [
    "https://evil.example/fcm/send/x", "https://fcm.googleapis.com.evil.example/x", "https://xfcm.googleapis.com/x",
    "https://8.8.8.8/x", "https://[2a00:1450:4001:80b::200a]/x", "https://googleapis.com/x",
])
def test_push_endpoints_only_on_listed_push_services(url):
    assert refused(OutgoingPolicy(), url, push_endpoint=True) == "host_not_allowed"


@pytest.mark.parametrize("url", [
    "https://fcm.googleapis.com/fcm/send/abc", "https://FCM.googleapis.com./fcm/send/abc",
    "https://updates.push.services.mozilla.com/wpush/v2/abc", "https://wns2-par02p.notify.windows.com/w/?token=x",
    "https://web.push.apple.com/QGx", "https://android.googleapis.com/gcm/send/abc",
])
def test_the_public_push_services_are_listed_by_default(url):
    OutgoingPolicy().check_url(url, push_endpoint=True)


@pytest.mark.parametrize("host", [h for h in REFUSED_ADDRESSES if "%" not in h])
def test_ip_literals_in_urls_are_refused_unless_listed(host):
    literal = f"[{host}]" if ":" in host else host
    policy = OutgoingPolicy(allowed_hosts=("*",))
    assert refused(policy, f"http://{literal}:8080/x", push_endpoint=True) == "address_not_allowed"
    OutgoingPolicy(allowed_hosts=(host,)).check_url(f"http://{literal}:8080/x", push_endpoint=True)


@pytest.mark.parametrize("url", ["https:///x", "https://exa mple.com/", "https://host:99999/", "https://a_b..c/"])
def test_malformed_urls(url):
    assert refused(OutgoingPolicy(allowed_hosts=("*",)), url) == "malformed_url"


def test_allow_list_parsing():
    assert parse_allowed_hosts(None) == DEFAULT_PUSH_HOSTS
    assert parse_allowed_hosts(" *.Push.Example.COM , .other.test,127.0.0.1, [::1], *") == (
        "push.example.com", "other.test", "127.0.0.1", "::1", "*")
    for bad in ("exa mple.com", "http://x.test", "x.test/path"):
        with pytest.raises(ValueError):
            parse_allowed_hosts(bad)
    policy = OutgoingPolicy(allowed_hosts=parse_allowed_hosts("push.example.com,127.0.0.1"))
    assert policy.listed("a.b.push.example.com") and policy.listed("push.example.com")
    assert not policy.listed("evilpush.example.com") and not policy.listed("push.example.com.evil.test")
    assert not policy.listed("1.127.0.0.1")


# Connections ----------------------------------------------------------------------------

async def test_loopback_is_never_connected_to_unless_listed(peer):
    target = await peer()
    async with OutgoingPolicy(allowed_hosts=("*",)).client() as client:
        for url in (f"http://127.0.0.1:{target.port}/x", f"http://[::ffff:127.0.0.1]:{target.port}/x",
                    f"http://localhost:{target.port}/x", f"http://2130706433:{target.port}/x",
                    f"http://0x7f.1:{target.port}/x", f"http://127.1:{target.port}/x"):
            with pytest.raises(OutgoingRefused) as caught:
                await client.post(url, content=b"{}")
            assert caught.value.reason == "address_not_allowed", url
    assert target.requests == []
    async with OutgoingPolicy(allowed_hosts=("127.0.0.1",)).client() as client:
        answer = await client.post(f"http://127.0.0.1:{target.port}/x", content=b"{}")
    assert answer.status_code == 201 and len(target.requests) == 1


async def test_ipv6_loopback_is_refused(peer):
    target = await peer(host="::1")
    async with OutgoingPolicy(allowed_hosts=("*",)).client() as client:
        with pytest.raises(OutgoingRefused):
            await client.get(f"http://[::1]:{target.port}/")
    assert target.requests == []
    async with OutgoingPolicy(allowed_hosts=("::1",)).client() as client:
        assert (await client.get(f"http://[::1]:{target.port}/")).status_code == 201


async def test_a_name_resolving_to_a_private_address_is_refused_at_check_and_at_connect(peer):
    target = await peer()
    resolver = static_resolver({"push.evil.test": [["10.1.2.3"]], "mixed.evil.test": [["8.8.8.8", "127.0.0.1"]],
                                "metadata.evil.test": [["169.254.169.254"]], "v6.evil.test": [["::ffff:127.0.0.1"]]})
    policy = OutgoingPolicy(allowed_hosts=("*",), resolver=resolver)
    for host in ("push.evil.test", "mixed.evil.test", "metadata.evil.test", "v6.evil.test"):
        with pytest.raises(OutgoingRefused) as caught:
            await policy.check_push_endpoint(f"https://{host}/x")
        assert caught.value.reason == "address_not_allowed"
        async with policy.client() as client:
            with pytest.raises(OutgoingRefused):
                await client.post(f"http://{host}:{target.port}/x")
    assert target.requests == []


async def test_dns_rebinding_after_the_subscription_check_is_refused_at_connect(peer):
    target = await peer()
    # Public when the subscription is checked, loopback when the hub connects.
    policy = OutgoingPolicy(allowed_hosts=("*",),
                            resolver=static_resolver({"rebind.evil.test": [["93.184.216.34"], ["127.0.0.1"]]}))
    await policy.check_push_endpoint(f"http://rebind.evil.test:{target.port}/x")
    async with policy.client() as client:
        with pytest.raises(OutgoingRefused) as caught:
            await client.post(f"http://rebind.evil.test:{target.port}/x", content=b"x")
    assert caught.value.reason == "address_not_allowed" and target.requests == []


async def test_a_listed_name_may_resolve_anywhere(peer):
    target = await peer()
    policy = OutgoingPolicy(allowed_hosts=("push.test",), resolver=static_resolver({"a.push.test": [["127.0.0.1"]]}))
    await policy.check_push_endpoint(f"http://a.push.test:{target.port}/x")
    async with policy.client() as client:
        assert (await client.post(f"http://a.push.test:{target.port}/x")).status_code == 201


async def test_an_unresolvable_name_is_refused():
    policy = OutgoingPolicy(allowed_hosts=("*",))
    with pytest.raises(OutgoingRefused) as caught:
        await policy.check_push_endpoint("https://no-such-host.invalid/x")
    assert caught.value.reason == "unresolvable"


async def test_redirects_are_not_followed(peer):
    target = await peer()

    async def redirect(writer):
        writer.write(f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{target.port}/x\r\n"
                     "Content-Length: 0\r\n\r\n".encode())

    listed = await peer(redirect, host="127.0.0.2")
    async with OutgoingPolicy(allowed_hosts=("127.0.0.2",)).client() as client:
        answer = await client.post(f"http://127.0.0.2:{listed.port}/x", content=b"x")
        assert answer.status_code == 307
        with pytest.raises(OutgoingRefused):  # even when asked to follow, the hop is checked
            await client.post(f"http://127.0.0.2:{listed.port}/x", content=b"x", follow_redirects=True)
    assert target.requests == [] and len(listed.requests) == 2


async def test_an_operator_configured_base_url_is_trusted_on_its_own_client_only(peer):
    target, other = await peer(), await peer(host="127.0.0.2")
    policy = OutgoingPolicy()
    async with policy.client(base_url=f"http://127.0.0.1:{target.port}") as client:
        assert (await client.post("/v1/x")).status_code == 201
        with pytest.raises(OutgoingRefused):
            await client.post(f"http://127.0.0.2:{other.port}/v1/x")
    assert other.requests == []
    with pytest.raises(OutgoingRefused):
        OutgoingPolicy(https_only=True).client(base_url=f"http://127.0.0.1:{target.port}")
    with pytest.raises(OutgoingRefused):
        policy.client(base_url=f"http://user:pw@127.0.0.1:{target.port}")


# Answers --------------------------------------------------------------------------------

HUGE = 512 * 1024 * 1024


async def flood(writer):
    """201 with a 512 MB body, written as fast as the reader takes it."""
    writer.write(f"HTTP/1.1 201 Created\r\nContent-Length: {HUGE}\r\n\r\n".encode())
    chunk = b"x" * (1024 * 1024)
    for _ in range(HUGE // len(chunk)):
        writer.write(chunk)
        await writer.drain()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def test_a_huge_answer_is_cut_at_the_cap_and_memory_stays_bounded(peer):
    target = await peer(flood)
    policy = OutgoingPolicy(allowed_hosts=("127.0.0.1",), max_response_bytes=64 * 1024)
    before = rss_mb()
    async with policy.client() as client:
        with pytest.raises(ResponseTooLarge):
            await client.post(f"http://127.0.0.1:{target.port}/x")  # reads the whole body: the transport cuts it
        async with client.stream("POST", f"http://127.0.0.1:{target.port}/x") as response:
            assert response.status_code == 201
            with pytest.raises(ResponseTooLarge):
                await read_capped(response, 1000)
        ok = await peer()
        assert (await client.post(f"http://127.0.0.1:{ok.port}/x")).status_code == 201  # the client still works
    assert rss_mb() - before < 64


async def test_a_compressed_answer_cannot_inflate(peer):
    import gzip

    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))

    async def gzipped(writer):
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n".encode())
        writer.write(bomb)

    target = await peer(gzipped)
    async with OutgoingPolicy(allowed_hosts=("127.0.0.1",)).client() as client:
        async with client.stream("GET", f"http://127.0.0.1:{target.port}/") as response:
            with pytest.raises(ResponseTooLarge):
                await read_capped(response, 64 * 1024)
    # and the hub never asks for compression in the first place
    assert b"accept-encoding: identity" in target.requests[0].lower()


async def test_a_trickling_answer_hits_the_total_timeout(peer):
    async def trickle(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)  # each byte well within any read timeout

    target = await peer(trickle)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with OutgoingPolicy(allowed_hosts=("127.0.0.1",), timeout_s=1.0).client() as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get(f"http://127.0.0.1:{target.port}/")
    assert loop.time() - started < 3


async def test_a_silent_peer_hits_the_total_timeout(peer):
    async def silent(writer):
        await asyncio.sleep(30)

    target = await peer(silent)
    async with OutgoingPolicy(allowed_hosts=("127.0.0.1",), timeout_s=0.5).client() as client:
        with pytest.raises(httpx.TimeoutException):
            await client.get(f"http://127.0.0.1:{target.port}/")


async def test_https_trusts_the_extra_ca_file_and_nothing_else(peer, tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    target = RawPeer()
    target.server = await asyncio.start_server(target._handle, "127.0.0.1", 0, ssl=server_ctx)
    target.port = target.server.sockets[0].getsockname()[1]
    try:
        async with OutgoingPolicy(allowed_hosts=("127.0.0.1",), https_only=True,
                                  ca_file=str(ca_file)).client(http2=True) as client:
            assert (await client.post(f"https://127.0.0.1:{target.port}/x")).status_code == 201
        async with OutgoingPolicy(allowed_hosts=("127.0.0.1",)).client() as client:
            with pytest.raises(httpx.ConnectError):  # the system store does not know the test CA
                await client.post(f"https://127.0.0.1:{target.port}/x")
    finally:
        await target.stop()
    assert len(target.requests) == 1


# Through the hub's public surface ---------------------------------------------------------

async def subscriptions(api, token) -> list[str]:
    r = await api.call("GET", "/api/v1/users/me/push-subscriptions", token=token)
    assert r.status == 200, r
    return [s["endpoint"] for s in r.data["items"]]


SUBSCRIPTION_ATTACKS = [
    "http://127.0.0.1:{port}/push/x", "http://localhost:{port}/push/x", "http://[::1]:{port}/push/x",
    "http://[::ffff:127.0.0.1]:{port}/push/x", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/push",
    "http://192.168.0.1/push", "http://[fd00::1]/push", "http://0.0.0.0:{port}/push", "http://2130706433:{port}/x",
    "https://user:secret@fcm.googleapis.com/fcm/send/x", "ftp://fcm.googleapis.com/fcm/send/x",
    "https://evil.example/fcm/send/x", "https://fcm.googleapis.com.evil.example/x",
]


@pytest.mark.parametrize("extra_env", [{"HUB_PUSH_ALLOWED_HOSTS": ",".join(DEFAULT_PUSH_HOSTS)}])
async def test_push_subscriptions_to_internal_or_unlisted_endpoints_are_refused(api, push):
    ann = await customer(api)
    keys = push.new_subscription()["keys"]
    for endpoint in SUBSCRIPTION_ATTACKS:
        endpoint = endpoint.format(port=push.port)
        r = await api.call("POST", "/api/v1/users/me/push-subscriptions", {"endpoint": endpoint, "keys": keys},
                           token=ann.token)
        assert r.status == 422, (endpoint, r)
        assert r.data["error"]["details"][0]["field"] == "endpoint"
    assert await subscriptions(api, ann.token) == []
    assert push.received == [] and push.refused == []
    # A public push service's endpoint is taken.
    good = "https://fcm.googleapis.com/fcm/send/abc:def"
    r = await api.call("POST", "/api/v1/users/me/push-subscriptions", {"endpoint": good, "keys": keys},
                       token=ann.token)
    assert r.status == 201, r
    assert await subscriptions(api, ann.token) == [good]


@pytest.mark.parametrize("extra_env", [{"HUB_PUSH_ALLOWED_HOSTS": "*"}])
async def test_any_host_still_means_no_internal_address(api, push):
    ann = await customer(api)
    keys = push.new_subscription()["keys"]
    for endpoint in (f"http://localhost:{push.port}/push/x", f"http://127.0.0.1:{push.port}/push/x",
                     f"http://127.1:{push.port}/push/x"):
        r = await api.call("POST", "/api/v1/users/me/push-subscriptions", {"endpoint": endpoint, "keys": keys},
                           token=ann.token)
        assert r.status == 422, (endpoint, r)
    assert await subscriptions(api, ann.token) == []


async def test_a_push_service_flooding_its_answer_fails_cleanly_and_the_next_push_goes(api, push, peer):
    async def flood_with_headers(writer):
        writer.write(f"HTTP/1.1 201 Created\r\nLocation: http://169.254.169.254/secret\r\n"
                     f"X-Internal: db-password\r\nContent-Length: {HUGE}\r\n\r\n".encode())
        chunk = b"x" * (1024 * 1024)
        for _ in range(HUGE // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    flooder = await peer(flood_with_headers)
    ann, bob = await customer(api), await customer(api)
    evil = {**push.new_subscription(), "endpoint": f"http://127.0.0.1:{flooder.port}/push/evil"}
    assert (await api.call("POST", "/api/v1/users/me/push-subscriptions", evil, token=ann.token)).status == 201
    assert (await api.call("POST", "/api/v1/users/me/push-subscriptions", push.new_subscription(),
                           token=bob.token)).status == 201
    before = rss_mb()
    r = await request_notification(api, {"user_id": ann.id, "type": "order_note", "title": "Hi", "body": "x",
                                         "channels": ["push"]})
    assert r.status == 202, r
    item = await inbox_item(api, ann.token, r.data["id"], settled=("sent", "failed"), timeout=15)
    delivery = deliveries(item)["push"]
    assert (delivery["status"], delivery["reason"]) == ("failed", "push_answer_too_large"), delivery
    # What the service said stays with it: no header, no body, no Location in the delivery log.
    shown = repr(item)
    assert "169.254" not in shown and "db-password" not in shown and "xxxx" not in shown
    assert delivery.get("provider_id") is None
    assert rss_mb() - before < 64
    assert len(flooder.requests) == 1

    r = await request_notification(api, {"user_id": bob.id, "type": "order_note", "title": "Next", "body": "y",
                                         "channels": ["push"]})
    assert r.status == 202, r
    [received] = await push.wait_for(1, timeout=10)
    assert received["payload"]["title"] == "Next"
