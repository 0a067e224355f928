"""The client's socket side: the routing table, the receive task, and sending.

Every request in flight is a :class:`RoutingEntry` in the table, keyed by its rsalt.
The receive task reads each datagram from the client's ``trio.socket`` UDP
socket and checks it: size and magic, HMAC, a known rsalt, an address the
request went to, a peer not yet counted. What passes goes to the route's
memory channel with ``send_nowait`` (the channel's buffer holds one reply per
peer that may be asked, so that never blocks), and to the user's callback.
Everything else is counted in :class:`ClientStats` and dropped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import trio

from .._udp import (
    ARRIVAL_STAMP_SPACE,
    PEER_UNREACHABLE,
    SOCKET_CLOSED,
    ErrorQueue,
    arrival_of,
    ask_for_arrival_stamps,
    unread_datagram_check,
)
from ..protocol import (
    MAX_DATAGRAM_SIZE,
    Address,
    AdmissionPolicy,
    ConfdArgumentError,
    ConfdClientError,
    ConfdMalformedError,
    ConfdSignatureError,
    HmacKey,
    PeerReply,
    RttEstimate,
)
from ..protocol._aggregate import with_answered
from ..protocol._wire import read_awaited_reply
from ._admission import Admission
from ._channels import ChannelPool
from ._entry import RoutingEntry
from ._errors import ConfdClientBrokenError, ConfdClientClosedError
from ._logs import LoggerLike, LogSummary
from ._stats import ClientStats

# One byte more than the protocol allows, so that an oversized datagram
# arrives whole enough to be recognised and counted as such.
_RECEIVE_SIZE = MAX_DATAGRAM_SIZE + 1
#: One datagram in this many is read with its arrival stamp (``recvmsg``), the
#: first one included: enough to tell the reading's lag under load.
_STAMPS_READ_EVERY = 8

# Authentic replies from addresses no request went to, before a hint is logged
# that a peer may be multihomed (one such reply can be a stray).
_MULTIHOMED_HINT_AFTER = 3

#: A routing entry's ``accepts_until`` when it takes replies for as long as it lasts.
_NO_END = math.inf
#: ``PeerReply(address, reply)`` made from its pair in one C call, not through the
#: named tuple's Python ``__new__`` (once an accepted reply).
_new_peer_reply = partial(tuple.__new__, PeerReply)

#: Receive tasks taking turns on the client's socket.
RECEIVE_TASKS = 4
# Requests in flight above which a receive task that got a datagram wakes
# another to read too; below, replies seldom pile up, and a wake for nothing
# would cost a sequential query ~10% more.
_READERS_BUSY = 16
#: Tries of one send that the network's errors about other datagrams fail.
_SEND_ATTEMPTS = 4
#: Peers the network said were unreachable, remembered at most.
_UNREACHABLE_KEPT = 4096


class Router:
    """Owns the socket and the routing table; runs the receive task.

    ``on_reply``, when set (the client's upcall), sees every accepted reply.
    Each discard is counted in ``stats``; its log line goes through ``log``,
    at most one per reason per interval, at debug level.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        key: HmacKey,
        logger: LoggerLike,
        max_outstanding: int,
        log_interval: float,
        *,
        admission: AdmissionPolicy,
    ) -> None:
        self.socket = sock
        # Read once, while the socket is open: a closed client's repr still says it.
        self.local_address: tuple[Any, ...] = tuple(sock.getsockname())
        self.key = key
        self.logger = logger
        self.log = LogSummary(logger, log_interval)
        self._unasked_replies = 0
        self.stats = ClientStats()
        self.table: dict[str, RoutingEntry] = {}
        self.closed_reason: str | None = None
        #: set as the client closes: what sleeps between asks (a watch) wakes
        self.closing = trio.Event()
        self._broken = False
        self._failure: BaseException | None = None
        self.on_reply: Callable[[RoutingEntry, PeerReply], None] | None = None
        self._max_outstanding = max_outstanding
        #: Trio's clock (``trio.current_time``), read straight from the run's
        #: clock: no lookup of the run each time (several times a query).
        self.now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        #: every peer's window of places; queries waiting for room are ``waiting``
        self.admission = Admission(admission, self.stats)
        self._windows = self.admission.windows
        self.waiting = 0
        #: reply channels, reused once their request ends
        self.channels = ChannelPool()
        self._send_lock = trio.Lock()
        self._idle_readers = trio.lowlevel.ParkingLot()
        # Each peer's round trips, for adaptive retransmission.
        self.rtt: dict[Address, RttEstimate] = {}
        #: the ICMP errors the socket was sent, by the peer they were about
        #: (Linux; None where the kernel cannot say, as on a custom socket)
        self.error_queue = ErrorQueue.attach(sock, read_again=self._have_errors_read)
        #: whether the socket holds replies not read yet (None where the
        #: kernel cannot be asked, as on a custom socket)
        self.holds_unread = unread_datagram_check(sock)
        #: whether the kernel stamps each datagram with when it came (a kernel
        #: socket on Linux): the receive tasks then read with ``recvmsg``
        self.stamps_arrivals = self.holds_unread is not None and ask_for_arrival_stamps(sock)
        # How long the datagram read with its stamp last had waited unread
        # (None: no stamp yet), and when it was read, on Trio's clock (the
        # stamps are on the wall clock, which may step).
        self._lag: float | None = None
        self._lag_read_at = 0.0
        #: each receive task's cancel scope while it reads: a send that met
        #: an error of the queue, or a drain asked for while another read it,
        #: cancels them, and they read the queue
        self._reading: set[trio.CancelScope] = set()
        #: the queue is to be read again (see the above): a receive task does
        self._errors_pending = False
        #: each peer the network last said was unreachable: when, and the errno
        self.unreachable: dict[Address, tuple[float, int]] = {}

    def rtt_of(self, peer: Address) -> RttEstimate:
        """``peer``'s round-trip estimate (made at its first use)."""
        estimate = self.rtt.get(peer)
        if estimate is None:
            estimate = self.rtt[peer] = RttEstimate()
        return estimate

    async def read_network_errors(self) -> None:
        """Note which peers the network says are unreachable (the socket reported
        one of :data:`PEER_UNREACHABLE`), emptying the socket's error queue.

        Only the receive tasks read it: they are the socket's readers.
        """
        queue = self.error_queue
        if queue is None:
            return
        # Shielded: a send asking for the queue to be read (cancelling the
        # reads) must not cut this reading short, and lose what it read.
        with trio.CancelScope(shield=True):
            errors = await queue.drain()
        if not errors:
            return
        unreachable = self.unreachable
        if len(unreachable) > _UNREACHABLE_KEPT:
            unreachable.clear()  # bounded, whoever was sent to
        now = trio.current_time()
        for peer, code in errors:
            unreachable[peer] = (now, code)

    def check_open(self) -> None:
        """Raise :class:`ConfdClientClosedError` if the client was closed, or
        :class:`ConfdClientBrokenError` if its receive task stopped."""
        if self.closed_reason is None:
            return
        message = f"the confd client is closed: {self.closed_reason}"
        if self._broken:
            raise ConfdClientBrokenError(message) from self._failure
        raise ConfdClientClosedError(message)

    def add(self, route: RoutingEntry) -> None:
        """Put ``route`` in the table; before its request is sent, so no reply beats it."""
        rsalt = route.request.rsalt
        if not rsalt:
            raise ConfdArgumentError("the request has an empty rsalt")
        if rsalt in self.table:
            raise ConfdArgumentError(f"duplicate request rsalt {rsalt!r}")
        if len(self.table) + self.waiting >= self._max_outstanding:
            self.check_room()  # raises
        self.table[rsalt] = route

    def check_room(self) -> None:
        """Raise :class:`ConfdClientError` if ``max_outstanding`` requests are held
        already (sent, or waiting for places)."""
        held = len(self.table) + self.waiting
        if held >= self._max_outstanding:
            self.stats.refused += 1
            raise ConfdClientError(
                f"{held} requests are outstanding or waiting, the client's limit"
            )

    def remove(self, route: RoutingEntry) -> None:
        """Take ``route`` out of the table; its late replies count as ``unknown_salt``."""
        if self.table.get(route.request.rsalt) is route:
            del self.table[route.request.rsalt]

    async def send(
        self,
        datagram: bytes,
        targets: Iterable[Address],
        attempted: list[Address] | None = None,
    ) -> list[tuple[Address, str]] | None:
        """Send ``datagram`` to each target; one that fails does not stop the others.

        Each failure is counted and returned, with its OS error (None: none failed).
        Each target goes on ``attempted`` if given, as it is tried: before its
        send (its reply may be read before this task runs again), and off again
        if that send is cancelled before it went (sent to or failed, it stays):
        a send cancelled part way (at a deadline) leaves out those never tried.
        """
        lock, sendto = self._send_lock, self.socket.sendto
        failures = None
        for target in targets:
            if attempted is not None:
                attempted.append(target)
            try:
                if not lock.locked():  # with room in the buffer, no lock (see _sendto)
                    try:
                        await sendto(datagram, target)
                        continue
                    except trio.BusyResourceError:
                        pass  # another task waits for room: take turns below
                    except OSError as exc:
                        await self._send_again(datagram, target, exc)
                        continue
                await self._sendto(datagram, target)
            except OSError as exc:
                self.check_open()  # a closed socket fails every send: say why
                self.stats.send_errors += 1
                if failures is None:
                    failures = []
                failures.append((target, str(exc)))
                self.log.log(
                    "send errors", logging.DEBUG, "could not send to %s:%d: %s", *target[:2], exc
                )
            except BaseException:
                if attempted is not None:
                    attempted.pop()  # cancelled before it went
                raise
        return failures

    async def _sendto(self, datagram: bytes, target: Address) -> None:
        """One ``sendto`` in turn: the socket's send buffer is full.

        A task whose send waits for room holds the socket's send side, and a
        second task's ``sendto`` raises ``trio.BusyResourceError``: that one
        takes the send lock and tries again every 1 ms, while later senders
        queue on the lock (as in ``trio/_dtls.py``). With room in the buffer
        no lock is taken (:meth:`send` sends at once): queueing every send
        cost ~10% CPU at 256 in flight.
        """
        async with self._send_lock:
            while True:
                try:
                    await self.socket.sendto(datagram, target)
                except trio.BusyResourceError:
                    await trio.sleep(0.001)
                except OSError as exc:
                    await self._send_again(datagram, target, exc)
                    return
                else:
                    return

    async def _send_again(self, datagram: bytes, target: Address, error: OSError) -> None:
        """After a ``sendto`` failed with ``error``: if the network sent it about an
        earlier datagram, read it and send again; else raise it.

        With the error queue on, Linux fails the next call on the socket
        with an ICMP error it was sent (port unreachable from another peer,
        say), and does not send: that error was not ``target``'s.
        """
        for _ in range(_SEND_ATTEMPTS):
            if self.error_queue is None or error.errno not in PEER_UNREACHABLE:
                raise error
            # The error was the queue's: the readers must read it (a queue
            # left full with no error pending would spin them), and they
            # alone read the socket. Their reads are cancelled, and they go
            # to the queue.
            self._have_errors_read()
            while True:
                try:
                    await self.socket.sendto(datagram, target)
                except trio.BusyResourceError:
                    await trio.sleep(0.001)  # another task waits for room: take turns
                except OSError as exc:
                    error = exc
                    break
                else:
                    return
        self._have_errors_read()
        raise error

    def _have_errors_read(self) -> None:
        """A send met an error of the queue, or a drain was asked for while
        another read it: the receive tasks, the socket's only readers, are to
        read the queue (their reads cancelled; one not yet reading sees the
        flag first)."""
        self._errors_pending = True
        for reading in self._reading:
            reading.cancel()

    async def receive_loop(self) -> None:
        """Read and route datagrams until cancelled or the socket closes; then the
        client is closed.

        The client runs :data:`RECEIVE_TASKS` of these, taking turns on the
        socket: one waits for it to become readable, the others are parked
        until that one has read a datagram and, with more than a few requests
        in flight, wakes one more to read too. So when replies have piled up,
        each scheduler batch reads several, not one behind many runnable
        tasks.

        An error that says a peer is unreachable is counted and the loop reads
        on; any other socket error ends it, and the client closes with it as
        the reason (the error goes on to the client's nursery).
        """
        reason = "its receive task has stopped"
        failure: BaseException | None = None
        try:
            while True:
                # Until no drain was asked for while one read (its errors
                # left in the queue would keep the socket signalling: a read
                # of the socket would spin in Trio's wait for it).
                while self._errors_pending:
                    self._errors_pending = False
                    await self.read_network_errors()
                # One scope for as long as nothing cancels it: a send that met
                # an error of the queue does, or a drain asked for while
                # another read it, and this task reads the queue.
                with trio.CancelScope() as reading:
                    self._reading.add(reading)
                    try:
                        await self._receive_until_closed()
                        return
                    finally:
                        self._reading.discard(reading)
        except OSError as exc:
            reason = f"its receive task stopped: the socket failed: {exc}"
            failure = exc
            raise
        except Exception as exc:
            failure = exc
            raise
        finally:
            self._idle_readers.unpark_all()  # one of them waits for the socket in our place
            # (After the client's block has exited, the client is closed already.)
            self.close(reason, broken=True, failure=failure)

    async def _receive_until_closed(self) -> None:
        """Read and route datagrams until the socket closes; raise the error of a
        socket that failed."""
        receive = self.socket.recvfrom
        # (A custom socket may have no recvmsg: it is not stamped.)
        receive_stamped = self.socket.recvmsg if self.stamps_arrivals else None
        wall_clock = time.time
        route = self._route
        idle = self._idle_readers
        stats = self.stats
        while True:
            try:
                if receive_stamped is not None and not stats.received % _STAMPS_READ_EVERY:
                    # A sample of the stamps tells the lag: each one read costs
                    # a query ~3% more (the kernel copies it out, we parse it).
                    datagram, ancillary, _, sender = await receive_stamped(
                        _RECEIVE_SIZE, ARRIVAL_STAMP_SPACE
                    )
                    arrival = arrival_of(ancillary)
                    self._lag = None if arrival is None else max(0.0, wall_clock() - arrival)
                    self._lag_read_at = self.now()
                else:
                    datagram, sender = await receive(_RECEIVE_SIZE)
            except trio.BusyResourceError:
                # Another receive task waits for the socket: wait for it.
                await idle.park()
                continue
            except trio.ClosedResourceError:
                return  # the socket was closed: the client is closing
            except OSError as exc:
                if exc.errno in SOCKET_CLOSED:
                    return
                if exc.errno not in PEER_UNREACHABLE:
                    raise
                self.stats.socket_errors += 1
                await self.read_network_errors()
                self.log.log(
                    "socket errors", logging.DEBUG, "the socket reported %s; receiving on", exc
                )
                # Trio's own sockets checkpoint even when a call fails; a
                # custom socket (a simulated network) may not: let the
                # others run, so a socket that keeps failing cannot hog
                # the loop.
                await trio.lowlevel.checkpoint()
                continue
            if idle and len(self.table) > _READERS_BUSY:
                idle.unpark()  # under load there may be more: one more reader
            route(datagram, sender)

    def unread(self) -> tuple[bool, float | None]:
        """Whether datagrams wait unread in the socket (False where the kernel cannot
        be asked); and, if they do and arrivals are stamped, how far the reading
        has got, on Trio's clock: the datagrams that came before that time have
        been read, as far as can be told (see :meth:`reading_lag`)."""
        holds_unread = self.holds_unread
        if holds_unread is None or not holds_unread():
            return False, None
        now = self.now()
        lag = self._fresh_lag(now)
        if lag is None:
            return True, None
        return True, now - lag

    def reading_lag(self, now: float | None = None) -> float:
        """How far (seconds) the reading lags behind the datagrams arriving at
        ``now`` (default: Trio's clock now): how long the datagram last read
        with its stamp (one in eight is) had waited unread, if it was read no
        longer ago than that (0 otherwise, or if arrivals are not stamped).

        Measured at a read, it says nothing of a gap before a datagram that
        has just come, and falls behind while the loop is held up: it may
        understate, never take idle time for lag. A reading that has caught
        up leaves it standing at most that long. No system call: the kernel
        is not asked whether more wait (``FIONREAD`` contends with the
        datagrams arriving, and cost ~3% of a query under load).
        """
        return self._fresh_lag(self.now() if now is None else now) or 0.0

    def _fresh_lag(self, now: float) -> float | None:
        """The lag last read with a stamp, if read no longer ago than it was; else None."""
        lag = self._lag
        if lag is None or now - self._lag_read_at > lag:
            return None
        return lag

    def _route(self, datagram: bytes, sender: Any) -> None:
        """Check one datagram and hand it on if it is a reply a request waits for."""
        stats = self.stats
        stats.received += 1
        table = self.table
        try:
            # A reply to no request in flight (late, or forged) is dropped
            # on its envelope: its signature and message are never read.
            found = read_awaited_reply(datagram, self.key, table)
        except ConfdMalformedError as exc:
            stats.malformed += 1
            self.log.log(
                "malformed datagrams",
                logging.DEBUG,
                "discarding a malformed datagram from %s: %s",
                sender,
                exc,
            )
            return
        except ConfdSignatureError as exc:
            stats.bad_signature += 1
            self.log.log(
                "unauthentic datagrams",
                logging.DEBUG,
                "discarding an unauthentic datagram from %s: %s",
                sender,
                exc,
            )
            return
        if isinstance(found, str):  # the salt of no request in flight
            stats.unknown_salt += 1
            self.log.log(
                "replies to no outstanding request",
                logging.DEBUG,
                "discarding a reply from %s for unknown salt %r",
                sender,
                found[:80],  # not authenticated: any length
            )
            return
        reply, salt = found
        route = table[salt]
        if route.accepts_until != _NO_END and self.now() >= route.accepts_until:
            # A stream's, past its deadline: its verdict is the deadline's,
            # and its block may outlast it. Late, as if the request had gone.
            stats.unknown_salt += 1
            self.log.log(
                "replies to no outstanding request",
                logging.DEBUG,
                "discarding a reply from %s for %r, past its stream's deadline",
                sender,
                salt,
            )
            return
        address: Address = (sender[0], sender[1])
        if address not in route.targets:
            stats.unexpected_peer += 1
            self._discard_unasked(salt, address)
            return
        if address in route.answered:
            stats.duplicate += 1
            self.log.log(
                "second replies from one peer",
                logging.DEBUG,
                "discarding a second reply for %r from %s",
                salt,
                address,
            )
            return
        stats.accepted += 1
        window = self._windows.get(address)
        if window is not None:  # the peer answers: not silent, however slowly it is read
            window.answers += 1
            window.silent = False
        route.answered = with_answered(route.answered, address)
        peer_reply = _new_peer_reply((address, reply))
        route.deliver(peer_reply)
        if self.on_reply is not None:
            self.on_reply(route, peer_reply)

    def _discard_unasked(self, salt: str, address: Address) -> None:
        self.log.log(
            "replies from unasked addresses",
            logging.DEBUG,
            "discarding a reply for %r from unasked %s",
            salt,
            address,
        )
        # Authentic, for a request in flight, but from elsewhere: most often
        # a peer with several addresses answering from another one.
        self._unasked_replies += 1
        if self._unasked_replies >= _MULTIHOMED_HINT_AFTER:
            self._unasked_replies = 0
            self.log.log(
                "hints that a peer may be multihomed",
                logging.WARNING,
                "authentic replies keep coming from addresses the requests did not go to "
                "(the last from %s port %d), and are discarded: if a peer has several "
                "addresses and answers from another one, list the address it answers "
                "from, or have its ganeti-confd bind to the listed one",
                *address,
            )

    def close(
        self, reason: str, *, broken: bool = False, failure: BaseException | None = None
    ) -> None:
        """Close the client: every route ends now, every later call raises.

        ``broken``: it did not close on purpose (its receive task stopped,
        by ``failure`` if an exception stopped it).
        """
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self._broken, self._failure = broken, failure
        self.closing.set()
        self.log.flush()
        routes = list(self.table.values())
        self.table.clear()
        self.channels.close()
        self.admission.close()
        for route in routes:
            route.end()
