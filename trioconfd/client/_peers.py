"""Checking peer lists and finding the confd port."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import TypeAlias

import trio

from ..protocol import (
    DEFAULT_PORT,
    SERVICE_NAME,
    Address,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
)
from ..protocol._numbers import shown

#: A peer: an IP address or host name (the client's port applies), an
#: (address, port) pair, or "HOST:PORT" / "[IPv6]:PORT".
PeerSpec: TypeAlias = str | ipaddress.IPv4Address | ipaddress.IPv6Address | tuple[str, int]

#: Where the client's socket is bound: an IP address (any free port), an
#: (IP, port) pair, or "IP:PORT" / "[IPv6]:PORT".
LocalAddress: TypeAlias = str | ipaddress.IPv4Address | ipaddress.IPv6Address | tuple[str, int]


@functools.cache
def default_port() -> int:
    """The ``ganeti-confd/udp`` port from the services database, else 1814."""
    try:
        return socket.getservbyname(SERVICE_NAME, "udp")
    except OSError:
        return DEFAULT_PORT


def check_port(port: object, what: str = "port") -> int:
    """``port`` if it is a valid UDP port number, else a clear :class:`ConfdClientError`."""
    wrong = f"{what} must be an integer from 1 to 65535, not {shown(port)}"
    if not isinstance(port, int) or isinstance(port, bool):
        raise ConfdArgumentTypeError(wrong)
    if not 0 < port < 65536:
        raise ConfdArgumentError(wrong)
    return port


# A DNS host name: dot-separated labels of letters, digits, '-' and '_', not
# starting or ending with '-'; an optional final dot.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?\Z)(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?\Z"
)
_DOTTED_QUAD = re.compile(r"\d+(?:\.\d+){3}\Z")
#: A local address's port 0 (any free port), written ":0" or ":00".
_ANY_PORT = re.compile(r":0+\Z")


def _ip(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (IPv4-mapped IPv6 as the IPv4 it maps), else None.

    An IPv6 address with a zone index (``fe80::1%eth0``, ``::1%1``) is
    refused: replies are matched to peers by address and port, and the
    socket reports a sender's zone in its own way (or not at all).
    """
    try:
        ip = ipaddress.ip_address(host)  # type: ignore[arg-type]
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ConfdArgumentError(
            f"{str(host)!r} has an IPv6 zone index (%{ip.scope_id}), which trioconfd "
            "does not support: give an address without '%' (a global or loopback one)"
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is an IPv4 peer. As IPv6, its replies would come back
        # from "::ffff:a.b.c.d" while ipaddress writes "::ffff:xxxx:xxxx",
        # and no reply would ever match the peer.
        return ip.ipv4_mapped
    return ip


def _meant_as_ipv4(host: str) -> bool:
    # A name whose last label is a number, or one the C library would read
    # as an IPv4 address ("127.1", "0x7f000001"), is a mistyped address.
    if host.rstrip(".").rpartition(".")[2].isdigit():
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    return bool(_HOST_NAME.match(host)) and not _meant_as_ipv4(host)


def _not_a_host(host: str) -> str:
    """What is wrong with ``host``, neither an IP address nor a host name."""
    if not _meant_as_ipv4(host):
        return "is not an IP address or a host name"
    if _DOTTED_QUAD.match(host):
        return "is not an IP address"  # a number out of range
    return "is not an IP address (IPv4: four decimal numbers, a.b.c.d)"


def _check_host(host: str, text: str) -> None:
    if _ip(host) is None and not _is_host_name(host):
        raise ConfdArgumentError(f"bad peer {text!r}: {host!r} {_not_a_host(host)}")


def parse_peer_text(text: str) -> PeerSpec:
    """A peer written ``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``, as on a command line.

    ``HOST`` is an IP address or a host name (resolved when a client opens).
    A bad one is a :class:`ConfdClientError` that quotes it.
    """
    if not isinstance(text, str):
        raise ConfdArgumentTypeError(f"a peer written as text must be a str, not {text!r}")
    host, port = text, None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise ConfdArgumentError(f"bad peer {text!r}: the '[' is never closed")
        if rest:
            if not rest.startswith(":"):
                raise ConfdArgumentError(f"bad peer {text!r}: expected [ADDRESS]:PORT")
            port = rest[1:]
        if ":" not in host:
            raise ConfdArgumentError(f"bad peer {text!r}: [...] is for IPv6 addresses")
    elif text.count(":") == 1:
        host, port = text.split(":")
    _check_host(host, text)
    if port is None:
        return host
    if not (port.isascii() and port.isdigit()):
        raise ConfdArgumentError(f"bad peer {text!r}: port {port!r} is not a number")
    try:
        return (host, check_port(int(port)))
    except ConfdClientError as exc:
        raise ConfdArgumentError(f"bad peer {text!r}: {exc}") from None


def _endpoint(peer: object, port: int) -> tuple[str, int]:
    """A peer as (IP address or host name, port), checked; IPs normalised."""
    if isinstance(peer, str) and (peer.startswith("[") or peer.count(":") == 1):
        peer = parse_peer_text(peer)
    if isinstance(peer, tuple):
        if len(peer) != 2:
            raise ConfdArgumentError(f"peer {peer!r} must be an address or an (address, port) pair")
        host, port = peer
        port = check_port(port, f"the port of peer {peer!r}")
    else:
        host = peer
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        host = str(host)
    if not isinstance(host, str):
        raise ConfdArgumentTypeError(
            f"peer {peer!r} is not an IP address or a host name "
            f"(a str, an ipaddress object or an (address, port) pair), "
            f"but {type(host).__name__}"
        )
    ip = _ip(host)
    if ip is not None:
        return (str(ip), port)
    if not _is_host_name(host):
        raise ConfdArgumentError(f"peer {peer!r} {_not_a_host(host)}")
    return (host, port)


def _family(address: Address) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def _as_list(peers: Iterable[PeerSpec]) -> list[PeerSpec]:
    if isinstance(peers, str | bytes) or not isinstance(peers, Iterable):
        raise ConfdArgumentTypeError(
            f"peers must be a list of addresses, not {type(peers).__name__}"
        )
    return list(peers)


def _one_family(addresses: Iterable[Address]) -> tuple[socket.AddressFamily, list[Address]]:
    # Repeated peers are dropped: one listed twice would be asked twice but
    # could only count once.
    unique = list(dict.fromkeys(addresses))
    if not unique:
        raise ConfdArgumentError("the peer list is empty")
    families = {_family(address): address for address in unique}
    if len(families) > 1:
        raise ConfdArgumentError(
            f"peers mix IPv4 and IPv6 addresses ({families[socket.AF_INET][0]} and "
            f"{families[socket.AF_INET6][0]}; ::ffff:a.b.c.d counts as IPv4): "
            "one client speaks one family"
        )
    return next(iter(families)), unique


def parse_peers(peers: Iterable[PeerSpec], port: int) -> tuple[socket.AddressFamily, list[Address]]:
    """Check ``peers`` (IP addresses); return their one address family and their addresses.

    Each is an IP address, an (IP, port) pair, or ``"IP:PORT"`` /
    ``"[IPv6]:PORT"``; ``port`` applies to those without one. Addresses are
    normalised the way the socket reports a sender (so replies can be matched
    to peers): an IPv4-mapped IPv6 address is the IPv4 address it maps.
    Host names need resolving: see :func:`resolve_peers`.
    """
    endpoints = [_endpoint(peer, port) for peer in _as_list(peers)]
    for host, _ in endpoints:
        if _ip(host) is None:
            raise ConfdArgumentError(
                f"peer {host!r} is a host name; names are resolved when a client opens, "
                "or by await trioconfd.resolve_peers(...): give addresses here"
            )
    return _one_family(endpoints)


async def resolve_peers(
    peers: Iterable[PeerSpec], port: int | None = None
) -> tuple[socket.AddressFamily, list[Address]]:
    """:func:`parse_peers`, with host names resolved once, through Trio.

    Each name becomes one peer: its first address of the peers' family (that
    of the IP addresses given, else IPv4 if every name has one, else IPv6). A
    name that does not resolve is a :class:`ConfdClientError` naming it.
    """
    port = default_port() if port is None else check_port(port)
    endpoints = [_endpoint(peer, port) for peer in _as_list(peers)]
    names = {endpoint for endpoint in endpoints if _ip(endpoint[0]) is None}
    if not names:
        return _one_family(endpoints)
    found: dict[tuple[str, int], dict[socket.AddressFamily, str]] = {}
    for host, host_port in names:
        try:
            infos = await trio.socket.getaddrinfo(host, host_port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfdClientError(f"cannot resolve peer {host!r}: {reason}") from None
        by_family: dict[socket.AddressFamily, str] = {}
        for _, _, _, _, sockaddr in infos:
            ip = _ip(str(sockaddr[0]).partition("%")[0])  # no IPv6 zone index
            if ip is not None:
                by_family.setdefault(_family((str(ip), 0)), str(ip))
        found[(host, host_port)] = by_family
    given = {_family(endpoint) for endpoint in endpoints if endpoint not in names}
    family: socket.AddressFamily
    if len(given) == 1:
        family = given.pop()
    elif all(socket.AF_INET in ips for ips in found.values()):
        family = socket.AF_INET
    else:
        family = socket.AF_INET6
    resolved = []
    for host, host_port in endpoints:
        ips = found.get((host, host_port))
        if ips is None:
            resolved.append((host, host_port))
        elif family in ips:
            resolved.append((ips[family], host_port))
        else:
            raise ConfdClientError(
                f"peer {host!r} has no IPv{4 if family == socket.AF_INET else 6} address, "
                f"as the other peers have (it resolves to "
                f"{', '.join(ips.values()) or 'nothing usable'})"
            )
    return _one_family(resolved)


def parse_local_address(
    local_address: LocalAddress | None, family: socket.AddressFamily
) -> tuple[str, int]:
    """Where to bind a client whose peers are of ``family``: the wildcard, or ``local_address``.

    It is an IP address (of the peers' family; an IPv4-mapped one counts as
    IPv4), with an optional port (0 or none: any free port).
    """
    if local_address is None:
        return ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    what = f"local_address {local_address!r}"
    if isinstance(local_address, str) and (
        local_address.startswith("[") or local_address.count(":") == 1
    ):
        text = _ANY_PORT.sub("", local_address)  # port 0: any free port, as in (address, 0)
        try:
            local_address = parse_peer_text(text)
        except ConfdClientError as exc:
            raise ConfdArgumentError(
                str(exc).replace(f"bad peer {text!r}", f"bad local_address {local_address!r}")
            ) from None
    host: object = local_address
    port = 0
    if isinstance(local_address, tuple):
        if len(local_address) != 2:
            raise ConfdArgumentError(f"{what} must be an address or an (address, port) pair")
        host, given_port = local_address
        if not (type(given_port) is int and given_port == 0):  # 0: any free port
            port = check_port(given_port, f"the port of {what}")
    if not isinstance(host, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise ConfdArgumentTypeError(
            f"{what} is not an IP address (a str, an ipaddress object or an "
            f"(address, port) pair), but {type(host).__name__}"
        )
    ip = _ip(host)
    if ip is None:
        raise ConfdArgumentError(f"{what} is not an IP address")
    ip_family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    if ip_family != family:
        raise ConfdArgumentError(
            f"{what} is IPv{ip.version}, but the peers are "
            f"IPv{4 if family == socket.AF_INET else 6}: the socket speaks one family"
        )
    return (str(ip), port)
