"""Outgoing HTTPS to push providers (APNs, FCM): every httpx client of the mobile push
channels is built here, under one policy.

- TLS trusts the system's CAs plus HUB_EXTRA_CA_FILE, passed as an `ssl.SSLContext`
  (httpx deprecates a CA path string).
- No redirects; a timeout on every call; response bodies read up to MAX_BODY_BYTES.
- https only in production. A host resolving to a loopback, private, link-local or
  otherwise non-public address is refused unless HUB_PUSH_ALLOWED_HOSTS lists it (or a
  parent domain of it), so a mistyped or hostile base URL cannot reach inside the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time

import httpx

MAX_BODY_BYTES = 64 * 1024  # provider answers are small JSON; anything bigger is cut
DNS_CACHE_S = 60.0


class RefusedDestination(Exception):
    """The policy does not allow this URL; the message names the host, never the path."""


def ssl_context(extra_ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    return context


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class DestinationPolicy:
    def __init__(self, allowed_hosts: list[str], production: bool) -> None:
        self.allowed = [h.lower().lstrip(".") for h in allowed_hosts]
        self.production = production
        self._checked: dict[tuple[str, int], float] = {}  # (host, port) -> when its addresses were found public

    def listed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == h or host.endswith("." + h) for h in self.allowed)

    def _precheck(self, url: httpx.URL) -> bool:
        """True when the URL needs no address check (listed, or recently checked)."""
        if url.scheme != "https" and (self.production or url.scheme != "http"):
            raise RefusedDestination(f"{url.host}: only https is allowed")
        if self.listed(url.host):
            return True
        checked = self._checked.get((url.host, url.port or 443))
        return checked is not None and time.monotonic() - checked < DNS_CACHE_S

    def _judge(self, url: httpx.URL, infos) -> None:
        addresses = {info[4][0] for info in infos}
        if not addresses or not all(_public(a) for a in addresses):
            raise RefusedDestination(f"{url.host}: resolves to a non-public address and is not in HUB_PUSH_ALLOWED_HOSTS")
        self._checked[(url.host, url.port or 443)] = time.monotonic()

    async def check(self, request: httpx.Request) -> None:
        url = request.url
        if self._precheck(url):
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(url.host, url.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return  # unresolvable: the connection attempt fails on its own, as a transport error
        self._judge(url, infos)

    def check_sync(self, request: httpx.Request) -> None:
        url = request.url
        if self._precheck(url):
            return
        try:
            infos = socket.getaddrinfo(url.host, url.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            return
        self._judge(url, infos)


def async_client(policy: DestinationPolicy, *, timeout_s: float, extra_ca_file: str | None,
                 http2: bool = True) -> httpx.AsyncClient:
    """One client per provider host: with HTTP/2 its requests share one connection."""
    return httpx.AsyncClient(http2=http2, verify=ssl_context(extra_ca_file), timeout=httpx.Timeout(timeout_s),
                             follow_redirects=False, event_hooks={"request": [policy.check]})


def sync_client(policy: DestinationPolicy, *, timeout_s: float, extra_ca_file: str | None) -> httpx.Client:
    """For libraries that call out synchronously (google-auth's token refresh, run in a thread)."""
    return httpx.Client(verify=ssl_context(extra_ca_file), timeout=httpx.Timeout(timeout_s),
                        follow_redirects=False, event_hooks={"request": [policy.check_sync]})


async def post(client: httpx.AsyncClient, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST with the body read up to MAX_BODY_BYTES (the returned response's content)."""
    async with client.stream("POST", url, content=content, headers=headers) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk[:MAX_BODY_BYTES - len(body)]
            if len(body) >= MAX_BODY_BYTES:
                break
    return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                          request=response.request, extensions=response.extensions)
