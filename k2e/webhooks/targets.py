"""Where a webhook may send: http or https URLs whose host resolves to public addresses.

Refused (unless ``K2E_WEBHOOK_ALLOW_CIDRS`` names the address): loopback, private,
link-local, multicast, reserved, unspecified and cloud metadata addresses, and any other
address that is not globally routable. A name is resolved once per check and every
address it resolves to must pass: the sender then connects to a checked address itself,
so no second lookup (which DNS could answer differently) happens between check and use.
IPv4 addresses carried inside IPv6 ones (mapped, 6to4, NAT64) are judged as IPv4.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from k2e.errors import FieldError, InvalidInput
from k2e.webhook_settings import IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the name resolves to (socket.getaddrinfo by default).
Resolver = Callable[[str, int], Sequence[str]]

# Instance metadata services: named as such, whatever range they sit in.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOOKUPS = ThreadPoolExecutor(8, thread_name_prefix="k2e-dns")
URL_LOC = ("body", "url")


class TargetRefused(InvalidInput):
    """A webhook URL that k2e will not send to; ``rule`` names why."""

    def __init__(self, detail: str, rule: str) -> None:
        super().__init__(detail, [FieldError(URL_LOC, detail)])
        self.rule = rule


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to name there (``host``)."""

    scheme: str
    host: str  # the name for the Host header and TLS SNI
    port: int
    path: str  # path and query, the request target
    address: str  # the checked IP the sender connects to


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_url(url: str) -> SplitResult:
    """The URL's parts; TargetRefused (rule ``url``) when it is not an http(s) URL k2e
    can send to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"url is not a valid URL ({exc})", "url") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("url must be an http or https URL", "scheme")
    if not parts.hostname:
        raise TargetRefused("url must name a host", "url")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("url must not carry a user name or password", "url")
    if port == 0:
        raise TargetRefused("url must not name port 0", "url")
    return parts


def address_rule(address: IpAddress) -> str | None:
    """Why an address is not a public one (a rule's name), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return address_rule(inner)
    if address in METADATA:
        return "metadata"
    for rule, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return rule
    return None if address.is_global else "not-global"


class TargetPolicy:
    """Checks URLs against the rules above, with the allowed networks and a resolver; a
    lookup that takes longer than ``lookup_timeout_s`` counts as one that failed."""

    def __init__(
        self,
        allowed: Sequence[IpNetwork] = (),
        resolver: Resolver = system_resolver,
        lookup_timeout_s: float = 5.0,
    ) -> None:
        self.allowed = tuple(allowed)
        self.resolver = resolver
        self.lookup_timeout_s = lookup_timeout_s

    def check(self, url: str) -> Target:
        """Resolve the URL's host once and check every address; TargetRefused naming the
        rule when one fails. The Target carries the first address, to connect to."""
        parts = parse_url(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses, literal = [ipaddress.ip_address(host)], True
        except ValueError:
            addresses, literal = self._resolve(host, port), False
        for address in addresses:
            rule = None if self._allowed(address) else address_rule(address)
            if rule is not None:
                shown = f"{host} is" if literal else f"{host} resolves to {address}, which is"
                raise TargetRefused(
                    f"url: {shown} refused by the rule '{rule}': webhooks are sent to public "
                    "addresses only (K2E_WEBHOOK_ALLOW_CIDRS can allow others)",
                    rule,
                )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(parts.scheme, host, port, path, str(addresses[0]))

    def _resolve(self, host: str, port: int) -> list[IpAddress]:
        # In a thread of its own: a slow DNS server holds neither an API request nor a
        # delivery thread past the timeout (the lookup itself finishes in the background).
        lookup = _LOOKUPS.submit(self.resolver, host, port)
        try:
            answer = lookup.result(timeout=self.lookup_timeout_s)
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answer]
        except TimeoutError:
            raise TargetRefused(
                f"url: the host {host} did not resolve within {self.lookup_timeout_s:g} s", "dns"
            ) from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise TargetRefused(f"url: the host {host} does not resolve ({exc})", "dns") from None
        if not found:
            raise TargetRefused(f"url: the host {host} does not resolve", "dns")
        return found

    def _allowed(self, address: IpAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.allowed)
