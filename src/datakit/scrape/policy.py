"""Which URLs and addresses the image downloader may touch (reliability.md SEC-01..07).

A URL string check is not an SSRF defence: `2130706433`, `0x7f000001` or a host name that
resolves inside are only caught by checking the address actually connected. `AddressPolicy`
is therefore applied twice: to the URL before a request (scheme, credentials, port) and to the
socket address inside the connector (`socket_factory`), on every redirect hop, so DNS rebinding
cannot slip between check and connect.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

from yarl import URL

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_6TO4 = ipaddress.ip_network("2002::/16")


class Blocked(Exception):
    """A URL or address the policy refuses; `reason` is a manifest reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BlockedAddress(OSError):
    """Raised inside the connector's socket factory; aiohttp wraps it in ClientConnectorError."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"datakit-{reason}: {detail}")
        self.reason = reason


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in a mapped, NAT64, 6to4 or Teredo IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _6TO4:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses whose embedded IPv4 is global too."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None and (not inner.is_global or inner.is_multicast):
            return False
    return True


class AddressPolicy:
    """Refuses non-public addresses (unless allowed) and ports outside `allowed_ports`.

    Args:
        allow_private: allow every address and every port (own servers, tests).
        allow_networks: CIDRs allowed although not global (e.g. a company proxy).
        allowed_ports: ports a URL may use when `allow_private` is off.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_networks: Iterable[str] = (),
        allowed_ports: Iterable[int] = (80, 443),
    ) -> None:
        self.allow_private = allow_private
        self.networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks]
        self.ports = frozenset(allowed_ports)

    def address_allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if self.allow_private:
            return True
        if any(ip in net for net in self.networks):
            return True
        return is_public(ip)

    def port_allowed(self, port: int | None) -> bool:
        return self.allow_private or port in self.ports

    def check_url(self, url: str | URL) -> URL:
        """Parse and check a URL before any connection. Raises Blocked with a reason code."""
        if isinstance(url, str):
            if _CONTROL_OR_SPACE.search(url):
                raise Blocked("bad_url", "whitespace or control characters in the URL")
            try:
                parsed = URL(url)
            except (ValueError, TypeError) as exc:
                raise Blocked("bad_url", f"unparseable URL ({exc})") from None
        else:
            parsed = url
        if parsed.scheme and parsed.scheme not in ("http", "https"):
            raise Blocked("bad_scheme", f"scheme {parsed.scheme!r}")
        if not parsed.is_absolute() or not parsed.scheme:
            raise Blocked("bad_url", "relative URL")
        if parsed.user is not None or parsed.password is not None:
            raise Blocked("bad_url", "credentials in the URL")
        if not parsed.host or "\\" in (parsed.raw_host or ""):
            raise Blocked("bad_url", "no host")
        if not self.port_allowed(parsed.port):
            raise Blocked("blocked_port", f"port {parsed.port}")
        # Numeric hosts (127.1, 0x7f000001, 2130706433) are classified here without DNS, the
        # same way the C library would read them; named hosts are checked at connect time.
        literal = numeric_host(parsed.raw_host or "")
        if literal is not None and not self.address_allowed(literal):
            raise Blocked("blocked_address", f"{parsed.raw_host} is {literal}")
        return parsed

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp `TCPConnector(socket_factory=...)`: checks the address being connected."""
        family, type_, proto, _, sockaddr = addr_info
        host, port = sockaddr[0], sockaddr[1]
        if not self.address_allowed(host):
            raise BlockedAddress("blocked_address", f"{host} is not a public address")
        if not self.port_allowed(port):
            raise BlockedAddress("blocked_port", f"port {port}")
        return socket.socket(family=family, type=type_, proto=proto)


def numeric_host(host: str) -> str | None:
    """The address a numeric host string means (inet_aton rules: `127.1`, `0x7f.1`, `2130706433`,
    `0177.0.0.1`), or None for a name. Never sends a DNS query (AI_NUMERICHOST)."""
    host = host.strip("[]")
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0]) if infos else None
