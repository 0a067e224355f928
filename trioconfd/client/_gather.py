"""A request in flight: its sends to the sample and to the silent, its channel, its verdict.

One task owns a request from first send to verdict (the loop is
:meth:`ConfdClient.query`'s; a stream's, :class:`ReplyStream`). It reads the request's
memory channel under a cancel scope that ends the wait at the next send its
:class:`~trioconfd.protocol.SendSchedule` plans, or at the deadline,
whichever comes first; then it sends what is due and waits again. At the
deadline it takes whatever the receive task has already put in the channel,
and gives its verdict. There is no timer task and no heap of deadlines or
retries: when to send what is the schedule's business, sans-IO.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NoReturn

import trio
import trio.lowlevel

from ..protocol import (
    Address,
    ConfdReply,
    ConfdRequest,
    PeerReply,
    QueryResult,
    QuorumRule,
    ReplyAggregator,
    ReplyStatus,
    RetryPolicy,
    SendSchedule,
    pack_request,
    quorum_of,
)
from ..protocol._aggregate import without_answered
from ._admission import Places
from ._entry import SHORT_TARGETS, ReplyReceiver, RoutingEntry
from ._errors import ConfdRequestEndedError
from ._router import Router
from ._stats import DISCARD_REASONS

#: How the network said a peer is unreachable, in the words a verdict uses.
_UNREACHABLE = {
    errno.ECONNREFUSED: "port unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EACCES: "administratively prohibited",
    errno.EMSGSIZE: "the datagram is too big for the path",
    errno.EOPNOTSUPP: "source route failed",
    errno.ENOPROTOOPT: "protocol unreachable",
    getattr(errno, "ENONET", errno.EHOSTUNREACH): "host unreachable",
}

_ENDED = "this request has ended: its async with block has exited"

#: The schedule of a request never sent (the client was saturated).
_NEVER_AGAIN = RetryPolicy.off()

#: Handed to a stream's other readers, parked on its channel, once every peer
#: asked has replied: they stop (no reply of a peer's, never counted).
_ALL_REPLIED = PeerReply(("", 0), ConfdReply(ReplyStatus.OK, None, 0))


class RequestInFlight(RoutingEntry):
    """One request read by one task: its routing-table entry (itself), its reply
    channel, its schedule, its verdict.

    Made by :meth:`ConfdClient.query` and :meth:`ConfdClient.request`, which
    send it, read it and, whatever happens, :meth:`close` it.
    """

    __slots__ = (
        "_arrived",
        "_capacity",
        "_channel",
        "_closed",
        "_discards_before",
        "_first_cut",
        "_first_reply",
        "_first_send",
        "_forged",
        "_forged_unread",
        "_not_asked",
        "_places",
        "_quorum",
        "_router",
        "_send_failures",
        "_sent",
        "_started",
        "_taken",
        "accepts_until",
        "aggregator",
        "deadline",
        "schedule",
        "timeout",
    )

    def __init__(  # noqa: PLR0917 - positional: made once a query (see below)
        self,
        router: Router,
        request: ConfdRequest,
        datagram: bytes,
        targets: Sequence[Address],
        places: Places | None,
        peers: Sequence[Address],
        quorum: QuorumRule,
        needed: int | None,
        capacity: int | None,
        policy: RetryPolicy,
        deadline: float,
        timeout: float,
        choose: Callable[[Sequence[Address]], Address],
    ) -> None:
        # ``datagram`` is ``request`` packed (by the caller, before it waited
        # for places: bad input fails before anything is held; a bad quorum
        # rule fails below, and the caller gives the places back). Without
        # ``places`` the request is never sent: the client was saturated.
        # ``needed``: the quorum of the peers first chosen, when admission
        # left some out (else None). ``capacity``: see below. (Made once a
        # query, and called positionally: each keyword argument a call
        # binds costs about 40 ns here.)
        self.aggregator = ReplyAggregator(len(targets), quorum, needed)
        # Hedging may ask every peer of ``peers``: room for a reply from each
        # (``capacity`` if the targets are not all among them: the peers
        # changed while the query waited for places).
        self._capacity = len(peers) if capacity is None else capacity
        self._channel = router.channels.open(self._capacity)
        # The routing entry's fields (as RoutingEntry.__init__ sets them, here
        # without the call): its targets join as they are sent to (see
        # _send_first).
        self.request = request
        self.targets = []
        self.answered = ()
        self.replies = self._channel[0]
        self.args = None
        # The first fan-out, sent by the first send_due().
        self._first_send: tuple[bytes, Sequence[Address]] | None = None
        # Whether a wake cut the first fan-out short (the rest goes next).
        self._first_cut = False
        # Replies that count for nothing, still in the channel: accepted
        # before their peer's send, which was then cancelled before it went;
        # how many, by peer (None: none yet), and in all.
        self._forged: dict[Address, int] | None = None
        self._forged_unread = 0
        if places is None:
            policy = _NEVER_AGAIN
        else:
            self._first_send = (datagram, targets)
        self._router = router
        self._places = places
        self._quorum = quorum
        self.deadline = deadline
        self.timeout = timeout
        self._started = now = router.now()
        self.schedule = SendSchedule(
            policy,
            targets,
            now,
            self.aggregator.needed,
            peers,
            router.rtt_of,
            choose,
            # A reply may wait unread as long as the reading lags now.
            router.reading_lag(now) if policy.enabled else 0.0,
        )
        # What a verdict without a quorum explains itself with.
        self._send_failures: dict[Address, str] | None = None
        self._discards_before = router.stats.discard_counts()
        self._taken = 0
        self._first_reply: float | None = None
        self._closed = False
        #: replies to it that come this late are not accepted (a stream's
        #: deadline; a query reads none after its own); once it has ended,
        #: when it did
        self.accepts_until = math.inf
        self._sent = False  # whether the first fan-out went out (to one peer at least)
        #: the peers it ended without asking: of its first fan-out (its deadline
        #: came first, or, once a wake had cut it short, the quorum), or a hedge
        #: whose send the deadline cut
        self._not_asked: Sequence[Address] = ()
        # A stream's replies' times of arrival, by peer, until read (see
        # deliver); None: not a stream.
        self._arrived: dict[Address, float] | None = None
        # Into the routing table last, once nothing above can fail (a route
        # left behind would hold a place of max_outstanding for good), and
        # before its request is sent, so that no reply beats it.
        if places is not None:  # an unsent request waits for no reply
            router.add(self)
            request.mark_sent()

    @property
    def unsent(self) -> bool:
        """Whether the request was never let out: the client was saturated until its deadline."""
        return self._places is None

    @property
    def wake_at(self) -> float:
        """When a wait for replies gives up: the next send due, or the deadline."""
        return min(self.schedule.wake_at, self.deadline)

    @property
    def wait_until(self) -> float:
        """When a query's next wait gives up, as it begins. The first one
        (the first fan-out still to go), at :attr:`wake_at`: a first fan-out
        that wake cuts short goes on in the next wait. Any later one, at the
        deadline, so that what is due goes out before it moves to the next
        wake (a wake passed would cut those sends before they went)."""
        if self._first_send is not None and not self._first_cut:
            return min(self.schedule.wake_at, self.deadline)
        return self.deadline

    async def send_due(self) -> None:
        """Send what is due now: the first fan-out (or what a wake left of it),
        then what the schedule says; nothing once the request has ended (a
        stream's reader woken as its block exits: its places are given back)."""
        if self._closed:
            return
        if self._first_send is not None:
            datagram, targets = self._first_send
            self._first_send = None
            await self._send_first(datagram, targets)
            return
        schedule, router = self.schedule, self._router
        now = trio.current_time()
        if now < schedule.wake_at or now >= self.deadline:
            return  # nothing due yet; or past its deadline, nothing ever (a stream read late)
        # Replies the kernel holds, unread, may be the ones awaited.
        unread, read_up_to = router.unread()
        due = schedule.due(now, unread=unread, read_up_to=read_up_to)
        stats = router.stats
        if due.deferred:
            stats.deferred += 1
        if not due.peers:
            return
        hedge = due.hedge
        places = self._places
        assert places is not None  # an unsent request's schedule sends nothing
        # Each copy takes a place in its peer's window, if it goes; none goes
        # to a peer whose reply is in the channel, unread (a stream read slowly).
        due_peers = due.peers
        answered = self.answered
        if answered:
            due_peers = [peer for peer in due_peers if peer not in answered]
        peers = [peer for peer in due_peers if places.again(peer, lost=peer != hedge)]
        if hedge is not None:
            self.ask(hedge)
            self.aggregator.ask_more(1)
            stats.hedged += 1
            if hedge in self._not_asked:  # a hedge again, after one that never went
                self._not_asked = [peer for peer in self._not_asked if peer != hedge]
        resent = len(peers) - (hedge is not None)
        stats.retransmitted += resent
        if len(peers) < len(due.peers):
            # The copies that did not go are not sends the replies answer.
            for peer in due.peers:
                if peer not in peers:
                    schedule.held_back(peer)
        stats.held_back += len(due_peers) - len(peers)
        if peers:
            await self._send_copies(peers, hedge)

    async def _send_copies(self, peers: list[Address], hedge: Address | None) -> None:
        """Send the copies due (the ``hedge`` among them, if any)."""
        # Packed again: a fresh timestamp, so long deadlines never go stale.
        datagram = pack_request(self.request, self._router.key)
        router = self._router
        attempted: list[Address] = []
        failures: list[tuple[Address, str]] = []
        try:
            for peer in peers:
                # One at a time: a stream's block may exit while a send waits
                # (each yields), and then the rest never go.
                if self._closed:
                    break
                failed = await router.send(datagram, (peer,), attempted)
                if failed is not None:
                    failures += failed
        finally:
            if hedge is not None and hedge not in attempted:
                self._hedge_never_went(hedge)
        for peer, _ in failures:
            self.schedule.held_back(peer)  # not sent either
        self._note_failures(failures)

    async def _send_first(self, datagram: bytes, targets: Sequence[Address]) -> None:
        """The first fan-out (sends that wait for room, or a busy event loop, may
        make it slow). Each peer joins the routing entry as it is sent to: a
        reply from one not asked yet is refused. Cut short by a wake, the
        peers not sent to yet go at the next :meth:`send_due`, their first
        waits counted from then; by the deadline, they are not counted as
        asked."""
        asked = self.targets
        assert isinstance(asked, list)  # a set only once the fan-out has gone
        before = len(asked)
        router = self._router
        try:
            if not self._first_cut:
                self._note_failures(await router.send(datagram, targets, asked))
            else:
                # What a wake left of it: each peer's first wait counts from
                # its own send.
                for peer in targets:
                    if self._closed:
                        break  # a stream's block exited meanwhile: the rest never go
                    self._note_failures(await router.send(datagram, (peer,), asked))
                    self.schedule.sent_late((peer,), router.now())
        finally:
            sent = len(asked) - before  # the first of targets, in order
            if sent:
                self._sent = True
            if sent < len(targets):
                rest = targets[sent:]
                self._refuse(rest)
                if router.now() < self.deadline:
                    self._first_send = (datagram, rest)
                    self._first_cut = True
                else:
                    self._never_asked(rest)
            elif len(asked) > SHORT_TARGETS:
                self.targets = set(asked)

    def _refuse(self, peers: Sequence[Address]) -> None:
        """Replies accepted from ``peers`` while their sends waited, then cancelled
        before they went, were forged (nothing had been asked of them): they
        count for nothing (not even as the peer's sign of life), and are
        counted as from an unasked peer. Each peer leaves who has answered,
        so that its own reply, once it is asked, is heard; the forged one,
        still in the channel, is dropped as it is read. (One a stream's
        other reader took meanwhile stays taken.)"""
        arrived = self._arrived
        new = []
        for peer in peers:
            if peer not in self.answered:
                continue  # nothing came from it (or it was refused already)
            if arrived is not None and arrived.pop(peer, None) is None:
                continue  # a stream's other reader took it meanwhile
            new.append(peer)
        if not new:
            return
        forged = self._forged
        if forged is None:
            forged = self._forged = {}
        for peer in new:
            forged[peer] = forged.get(peer, 0) + 1
        self._forged_unread += len(new)
        self.answered = without_answered(self.answered, new)
        router = self._router
        router.stats.accepted -= len(new)
        router.stats.unexpected_peer += len(new)
        for peer in new:
            window = router.admission.windows.get(peer)
            if window is not None:
                window.answers -= 1

    def _hedge_never_went(self, peer: Address) -> None:
        """The hedge's send was cut short before it went (by the deadline, or a
        stream's reader's own scope): it was never asked (it leaves the
        routing entry, a reply taken from it meanwhile counts for nothing,
        and the schedule may choose it again)."""
        targets = self.targets
        if isinstance(targets, set):
            targets.discard(peer)
        else:
            while peer in targets:
                targets.remove(peer)
        self._refuse([peer])
        self._router.stats.hedged -= 1
        self._never_asked([peer])
        self.schedule.hedge_never_sent(peer)

    def _never_asked(self, peers: Sequence[Address]) -> None:
        """The request never went to ``peers`` (its first fan-out, or a hedge,
        ended before them)."""
        self._not_asked = [*self._not_asked, *peers]
        self.aggregator.sent -= len(peers)

    def _note_failures(self, failures: list[tuple[Address, str]] | None) -> None:
        if failures:
            if self._send_failures is None:
                self._send_failures = {}
            self._send_failures.update(failures)

    @property
    def received(self) -> ReplyReceiver:
        """The receiving end of the memory channel the receive task hands this
        request's replies to (each one read goes to :meth:`take`); ``replies``,
        as in every routing entry, is its sending end."""
        return self._channel[1]

    async def receive(self) -> PeerReply | None:
        """The next reply from the channel, counted (raises if the client or request
        closes); None if another reader of the stream took the last one."""
        if self._closed:
            raise ConfdRequestEndedError(_ENDED)
        while True:
            try:
                peer_reply = await self._channel[1].receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self.raise_ended()
            if peer_reply is _ALL_REPLIED:
                return None
            if self.take(peer_reply):
                return peer_reply
            if self._closed:  # a forged one, dropped: its channel may be another's now
                raise ConfdRequestEndedError(_ENDED)

    def raise_ended(self) -> NoReturn:
        """Its channel ended: because the client closed (raise why), or the request ended."""
        self._router.check_open()
        raise ConfdRequestEndedError(_ENDED) from None

    def check_open(self) -> None:
        """Raise :class:`ConfdRequestEndedError` if the request has ended."""
        if self._closed:
            raise ConfdRequestEndedError(_ENDED)

    def receive_arrived(self) -> PeerReply | None:
        """A reply the receive task accepted that is still in the channel, counted; or None."""
        while not self._closed and len(self.answered) + self._forged_unread > self._taken:
            try:
                peer_reply = self._channel[1].receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return None
            if self.take(peer_reply):
                return peer_reply
        return None

    def read_as_a_stream(self) -> None:
        """A :class:`ReplyStream` reads it: the round trips end as replies arrive,
        and none is accepted past its deadline (its block may outlast it)."""
        if self._arrived is None:
            self._arrived = {}
        self.accepts_until = self.deadline

    def past_deadline(self) -> bool:
        """Whether its deadline has passed: by now, or, once it has ended, by then."""
        if self._closed:
            return self.accepts_until >= self.deadline
        return self._router.now() >= self.deadline

    @property
    def streamed(self) -> bool:
        """Whether a :class:`ReplyStream` reads it: then a task other than the one
        that closes it may wait on its channel."""
        return self._arrived is not None

    def stop_other_readers(self) -> None:
        """Every peer asked has replied: a stream's other readers, parked on its
        channel, stop (each is handed the end, straight, not through the buffer).
        Once the request has ended its channel may be another's: nothing is sent."""
        if self._closed:
            return
        sender, receiver = self._channel
        while receiver.statistics().tasks_waiting_receive:
            sender.send_nowait(_ALL_REPLIED)

    def deliver(self, peer_reply: PeerReply) -> None:
        """Hand on an accepted reply (the receive task does); a stream, which may be
        read long after, notes when it came."""
        arrived = self._arrived
        if arrived is not None:
            arrived[peer_reply.address] = trio.current_time()
        self._channel[0].send_nowait(peer_reply)

    def take(self, peer_reply: PeerReply) -> bool:
        """Count a reply read from the channel: its places go back, and it is
        aggregated. False, and nothing counted, if it was forged (see _refuse)."""
        forged = self._forged
        if forged is not None and peer_reply.address in forged:
            # Forged (see _refuse): the first of its peer's in the channel.
            left = forged.pop(peer_reply.address) - 1
            if left:
                forged[peer_reply.address] = left
            self._forged_unread -= 1
            return False
        self._taken += 1
        if self._places is not None:
            self._places.answered(peer_reply.address)
        arrived = self._arrived
        now = None if arrived is None else arrived.pop(peer_reply.address, None)
        if now is None:  # a query's, read as it came
            now = self._router.now()
        if self._first_reply is None:
            self._first_reply = now - self._started  # a round trip, for a verdict
        self.schedule.answered(peer_reply.address, now)
        self.aggregator.add_reply(peer_reply)
        return True

    def verdict(self) -> QueryResult:
        """The verdict on every reply accepted so far, those still in the channel included.

        Timed out if they fall short of the quorum (it is given then only at
        the deadline).
        """
        while self.receive_arrived() is not None:
            pass
        if self._first_cut and self._first_send is not None:
            # What a wake left of the first fan-out never went.
            self._never_asked(self._first_send[1])
            self._first_send = None
        aggregator = self.aggregator
        timed_out = len(aggregator.replies) < aggregator.needed  # short of the quorum
        return self.result(timed_out)

    def result(self, timed_out: bool = False) -> QueryResult:
        """The verdict so far; without a quorum, with what the client saw meanwhile."""
        if self._places is None:
            return unsent_result(
                self.aggregator.sent, self._quorum, self.timeout, self.aggregator.needed
            )
        if not self._sent:
            # Its deadline came before its first send (a zero timeout, say).
            # (One that cut the first fan-out short is judged below, on the
            # peers it asked.)
            needed = self.aggregator.needed
            return QueryResult(None, (), 0, needed, True, True, timeout=self.timeout)
        result = self.aggregator.result(timed_out)
        if len(result.replies) >= result.needed:  # the quorum (read without two properties)
            return result
        now = self._router.stats.discard_counts()
        discards = tuple(
            (reason, after - before)
            for reason, before, after in zip(
                DISCARD_REASONS, self._discards_before, now, strict=True
            )
            if after > before
        )
        router, started = self._router, self._started
        silent = tuple(peer for peer in self.schedule.silent if peer not in self._not_asked)
        unreachable = []
        for peer in silent:
            seen = router.unreachable.get(peer)
            if seen is not None and seen[0] >= started:
                unreachable.append((peer, _UNREACHABLE.get(seen[1]) or os.strerror(seen[1])))
        measured = [
            estimate.srtt
            for estimate in (router.rtt.get(peer) for peer in self.targets)
            if estimate is not None and estimate.srtt is not None
        ]
        if self._first_reply is not None:
            measured.append(self._first_reply)
        return replace(
            result,
            send_errors=tuple((self._send_failures or {}).items()),
            discards=discards,
            timeout=self.timeout,
            silent=silent,
            unreachable=tuple(unreachable),
            round_trip=min(measured, default=None),
            key_ends_with_newline=router.key.ends_with_newline,
        )

    def close(self) -> None:
        """Forget the request now: late replies are discarded, the channel is reused.

        A stream's replies left unread count in its verdict (``result()``
        after its block).
        """
        if self._arrived:
            while self.receive_arrived() is not None:
                pass
        self._closed = True
        self.accepts_until = now = self._router.now()
        if self._arrived:
            # Replies handed straight to a reader that has not run yet: their
            # peers answered, when these came; not silent, nor their copies lost.
            for peer, at in self._arrived.items():
                self.schedule.answered(peer, at)
                if self._places is not None:
                    self._places.answered(peer)
            self._arrived.clear()
        self.schedule.end(now)
        if self._places is not None:
            unasked = self._not_asked
            if self._first_cut and self._first_send is not None:
                unasked = [*unasked, *self._first_send[1]]
            if unasked:  # nothing of theirs was lost
                self._places.give_back_unasked(unasked)
            # Unanswered at the deadline, a request that went out was lost.
            aggregator = self.aggregator
            lost = (
                self._sent
                and now >= self.deadline
                and len(aggregator.replies) < aggregator.needed  # short of the quorum
            )
            self._places.give_back(lost)
        self._router.remove(self)
        unread = len(self.answered) + self._forged_unread - self._taken
        self._router.channels.recycle(
            self._channel, self._capacity, unread, shared=self._arrived is not None
        )


def unsent_result(
    targets: int, quorum: QuorumRule, timeout: float, needed: int | None = None
) -> QueryResult:
    """The verdict on a query that never got places to send: saturated, timed out."""
    if needed is None:
        needed = quorum_of(quorum, targets)
    return QueryResult(None, (), 0, needed, True, True, timeout=timeout, saturated=True)
