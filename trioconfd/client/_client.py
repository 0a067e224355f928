"""The public client: queries, streams, Ganeti's send/wait/expire API, peers, upcalls."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from ..protocol import (
    EXPIRE_TIMEOUT,
    Address,
    AdmissionPolicy,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdRequest,
    PeerReply,
    Query,
    QueryResult,
    QuorumRule,
    RequestType,
    RetryPolicy,
    UpcallType,
    pack_request,
    quorum_of,
)
from ._admission import Places
from ._arguments import as_request, as_retry, check_timeout, choose_targets
from ._entry import RoutingEntry
from ._gather import RequestInFlight, unsent_result
from ._kernel import udp_socket_drops
from ._parity import SentRequests
from ._peers import PeerSpec, parse_peers
from ._router import Router
from ._stats import ClientStats
from ._stream import ReplyStream
from ._upcalls import SLOW_CALLBACK, Callback, Upcall, refuse_a_coroutine
from ._watch import Watch


@dataclass(slots=True)
class _Plan:
    """A query's checked arguments and its packed request, before it is sent."""

    request: ConfdRequest
    datagram: bytes
    #: (the client's peers themselves when every one is asked: copied before a
    #: wait for places, which changes them)
    targets: Sequence[Address]
    policy: RetryPolicy
    deadline: float
    timeout: float
    #: the quorum of the targets first chosen, when admission left some out
    needed: int | None = None
    #: the peers admission left out (silent, their windows full)
    skipped: tuple[Address, ...] = ()
    #: whether it waited for places (the peers may have changed meanwhile)
    waited: bool = False


class ConfdClient:
    """A confd client on one Trio UDP socket; make it with :func:`open_confd_client`.

    Queries and streams each own their request from first send to verdict;
    the receive task only checks datagrams and routes them. Requests sent
    with :meth:`send_request` live until they expire.
    """

    def __init__(
        self,
        router: Router,
        nursery: trio.Nursery,
        family: socket.AddressFamily,
        peers: list[Address],
        port: int,
        *,
        callback: Callback | None,
        quorum: QuorumRule,
        retry: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self._router = router
        self._family = family
        self._peers = tuple(peers)
        self._port = port
        self._callback = callback
        self._quorum = quorum
        self._retry = retry
        self._rng = rng
        # Where a hedge goes: the spare peer with the most room.
        self._choose_hedge = partial(router.admission.roomiest, rng=rng)
        self._sent_requests = SentRequests(router, nursery, quorum, self._upcall_expire)
        if callback is not None:
            router.on_reply = self._upcall_reply

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._router.closed_reason
            else f"outstanding={self.outstanding} waiting={self.waiting}"
        )
        return f"<ConfdClient local={self.local_address} peers={len(self._peers)} {state}>"

    # -- introspection -------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """Counters of what happened to each datagram and request."""
        return self._router.stats

    @property
    def peers(self) -> tuple[Address, ...]:
        """The peers' (address, port) pairs."""
        return self._peers

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
        return self._router.local_address

    @property
    def outstanding(self) -> int:
        """How many requests are sent and in the table, waiting for replies or expiry."""
        return len(self._router.table)

    @property
    def waiting(self) -> int:
        """How many queries wait, not yet sent, for room in their peers' windows."""
        return self._router.waiting

    @property
    def admission(self) -> AdmissionPolicy:
        """How many requests each peer may have in flight (see :class:`AdmissionPolicy`)."""
        return self._router.admission.policy

    @property
    def closed(self) -> bool:
        """Whether the client is closed (its block has exited, or its receive task stopped)."""
        return self._router.closed_reason is not None

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped because the socket's buffer was full (Linux), else None.

        None too for a socket with no kernel file behind it (a simulated network).
        """
        self._router.check_open()
        try:
            fd = self._router.socket.fileno()
        except (NotImplementedError, OSError):
            return None
        return udp_socket_drops(fd, self._family) if fd >= 0 else None

    # -- peers and coverage --------------------------------------------------

    def update_peer_list(self, peers: Iterable[PeerSpec]) -> None:
        """Replace the peers; requests already sent keep their targets, and so do
        queries still waiting for room in the peers' windows (admission).

        The new peers must be of the socket's address family. The window of
        a peer no longer asked is dropped once nothing holds or waits for it.
        """
        self._router.check_open()
        family, addresses = parse_peers(peers, self._port)
        if family != self._family:
            raise ConfdArgumentError(
                f"the new peers are {family.name}, but this client's socket is {self._family.name}"
            )
        self._peers = tuple(addresses)
        # Round trips of peers no longer asked are of no further use.
        rtt = self._router.rtt
        for gone in rtt.keys() - set(addresses):
            del rtt[gone]
        admission = self._router.admission
        admission.forget(admission.windows.keys() - set(addresses), keep=addresses)

    # -- queries and streams -------------------------------------------------

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

        The quorum is ``needed_replies`` of the peers chosen (or the client's
        own rule).
        Silent peers are asked again as ``retry`` (default: the client's
        policy) says. If the deadline (``timeout`` seconds, default
        :data:`EXPIRE_TIMEOUT`; ``math.inf`` for none) passes first, the
        result has ``timed_out`` set and holds what did arrive. A
        :class:`ConfdRequest` sent before goes out as ``request.renewed()``.
        """
        plan = self._plan(type_or_request, query, coverage, timeout, retry)
        places = self._router.admission.admit_nowait(plan.targets)
        # With room in every target's window the request goes at once; else
        # the query waits for places in its first wait, in the same cancel
        # scope (a second, nested, cost a waiting query 20-35 µs).
        in_flight = None if places is None else self._open_exchange(plan, places)
        try:
            while True:
                # One cancel scope a wait, until the next send due or the
                # deadline: entered with that time, not moved to it after the
                # first fan-out (a move costs ~3% of a query; a query that
                # waited for places enters at its deadline and moves once). A
                # slow first fan-out (a full send buffer, a busy loop) that
                # the first wake cuts short goes on in the next wait.
                until = plan.deadline if in_flight is None else in_flight.wait_until
                with trio.move_on_at(until) as waiting:
                    if in_flight is None:
                        places = self._let_in(plan, await self._wait_for_places(plan))
                        if places is None:
                            return self._unsent(plan)
                        in_flight = self._open_exchange(plan, places)
                    # Replies routed while this task was woken count first: a
                    # peer whose reply is in the channel is not asked again.
                    # (None has been before the first send: no call then.)
                    while in_flight.answered and in_flight.receive_arrived() is not None:
                        pass
                    # The quorum: ``needed`` replies taken (the aggregator's
                    # quorum_reached, read here without a call per reply).
                    taken, needed = in_flight.aggregator.replies, in_flight.aggregator.needed
                    if len(taken) < needed:
                        await in_flight.send_due()
                        wake_at = in_flight.wake_at
                        if wake_at != until:
                            # Moved only when it moves: each move is a context
                            # manager and a push on Trio's heap of deadlines.
                            waiting.deadline = until = wake_at
                        replies = in_flight.received
                        try:
                            while len(taken) < needed:
                                in_flight.take(await replies.receive())
                        except (trio.EndOfChannel, trio.ClosedResourceError):
                            in_flight.raise_ended()
                    return in_flight.verdict()
                if in_flight is None:  # its deadline came while it waited
                    self._let_in(plan, None)
                    return self._unsent(plan)
                if trio.current_time() >= in_flight.deadline:
                    # The verdict counts every reply accepted by then.
                    return in_flight.verdict()
        finally:
            if in_flight is not None:
                in_flight.close()  # the table entry goes now: nothing stays behind

    def _unsent(self, plan: _Plan) -> QueryResult:
        return unsent_result(len(plan.targets), self._quorum, plan.timeout, plan.needed)

    def watch(
        self,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query = None,
        *,
        interval: float = 5.0,
        coverage: int = 0,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Watch:
        """Ask every ``interval`` seconds; yield the verdict each time the trusted
        answer or serial changes::

            async for result in client.watch(RequestType.CLUSTER_MASTER, interval=2):
                print("the master is now", result.answer)

        The first trusted verdict comes at once. A verdict without a quorum,
        or with an older serial than the last one yielded (a quorum of stale
        peers), is not a change. Each ask is a :meth:`query` (``coverage``,
        ``timeout`` and ``retry`` as there); the next starts ``interval``
        seconds after the last one did, or at once if that one took longer.
        It never ends by itself: leave the loop, or cancel it.
        """
        self._router.check_open()
        return Watch(
            self,
            type_or_request,
            query,
            interval=interval,
            coverage=coverage,
            timeout=timeout,
            retry=retry,
        )

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
        it, and any that come past its deadline, are discarded and counted
        (``unknown_salt``).
        """
        plan = self._plan(type_or_request, query, coverage, timeout, retry)
        places = self._router.admission.admit_nowait(plan.targets)
        if places is None:
            with trio.move_on_at(plan.deadline):
                places = await self._wait_for_places(plan)
            places = self._let_in(plan, places)
        in_flight = self._open_exchange(plan, places)
        in_flight.read_as_a_stream()  # from its first send: a reply may come meanwhile
        try:
            if places is not None:
                with trio.move_on_at(in_flight.deadline):
                    await in_flight.send_due()
            yield ReplyStream(in_flight)
        finally:
            in_flight.close()

    def _plan(
        self,
        type_or_request: ConfdRequest | RequestType | int,
        query: Query,
        coverage: int,
        timeout: float | None,
        retry: RetryPolicy | None,
    ) -> _Plan:
        """Check a query's arguments, and pack its request (bad input fails here;
        a bad quorum rule fails in :meth:`_wait_for_places`, or as the request in flight
        is made)."""
        router = self._router
        router.check_open()
        request = as_request(type_or_request, query)
        if request.sent:
            # Its rsalt is spent: a reply to the earlier send, captured or
            # late, would otherwise be taken as an answer to this one.
            request = request.renewed()
        seconds = check_timeout(timeout)
        deadline = router.now() + seconds
        policy = self._retry if retry is None else as_retry(retry)
        targets = choose_targets(self._peers, coverage, self._rng)
        router.check_room()
        datagram = pack_request(request, router.key)
        return _Plan(request, datagram, targets, policy, deadline, seconds)

    async def _wait_for_places(self, plan: _Plan) -> Places | None:
        """A place in each target's window (one is full): wait, parked, until it has
        them all. None if the client closed; the caller's cancel scope ends the
        wait at the deadline. Then :meth:`_let_in`, cancelled or not.
        """
        router = self._router
        admission = router.admission
        targets = plan.targets
        # A bad quorum rule fails here, before any wait (with room, it fails
        # as the request in flight is made, and its places go back).
        needed = quorum_of(self._quorum, len(targets))
        # A sample may ask a spare peer instead of one whose window is full
        # (a peer that answers nothing fills its window), and any query may
        # leave out a silent peer whose window is full while the peers it
        # still asks can make the quorum it needed: see Admission.admit.
        peers = self._peers
        spare = [peer for peer in peers if peer not in targets] if len(targets) < len(peers) else []
        router.waiting += 1  # max_outstanding bounds the waiting too (see _plan)
        plan.waited = True
        plan.datagram = b""  # packed again once let in, with a fresh timestamp
        # Admission changes them: its own copy (they may be the client's peers).
        chosen, targets = targets, list(targets)
        plan.targets = targets
        try:
            places = await admission.admit(targets, spare, needed=needed)
            if places is None:  # woken by the client closing
                router.check_open()
            return places
        finally:
            router.waiting -= 1
            if len(targets) < len(chosen):
                # Left out: the quorum stays the one of the peers chosen.
                plan.needed = needed
                plan.skipped = tuple(
                    peer for peer in chosen if peer not in targets and peer not in spare
                )

    def _let_in(self, plan: _Plan, places: Places | None) -> Places | None:
        """After :meth:`_wait_for_places`: the places it got (None: none by its deadline,
        the request is never sent), and its request packed again to go."""
        router = self._router
        if places is not None and trio.current_time() >= plan.deadline:
            # Let in at its deadline (as others' places came back): too late
            # to send anything, as if never let in.
            places.give_back(timed_out=False)
            places = None
        if places is None:
            router.stats.saturated += 1
            return None
        router.stats.skipped += len(plan.skipped)
        if plan.request.sent:
            # Another query sent the same request while this one waited.
            plan.request = plan.request.renewed()
        # It waited: packed again, with a fresh timestamp.
        plan.datagram = pack_request(plan.request, router.key)
        return places

    def _open_exchange(self, plan: _Plan, places: Places | None) -> RequestInFlight:
        """The request in flight; with ``places`` None, one never sent (saturated).

        If it cannot be made, its places go back.
        """
        peers: Sequence[Address] = self._peers
        capacity = None
        try:
            if plan.waited:
                # No hedge to a peer left out; room for replies from targets the
                # peers no longer include.
                peers = [peer for peer in peers if peer not in plan.skipped]
                capacity = len(peers) + sum(target not in peers for target in plan.targets)
            in_flight = RequestInFlight(
                self._router,
                plan.request,
                plan.datagram,
                plan.targets,
                places,
                peers,
                self._quorum,
                plan.needed,
                capacity,
                plan.policy,
                plan.deadline,
                plan.timeout,
                self._choose_hedge,
            )
        except BaseException:
            if places is not None:
                places.give_back(False)  # not timed out
            raise
        plan.datagram = b""  # the request in flight holds it until it goes
        return in_flight

    # -- Ganeti's API: send, wait, expire ------------------------------------

    async def send_request(
        self, request: ConfdRequest, args: Any = None, coverage: int = 0
    ) -> None:
        """Send ``request`` to ``coverage`` peers; replies go to the callback.

        Coverage 0 means min(peers, 6), -1 all peers, N exactly N (more than
        are known is an error). A request already sent is refused: its rsalt,
        your handle on its replies, is spent (send ``request.renewed()``).
        The request expires :data:`EXPIRE_TIMEOUT` seconds from now, firing
        an ``EXPIRE`` upcall, unless waited on. Like
        Ganeti's client, this sends once; queries retransmit.
        """
        self._router.check_open()
        if not isinstance(request, ConfdRequest):
            raise ConfdArgumentTypeError(
                f"request must be a ConfdRequest, not {type(request).__name__}"
            )
        if request.sent:
            raise ConfdArgumentError(
                f"this ConfdRequest (rsalt {request.rsalt!r}) was sent before: a reply to that "
                "send would be taken as an answer to this one; send request.renewed() instead"
            )
        await self._sent_requests.send(
            request, args, list(choose_targets(self._peers, coverage, self._rng))
        )

    async def wait_for_reply(
        self, salt: str, timeout: float = EXPIRE_TIMEOUT
    ) -> tuple[bool, int, int]:
        """Wait until a quorum of the peers asked has replied to request ``salt``.

        Returns ``(timed_out, sent, received)``; an unknown or expired salt
        gives ``(True, 0, 0)``. The request's expiry moves ``timeout`` later,
        so that it does not expire while waited on (waits with no limit,
        ``math.inf``: by the time they covered, once the last ends).
        """
        self._router.check_open()
        if not isinstance(salt, str):
            raise ConfdArgumentTypeError(
                f"salt must be a request's rsalt (a str), not {type(salt).__name__}"
                + (": pass request.rsalt" if isinstance(salt, ConfdRequest) else "")
            )
        return await self._sent_requests.wait(salt, check_timeout(timeout))

    def expire_requests(self) -> None:
        """Forget every request past its expiry, firing an ``EXPIRE`` upcall for each."""
        self._router.check_open()
        self._sent_requests.expire_overdue()

    # -- upcalls -------------------------------------------------------------

    def _upcall_reply(self, route: RoutingEntry, peer_reply: PeerReply) -> None:
        address, reply = peer_reply
        request = route.request
        self._upcall(
            Upcall(
                UpcallType.REPLY,
                request.rsalt,
                request,
                route.args,
                self,
                server_reply=reply,
                server_ip=address[0],
                server_port=address[1],
            )
        )

    def _upcall_expire(self, route: RoutingEntry) -> None:
        request = route.request
        self._upcall(Upcall(UpcallType.EXPIRE, request.rsalt, request, route.args, self))

    def _upcall(self, upcall: Upcall) -> None:
        if self._callback is None:
            return
        router = self._router
        started = time.perf_counter()
        try:
            returned = self._callback(upcall)
            if returned is not None:
                refuse_a_coroutine(returned)
        except Exception:
            # The callback is the user's code; its bug must not kill the receive task.
            router.stats.callback_errors += 1
            router.log.log(
                "callback errors",
                logging.ERROR,
                "the confd client's callback raised; ignoring it",
                exc_info=True,
            )
        took = time.perf_counter() - started
        if took > SLOW_CALLBACK:
            router.stats.slow_callbacks += 1
            router.log.log(
                "slow callbacks",
                logging.WARNING,
                "the confd client's callback took %.0f ms; it runs in the client's receive "
                "task, which reads no datagram meanwhile: hand slow work to another task "
                "(through a memory channel) and return at once",
                took * 1e3,
            )
