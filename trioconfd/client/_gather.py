"""A query's life: send to the sample, gather replies from the channel, resend to the silent.

One task owns a request from first send to verdict. It reads the request's
memory channel under a cancel scope that ends the wait at the next retry time
or at the deadline, whichever comes first; at a retry time it retransmits to
the peers still silent and waits again; at the deadline it gives its verdict.
There is no timer task and no heap of deadlines or retries.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import trio
import trio.lowlevel

from ..protocol import (
    Address,
    ConfdClientError,
    ConfdRequest,
    PeerReply,
    QueryResult,
    QuorumRule,
    ReplyAggregator,
    RetryPolicy,
    pack_request,
)
from ._router import Route, Router
from ._stats import DISCARD_REASONS

# A task woken this long after its retry time found the event loop saturated.
_LATE_WAKE = 0.02


class Exchange:
    """One request read by one task: its route, its reply channel, its verdict, its resends.

    Made by :meth:`ConfdClient.query` and :meth:`ConfdClient.request`, which
    send it, read it and, whatever happens, :meth:`close` it.
    """

    __slots__ = (
        "_capacity",
        "_channel",
        "_closed",
        "_discards_before",
        "_hedged",
        "_outbox",
        "_peers",
        "_policy",
        "_reader_waiting",
        "_rng",
        "_round_at",
        "_rounds",
        "_route",
        "_router",
        "_send_failures",
        "_sent_at",
        "_taken",
        "aggregator",
        "deadline",
        "resend_at",
        "timeout",
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
        timeout: float,
        rng: random.Random,
    ) -> None:
        # Everything that can fail on bad input happens before the table
        # entry exists, so a refused request leaves nothing behind.
        datagram = pack_request(request, router.key)
        self.aggregator = ReplyAggregator(len(targets), quorum)
        # Hedging may ask every known peer: room for a reply from each.
        self._capacity = len(peers)
        self._channel = router.open_channel(self._capacity)
        self._route = Route(request, targets, self._channel[0])
        router.add(self._route)
        request.mark_sent()
        # What the next send_due() sends: first, the request to the sample.
        self._outbox: tuple[bytes, list[Address]] | None = (datagram, targets)
        self._router = router
        self._peers = peers
        self._policy = policy
        self._rng = rng
        self.deadline = deadline
        self.timeout = timeout
        # What a verdict without a quorum explains itself with.
        self._send_failures: dict[Address, str] | None = None
        self._discards_before = router.stats.discard_counts()
        self._sent_at = trio.current_time()
        # Retransmission rounds so far and when the last went (the first
        # send is round 0). Every round asks every peer still silent, so a
        # peer's sends follow from the round it joined in: 0 for the sample,
        # later for a hedge (kept here, and only then is there a dict).
        self._rounds = 0
        self._round_at = self._sent_at
        self._hedged: dict[Address, int] | None = None
        self.resend_at = self._sent_at + policy.interval(1) if policy.enabled else math.inf
        self._taken = 0
        self._closed = False
        self._reader_waiting = False

    @property
    def request(self) -> ConfdRequest:
        return self._route.request

    @property
    def wake_at(self) -> float:
        """When a wait for replies gives up: the next retry time, or the deadline."""
        return min(self.resend_at, self.deadline)

    async def send_due(self) -> None:
        """Send what is due: the first fan-out, or the retransmission planned last."""
        if self._outbox is not None:
            datagram, targets = self._outbox
            self._outbox = None
            failures = await self._router.send(datagram, targets)
            if failures:
                if self._send_failures is None:
                    self._send_failures = {}
                self._send_failures.update(failures)

    async def receive(self) -> PeerReply:
        """The next reply from the channel (raises if the client or the request closes)."""
        if self._closed:
            raise ConfdClientError("this request has ended: its async with block has exited")
        self._reader_waiting = True
        try:
            peer_reply = await self._channel[1].receive()
        except trio.EndOfChannel:
            self._router.check_open()
            raise ConfdClientError(
                "this request has ended: its async with block has exited"
            ) from None
        finally:
            self._reader_waiting = False
        self._taken += 1
        if self._policy.adaptive:
            self._measure(peer_reply.address)
        return peer_reply

    def _measure(self, peer: Address) -> None:
        # A silent peer is asked in every round, the last at _round_at. Karn's
        # rule: a round trip counts only if it was asked once.
        joined = 0 if self._hedged is None else self._hedged.get(peer, 0)
        elapsed = trio.current_time() - self._round_at
        estimate = self._router.rtt_of(peer)
        if joined == self._rounds:
            estimate.sample(elapsed)
        else:
            estimate.answered_after(elapsed)

    def plan_resend(self) -> None:
        """At a retry time: the silent peers are asked again by the next :meth:`send_due`.

        Retransmissions go in rounds, ``policy.interval(n)`` apart, each
        stretched, when adaptive, to the slowest silent peer's timeout; a
        round may also be put off (:meth:`_put_off`). Once hedging is due,
        each round also asks one peer outside the sample.
        """
        now = trio.current_time()
        route, aggregator, policy, router = self._route, self.aggregator, self._policy, self._router
        silent = [target for target in route.targets if target not in route.answered]
        if policy.adaptive and silent:
            if self._put_off(now, silent):
                return
            waited = now - self._round_at
            for peer in silent:
                router.rtt_of(peer).timed_out(now, waited)
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
                router.stats.hedged += 1
                if self._hedged is None:
                    self._hedged = {}
                self._hedged[extra] = self._rounds + 1  # it joins in this round
        self._rounds += 1
        self._round_at = now
        self.resend_at = now + self._round_interval(silent, self._rounds + 1)
        if silent:
            router.stats.retransmitted += len(silent)
            # Packed again: a fresh timestamp, so long deadlines never go stale.
            self._outbox = (pack_request(route.request, router.key), silent)

    def _put_off(self, now: float, silent: list[Address]) -> bool:
        """Whether the round due now waits (then ``resend_at`` says until when).

        It waits if this task woke late, or, for the first round (planned
        by the schedule alone, at no cost per query), if a peer's timeout
        known when the query started is longer.
        """
        late = now - self.resend_at
        if late > _LATE_WAKE:
            # This task waited for the CPU: the event loop is saturated, and
            # the replies may be queued, unread, in our own socket. Asking
            # again would add to the load it is drowning in.
            self._router.stats.deferred += 1
            self.resend_at = now + max(late, self._round_interval(silent, self._rounds + 1))
            return True
        if self._rounds == 0:
            # Not a backoff other queries grew just now: their silences may
            # be lost datagrams, which waiting does not help.
            policy, router = self._policy, self._router
            due = self._round_at + max(
                policy.interval_for(
                    1, router.rtt_of(peer).timeout_for(policy.max_interval, self._sent_at)
                )
                for peer in silent
            )
            if due > now:
                self.resend_at = due
                return True
        return False

    def _round_interval(self, silent: list[Address], retransmission: int) -> float:
        """Seconds before retransmission round ``retransmission``: the slowest silent peer's."""
        policy = self._policy
        if not policy.adaptive or not silent:
            return policy.interval(retransmission)
        rtt_of, cap = self._router.rtt_of, policy.max_interval
        return max(
            policy.interval_for(retransmission, rtt_of(peer).timeout_for(cap)) for peer in silent
        )

    def result(self, *, timed_out: bool = False) -> QueryResult:
        """The verdict so far; without a quorum, with what the client saw meanwhile."""
        result = self.aggregator.result(timed_out=timed_out)
        if result.quorum_reached:
            return result
        now = self._router.stats.discard_counts()
        discards = tuple(
            (reason, after - before)
            for reason, before, after in zip(
                DISCARD_REASONS, self._discards_before, now, strict=True
            )
            if after > before
        )
        return replace(
            result,
            send_errors=tuple((self._send_failures or {}).items()),
            discards=discards,
            timeout=self.timeout,
        )

    def close(self) -> None:
        """Forget the request now: late replies are discarded, the channel is reused."""
        self._closed = True
        self._router.remove(self._route)
        if self._reader_waiting:
            # Another task still reads this stream: end its wait, and let the
            # channel go rather than hand it to the next query.
            self._channel[0].close()
            return
        unread = len(self._route.answered) - self._taken
        self._router.recycle_channel(self._channel, self._capacity, unread)


async def gather(exchange: Exchange) -> QueryResult:
    """Send the request, read replies until the quorum, resend to the silent; the verdict.

    If the deadline passes first, the result has ``timed_out`` set and holds
    what did arrive.
    """
    aggregator = exchange.aggregator
    while True:
        # Until the next retry time or the deadline, whichever comes first.
        # (One cancel scope per wait: another, nested, for the deadline alone
        # would cost ~10 µs more on every query.)
        with trio.move_on_at(exchange.wake_at):
            await exchange.send_due()
            while not aggregator.quorum_reached:
                aggregator.add_reply(await exchange.receive())
            return aggregator.result()
        if trio.current_time() >= exchange.deadline:
            return exchange.result(timed_out=True)
        exchange.plan_resend()


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
        return self._exchange.result(timed_out=self.timed_out)

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> PeerReply:
        exchange = self._exchange
        if self.timed_out or self._aggregator.complete:
            await trio.lowlevel.checkpoint()  # a checkpoint, as every async call should be
            raise StopAsyncIteration
        while True:
            # The next reply, until the next retry time or the deadline.
            with trio.move_on_at(exchange.wake_at):
                await exchange.send_due()
                peer_reply = await exchange.receive()
                self._aggregator.add_reply(peer_reply)
                return peer_reply
            if trio.current_time() >= exchange.deadline:
                self.timed_out = True
                raise StopAsyncIteration
            exchange.plan_resend()
