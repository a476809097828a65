"""The one policy for every HTTP call the hub makes to a provider (Web Push services,
Stripe, Twilio, APNs, FCM): where a call may go, how long it may take, how much of the
answer is read.

- Schemes: https; http too outside production. No userinfo (`user:pass@`) in URLs.
- Web Push endpoints (user-supplied) must be on a host in HUB_PUSH_ALLOWED_HOSTS (host
  suffixes; by default the public push services). `*` admits any host, still under the
  address rule below.
- Addresses: a connection never goes to a loopback, private, link-local, shared (CGNAT),
  multicast, unspecified or reserved address (IPv4, IPv6, and IPv4 embedded in IPv6),
  checked on the addresses DNS gives at connect time, so a name re-pointed after the
  subscription check (DNS rebinding) is still refused. Exempt: hosts listed in
  HUB_PUSH_ALLOWED_HOSTS and the host of an operator-configured base URL (STRIPE_API_BASE,
  TWILIO_API_BASE, ...), which the operator chose.
- No redirects, no proxies from the environment, `Accept-Encoding: identity` (a small
  compressed answer cannot inflate), connect and total timeouts, answers read up to a cap.
- What a provider answers is never shown to users: callers record a status and a reason
  code (see domain/delivery.py).

Clients get all of this from `OutgoingPolicy.client()`, an `httpx.AsyncClient`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import SplitResult, urlsplit

import httpcore
import httpx

# Hosts (and their subdomains) that browsers' push subscriptions point at.
DEFAULT_PUSH_HOSTS = (
    "fcm.googleapis.com",  # Chrome, Edge on Android, Samsung Internet, Opera
    "android.googleapis.com",  # older Chrome subscriptions (GCM endpoints)
    "updates.push.services.mozilla.com",  # Firefox
    "notify.windows.com",  # Edge on Windows (WNS: *.notify.windows.com)
    "web.push.apple.com",  # Safari
)
CONNECT_TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 64 * 1024  # provider answers we read are a few hundred bytes of JSON
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str, int], Awaitable[list[str]]]


class OutgoingRefused(httpx.TransportError):
    """The policy refuses a destination. `reason` is a short code, safe to show a user:
    malformed_url, scheme_not_allowed, userinfo_not_allowed, host_not_allowed,
    address_not_allowed, unresolvable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ResponseTooLarge(httpx.TransportError):
    """The answer's body went past the cap; reading stopped there."""

    reason = "response_too_large"


def address_allowed(address: str) -> bool:
    """Whether a connection may go to this IP address: public unicast only."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone id names no other address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:  # the connection goes to that IPv4 address
            return address_allowed(str(ip.ipv4_mapped))
        teredo = ip.teredo
        embedded = [ip.sixtofour, teredo and teredo[1],
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None]
        if any(e is not None and not address_allowed(str(e)) for e in embedded):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def _normal_host(host: str) -> str:
    return host.strip().lower().strip("[]").rstrip(".")


def parse_allowed_hosts(value: str | None) -> tuple[str, ...]:
    """HUB_PUSH_ALLOWED_HOSTS: comma-separated host suffixes (`*.` or `.` in front is the
    same as none), IP literals (exact), or `*`. Unset: the public push services."""
    if value is None:
        return DEFAULT_PUSH_HOSTS
    hosts = []
    for item in value.split(","):
        host = _normal_host(item)
        if host != "*":
            host = host.removeprefix("*.").lstrip(".")
            if not (_ip_literal(host) or HOSTNAME_RE.match(host)):
                raise ValueError(f"{item.strip()!r} is not a host name, IP address or *")
        hosts.append(host)
    return tuple(hosts)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class OutgoingPolicy:
    """Shared by every provider client; build one per hub (`from_settings`)."""

    def __init__(self, *, allowed_hosts: Iterable[str] = DEFAULT_PUSH_HOSTS, https_only: bool = False,
                 ca_file: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 timeout_s: float = 10.0, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 resolver: Resolver = system_resolver) -> None:
        self.allowed_hosts = tuple(allowed_hosts)
        self.https_only = https_only
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.resolver = resolver
        self.ssl_context = ssl.create_default_context()
        if ca_file:
            self.ssl_context.load_verify_locations(cafile=ca_file)

    @classmethod
    def from_settings(cls, settings) -> OutgoingPolicy:
        return cls(allowed_hosts=settings.push_allowed_host_list, https_only=settings.production,
                   ca_file=settings.extra_ca_file, timeout_s=settings.provider_timeout_s)

    # Destinations ------------------------------------------------------------------------

    def listed(self, host: str) -> bool:
        """Whether `host` is named in the allow-list (a `*` entry names no host)."""
        host = _normal_host(host)
        return any(host == entry or (host.endswith("." + entry) and not _ip_literal(entry))
                   for entry in self.allowed_hosts if entry != "*")

    def check_url(self, url: str, *, push_endpoint: bool = False, trusted: Iterable[str] = ()) -> SplitResult:
        """The checks that need no DNS: scheme, userinfo, host syntax, an IP literal's
        address (unless listed or `trusted`), and for a Web Push endpoint the host
        allow-list. Raises OutgoingRefused."""
        try:
            parts = urlsplit(url)
            parts.port  # raises on a port that is not a number in range
        except ValueError:
            raise OutgoingRefused("malformed_url", "not a valid URL") from None
        allowed_schemes = ("https",) if self.https_only else ("https", "http")
        if parts.scheme not in allowed_schemes:
            raise OutgoingRefused("scheme_not_allowed", f"the URL must start with {' or '.join(allowed_schemes)}://")
        if "@" in parts.netloc or parts.username is not None:
            raise OutgoingRefused("userinfo_not_allowed", "credentials in the URL are not allowed")
        host = _normal_host(parts.hostname or "")
        if not (_ip_literal(host) or HOSTNAME_RE.match(host)):
            raise OutgoingRefused("malformed_url", "the URL has no valid host")
        if push_endpoint and "*" not in self.allowed_hosts and not self.listed(host):
            raise OutgoingRefused("host_not_allowed", "this push service is not allowed on this hub")
        if _ip_literal(host) and not (self.listed(host) or host in trusted) and not address_allowed(host):
            raise OutgoingRefused("address_not_allowed", "the URL points at a private or reserved address")
        return parts

    async def resolve(self, host: str, port: int, *, trusted: Iterable[str] = ()) -> list[str]:
        """The addresses a connection to host:port may use. Listed and `trusted` hosts are
        resolved and used as they are; for any other, every address DNS gives must be public
        (one private address among public ones refuses the host: a rebinding name mixes them)."""
        host = _normal_host(host)
        exempt = self.listed(host) or host in trusted
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                addresses = [host] if _ip_literal(host) else await self.resolver(host, port)
        except (OSError, TimeoutError, UnicodeError):
            raise OutgoingRefused("unresolvable", "the host name does not resolve") from None
        if not addresses:
            raise OutgoingRefused("unresolvable", "the host name does not resolve")
        if not exempt and not all(address_allowed(a) for a in addresses):
            raise OutgoingRefused("address_not_allowed", "the host resolves to a private or reserved address")
        return addresses

    async def check_push_endpoint(self, url: str) -> None:
        """At subscription time: `check_url` and, for a host not listed, its addresses now
        (they are checked again at every connection)."""
        parts = self.check_url(url, push_endpoint=True)
        if not self.listed(parts.hostname):
            await self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))

    # Clients -----------------------------------------------------------------------------

    def client(self, *, base_url: str | None = None, http2: bool = False, timeout_s: float | None = None,
               max_connections: int = 100) -> httpx.AsyncClient:
        """An httpx.AsyncClient under this policy. `base_url` is an operator-configured
        provider address: checked here (OutgoingRefused), and its host is exempt from the
        address rule on this client. Every request: scheme and userinfo checked, addresses
        checked at connect, no redirects, `timeout_s` (default the policy's) for the whole
        exchange including the body, which is capped at `max_response_bytes`."""
        trusted: tuple[str, ...] = ()
        if base_url is not None:
            trusted = (_normal_host(urlsplit(base_url).hostname or ""),)
            self.check_url(base_url, trusted=trusted)
        total = timeout_s or self.timeout_s
        transport = _PolicyTransport(self, trusted, total, http2=http2,
                                     # httpx keeps only 20 idle connections by default: under load the rest
                                     # were closed and opened again for every request.
                                     limits=httpx.Limits(max_connections=max_connections,
                                                         max_keepalive_connections=max_connections))
        return httpx.AsyncClient(
            transport=transport, base_url=base_url or "", follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(total, connect=min(self.connect_timeout_s, total)),
            headers={"Accept-Encoding": "identity"},
        )


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body of a streamed response (`client.stream(...)`), at most `max_bytes` of it
    decoded; past that, ResponseTooLarge and the connection is dropped."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            await response.aclose()
            raise ResponseTooLarge(f"answer larger than {max_bytes} bytes", request=response.request)
    return bytes(body)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, resolved here (not by the socket
    layer), so what is checked is what is connected to."""

    def __init__(self, policy: OutgoingPolicy, trusted: tuple[str, ...]) -> None:
        self._policy, self._trusted = policy, trusted
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await self._policy.resolve(host, port, trusted=self._trusted)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise OutgoingRefused("address_not_allowed", "unix sockets are not provider addresses")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PolicyTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutgoingPolicy, trusted: tuple[str, ...], total_s: float, *, http2: bool,
                 limits: httpx.Limits) -> None:
        super().__init__(verify=policy.ssl_context, trust_env=False, http2=http2, limits=limits)
        self._policy, self._trusted, self._total_s = policy, trusted, total_s
        # httpx 0.28 has no argument for a network backend: the pool it built is replaced by
        # the same pool with ours (httpx is pinned in requirements.txt).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=policy.ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=http2, network_backend=_CheckedBackend(policy, trusted),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._policy.check_url(str(request.url), trusted=self._trusted)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_s
        try:
            async with asyncio.timeout_at(deadline):
                response = await super().handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {self._total_s}s", request=request) from None
        response.stream = _CappedStream(response.stream, request, self._policy.max_response_bytes, deadline)
        return response


class _CappedStream(httpx.AsyncByteStream):
    """The answer's raw bytes, at most `limit` of them and not past the deadline: a peer
    that trickles or floods cannot hold a sender or fill its memory."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request, limit: int, deadline: float) -> None:
        self._inner, self._request, self._limit, self._deadline = inner, request, limit, deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        chunks = self._inner.__aiter__()
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise httpx.ReadTimeout("the answer took too long", request=self._request) from None
            seen += len(chunk)
            if seen > self._limit:
                raise ResponseTooLarge(f"answer larger than {self._limit} bytes", request=self._request)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
