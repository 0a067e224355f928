"""A UDP proxy that drops, delays, duplicates, reorders or corrupts datagrams.

It sits in front of any confd server, real or in-process: clients send to the
proxy's address and it relays to the server through one upstream socket per
client (so replies find their way back, and come from the address the client
asked). Each direction has its own :class:`Faults` and its own random
generator seeded from ``seed``, so a run can be repeated exactly.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import socket as stdlib_socket
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from .._tasks import background_tasks
from .._udp import receive_datagram
from ..client import check_port
from ..protocol import ConfdArgumentError, ConfdArgumentTypeError, format_address
from ._faults import DirectionStats, Faults, check_faults, decide

_RECEIVE_SIZE = 65536
_LOGGER = logging.getLogger(__name__)
#: Clients with an upstream socket of their own at once; past this many, the
#: one heard from longest ago loses its socket (and any reply still due to it).
MAX_CLIENTS = 256


def _relay_on(error: OSError) -> None:
    _LOGGER.debug("the socket reported %s; relaying on", error)


@dataclass
class _Direction:
    faults: Faults
    rng: random.Random
    stats: DirectionStats = field(default_factory=DirectionStats)
    held: tuple[bytes, Any, trio.socket.SocketType] | None = None
    held_since: float = 0.0


class FaultProxy:
    """A running proxy; see :func:`open_fault_proxy`."""

    def __init__(
        self,
        listener: trio.socket.SocketType,
        upstream: tuple[str, int],
        *,
        to_server: Faults,
        to_client: Faults,
        seed: int,
        nursery: trio.Nursery,
    ) -> None:
        self._listener = listener
        self._upstream = upstream
        self._upstream_ip = ipaddress.ip_address(upstream[0])
        self._nursery = nursery
        self._outbound = _Direction(to_server, random.Random(f"{seed}:to_server"))
        self._inbound = _Direction(to_client, random.Random(f"{seed}:to_client"))
        # By client, the one heard from longest ago first.
        self._sockets: OrderedDict[Any, trio.socket.SocketType] = OrderedDict()

    def __repr__(self) -> str:
        try:
            where = format_address(self.address)
        except OSError:
            where = "closed"
        return (
            f"<FaultProxy {where} -> {format_address(self._upstream)} clients={len(self._sockets)}>"
        )

    @property
    def address(self) -> tuple[str, int]:
        """Where clients should send: the proxy's (host, port)."""
        host, port = self._listener.getsockname()[:2]
        return (host, port)

    @property
    def to_server(self) -> Faults:
        return self._outbound.faults

    @to_server.setter
    def to_server(self, faults: Faults) -> None:
        self._outbound.faults = check_faults(faults, "to_server")

    @property
    def to_client(self) -> Faults:
        return self._inbound.faults

    @to_client.setter
    def to_client(self, faults: Faults) -> None:
        self._inbound.faults = check_faults(faults, "to_client")

    @property
    def stats(self) -> dict[str, DirectionStats]:
        """Counters for each direction, ``"to_server"`` and ``"to_client"``."""
        return {"to_server": self._outbound.stats, "to_client": self._inbound.stats}

    async def _relay_from_clients(self) -> None:
        while True:
            received = await receive_datagram(self._listener, _RECEIVE_SIZE, _relay_on)
            if received is None:
                return  # the listener was closed
            datagram, client = received
            upstream = self._sockets.get(client)
            if upstream is None:
                try:
                    upstream = await self._open_upstream(client)
                except OSError as exc:  # out of file descriptors, say: this one is lost
                    self._outbound.stats.received += 1
                    self._outbound.stats.dropped += 1
                    _LOGGER.debug("no upstream socket for %s: %s", client, exc)
                    continue
            else:
                self._sockets.move_to_end(client)
            await self._apply(self._outbound, datagram, upstream, self._upstream)

    async def _open_upstream(self, client: Any) -> trio.socket.SocketType:
        if len(self._sockets) >= MAX_CLIENTS:
            _, oldest = self._sockets.popitem(last=False)
            oldest.close()  # its relay task ends
        sock = trio.socket.socket(self._listener.family, stdlib_socket.SOCK_DGRAM)
        try:
            await sock.bind((self.address[0], 0))
        except BaseException:
            sock.close()
            raise
        self._sockets[client] = sock
        self._nursery.start_soon(self._relay_to_client, sock, client)
        return sock

    async def _relay_to_client(self, upstream: trio.socket.SocketType, client: Any) -> None:
        with upstream:
            while True:
                received = await receive_datagram(upstream, _RECEIVE_SIZE, _relay_on)
                if received is None:
                    return
                datagram, sender = received
                if not self._from_upstream(sender):
                    # Not the server's: relayed, it would pass for its reply.
                    self._inbound.stats.strays += 1
                    continue
                await self._apply(self._inbound, datagram, self._listener, client)

    def _from_upstream(self, sender: Any) -> bool:
        """Whether ``sender`` is the server: its address and port. A server on
        a wildcard address answers from whichever of this machine's addresses
        routes back; one on a loopback address, from the main loopback one."""
        host, port = sender[0], sender[1]
        if port != self._upstream[1]:
            return False
        if host == self._upstream[0] or self._upstream_ip.is_unspecified:
            return True
        return self._upstream_ip.is_loopback and _is_loopback(host)

    async def _apply(
        self, way: _Direction, datagram: bytes, sock: trio.socket.SocketType, to: Any
    ) -> None:
        fate = decide(way.faults, way.rng, datagram, way.stats, can_hold=way.held is None)
        if not fate.copies:
            return
        if fate.held:
            way.held = (fate.datagram, to, sock)
            way.held_since = trio.current_time()
            self._nursery.start_soon(self._release_later, way, way.held)
            return
        if fate.delay is not None:
            self._nursery.start_soon(
                functools.partial(self._send_later, copies=fate.copies, delay=fate.delay),
                way,
                fate.datagram,
                sock,
                to,
            )
        else:
            await self._send(way, fate.datagram, sock, to, fate.copies)
        await self._release(way)

    async def _send(
        self, way: _Direction, datagram: bytes, sock: trio.socket.SocketType, to: Any, copies: int
    ) -> None:
        for _ in range(copies):
            try:
                await sock.sendto(datagram, to)
                way.stats.forwarded += 1
            except trio.ClosedResourceError:
                way.stats.dropped += 1  # its client's socket went to another (MAX_CLIENTS)
                return
            except OSError as exc:
                # That address refused this datagram (unreachable, too large,
                # gone): a network loses it, and the proxy relays on.
                _LOGGER.debug("could not relay a datagram to %s: %s", to, exc)

    async def _send_later(
        self,
        way: _Direction,
        datagram: bytes,
        sock: trio.socket.SocketType,
        to: Any,
        *,
        copies: int,
        delay: float,
    ) -> None:
        await trio.sleep(delay)
        await self._send(way, datagram, sock, to, copies)

    async def _release(self, way: _Direction) -> None:
        """Send the datagram held back for reordering, now that another went first."""
        if way.held is not None:
            datagram, to, sock = way.held
            way.held = None
            await self._send(way, datagram, sock, to, 1)

    async def _release_later(
        self, way: _Direction, held: tuple[bytes, Any, trio.socket.SocketType]
    ) -> None:
        # A held datagram is not lost just because nothing follows it.
        await trio.sleep(way.faults.hold_limit)
        if way.held is held:
            await self._release(way)


@asynccontextmanager
async def open_fault_proxy(
    upstream: tuple[str, int],
    *,
    to_server: Faults | None = None,
    to_client: Faults | None = None,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[FaultProxy]:
    """Relay datagrams to ``upstream`` with faults injected in each direction.

    ``upstream`` is a (host, port) pair of the family of ``host`` (the
    proxy's own address), resolved once. Only datagrams from it go back to
    the clients (others are counted as ``strays``). Each client has an
    upstream socket of its own, :data:`MAX_CLIENTS` at most.
    ``proxy.to_server`` and ``proxy.to_client`` can be changed while it runs.
    """
    family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
    server = await _upstream_address(upstream, family)
    to_server = Faults() if to_server is None else check_faults(to_server, "to_server")
    to_client = Faults() if to_client is None else check_faults(to_client, "to_client")
    listener = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    with listener:
        await listener.bind((host, port))
        async with background_tasks() as nursery:
            proxy = FaultProxy(
                listener,
                server,
                to_server=to_server,
                to_client=to_client,
                seed=seed,
                nursery=nursery,
            )
            nursery.start_soon(proxy._relay_from_clients)
            yield proxy


async def _upstream_address(upstream: object, family: int) -> tuple[str, int]:
    """``upstream`` checked and resolved to the address its replies come from."""
    if not (isinstance(upstream, tuple) and len(upstream) == 2 and isinstance(upstream[0], str)):
        raise ConfdArgumentTypeError(f"upstream must be a (host, port) pair, not {upstream!r}")
    host, port = upstream
    port = check_port(port, f"the port of upstream {upstream!r}")
    version = 6 if family == stdlib_socket.AF_INET6 else 4
    try:
        found = await trio.socket.getaddrinfo(host, port, family, stdlib_socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfdArgumentError(
            f"upstream {host!r} has no IPv{version} address, the proxy's family: {exc}"
        ) from None
    address = found[0][4]
    return (str(address[0]), int(address[1]))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False
