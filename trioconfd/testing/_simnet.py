"""A simulated UDP network behind ``trio.socket``, for whole-client tests in simulated time.

Installed with ``trio.socket.set_custom_socket_factory``, it gives every
``trio.socket.socket()`` of the current run a :class:`SimulatedSocket`. A
datagram sent on one reaches the socket bound to its destination after the
network's latency, through the faults of its link; a single delivery task
hands datagrams over in the order (time, link, sequence on that link), so a
program whose sends happen in one order gets the same deliveries every run,
whatever order Trio runs its tasks in. Every fault is drawn from a generator
per link and direction, seeded from the network's seed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import socket
from dataclasses import dataclass, field
from typing import Any

import trio

from ._capacity import Capacity, ServiceQueue, ServiceStats
from ._faults import DirectionStats, Faults, decide

Endpoint = tuple[str, int]

#: Datagrams a simulated socket holds unread before it drops more, like a kernel buffer.
SOCKET_BUFFER = 4096
_FIRST_EPHEMERAL_PORT = 40000
# Simulated seconds between two deliveries due at the same instant.
_SPACING = 1e-6


@dataclass
class LinkStats:
    """What the network did on the link to and from one endpoint (a peer)."""

    to_server: DirectionStats = field(default_factory=DirectionStats)
    to_client: DirectionStats = field(default_factory=DirectionStats)
    #: datagrams lost because the endpoint was crashed or cut off by a partition
    lost_while_down: int = 0
    #: what the endpoint's :class:`Capacity` served and dropped
    service: ServiceStats = field(default_factory=ServiceStats)


@dataclass
class _Direction:
    faults: Faults
    rng: random.Random
    stats: DirectionStats
    held: _Delivery | None = None


@dataclass
class _Link:
    """The faults around one endpoint: of datagrams to it and from it."""

    to_server: _Direction
    to_client: _Direction
    stats: LinkStats
    up: bool = True
    service: ServiceQueue | None = None


@dataclass(order=True)
class _Delivery:
    at: float
    link: str
    sequence: int
    datagram: bytes = field(compare=False)
    source: Endpoint = field(compare=False)
    destination: Endpoint = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class SimulatedNetwork(trio.abc.SocketFactory):
    """The network: bindings, links with faults, and the queue of datagrams in flight.

    ``latency`` (seconds) is how long every datagram takes; it must be more
    than zero, so that everything sent at one instant is queued before any of
    it is delivered.
    """

    def __init__(self, seed: int = 0, *, latency: float = 0.0002, host: str = "127.0.0.1") -> None:
        if not 0 < latency < math.inf:
            raise ValueError(f"latency must be a positive number of seconds, not {latency!r}")
        self.seed = seed
        self.latency = latency
        #: The address a socket bound to the wildcard address sends from.
        self.host = host
        self.default_to_server = Faults()
        self.default_to_client = Faults()
        self._bindings: dict[Endpoint, SimulatedSocket] = {}
        self._links: dict[Endpoint, _Link] = {}
        self._queue: list[_Delivery] = []
        self._sequence: dict[str, itertools.count[int]] = {}
        self._ports = itertools.count(_FIRST_EPHEMERAL_PORT)
        self._changed = trio.Event()
        self._wake_at = math.inf
        #: Datagrams for an address nothing is bound to (no ICMP in here).
        self.unreachable = 0

    # -- the socket factory ------------------------------------------------------

    def socket(
        self,
        family: socket.AddressFamily | int = socket.AF_INET,
        type: socket.SocketKind | int = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> trio.socket.SocketType:
        if family != socket.AF_INET or type != socket.SOCK_DGRAM:
            raise OSError(f"the simulated network has IPv4 UDP only, not {family!r}, {type!r}")
        return SimulatedSocket(self)

    # -- links -------------------------------------------------------------------

    def link(self, endpoint: Endpoint) -> _Link:
        """The link of ``endpoint``, made on first use with the default faults."""
        link = self._links.get(endpoint)
        if link is None:
            name = f"{endpoint[0]}:{endpoint[1]}"
            stats = LinkStats()
            link = _Link(
                _Direction(
                    self.default_to_server,
                    random.Random(f"{self.seed}:{name}:to_server"),
                    stats.to_server,
                ),
                _Direction(
                    self.default_to_client,
                    random.Random(f"{self.seed}:{name}:to_client"),
                    stats.to_client,
                ),
                stats,
            )
            self._links[endpoint] = link
        return link

    def set_capacity(self, endpoint: Endpoint, capacity: Capacity | None) -> None:
        """Serve requests to ``endpoint`` at ``capacity`` (None: at once, unbounded)."""
        link = self.link(endpoint)
        link.service = None if capacity is None else ServiceQueue(capacity, link.stats.service)

    # -- binding -----------------------------------------------------------------

    def bind(self, sock: SimulatedSocket, address: Any) -> Endpoint:
        host, port = _endpoint(address)
        if port == 0:
            port = next(p for p in self._ports if (host, p) not in self._bindings)
        if (host, port) in self._bindings:
            raise OSError(98, f"address already in use: {host}:{port}")
        self._bindings[(host, port)] = sock
        return (host, port)

    def unbind(self, endpoint: Endpoint) -> None:
        self._bindings.pop(endpoint, None)

    def _bound(self, destination: Endpoint) -> SimulatedSocket | None:
        return self._bindings.get(destination) or self._bindings.get(("0.0.0.0", destination[1]))

    # -- sending and delivering --------------------------------------------------

    def send(self, source: Endpoint, destination: Endpoint, datagram: bytes) -> None:
        """Queue ``datagram`` through the faults of the links at both ends."""
        now = trio.current_time()
        if source[0] == "0.0.0.0":
            source = (self.host, source[1])
        # A datagram to a known peer meets its to_server faults; one from a
        # peer meets its to_client faults.
        if destination in self._links:
            link, way = self._links[destination], self._links[destination].to_server
        elif source in self._links:
            link, way = self._links[source], self._links[source].to_client
        else:
            self._queue_delivery(now + self.latency, source, destination, datagram)
            return
        if not link.up:
            link.stats.lost_while_down += 1
            return
        # (One held that went out at hold_limit holds nothing back now.)
        holding = way.held is not None and not way.held.cancelled
        fate = decide(way.faults, way.rng, datagram, way.stats, can_hold=not holding)
        if not fate.copies:
            return
        at = now + self.latency + (fate.delay or 0.0)
        service = link.service
        if service is not None and way is link.to_server:
            served_at = service.served_at(at)
            if served_at is None:
                return  # the peer's queue is full: dropped
            at = served_at
        if fate.held:
            # Out at hold_limit at the latest, or just after the next datagram
            # (counted now: it goes once, either way).
            way.held = self._queue_delivery(
                now + self.latency + way.faults.hold_limit, source, destination, fate.datagram
            )
            way.stats.forwarded += 1
            return
        for _ in range(fate.copies):
            self._queue_delivery(at, source, destination, fate.datagram)
        way.stats.forwarded += fate.copies
        held, way.held = way.held, None
        if held is not None and not held.cancelled:
            # Not out at hold_limit yet: it goes just after this one instead.
            held.cancelled = True
            self._queue_delivery(at, held.source, held.destination, held.datagram)

    def _queue_delivery(
        self, at: float, source: Endpoint, destination: Endpoint, datagram: bytes
    ) -> _Delivery:
        link = f"{source[0]}:{source[1]}>{destination[0]}:{destination[1]}"
        counter = self._sequence.setdefault(link, itertools.count())
        delivery = _Delivery(at, link, next(counter), datagram, source, destination)
        heapq.heappush(self._queue, delivery)
        if at < self._wake_at:
            self._changed.set()  # the delivery task sleeps past it: wake it to look again
        return delivery

    def _deliver(self, delivery: _Delivery) -> None:
        for endpoint in (delivery.source, delivery.destination):
            link = self._links.get(endpoint)
            if link is not None and not link.up:
                link.stats.lost_while_down += 1
                return
        sock = self._bound(delivery.destination)
        if sock is None:
            self.unreachable += 1
            return
        sock.deliver(delivery.datagram, delivery.source)

    async def run(self) -> None:
        """Deliver datagrams as they fall due, one per instant, until cancelled.

        Datagrams due together go out ``_SPACING`` apart, so that whatever one
        sets off (a reply, a verdict, a late reply counted as such) happens
        before the next arrives: the same sends give the same story.
        """
        queue = self._queue
        next_free = -math.inf
        while True:
            now = trio.current_time()
            if queue and queue[0].at <= now and now >= next_free:
                delivery = heapq.heappop(queue)
                if not delivery.cancelled:
                    self._deliver(delivery)
                    # Done: a datagram held for reordering, out at hold_limit,
                    # is not sent again after the next one.
                    delivery.cancelled = True
                    next_free = now + _SPACING
            self._wake_at = max(queue[0].at, next_free) if queue else math.inf
            self._changed = trio.Event()
            with trio.move_on_at(self._wake_at):
                await self._changed.wait()


def _endpoint(address: Any) -> Endpoint:
    if not (isinstance(address, tuple) and len(address) == 2 and isinstance(address[1], int)):
        raise OSError(f"a simulated address is a (host, port) pair, not {address!r}")
    host, port = address
    if not isinstance(host, str) or not 0 <= port < 65536:
        raise OSError(f"bad simulated address {address!r}")
    return (host, port)


class SimulatedSocket(trio.socket.SocketType):
    """A UDP socket on a :class:`SimulatedNetwork`: bind, sendto, recvfrom, close."""

    def __init__(self, network: SimulatedNetwork) -> None:
        super().__init__()
        self._network = network
        self._endpoint: Endpoint | None = None
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, Endpoint]](
            SOCKET_BUFFER
        )
        self._closed = False
        #: Datagrams dropped because this socket's buffer was full.
        self.overflowed = 0

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET

    @property
    def type(self) -> socket.SocketKind:
        return socket.SOCK_DGRAM

    @property
    def proto(self) -> int:
        return 0

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(9, "Bad file descriptor (a closed simulated socket)")

    async def bind(self, address: Any) -> None:
        self._check_open()
        if self._endpoint is not None:
            raise OSError(22, "the simulated socket is bound already")
        await trio.lowlevel.checkpoint()
        self._endpoint = self._network.bind(self, address)

    def getsockname(self) -> Endpoint:
        self._check_open()
        return self._endpoint or ("0.0.0.0", 0)

    async def sendto(self, *args: Any) -> int:
        """``sendto(data, address)`` (flags, if given, must be 0)."""
        data, address = args[0], args[-1]
        if len(args) == 3 and args[1] != 0:
            raise OSError(f"the simulated network takes no send flags, not {args[1]!r}")
        self._check_open()
        destination = _endpoint(address)
        datagram = bytes(data)
        if self._endpoint is None:  # an unbound socket gets a port on first send, as UDP does
            self._endpoint = self._network.bind(self, ("0.0.0.0", 0))
        # As a trio.socket's: a cancelled send raises before anything goes; the
        # datagram goes in the caller's step, then the task yields.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._network.send(self._endpoint, destination, datagram)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return len(datagram)

    async def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Endpoint]:
        self._check_open()
        if flags:
            raise OSError(f"the simulated network takes no receive flags, not {flags!r}")
        try:
            datagram, source = await self._inbox.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("another task closed this socket") from None
        return datagram[:bufsize], source  # a longer datagram is cut, as UDP cuts it

    def deliver(self, datagram: bytes, source: Endpoint) -> None:
        """The network hands this socket a datagram."""
        try:
            self._inbox_send.send_nowait((datagram, source))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.overflowed += 1

    def setsockopt(self, *args: Any) -> None:
        raise OSError("a simulated socket has no socket options")

    def fileno(self) -> int:
        raise NotImplementedError("a simulated socket has no file descriptor")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox_send.close()
            if self._endpoint is not None:
                self._network.unbind(self._endpoint)

    def __enter__(self) -> SimulatedSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SimulatedSocket {self._endpoint}{' closed' if self._closed else ''}>"
