"""Who sent a request, as the gate counts clients (gate.Job's client): a page tab, or an API caller's address.

The address is the connection's peer, unless that peer is a proxy trusted to tell the client's
address (FORWARDED_ALLOW_IPS, uvicorn's --forwarded-allow-ips): then X-Forwarded-For is read from the
right, and the first address that is not a trusted proxy is the client (entries further left were
written by whoever sent the request, so they may be forged). Nothing here imports Gradio.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping

# uvicorn's default when FORWARDED_ALLOW_IPS is unset: a proxy on the same host.
DEFAULT_TRUSTED = ""  # no proxy: the connection's own address is the client
# IPv6 clients are counted by their /64: one host is usually given a whole /64 and can use any address in it.
IPV6_PREFIX = 64


class TrustedProxies:
    """The proxies trusted to set X-Forwarded-For: addresses, networks (10.0.0.0/8), "*" for all, or other literals (a unix socket path)."""

    def __init__(self, spec: str | Iterable[str] = DEFAULT_TRUSTED):
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
        items = [s for s in items if s]
        self.everyone = "*" in items
        self.networks, self.literals = [], set()
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)

    def __contains__(self, host: str | None) -> bool:
        if not host:
            return False
        if self.everyone or host in self.literals:
            return True
        ip = _ip(host)
        return ip is not None and any(ip.version == net.version and ip in net for net in self.networks)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = host.strip()
    if host.startswith("[") and "]" in host:  # [v6]:port
        host = host[1:host.index("]")]
    elif host.count(":") == 1:  # v4:port
        host = host.split(":")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str | None, forwarded_for: str | Iterable[str] | None, trusted: TrustedProxies) -> str | None:
    """The client's address: the peer, or (peer trusted) the right-most untrusted X-Forwarded-For entry."""
    if peer is None or peer not in trusted or not forwarded_for:
        return peer
    if not isinstance(forwarded_for, str):
        forwarded_for = ",".join(forwarded_for)  # several X-Forwarded-For headers read as one list, in order
    hops = [h.strip() for h in forwarded_for.split(",")]
    hops = [h for h in hops if h]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer  # every hop is a trusted proxy: the first one is the client


def address_key(address: str | None) -> str | None:
    """The gate's client for an address: "ip:<address>" (IPv6 by its /64); None for no address."""
    if not address:
        return None
    ip = _ip(address)
    if ip is None:
        return f"ip:{address.strip()}"
    if ip.version == 6:
        return f"ip:{ipaddress.ip_network(f'{ip}/{IPV6_PREFIX}', strict=False)}"
    return f"ip:{ip}"


def client_key(peer: str | None, headers: Mapping[str, str] | None, trusted: TrustedProxies) -> str | None:
    """The gate's client for an HTTP request: its peer (scope["client"][0]) and headers, proxies as trusted says."""
    forwarded = None
    if headers is not None:
        getlist = getattr(headers, "getlist", None)
        forwarded = getlist("x-forwarded-for") if getlist is not None else headers.get("x-forwarded-for")
    return address_key(client_address(peer, forwarded, trusted))


def request_client(request: Any, trusted: TrustedProxies) -> str | None:
    """The gate's client for a request of any door (Starlette's or gr.Request: both have .client and .headers)."""
    return client_key(request.client.host if request.client else None, request.headers, trusted)


def session_key(session_id: str) -> str:
    """The gate's client for one page tab (its Session)."""
    return f"session:{session_id}"
