"""Queries timed by :class:`SendSchedule` against model peers, in simulated time, without Trio.

A discrete-event run: each query asks every peer, sends what its schedule
says when it says, and ends at its quorum or its deadline. A peer is one of
a few kinds at a time (prompt, slow, lossy, dropping every first copy), and
may change kind between queries. Whether a copy is lost, and how long its
round trip takes, is drawn from the query, the peer and the copy's number
alone, so two policies run against the same peers meet the same luck copy
for copy, and their latencies can be compared query by query.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from trioconfd.protocol import Address, RetryPolicy, RttEstimate, SendSchedule, needed_replies


@dataclass(frozen=True)
class Kind:
    """How a peer answers: its round trip (seconds), and which copies are lost."""

    name: str
    rtt: float
    loss: float = 0.0  # chance that a copy, or its reply, is lost
    drops_first: bool = False  # the first copy of every request is lost

    def __str__(self) -> str:
        return self.name


def prompt(rtt: float = 0.001) -> Kind:
    return Kind("prompt", rtt)


def slow(rtt: float = 1.0) -> Kind:
    return Kind(f"slow {rtt:g}s", rtt)


def lossy(loss: float = 0.3, rtt: float = 0.001) -> Kind:
    return Kind(f"lossy {loss:g}", rtt, loss=loss)


def drops_first(rtt: float = 0.001) -> Kind:
    return Kind("drops first copies", rtt, drops_first=True)


@dataclass(frozen=True)
class Peer:
    """A peer's kinds: ``kinds[i]`` from query ``changes[i]`` on (``changes[0] == 0``)."""

    kinds: tuple[Kind, ...]
    changes: tuple[int, ...] = (0,)

    def kind_at(self, query: int) -> Kind:
        current = self.kinds[0]
        for kind, start in zip(self.kinds, self.changes, strict=True):
            if query >= start:
                current = kind
        return current


@dataclass
class Run:
    """What one policy did: each query's latency (None: timed out) and every send."""

    latencies: list[float | None] = field(default_factory=list)
    # (query, peer index, copy number from 1, seconds since the previous copy)
    gaps: list[tuple[int, int, int, float]] = field(default_factory=list)
    datagrams: int = 0

    @property
    def timeouts(self) -> int:
        return sum(latency is None for latency in self.latencies)

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the queries ended (a time-out: inf)."""
        ordered = sorted(math.inf if latency is None else latency for latency in self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


#: How much longer one copy's round trip may be than another's to the same
#: peer for the same query: a later copy may come back first by that much.
COPY_SPREAD = 0.05


def _luck(seed: int, query: int, peer: int, copy: int) -> random.Random:
    return random.Random(f"{seed}/{query}/{peer}/{copy}")


class _Query:
    """One query's copies in flight: each peer's sends, and the earliest reply coming."""

    def __init__(self, run: Run, seed: int, query: int, kinds: list[Kind]) -> None:
        self.run, self.seed, self.query, self.kinds = run, seed, query, kinds
        # This query's round trip to each peer: one draw for the query (the
        # peer's state), and a little more for each copy.
        self.base = [
            kind.rtt * _luck(seed, query, index, 0).uniform(0.8, 1.2)
            for index, kind in enumerate(kinds)
        ]
        self.copies = [0] * len(kinds)
        self.last_send = [0.0] * len(kinds)
        self.arrivals: dict[int, float] = {}  # the earliest reply from each peer

    def send(self, index: int, at: float) -> None:
        self.copies[index] += 1
        copy = self.copies[index]
        gap = at - self.last_send[index] if copy > 1 else 0.0
        self.run.datagrams += 1
        self.run.gaps.append((self.query, index, copy, gap))
        self.last_send[index] = at
        kind, luck = self.kinds[index], _luck(self.seed, self.query, index, copy)
        lost = luck.random() < kind.loss or luck.random() < kind.loss
        if lost or (kind.drops_first and copy == 1):
            return
        arrival = at + self.base[index] * luck.uniform(1.0, 1.0 + COPY_SPREAD)
        if arrival < self.arrivals.get(index, math.inf):
            self.arrivals[index] = arrival


def run_queries(
    policy: RetryPolicy,
    peers: Sequence[Peer],
    *,
    queries: int,
    timeout: float = 3.0,
    gap: float = 0.01,
    seed: int = 0,
) -> Run:
    """``queries`` one after another (``gap`` seconds apart), each to every peer."""
    addresses: list[Address] = [(f"192.0.2.{index + 1}", 1814) for index in range(len(peers))]
    index_of = {address: index for index, address in enumerate(addresses)}
    estimates: dict[Address, RttEstimate] = {}

    def estimate_of(address: Address) -> RttEstimate:
        return estimates.setdefault(address, RttEstimate())

    run = Run()
    now = 0.0
    needed = needed_replies(len(peers))
    for number in range(queries):
        start = now
        deadline = start + timeout
        query = _Query(run, seed, number, [peer.kind_at(number) for peer in peers])
        schedule = SendSchedule(
            policy, addresses, start, needed=needed, peers=addresses, estimate_of=estimate_of
        )
        for index in range(len(peers)):
            query.send(index, start)
        received = 0
        ended: float | None = None
        arrivals = query.arrivals
        while True:
            next_reply = min(arrivals.values(), default=math.inf)
            now = min(next_reply, schedule.wake_at, deadline)
            if now >= deadline and next_reply > deadline:
                now = deadline
                break
            if next_reply == now:
                index = min(arrivals, key=arrivals.__getitem__)
                del arrivals[index]
                schedule.answered(addresses[index], now)
                received += 1
                if received >= needed:
                    ended = now
                    break
                continue
            for address in schedule.due(now).peers:
                query.send(index_of[address], now)
        schedule.end(now)
        run.latencies.append(None if ended is None else ended - start)
        now += gap
    return run
