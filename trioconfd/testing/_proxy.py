"""A UDP proxy that drops, delays, duplicates, reorders or corrupts datagrams.

It sits in front of any confd server, real or in-process: clients send to the
proxy's address and it relays to the server through one upstream socket per
client (so replies find their way back, and come from the address the client
asked). Each direction has its own :class:`Faults` and its own random
generator seeded from ``seed``, so a run can be repeated exactly.
"""

from __future__ import annotations

import functools
import math
import random
import socket as stdlib_socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ..client._background import background_tasks
from ..protocol import ConfdClientError

_RECEIVE_SIZE = 65536


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfdClientError(f"{name} must be a probability from 0 to 1, not {value!r}")


@dataclass(frozen=True)
class Faults:
    """What happens to datagrams going one way; each rate is a probability per datagram.

    ``delay`` holds a datagram for a time drawn from ``delay_range`` seconds;
    ``reorder`` holds it until the next datagram has gone (or ``hold_limit``
    seconds pass); ``corrupt`` flips one random byte.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    delay_range: tuple[float, float] = (0.0, 0.05)
    hold_limit: float = 0.05

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "delay", "corrupt"):
            _check_rate(name, getattr(self, name))
        low, high = self.delay_range
        if not 0 <= low <= high or not math.isfinite(high):
            raise ConfdClientError(f"delay_range must be 0 <= low <= high, not {self.delay_range}")
        if not 0 < self.hold_limit < math.inf:
            raise ConfdClientError(f"hold_limit must be positive, not {self.hold_limit}")


@dataclass
class DirectionStats:
    """What the proxy did to the datagrams going one way."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    corrupted: int = 0


@dataclass
class _Direction:
    faults: Faults
    rng: random.Random
    stats: DirectionStats = field(default_factory=DirectionStats)
    held: tuple[bytes, Any, trio.socket.SocketType] | None = None
    held_since: float = 0.0


class FaultProxy:
    """A running proxy; see :func:`fault_proxy`."""

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
        self._nursery = nursery
        self._outbound = _Direction(to_server, random.Random(f"{seed}:to_server"))
        self._inbound = _Direction(to_client, random.Random(f"{seed}:to_client"))
        self._sockets: dict[Any, trio.socket.SocketType] = {}

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
        self._outbound.faults = faults

    @property
    def to_client(self) -> Faults:
        return self._inbound.faults

    @to_client.setter
    def to_client(self, faults: Faults) -> None:
        self._inbound.faults = faults

    @property
    def stats(self) -> dict[str, DirectionStats]:
        """Counters for each direction, ``"to_server"`` and ``"to_client"``."""
        return {"to_server": self._outbound.stats, "to_client": self._inbound.stats}

    async def _relay_from_clients(self) -> None:
        while True:
            try:
                datagram, client = await self._listener.recvfrom(_RECEIVE_SIZE)
            except OSError:
                continue
            upstream = self._sockets.get(client)
            if upstream is None:
                upstream = await self._open_upstream(client)
            await self._apply(self._outbound, datagram, upstream, self._upstream)

    async def _open_upstream(self, client: Any) -> trio.socket.SocketType:
        sock = trio.socket.socket(self._listener.family, stdlib_socket.SOCK_DGRAM)
        await sock.bind((self.address[0], 0))
        self._sockets[client] = sock
        self._nursery.start_soon(self._relay_to_client, sock, client)
        return sock

    async def _relay_to_client(self, upstream: trio.socket.SocketType, client: Any) -> None:
        with upstream:
            while True:
                try:
                    datagram, _ = await upstream.recvfrom(_RECEIVE_SIZE)
                except OSError:
                    continue
                await self._apply(self._inbound, datagram, self._listener, client)

    async def _apply(
        self, way: _Direction, datagram: bytes, sock: trio.socket.SocketType, to: Any
    ) -> None:
        faults, rng, stats = way.faults, way.rng, way.stats
        stats.received += 1
        # Every draw is made whatever the rates, so one seed gives one sequence.
        dropped = rng.random() < faults.drop
        duplicated = rng.random() < faults.duplicate
        corrupted = rng.random() < faults.corrupt
        reordered = rng.random() < faults.reorder
        delayed = rng.random() < faults.delay
        delay = rng.uniform(*faults.delay_range)
        position = rng.randrange(max(1, len(datagram)))
        flip = rng.randrange(1, 256)
        if dropped:
            stats.dropped += 1
            return
        if corrupted and datagram:
            stats.corrupted += 1
            mutable = bytearray(datagram)
            mutable[position] ^= flip
            datagram = bytes(mutable)
        copies = 2 if duplicated else 1
        stats.duplicated += copies - 1
        if reordered and way.held is None:
            stats.reordered += 1
            way.held = (datagram, to, sock)
            way.held_since = trio.current_time()
            self._nursery.start_soon(self._release_later, way, way.held)
            return
        if delayed:
            stats.delayed += 1
            self._nursery.start_soon(
                functools.partial(self._send_later, copies=copies, delay=delay),
                way,
                datagram,
                sock,
                to,
            )
        else:
            await self._send(way, datagram, sock, to, copies)
        await self._release(way)

    async def _send(
        self, way: _Direction, datagram: bytes, sock: trio.socket.SocketType, to: Any, copies: int
    ) -> None:
        for _ in range(copies):
            try:
                await sock.sendto(datagram, to)
                way.stats.forwarded += 1
            except OSError:
                pass

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
async def fault_proxy(
    upstream: tuple[str, int],
    *,
    to_server: Faults | None = None,
    to_client: Faults | None = None,
    seed: int = 0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[FaultProxy]:
    """Relay datagrams to ``upstream`` with faults injected in each direction.

    ``proxy.to_server`` and ``proxy.to_client`` can be changed while it runs.
    """
    family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
    listener = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    with listener:
        await listener.bind((host, port))
        async with background_tasks() as nursery:
            proxy = FaultProxy(
                listener,
                upstream,
                to_server=to_server or Faults(),
                to_client=to_client or Faults(),
                seed=seed,
                nursery=nursery,
            )
            nursery.start_soon(proxy._relay_from_clients)
            yield proxy
