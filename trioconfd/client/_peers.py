"""Checking peer lists and finding the confd port."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import TypeAlias

from ..protocol import DEFAULT_PORT, SERVICE_NAME, Address, ConfdClientError

#: A peer: an IP address (the client's port applies), or an (IP, port) pair.
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
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfdClientError(f"{what} must be an integer from 1 to 65535, not {port!r}")
    return port


def format_address(address: tuple[str, int]) -> str:
    """``IP:PORT``, or ``[IPv6]:PORT``: how peers are written on a command line."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_peer_text(text: str) -> PeerSpec:
    """A peer written ``ADDR``, ``ADDR:PORT`` or ``[ADDR]:PORT`` (IPv6), as on a command line.

    A bad one is a :class:`ConfdClientError` that quotes it.
    """
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ConfdClientError(f"bad peer {text!r}: expected [ADDRESS]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfdClientError(f"bad peer {text!r}: {host!r} is not an IP address") from None
    if port is None:
        return host
    if not port.isdigit():
        raise ConfdClientError(f"bad peer {text!r}: port {port!r} is not a number")
    try:
        return (host, check_port(int(port)))
    except ConfdClientError as exc:
        raise ConfdClientError(f"bad peer {text!r}: {exc}") from None


def _parse_peer(peer: object, port: int) -> tuple[int, Address]:
    if isinstance(peer, tuple):
        if len(peer) != 2:
            raise ConfdClientError(f"peer {peer!r} must be an address or an (address, port) pair")
        host, port = peer
        port = check_port(port, f"the port of peer {peer!r}")
    else:
        host = peer
    if not isinstance(host, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise ConfdClientError(f"peer {peer!r} is not an IP address")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfdClientError(f"peer {peer!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is an IPv4 peer. As IPv6, its replies would come back
        # from "::ffff:a.b.c.d" while ipaddress writes "::ffff:xxxx:xxxx",
        # and no reply would ever match the peer.
        ip = ip.ipv4_mapped
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return family, (str(ip), port)


def parse_peers(peers: Iterable[PeerSpec], port: int) -> tuple[socket.AddressFamily, list[Address]]:
    """Check ``peers``; return their one address family and their addresses.

    Addresses are normalised the way the socket reports a sender (so replies
    can be matched to peers): an IPv4-mapped IPv6 address is the IPv4 address
    it maps. Repeated ones are dropped: a peer listed twice would be asked
    twice but could only count once.
    """
    if isinstance(peers, str | bytes) or not isinstance(peers, Iterable):
        raise ConfdClientError(f"peers must be a list of addresses, not {type(peers).__name__}")
    families: set[int] = set()
    addresses: dict[Address, None] = {}
    for peer in peers:
        family, address = _parse_peer(peer, port)
        families.add(family)
        addresses[address] = None
    if not addresses:
        raise ConfdClientError("the peer list is empty")
    if len(families) > 1:
        raise ConfdClientError(
            "peers mix IPv4 and IPv6 addresses (::ffff:a.b.c.d counts as IPv4); "
            "one client speaks one family"
        )
    return socket.AddressFamily(families.pop()), list(addresses)


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
        try:
            local_address = parse_peer_text(local_address)
        except ConfdClientError as exc:
            raise ConfdClientError(str(exc).replace("bad peer", "bad local_address")) from None
    host: object = local_address
    port = 0
    if isinstance(local_address, tuple):
        if len(local_address) != 2:
            raise ConfdClientError(f"{what} must be an address or an (address, port) pair")
        host, given_port = local_address
        if not (type(given_port) is int and given_port == 0):  # 0: any free port
            port = check_port(given_port, f"the port of {what}")
    if not isinstance(host, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise ConfdClientError(f"{what} is not an IP address")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfdClientError(f"{what} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    ip_family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    if ip_family != family:
        raise ConfdClientError(
            f"{what} is IPv{ip.version}, but the peers are "
            f"IPv{4 if family == socket.AF_INET else 6}: the socket speaks one family"
        )
    return (str(ip), port)
