"""One request's sends over time: to whom, when, and when to look again (sans-IO).

A :class:`SendSchedule` is handed the time and answers "what to send now, to
whom, and when to wake next". Each peer asked keeps its own retransmission
time: a quick peer whose datagram was lost is asked again on its own
schedule, not a slow peer's. The query's Trio function only sends what
:meth:`SendSchedule.due` returns, waits until :attr:`SendSchedule.wake_at`
(or its deadline) and reports each reply with :meth:`SendSchedule.answered`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ._aggregate import Address, Answered, with_answered
from ._retry import RetryPolicy
from ._rtt import RttEstimate

#: A query woken this long (seconds) after its retry time found the event
#: loop saturated: its replies may be waiting, unread, in the client's socket.
LATE_WAKE = 0.02
#: Woken this late or later to a socket holding unread datagrams, a query
#: finds the event loop behind: its replies may be among them. (Woken on
#: time, the receive side keeps up, and what is unread has just come.)
BEHIND_WAKE = 0.001


class Due(NamedTuple):
    """What :meth:`SendSchedule.due` says to send now."""

    #: send the request to these now: retransmissions, and the hedge if any
    peers: list[Address]
    #: a peer outside the first sample, asked for the first time (among ``peers``)
    hedge: Address | None = None
    #: the retransmissions due were put off: the wake came late, or replies
    #: were waiting unread
    deferred: bool = False


_NOTHING = Due([])

#: What a schedule reads of its policy: the policy, its first retransmission's
#: wait (infinite when off), its hedging delay (None: none, or off), whether
#: it is adaptive.
_Terms = tuple[RetryPolicy | None, float, float | None, bool]


class _LastTerms:
    """The terms of the last policy a schedule was made with: a client's
    queries share one, and working them out again cost ~1% of a query's
    CPU. (A RetryPolicy is frozen, its terms its fields'; a subclass's own
    ``interval`` may answer anew each time, and is asked each time. The
    tuple is swapped whole, so threads at worst work it out again.)"""

    terms: _Terms = (None, math.inf, None, False)

    @classmethod
    def of(cls, policy: RetryPolicy) -> _Terms:
        terms = cls.terms
        if terms[0] is not policy:
            enabled = policy.enabled
            terms = (
                policy,
                policy.interval(1) if enabled else math.inf,
                policy.hedge_after if enabled else None,
                bool(enabled and policy.adaptive),
            )
            if type(policy) is RetryPolicy:
                cls.terms = terms
        return terms


class _Sends:
    """The sends to one silent peer: how many the schedule made, and when the next
    is due; and the copies that went (a send may be held back), the last when."""

    __slots__ = (
        "copied_at",
        "copies",
        "estimate",
        "lag",
        "last_sent",
        "next_at",
        "sends",
        "stretched",
        "undo_at",
        "undo_due",
    )

    def __init__(
        self,
        estimate: RttEstimate | None,
        now: float,
        next_at: float,
        *,
        stretched: bool,
        lag: float = 0.0,
    ) -> None:
        self.estimate = estimate
        #: whether the estimate put the first retransmission past the schedule's
        self.stretched = stretched
        #: how much longer the first wait is for the reading's lag
        self.lag = lag
        self.sends = 1
        self.last_sent = now
        self.next_at = next_at
        self.copies = 1
        self.copied_at = now
        #: when the copy before the last went (None: nothing to take back),
        #: and which call of ``due`` named the last
        self.undo_at: float | None = None
        self.undo_due = 0


class SendSchedule:
    """When one request goes to each of its peers, from its first send to its verdict.

    ``targets`` are asked at ``now`` (the caller sends that first fan-out).
    Each silent peer is asked again ``policy.interval(n)`` after its previous
    send. When ``policy.adaptive``, the first of those waits stretches to the
    peer's measured retransmission timeout if longer (at most
    ``policy.max_timeout``): a peer known to be slow is asked again once its
    reply is overdue. Silence past that is evidence against the estimate,
    and the schedule's pace resumes. No wait is ever shorter than the
    schedule's. Once ``policy.hedge_after`` seconds have passed with fewer
    than ``needed`` replies, one peer of ``peers`` not asked yet is asked too,
    and another every ``policy.max_interval`` while the quorum is still short.
    ``estimate_of`` gives each peer's :class:`RttEstimate` (shared between
    requests), which :meth:`answered` updates; without it, nothing is learned.
    ``lag``: how far the client's reading of its socket lagged behind the
    datagrams arriving when the request first went; a reply may wait unread
    that long, so the first retransmission of each peer first asked and the
    first hedge wait that much longer, up to ``policy.max_timeout`` (the
    later ones keep the schedule's pace).
    """

    __slots__ = (
        "_adaptive",
        "_answered",
        "_asked",
        "_choose",
        "_deferred",
        "_dues",
        "_estimate_of",
        "_first_at",
        "_hedge_at",
        "_lag",
        "_needed",
        "_peers",
        "_policy",
        "_received",
        "_silent",
        "_started",
        "_targets",
        "wake_at",
    )

    def __init__(  # noqa: PLR0917 - a query passes them by position: ~40 ns a keyword
        self,
        policy: RetryPolicy,
        targets: Sequence[Address],
        now: float,
        needed: int,
        peers: Sequence[Address] = (),
        estimate_of: Callable[[Address], RttEstimate] | None = None,
        choose: Callable[[Sequence[Address]], Address] = random.choice,
        lag: float = 0.0,
    ) -> None:
        self._policy = policy
        # How far the client's reading lagged behind arrivals as it first sent:
        # a reply that comes in time may wait unread that long. (At most
        # max_timeout: a wall clock stepped forward makes stamps look old.)
        if not 0.0 < lag < math.inf:
            lag = 0.0
        elif lag > policy.max_timeout:
            lag = policy.max_timeout
        self._lag = lag
        _, first, hedge_after, adaptive = _LastTerms.of(policy)
        adaptive = adaptive and estimate_of is not None
        self._adaptive = adaptive
        self._needed = needed
        self._received = 0
        self._peers = peers
        self._choose = choose
        self._estimate_of = estimate_of if adaptive else None
        self._targets = targets
        self._started = now
        self._deferred = False
        self._dues = 0  # calls of due(), so that held_back takes back only the last one's
        # Until the first retransmission, most queries' peers all wait alike
        # (the schedule's first interval): then they share one time, and who
        # has answered is a tuple grown at each reply (a set past
        # FEW_ANSWERED peers). Per-peer times are made only when they
        # differ, or when the first retransmission is due.
        self._answered: Answered = ()
        self._silent: dict[Address, _Sends] | None = None
        if hedge_after is None or len(peers) <= len(targets):
            self._hedge_at = hedge_at = math.inf
        else:
            self._hedge_at = hedge_at = now + hedge_after + lag
        self._first_at = first_at = now + first + lag
        if adaptive:
            learned = estimate_of
            assert learned is not None
            cap = policy.max_timeout
            for peer in targets:
                if min(learned(peer).timeout, cap) > first:
                    # A peer known to be slow waits longer: each its own time.
                    self._materialize()
                    self.wake_at = self._earliest()
                    return
        # What _earliest() says of a schedule not yet materialized, nothing
        # answered (without the call: this runs once a query).
        earliest = hedge_at if needed > 0 else math.inf
        self.wake_at = min(earliest, first_at) if targets else earliest

    @property
    def silent(self) -> list[Address]:
        """The peers asked that have not answered, in the order they were asked."""
        if self._silent is None:
            answered = self._answered
            return [peer for peer in self._targets if peer not in answered]
        return list(self._silent)

    def sends_to(self, peer: Address) -> int:
        """How many times ``peer`` has been sent the request (0: never, or it answered)."""
        if self._silent is None:
            return int(peer in self.silent)
        sends = self._silent.get(peer)
        return 0 if sends is None else sends.sends

    def due(self, now: float, *, unread: bool = False, read_up_to: float | None = None) -> Due:
        """What to send at ``now``; the sends it returns count as made at ``now``
        (a copy the caller holds back, it says so with :meth:`held_back`).

        With ``read_up_to`` (datagrams wait unread in the client's socket, and
        every one that came before that time has been read), a retransmission
        or hedge due after that time is put off by as long as the reading
        lags behind it: a reply that came in time may still wait unread. Else
        a wake more than :data:`LATE_WAKE` seconds after :attr:`wake_at`, on
        an adaptive schedule, puts the retransmissions due off instead (by
        the schedule's interval, or as long again as the wake was late): the
        event loop is saturated, and asking again would add to the load it is
        drowning in. So does ``unread``, on any schedule, with a wake
        :data:`BEHIND_WAKE` late or more: the client's socket holds datagrams
        the loop has not read yet, among which the replies awaited may be.
        Either is once in a row: the next wake sends, however late, and
        whatever is unread.
        """
        self._dues += 1
        if now < self.wake_at:
            return _NOTHING
        silent = self._materialize()
        late = now - self.wake_at
        # Put off once in a row at most: a loop late at every wake (or a
        # stream read slowly, or a socket flooded) must not stop
        # retransmission altogether.
        was_deferred = self._deferred
        lagging = False
        if read_up_to is not None and math.isfinite(read_up_to) and not was_deferred:
            # Put off as long again as the reading lags behind the time it was
            # due (at most max_timeout: a wall clock stepped forward makes
            # stamps look old).
            most = self._policy.max_timeout
            for sends in silent.values():
                if read_up_to < sends.next_at <= now:
                    sends.next_at = now + min(sends.next_at - read_up_to, most)
                    lagging = True
            if read_up_to < self._hedge_at <= now:
                self._hedge_at = now + min(self._hedge_at - read_up_to, most)
                lagging = True
        if (
            not lagging
            and ((unread and late >= BEHIND_WAKE) or (self._adaptive and late > LATE_WAKE))
            and not was_deferred
        ):
            self._deferred = True
            for sends in silent.values():
                if sends.next_at <= now:
                    sends.next_at = now + max(late, self._policy.interval(sends.sends))
            self._hedge_at = max(self._hedge_at, now + late)
            self.wake_at = self._earliest()
            return Due([], None, True)
        self._deferred = lagging
        peers = []
        for peer, sends in silent.items():
            if sends.next_at <= now:
                sends.sends += 1
                sends.last_sent = now
                sends.copies += 1
                sends.undo_at, sends.copied_at = sends.copied_at, now
                sends.undo_due = self._dues
                # Past the first, every wait is the schedule's.
                sends.next_at = now + self._policy.interval(sends.sends)
                peers.append(peer)
        hedge = self._hedge(now) if now >= self._hedge_at else None
        if hedge is not None:
            peers.append(hedge)
        self.wake_at = self._earliest()
        return Due(peers, hedge, lagging)

    def held_back(self, peer: Address) -> None:
        """The copy the last call of :meth:`due` named for ``peer`` did not go (its
        window was full, or the send failed): the schedule goes on as if it
        had, but a reply is to the copies that went, and the round trip is
        learned from them alone. (A request that went once, its
        retransmission held back, is answered by that one: a round trip, with
        no doubt which copy it answers.) Said of another peer, or after
        another call of :meth:`due`, it changes nothing.
        """
        sends = None if self._silent is None else self._silent.get(peer)
        if sends is not None and sends.undo_at is not None and sends.undo_due == self._dues:
            sends.copies -= 1
            sends.copied_at, sends.undo_at = sends.undo_at, None

    def sent_late(self, peers: Sequence[Address], now: float) -> None:
        """The first copy to ``peers`` went only at ``now``, not as the schedule
        began: the first fan-out was cut short (its sends took until a wake)
        and went on then. Their first waits (the reading's lag included, as
        for the rest of the first fan-out) and round trips count from
        ``now``. A peer not silent, or already asked again, changes nothing.
        """
        silent = self._materialize()
        for peer in peers:
            sends = silent.get(peer)
            if sends is not None and sends.sends == 1:
                silent[peer] = self._sends(sends.estimate, now, self._lag)
        self.wake_at = self._earliest()

    def hedge_never_sent(self, peer: Address) -> None:
        """The hedge the last call of :meth:`due` named, ``peer``, never went (its
        send was cut short before it went): it was not asked, and may be a
        hedge again. Said of a peer asked, it changes nothing."""
        silent = self._silent
        if silent is None or peer not in silent or peer in self._targets:
            return
        if silent[peer].sends == 1:
            del silent[peer]
            self._asked.remove(peer)
            self.wake_at = self._earliest()

    def answered(self, peer: Address, now: float) -> None:
        """``peer`` replied at ``now``: it is asked no more, and its round trip is learned.

        A reply to a request sent once is a round trip; to one sent several
        times, :meth:`RttEstimate.answered_last` takes what it can. A peer
        not asked, or answered before, changes nothing.
        """
        if self._silent is None:
            # Every peer was sent the request once, at the start.
            answered = self._answered
            if peer in answered or peer not in self._targets:
                return
            self._answered = with_answered(answered, peer)
            self._received = received = self._received + 1
            if self._estimate_of is not None:
                self._estimate_of(peer).sample(now - self._started)
            if received == self._needed or received == len(self._targets):
                self.wake_at = self._earliest()
            return
        sends = self._silent.pop(peer, None)
        if sends is None:
            return
        self._received += 1
        estimate = sends.estimate
        if estimate is not None:
            if sends.copies == 1:
                estimate.sample(now - sends.copied_at)
            else:
                estimate.answered_last(now - sends.copied_at, stretched=sends.stretched)
        if self._received == self._needed or sends.next_at <= self.wake_at:
            # The quorum is in (no more hedges), or this peer's send was next.
            self.wake_at = self._earliest()

    def end(self, now: float) -> None:
        """The request ends at ``now``, its silent peers unheard.

        A peer whose estimate held back a retransmission the schedule would
        have sent by now is :meth:`doubted <RttEstimate.doubt>`: its estimate
        may be out of date, and it is no longer tested while it is trusted.
        """
        if self._silent is None:
            return  # every peer waited the schedule's first interval: nothing held back
        policy = self._policy
        for sends in self._silent.values():
            estimate = sends.estimate
            scheduled = sends.last_sent + policy.interval(sends.sends)
            if sends.sends == 1:
                scheduled += sends.lag  # held back for the reading's sake, not the estimate's
            if estimate is not None and now > scheduled and sends.next_at > scheduled:
                estimate.doubt()

    def _estimate(self, peer: Address) -> RttEstimate | None:
        return None if self._estimate_of is None else self._estimate_of(peer)

    def _materialize(self) -> dict[Address, _Sends]:
        """Each silent peer's own sends and times (made once, when first needed)."""
        silent = self._silent
        if silent is None:
            answered, started = self._answered, self._started
            silent = self._silent = {}
            for peer in self._targets:
                if peer not in answered:
                    silent[peer] = self._sends(self._estimate(peer), started, self._lag)
            #: who may not be a hedge (made with the per-peer times: unused before)
            self._asked: list[Address] = list(self._targets)
        return silent

    def _sends(self, estimate: RttEstimate | None, now: float, lag: float = 0.0) -> _Sends:
        """A peer's sends, the first at ``now``, the next when its first wait (and
        ``lag``, the reading's) ends."""
        wait = self._first_wait(estimate)
        stretched = estimate is not None and wait > self._policy.interval(1)
        return _Sends(estimate, now, now + wait + lag, stretched=stretched, lag=lag)

    def _first_wait(self, estimate: RttEstimate | None) -> float:
        """Seconds from a peer's first send to its first retransmission.

        Only this wait stretches to the estimate: silence past the peer's
        timeout is evidence against the estimate (it has changed, or the
        datagram was lost), and the schedule's pace is right for both.
        """
        policy = self._policy
        if not policy.enabled:
            return math.inf
        if estimate is None:
            return policy.interval(1)
        return policy.interval_for(1, estimate.timeout)

    def _hedge(self, now: float) -> Address | None:
        """A peer not asked yet, asked now (the next one a ``max_interval`` on); or None."""
        spare = [peer for peer in self._peers if peer not in self._asked]
        if self._received >= self._needed or not spare:
            self._hedge_at = math.inf
            return None
        peer = self._choose(spare)
        self._asked.append(peer)
        assert self._silent is not None
        self._silent[peer] = self._sends(self._estimate(peer), now)
        self._hedge_at = now + self._policy.max_interval
        return peer

    def _earliest(self) -> float:
        earliest = self._hedge_at if self._received < self._needed else math.inf
        if self._silent is None:
            if self._received < len(self._targets):
                earliest = min(earliest, self._first_at)
            return earliest
        for sends in self._silent.values():
            earliest = min(earliest, sends.next_at)
        return earliest
