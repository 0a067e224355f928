"""The Trio confd client: one UDP socket, a receive task, a table of requests.

Every request sent is an entry in a table keyed by its rsalt. The receive
task checks each datagram (magic, HMAC, known rsalt, an address the request
went to, a peer not yet counted) and hands what passes to the entry's
reader: the task of a :meth:`ConfdClient.query` or
:meth:`ConfdClient.request`, rescheduled directly; an event for
:meth:`ConfdClient.wait_for_reply`; and the client's callback for everyone.
A timer task expires requests and retransmits unanswered ones. Nothing is
kept per request but the table entry and a heap item.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import socket as stdlib_socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._aggregate import Address, PeerReply, QueryResult, ReplyAggregator
from ._background import background_tasks
from ._constants import (
    DEFAULT_COVERAGE,
    EXPIRE_TIMEOUT,
    MAX_DATAGRAM_SIZE,
    RequestType,
    UpcallType,
)
from ._errors import ConfdClientError, ConfdMagicError, ConfdSignatureError
from ._kernel import udp_socket_drops
from ._messages import ConfdReply, ConfdRequest, Query
from ._node import read_hmac_key, read_master_candidate_ips
from ._outstanding import Outstanding
from ._peers import PeerSpec, check_port, default_port, parse_peers
from ._quorum import QuorumRule, needed_replies
from ._retry import RetryPolicy
from ._stats import ClientStats
from ._stream import ReplyStream
from ._upcall import Callback, Upcall
from ._wire import HmacKey, KeyLike, as_hmac_key, pack_request, unpack_reply

_LOGGER = logging.getLogger("trioconfd")

# One byte more than the protocol allows, so that an oversized datagram
# arrives whole enough to be recognised and counted as such.
_RECEIVE_SIZE = MAX_DATAGRAM_SIZE + 1

# Datagrams handled before the receive task lets other tasks run.
_BATCH = 64

# Retransmissions are due on a grid of this many seconds, so that the timer
# task wakes at most once per tick however many queries are in flight (a
# query that ends early leaves its heap item behind to be skipped).
_RETRY_TICK = 0.01

#: The socket receive buffer asked for: room for a burst of replies to many
#: queries in flight (the kernel may grant less; see ``net.core.rmem_max``).
RECEIVE_BUFFER_SIZE = 4 * 1024 * 1024

#: How many requests may be outstanding at once by default.
DEFAULT_MAX_OUTSTANDING = 65536


def _as_request(type_or_request: ConfdRequest | RequestType | int, query: Query) -> ConfdRequest:
    if isinstance(type_or_request, ConfdRequest):
        if query is not None:
            raise ConfdClientError("give a query either inside the ConfdRequest or beside a type")
        return type_or_request
    return ConfdRequest(type_or_request, query)  # type: ignore[arg-type]


def _check_timeout(timeout: float | None) -> float:
    if timeout is None:
        return EXPIRE_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ConfdClientError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
    return float(timeout)


class ConfdClient:
    """A confd client bound to one Trio UDP socket; make it with :func:`open_confd_client`."""

    def __init__(
        self,
        key: HmacKey,
        family: stdlib_socket.AddressFamily,
        peers: list[Address],
        port: int,
        sock: stdlib_socket.socket,
        *,
        callback: Callback | None,
        logger: logging.Logger,
        quorum: QuorumRule,
        retry: RetryPolicy,
        max_outstanding: int,
        rng: random.Random,
    ) -> None:
        self._key = key
        self._family = family
        self._peers = peers
        self._port = port
        self._socket = sock
        self._callback = callback
        self._logger = logger
        self._quorum = quorum
        self._retry = retry
        self._max_outstanding = max_outstanding
        self._rng = rng
        self._requests: dict[str, Outstanding] = {}
        # (due time, rsalt) heaps; an item whose entry has moved on is skipped.
        self._expiries: list[tuple[float, str]] = []
        self._retries: list[tuple[float, str]] = []
        self._deadlines: list[tuple[float, str]] = []
        self._timers_changed = trio.Event()
        # When the timer task will next wake up by itself; scheduling anything
        # later needs no wake-up call (one fewer task switch per query).
        self._timers_wake_at = -math.inf
        #: Counters of what happened to each datagram and request.
        self.stats = ClientStats()

    def __repr__(self) -> str:
        return (
            f"<ConfdClient local={self.local_address} peers={len(self._peers)}"
            f" outstanding={len(self._requests)}>"
        )

    # -- introspection -------------------------------------------------------

    @property
    def peers(self) -> tuple[Address, ...]:
        """The peers' (address, port) pairs."""
        return tuple(self._peers)

    @property
    def port(self) -> int:
        """The port of peers given without one."""
        return self._port

    @property
    def retry(self) -> RetryPolicy:
        """The retransmission policy of queries that do not give their own."""
        return self._retry

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The socket's bound address, where replies (and anything else) arrive."""
        return tuple(self._socket.getsockname())

    @property
    def outstanding(self) -> int:
        """How many requests are in the table, waiting for replies or expiry."""
        return len(self._requests)

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped because the socket's buffer was full (Linux), else None."""
        return udp_socket_drops(self._socket.fileno(), self._family)

    # -- peers and coverage --------------------------------------------------

    def update_peer_list(self, peers: Iterable[PeerSpec]) -> None:
        """Replace the peers; requests already sent keep their targets.

        The new peers must be of the socket's address family.
        """
        family, addresses = parse_peers(peers, self._port)
        if family != self._family:
            raise ConfdClientError(
                f"the new peers are {family.name}, but this client's socket is {self._family.name}"
            )
        self._peers = addresses

    def _choose_targets(self, coverage: int) -> list[Address]:
        if isinstance(coverage, bool) or not isinstance(coverage, int):
            raise ConfdClientError(f"coverage must be an integer, not {coverage!r}")
        known = len(self._peers)
        if coverage == 0:
            coverage = min(known, DEFAULT_COVERAGE)
        elif coverage == -1:
            coverage = known
        elif coverage < -1:
            raise ConfdClientError(f"coverage must be -1, 0 or a peer count, not {coverage}")
        if coverage > known:
            raise ConfdClientError(
                f"coverage {coverage} asks for more peers than the {known} known"
            )
        if coverage == known:
            return list(self._peers)  # everyone is asked: nothing to draw
        return self._rng.sample(self._peers, coverage)

    # -- sending ---------------------------------------------------------------

    def _register(
        self,
        request: ConfdRequest,
        args: Any,
        targets: list[Address],
        expiry: float,
    ) -> tuple[Outstanding, bytes]:
        """Put ``request`` in the table and return its entry and datagram.

        Registering before sending means a reply can never beat its entry.
        """
        if not request.rsalt:
            raise ConfdClientError("the request has an empty rsalt")
        if request.rsalt in self._requests:
            self.expire_requests()  # as Ganeti does: an expired salt is free again
            if request.rsalt in self._requests:
                raise ConfdClientError(f"duplicate request rsalt {request.rsalt!r}")
        if len(self._requests) >= self._max_outstanding:
            self.stats.refused += 1
            raise ConfdClientError(
                f"{len(self._requests)} requests are outstanding, the client's limit"
            )
        datagram = pack_request(request, self._key)
        entry = Outstanding(request, args, targets if len(targets) <= 8 else set(targets), expiry)
        self._requests[request.rsalt] = entry
        if expiry != math.inf:
            self._schedule(self._expiries, expiry, request.rsalt)
        return entry, datagram

    def _schedule_retry(self, entry: Outstanding, due: float) -> None:
        entry.next_retry = math.ceil(due / _RETRY_TICK) * _RETRY_TICK
        if entry.next_retry < entry.deadline:
            self._schedule(self._retries, entry.next_retry, entry.request.rsalt)

    def _schedule(self, heap: list[tuple[float, str]], due: float, rsalt: str) -> None:
        heapq.heappush(heap, (due, rsalt))
        if due < self._timers_wake_at:
            self._timers_changed.set()

    async def _send(self, datagram: bytes, targets: Iterable[Address]) -> None:
        # The socket is non-blocking: a datagram goes out at once unless the
        # send buffer is full, and only then does this wait.
        sock = self._socket
        for target in targets:
            while True:
                try:
                    sock.sendto(datagram, target)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except OSError as exc:
                    # One unreachable peer must not stop the others being asked.
                    self.stats.send_errors += 1
                    self._logger.debug("could not send to %s:%d: %s", target[0], target[1], exc)
                break

    def _forget(self, entry: Outstanding) -> None:
        if self._requests.get(entry.request.rsalt) is entry:
            del self._requests[entry.request.rsalt]
        entry.wake()

    async def send_request(
        self, request: ConfdRequest, args: Any = None, coverage: int = 0
    ) -> None:
        """Send ``request`` to ``coverage`` peers; replies go to the callback.

        Coverage 0 means min(peers, 6), -1 all peers, N exactly N (more than
        are known is an error). The request expires :data:`EXPIRE_TIMEOUT`
        seconds from now, firing an ``EXPIRE`` upcall, unless waited on. Like
        Ganeti's client, this sends once; queries retransmit.
        """
        if not isinstance(request, ConfdRequest):
            raise ConfdClientError(f"request must be a ConfdRequest, not {type(request).__name__}")
        targets = self._choose_targets(coverage)
        self.expire_requests()  # first, as Ganeti's SendRequest does
        expiry = trio.current_time() + EXPIRE_TIMEOUT
        entry, datagram = self._register(request, args, targets, expiry)
        try:
            await self._send(datagram, targets)
            await trio.lowlevel.checkpoint()
        except BaseException:
            self._forget(entry)
            raise

    async def wait_for_reply(
        self, salt: str, timeout: float = EXPIRE_TIMEOUT
    ) -> tuple[bool, int, int]:
        """Wait until a quorum of the peers asked has replied to request ``salt``.

        Returns ``(timed_out, sent, received)``; an unknown or expired salt
        gives ``(True, 0, 0)``. The request's expiry moves ``timeout`` later,
        so that it does not expire while waited on.
        """
        timeout = _check_timeout(timeout)
        missing = (True, 0, 0)
        entry = self._requests.get(salt)
        if entry is None:
            await trio.lowlevel.checkpoint()
            return missing
        if entry.expiry != math.inf:
            entry.expiry += timeout
            self._schedule(self._expiries, entry.expiry, salt)
        needed = self._quorum(len(entry.targets))
        with trio.move_on_after(timeout):
            while len(entry.answered) < needed:
                if self._requests.get(salt) is not entry:
                    return missing
                if entry.changed is None:
                    entry.changed = trio.Event()
                await entry.changed.wait()
            await trio.lowlevel.checkpoint()
            return False, len(entry.targets), len(entry.answered)
        if self._requests.get(salt) is not entry:
            return missing
        return True, len(entry.targets), len(entry.answered)

    def _pop_due(
        self,
        heap: list[tuple[float, str]],
        now: float,
        still_due: Callable[[Outstanding, float], bool],
    ) -> Iterator[tuple[Outstanding, str]]:
        """The requests whose heap items are due by ``now``, skipping stale items.

        An item is stale when its request is gone or has moved on (answered
        for by a later item): heaps are not searched, items just lapse.
        """
        while heap and heap[0][0] <= now:
            due, salt = heapq.heappop(heap)
            entry = self._requests.get(salt)
            if entry is not None and still_due(entry, due):
                yield entry, salt

    def expire_requests(self) -> None:
        """Forget every request past its expiry, firing an ``EXPIRE`` upcall for each."""
        now = trio.current_time()
        for entry, salt in self._pop_due(self._expiries, now, _expiry_is):
            self._forget(entry)
            self.stats.expired += 1
            if self._callback is not None:
                self._upcall(Upcall(UpcallType.EXPIRE, salt, entry.request, entry.args, self))

    # -- the stream and query forms ------------------------------------------

    @asynccontextmanager
    async def request(
        self,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query = None,
        *,
        coverage: int = 0,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[ReplyStream]:
        """Send a request and stream its replies as they arrive::

            async with client.request(RequestType.PING) as replies:
                async for peer_reply in replies:
                    print(peer_reply.address, peer_reply.reply.answer)

        The stream ends when every peer asked has replied or ``timeout``
        seconds (default :data:`EXPIRE_TIMEOUT`) have passed; until then
        silent peers are asked again as ``retry`` (default: the client's
        policy) says. Leaving the block forgets the request; later replies to
        it are discarded and counted.
        """
        entry, aggregator = await self._start_read(type_or_request, query, coverage, timeout, retry)
        try:
            yield ReplyStream(entry, aggregator, entry.deadline)
        finally:
            self._forget(entry)

    async def query(
        self,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query = None,
        *,
        coverage: int = 0,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> QueryResult:
        """Ask ``coverage`` peers and return the verdict once a quorum has replied.

        The quorum is ``needed_replies(sent)`` (or the client's own rule).
        Silent peers are asked again as ``retry`` (default: the client's
        policy) says. If the deadline (``timeout`` seconds, default
        :data:`EXPIRE_TIMEOUT`) passes first, the result has ``timed_out`` set
        and holds what did arrive.
        """
        entry, aggregator = await self._start_read(type_or_request, query, coverage, timeout, retry)
        try:
            # Gather until the quorum; the timer task ends the race at the deadline.
            while not aggregator.quorum_reached:
                peer_reply = await entry.next_reply()
                if peer_reply is None:
                    break
                aggregator.add_reply(peer_reply)
            return aggregator.result(timed_out=not aggregator.quorum_reached)
        finally:
            self._forget(entry)

    async def _start_read(
        self,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query,
        coverage: int,
        timeout: float | None,
        retry: RetryPolicy | None,
    ) -> tuple[Outstanding, ReplyAggregator]:
        """Register a request whose replies a task will read, and send it."""
        request = _as_request(type_or_request, query)
        now = trio.current_time()
        deadline = now + _check_timeout(timeout)
        policy = self._retry if retry is None else retry
        targets = self._choose_targets(coverage)
        entry, datagram = self._register(request, None, targets, math.inf)
        aggregator = ReplyAggregator(len(targets), self._quorum)
        entry.inbox = []
        entry.deadline = deadline
        # Due at the grid point before the deadline, then (if still waiting)
        # exactly at it: queries that end early cost the timer task no wake-up.
        self._schedule(self._deadlines, deadline - deadline % _RETRY_TICK, request.rsalt)
        if policy.enabled:
            entry.aggregator = aggregator
            entry.policy = policy
            entry.sent_at = now
            entry.capacity = len(self._peers)
            self._schedule_retry(entry, now + policy.interval(1))
        try:
            await self._send(datagram, targets)
        except BaseException:
            self._forget(entry)
            raise
        return entry, aggregator

    # -- timers: expiry and retransmission -------------------------------------

    async def _retransmit(self, entry: Outstanding, now: float) -> None:
        if self._requests.get(entry.request.rsalt) is not entry:
            return  # its query ended while an earlier retransmission was going out
        policy, aggregator = entry.policy, entry.aggregator
        assert policy is not None
        assert aggregator is not None
        silent = [target for target in entry.targets if target not in entry.answered]
        if (
            policy.hedges(now - entry.sent_at, len(entry.answered), aggregator.needed)
            and len(entry.targets) < entry.capacity
        ):
            spare = [peer for peer in self._peers if peer not in entry.targets]
            if spare:
                extra = self._rng.choice(spare)
                entry.ask(extra)
                aggregator.ask_more(1)
                silent.append(extra)
                self.stats.hedged += 1
        if not silent:
            return
        entry.retransmissions += 1
        self._schedule_retry(entry, now + policy.interval(entry.retransmissions + 1))
        self.stats.retransmitted += len(silent)
        # Packed again: a fresh timestamp, so long deadlines never go stale.
        await self._send(pack_request(entry.request, self._key), silent)

    async def _retransmit_due(self) -> None:
        now = trio.current_time()
        for entry, _ in list(self._pop_due(self._retries, now, _retry_is)):
            await self._retransmit(entry, now)

    def _end_overdue_reads(self) -> None:
        now = trio.current_time()
        for entry, salt in list(self._pop_due(self._deadlines, now, _still_reading)):
            if entry.deadline <= now:
                entry.end_by_deadline()
            else:  # the grid point came first: wait for the deadline itself
                heapq.heappush(self._deadlines, (entry.deadline, salt))

    async def _timer_loop(self) -> None:
        # Requests expire, are retransmitted and meet their deadlines on time
        # even when no datagram arrives to trigger it.
        while True:
            self.expire_requests()
            self._end_overdue_reads()
            await self._retransmit_due()
            next_due = min(
                self._expiries[0][0] if self._expiries else math.inf,
                self._retries[0][0] if self._retries else math.inf,
                self._deadlines[0][0] if self._deadlines else math.inf,
            )
            self._timers_changed = trio.Event()
            self._timers_wake_at = next_due
            with trio.move_on_at(next_due):
                await self._timers_changed.wait()
            self._timers_wake_at = -math.inf  # busy: wake-up calls are moot

    # -- receiving -------------------------------------------------------------

    def _upcall(self, upcall: Upcall) -> None:
        assert self._callback is not None
        try:
            self._callback(upcall)
        except Exception:
            # The callback is the user's code; its bug must not kill the receive task.
            self.stats.callback_errors += 1
            self._logger.exception("the confd client's callback raised; ignoring it")

    def _handle_datagram(self, datagram: bytes, sender: tuple[Any, ...]) -> None:
        """Check one datagram and deliver it if it is a reply we are waiting for."""
        stats = self.stats
        stats.received += 1
        try:
            reply, salt = unpack_reply(datagram, self._key)
        except ConfdMagicError as exc:
            stats.malformed += 1
            self._logger.debug("discarding a malformed datagram from %s: %s", sender, exc)
            return
        except ConfdSignatureError as exc:
            stats.bad_signature += 1
            self._logger.debug("discarding an unauthentic datagram from %s: %s", sender, exc)
            return
        entry = self._requests.get(salt)
        if entry is None:
            stats.unknown_salt += 1
            self._logger.debug("discarding a reply from %s for unknown salt %r", sender, salt)
            return
        address: Address = (sender[0], sender[1])
        if address not in entry.targets:
            stats.unexpected_peer += 1
            self._logger.debug("discarding a reply for %r from unasked %s", salt, address)
            return
        if address in entry.answered:
            stats.duplicate += 1
            self._logger.debug("discarding a second reply for %r from %s", salt, address)
            return
        self._deliver(entry, address, reply)

    def _deliver(self, entry: Outstanding, address: Address, reply: ConfdReply) -> None:
        self.stats.accepted += 1
        entry.deliver(PeerReply(address, reply))
        if self._callback is not None:
            self._upcall(
                Upcall(
                    UpcallType.REPLY,
                    entry.request.rsalt,
                    entry.request,
                    entry.args,
                    self,
                    server_reply=reply,
                    server_ip=address[0],
                    server_port=address[1],
                )
            )

    async def _receive_loop(self) -> None:
        # Drain every datagram that is ready before waiting again: one
        # scheduler round trip per burst, not per datagram. A long burst
        # yields every _BATCH datagrams so that the rest of the program runs.
        sock = self._socket
        receive = sock.recvfrom
        handle = self._handle_datagram
        while True:
            count = 0
            while count < _BATCH:
                try:
                    datagram, sender = receive(_RECEIVE_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    # e.g. ECONNREFUSED after an ICMP port-unreachable: a peer
                    # is down, which is no reason to stop hearing the others.
                    self.stats.socket_errors += 1
                    self._logger.debug("the socket reported %s; receiving on", exc)
                else:
                    handle(datagram, sender)
                count += 1
            if count:
                self.expire_requests()
            if count >= _BATCH:
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.wait_readable(sock)


def _expiry_is(entry: Outstanding, due: float) -> bool:
    return entry.expiry == due


def _retry_is(entry: Outstanding, due: float) -> bool:
    return entry.next_retry == due


def _still_reading(entry: Outstanding, due: float) -> bool:
    return not entry.timed_out


def _check_max_outstanding(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfdClientError(f"max_outstanding must be a positive integer, not {value!r}")
    return value


@asynccontextmanager
async def open_confd_client(
    hmac_key: KeyLike | None = None,
    peers: Iterable[PeerSpec] | None = None,
    *,
    port: int | None = None,
    callback: Callback | None = None,
    logger: logging.Logger | None = None,
    quorum: QuorumRule = needed_replies,
    retry: RetryPolicy | None = None,
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
    rng: random.Random | None = None,
) -> AsyncIterator[ConfdClient]:
    """Open a confd client for the duration of an ``async with`` block.

    ``peers`` are IP addresses of one family, or (address, port) pairs;
    ``port`` (default: the ``ganeti-confd`` service, else 1814) applies to the
    others. Left out, the key and the peers are read from the Ganeti node this
    runs on (``hmac.key`` and ``ssconf_master_candidates_ips``). ``callback``
    receives an :class:`Upcall` per accepted reply and per expired request.
    ``retry`` is how queries ask silent peers again (default
    :class:`RetryPolicy()`; ``RetryPolicy.off()`` sends once). At most
    ``max_outstanding`` requests may wait at once. The client's socket and
    background tasks live in its own nursery and end with the block.
    """
    key = as_hmac_key(read_hmac_key() if hmac_key is None else hmac_key)
    if peers is None:
        peers = read_master_candidate_ips()
    port = default_port() if port is None else check_port(port)
    if callback is not None and not callable(callback):
        raise ConfdClientError(f"callback must be callable, not {type(callback).__name__}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfdClientError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
    max_outstanding = _check_max_outstanding(max_outstanding)
    family, addresses = parse_peers(peers, port)
    sock = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
    with sock:
        sock.setblocking(False)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, RECEIVE_BUFFER_SIZE)
        sock.bind(("::" if family == stdlib_socket.AF_INET6 else "0.0.0.0", 0))
        client = ConfdClient(
            key,
            family,
            addresses,
            port,
            sock,
            callback=callback,
            logger=logger or _LOGGER,
            quorum=quorum,
            retry=retry or RetryPolicy(),
            max_outstanding=max_outstanding,
            rng=rng or random.Random(),
        )
        async with background_tasks() as nursery:
            nursery.start_soon(client._receive_loop)
            nursery.start_soon(client._timer_loop)
            yield client


async def query(
    hmac_key: KeyLike,
    peers: Iterable[PeerSpec],
    type: ConfdRequest | RequestType | int,
    query: Query = None,
    *,
    port: int | None = None,
    coverage: int = 0,
    timeout: float | None = None,
    quorum: QuorumRule = needed_replies,
    retry: RetryPolicy | None = None,
) -> QueryResult:
    """Open a client, ask one question, close it: the one-shot form of :meth:`ConfdClient.query`."""
    async with open_confd_client(hmac_key, peers, port=port, quorum=quorum, retry=retry) as client:
        return await client.query(type, query, coverage=coverage, timeout=timeout)
