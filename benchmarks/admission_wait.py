"""What a query that waits for places costs, beside Trio's own primitives (no network).

At 256 in flight against three or five daemons, the client's retry schedule
keeps each peer's window below the load (a reply slower than the first
retransmission interval cuts it), so nearly every query waits for places:
that wait is most of what trioconfd costs over the shape's floor there
(:mod:`benchmarks.shape_floor`). This measures the wait alone, in one
process: 256 tasks each ask all ``peers`` in turn, ``count`` queries in all;
a stand-in for the peers answers each peer's oldest requests, a random
0 to 6 of them per peer a scheduler batch, so windows free up at different
times, as real replies do. CPU per query (``time.process_time``), rounds
alternating, median kept::

    python -m benchmarks.admission_wait [--peers 3] [--count 30000] [--rounds 5] [--json FILE]

Rows: admission off (nothing waits); windows of 100 places (nearly every
query waits), with the wait under a cancel scope of its own, as the
client's was, and without one, as the client's is now (it waits in the
scope its query then gathers replies in); and, for scale,
``trio.CapacityLimiter`` of the same sizes, one per peer, taken in order
under a cancel scope and without; and a bare cancel scope's own cost.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from trioconfd import AdmissionPolicy
from trioconfd.client._admission import Admission, Places

IN_FLIGHT = 256
WINDOW = 100
# The most requests of one peer the stand-in answers in one scheduler batch.
_MOST_A_BATCH = 6

Release = Callable[[int], None]
Take = Callable[[list[Any]], Awaitable[Release]]


async def _run(
    peers: int,
    count: int,
    seed: int,
    take: Take,
) -> float:
    """µs of CPU a query: ``take`` gets a query its places (returns how to give
    back its place with peer i); the stand-in answers as said above."""
    rng = random.Random(seed)
    addresses = [(f"127.0.0.{index + 1}", 1814) for index in range(peers)]
    queues: list[deque[list[Any]]] = [deque() for _ in range(peers)]
    left, live = count, 0

    async def query() -> None:
        nonlocal left, live
        while left > 0:
            left -= 1
            release = await take(list(addresses))
            done = trio.Event()
            state: list[Any] = [peers, release, done]
            live += 1
            for queue in queues:
                queue.append(state)
            await done.wait()
            live -= 1

    async def answer() -> None:
        while left > 0 or live:
            for index, queue in enumerate(queues):
                for _ in range(min(rng.randint(0, _MOST_A_BATCH), len(queue))):
                    state = queue.popleft()
                    state[1](index)
                    state[0] -= 1
                    if state[0] == 0:
                        state[2].set()
            await trio.lowlevel.checkpoint()

    started = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(IN_FLIGHT):
            nursery.start_soon(query)
        nursery.start_soon(answer)
    return (time.process_time() - started) / count * 1e6


def _admission(
    policy: AdmissionPolicy, *, scope: bool
) -> Callable[[list[Any]], Awaitable[Release]]:
    admission = Admission(policy)
    needed_of: dict[int, int] = {}

    async def take(targets: list[Any]) -> Release:
        places = admission.admit_nowait(targets)
        if places is None:
            needed = needed_of.setdefault(len(targets), len(targets) // 2 + 1)
            if scope:
                with trio.move_on_at(trio.current_time() + 3600):
                    places = await admission.admit(targets, [], needed=needed)
            else:
                places = await admission.admit(targets, [], needed=needed)
        assert places is not None
        return _answered(places, list(targets))

    return take


def _answered(places: Places, targets: list[Any]) -> Release:
    return lambda index: places.answered(targets[index])


def _limiters(peers: int, size: float, *, scope: bool) -> Take:
    limiters = [trio.CapacityLimiter(size) for _ in range(peers)]

    async def take(targets: list[Any]) -> Release:
        token = object()
        if scope:
            with trio.move_on_at(trio.current_time() + 3600):
                for limiter in limiters:
                    await limiter.acquire_on_behalf_of(token)
        else:
            for limiter in limiters:
                await limiter.acquire_on_behalf_of(token)
        return lambda index: limiters[index].release_on_behalf_of(token)

    return take


async def _scope_cost(count: int) -> float:
    """µs a cancel scope with a deadline adds around a checkpoint, 256 tasks at once."""
    figures = []
    for scoped in (False, True):
        left = count

        async def worker(scoped: bool = scoped) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if scoped:
                    with trio.move_on_at(trio.current_time() + 3600):
                        await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.checkpoint()

        started = time.process_time()
        async with trio.open_nursery() as nursery:
            for _ in range(IN_FLIGHT):
                nursery.start_soon(worker)
        figures.append((time.process_time() - started) / count * 1e6)
    return figures[1] - figures[0]


def measure(peers: int, count: int, rounds: int) -> dict[str, float]:
    """Median µs of CPU a query, for each row (see the module's docstring)."""
    fixed = AdmissionPolicy(initial=WINDOW, minimum=WINDOW, maximum=WINDOW)
    rows: dict[str, Callable[[], Take]] = {
        "admission off": lambda: _admission(AdmissionPolicy.off(), scope=False),
        f"admission, windows of {WINDOW}, under a cancel scope": lambda: _admission(
            fixed, scope=True
        ),
        f"admission, windows of {WINDOW}, no cancel scope": lambda: _admission(fixed, scope=False),
        "trio.CapacityLimiter, unbounded": lambda: _limiters(peers, math.inf, scope=False),
        f"trio.CapacityLimiter of {WINDOW}, under a cancel scope": lambda: _limiters(
            peers, WINDOW, scope=True
        ),
        f"trio.CapacityLimiter of {WINDOW}, no cancel scope": lambda: _limiters(
            peers, WINDOW, scope=False
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in rows}
    scopes = []
    for round_ in range(rounds):
        order = list(rows) if round_ % 2 == 0 else list(reversed(rows))
        for name in order:
            runs[name].append(trio.run(_run, peers, count, round_, rows[name]()))
        scopes.append(trio.run(_scope_cost, count))
    figures = {name: statistics.median(values) for name, values in runs.items()}
    figures["a cancel scope around a checkpoint, alone"] = statistics.median(scopes)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=3, help="peers each query asks")
    parser.add_argument("--count", type=int, default=30_000, help="queries a row and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, median kept")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = measure(args.peers, args.count, args.rounds)
    print(f"CPU µs a query, {args.peers} peers, {IN_FLIGHT} in flight (median of {args.rounds})")
    for name, value in figures.items():
        print(f"  {name:<58}{value:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"peers": args.peers, **figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
