"""A query's life: send to the sample, gather replies from the channel, resend to the silent.

One task owns a request from first send to verdict. It waits under a cancel
scope for "the next reply or the next retry time, whichever comes first",
inside another that ends the wait at the deadline, and retransmits itself:
there is no timer task and no heap of deadlines.
"""

from __future__ import annotations

import math
import random

import trio
import trio.lowlevel

from ..protocol import (
    Address,
    ConfdRequest,
    PeerReply,
    QueryResult,
    QuorumRule,
    ReplyAggregator,
    RetryPolicy,
    pack_request,
)
from ._router import Route, Router


class Exchange:
    """One request read by one task: its route, its reply channel, its verdict, its resends.

    Made by :meth:`ConfdClient.query` and :meth:`ConfdClient.request`, which
    send it, read it and, whatever happens, :meth:`close` it.
    """

    __slots__ = (
        "_capacity",
        "_channel",
        "_datagram",
        "_peers",
        "_policy",
        "_resends",
        "_rng",
        "_route",
        "_router",
        "_sent_at",
        "_taken",
        "aggregator",
        "deadline",
        "resend_at",
    )

    def __init__(
        self,
        router: Router,
        request: ConfdRequest,
        targets: list[Address],
        *,
        peers: list[Address],
        quorum: QuorumRule,
        policy: RetryPolicy,
        deadline: float,
        rng: random.Random,
    ) -> None:
        # Everything that can fail on bad input happens before the table
        # entry exists, so a refused request leaves nothing behind.
        self._datagram: bytes | None = pack_request(request, router.key)
        self.aggregator = ReplyAggregator(len(targets), quorum)
        # Hedging may ask every known peer: room for a reply from each.
        self._capacity = len(peers)
        self._channel = router.open_channel(self._capacity)
        self._route = Route(request, targets, self._channel[0])
        router.add(self._route)
        self._router = router
        self._peers = peers
        self._policy = policy
        self._rng = rng
        self.deadline = deadline
        self._sent_at = trio.current_time()
        self._resends = 0
        self.resend_at = self._sent_at + policy.interval(1) if policy.enabled else math.inf
        self._taken = 0

    @property
    def request(self) -> ConfdRequest:
        return self._route.request

    async def send(self) -> None:
        """The first fan-out: the request to every peer of the sample."""
        datagram, self._datagram = self._datagram, None
        assert datagram is not None, "an exchange is sent once; resend() asks again"
        await self._router.send(datagram, self._route.targets)

    async def receive(self) -> PeerReply:
        """The next reply from the channel (raises if the client closes meanwhile)."""
        try:
            peer_reply = await self._channel[1].receive()
        except trio.EndOfChannel:
            self._router.check_open()
            raise  # pragma: no cover - only a closing client ends the channel
        self._taken += 1
        return peer_reply

    async def resend(self) -> None:
        """Ask the silent peers again; once hedging is due, one peer not asked yet too."""
        now = trio.current_time()
        route, aggregator, policy = self._route, self.aggregator, self._policy
        silent = [target for target in route.targets if target not in route.answered]
        if (
            policy.hedges(now - self._sent_at, aggregator.received, aggregator.needed)
            and len(route.targets) < self._capacity
        ):
            spare = [peer for peer in self._peers if peer not in route.targets]
            if spare:
                extra = self._rng.choice(spare)
                route.ask(extra)
                aggregator.ask_more(1)
                silent.append(extra)
                self._router.stats.hedged += 1
        self._resends += 1
        self.resend_at = now + policy.interval(self._resends + 1)
        if silent:
            self._router.stats.retransmitted += len(silent)
            # Packed again: a fresh timestamp, so long deadlines never go stale.
            await self._router.send(pack_request(route.request, self._router.key), silent)

    def close(self) -> None:
        """Forget the request now: late replies are discarded, the channel is reused."""
        self._router.remove(self._route)
        unread = len(self._route.answered) - self._taken
        self._router.recycle_channel(self._channel, self._capacity, unread)


async def gather(exchange: Exchange) -> QueryResult:
    """Read replies until the quorum, resending to silent peers, and give the verdict.

    If the deadline passes first, the result has ``timed_out`` set and holds
    what did arrive.
    """
    aggregator = exchange.aggregator
    with trio.move_on_at(exchange.deadline):
        while not aggregator.quorum_reached:
            # The next reply or the next retry time, whichever comes first.
            with trio.move_on_at(exchange.resend_at):
                while not aggregator.quorum_reached:
                    aggregator.add_reply(await exchange.receive())
            if not aggregator.quorum_reached:
                await exchange.resend()
    return aggregator.result(timed_out=not aggregator.quorum_reached)


class ReplyStream:
    """The replies to one request, as they arrive; see :meth:`ConfdClient.request`.

    Iteration ends when every peer asked has replied or the deadline passes
    (then :attr:`timed_out` is True). :meth:`result` gives the verdict so far.
    Silent peers are asked again while the stream waits.
    """

    def __init__(self, exchange: Exchange) -> None:
        self.request: ConfdRequest = exchange.request
        self.deadline = exchange.deadline
        self.timed_out = False
        self._exchange = exchange
        self._aggregator = exchange.aggregator

    @property
    def sent(self) -> int:
        """Peers asked so far (hedges included)."""
        return self._aggregator.sent

    @property
    def needed(self) -> int:
        return self._aggregator.needed

    @property
    def quorum_reached(self) -> bool:
        return self._aggregator.quorum_reached

    @property
    def replies(self) -> list[PeerReply]:
        return list(self._aggregator.replies)

    def result(self) -> QueryResult:
        """The verdict on the replies received so far."""
        return self._aggregator.result(timed_out=self.timed_out)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> PeerReply:
        exchange = self._exchange
        if self.timed_out or self._aggregator.complete:
            await trio.lowlevel.checkpoint()  # a checkpoint, as every async call should be
            raise StopAsyncIteration
        with trio.move_on_at(exchange.deadline):
            while True:
                # The next reply or the next retry time, whichever comes first.
                with trio.move_on_at(exchange.resend_at):
                    peer_reply = await exchange.receive()
                    self._aggregator.add_reply(peer_reply)
                    return peer_reply
                await exchange.resend()
        self.timed_out = True
        raise StopAsyncIteration
