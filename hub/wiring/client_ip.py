"""The client IP of a request: what rate limits, lockouts and connection limits count by.

`X-Forwarded-For` is believed only from a peer in HUB_TRUSTED_PROXIES (anyone else could
write any address there and get a fresh budget per request). Behind trusted proxies the
client is the rightmost address in the chain that is not itself a trusted proxy: each
proxy appends the address it saw, so everything left of that could be made up.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def trusted_networks(setting: str | None) -> tuple[Network, ...]:
    """HUB_TRUSTED_PROXIES (already checked by config/settings.py) as networks."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in (setting or "").split(",") if item)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is the same client.
    return getattr(address, "ipv4_mapped", None) or address


def _trusted(address, networks: tuple[Network, ...]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def is_trusted_proxy(ip: str, settings) -> bool:
    address = _address(ip)
    return address is not None and _trusted(address, trusted_networks(settings.trusted_proxies))


def client_ip(request, settings) -> str:
    """The address of whoever sent `request` (a Tornado HTTPServerRequest)."""
    peer = _address(request.remote_ip or "")
    networks = trusted_networks(settings.trusted_proxies)
    if peer is None or not networks or not _trusted(peer, networks):
        return str(peer) if peer is not None else (request.remote_ip or "")
    chain = ",".join(request.headers.get_list("X-Forwarded-For")).split(",")
    for hop in reversed(chain):
        address = _address(hop)
        if address is None:
            break  # garbage in the chain: nothing left of it can be trusted
        if not _trusted(address, networks):
            return str(address)
    return str(peer)  # only trusted proxies (or nothing): the nearest one is the client
