"""How often a query to silent peers wakes, and whether each wake had work due.

100, 1,000 and 10,000 queries go at once to three loopback sockets that
never answer (3 s deadline), with the fixed retransmission schedule, the adaptive
one with nothing learned, and the adaptive one with every peer known to be
slow (its estimate primed with 0.4 s round trips, so its first retransmission
is due at about 0.4 s, not the schedule's 0.1 s). Each case runs in its own
process, with another commit's trioconfd (in a temporary worktree) and
this tree's, admission off as there was none before, alternating; then
with this tree's admission on (its default)::

    python -m benchmarks.query_wakes [--before REV] [--json FILE]

A *wake* is the end of a query's wait by its timer (a retry time or the
deadline), counted on the cancel scope the query waits under (for places
or replies: one scope, since 4d6eb06; before, a query's deadline that
came while it waited for places was not counted); a wake
*with nothing to do* neither sent a datagram nor ended the query. The
default ``--before`` is the commit before the schedule became one sans-IO
object (db900a2), when a query to a known-slow peer woke at 0.1 s to find
its retransmission not yet due.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

# In a client process, PYTHONPATH puts the trioconfd under test first.
import trioconfd
from trioconfd.client import _client, _gather

SCRIPT = Path(__file__).resolve()
LOADS = (100, 1_000, 10_000)
POLICIES = ("fixed", "adaptive", "adaptive, peers known slow")
TIMEOUT = 3.0
KNOWN_RTT = 0.4


class _CountedScope:
    """A query's cancel scope that counts, per task, the waits its deadline ended."""

    def __init__(self, scope: trio.CancelScope, ended: Counter[trio.lowlevel.Task]) -> None:
        self._scope, self._ended = scope, ended

    def __enter__(self) -> trio.CancelScope:
        return self._scope.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        swallowed = self._scope.__exit__(kind, error, traceback)
        if self._scope.cancelled_caught:
            self._ended[trio.lowlevel.current_task()] += 1
        return swallowed


class _TrioWithCountedWaits:
    """``trio`` as the query's modules see it, ``move_on_at`` counted."""

    def __init__(self, ended: Counter[trio.lowlevel.Task]) -> None:
        self._ended = ended

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    def move_on_at(self, deadline: float) -> _CountedScope:
        return _CountedScope(trio.move_on_at(deadline), self._ended)


def client_main(spec: dict[str, Any]) -> None:
    """In the child process: one load and policy, with whichever trioconfd is on the path."""
    peers = [tuple(peer) for peer in spec["peers"]]
    queries, policy = spec["queries"], spec["policy"]
    wakes: Counter[trio.lowlevel.Task] = Counter()
    sends: Counter[trio.lowlevel.Task] = Counter()
    # A query waits in ConfdClient.query (in gather, in _gather, before 2026-12-04).
    vars(_client)["trio"] = vars(_gather)["trio"] = _TrioWithCountedWaits(wakes)

    async def main() -> dict[str, Any]:
        retry = trioconfd.RetryPolicy(adaptive=policy != "fixed")
        options: dict[str, Any] = {"retry": retry, "max_outstanding": queries}
        if not spec["admission"] and hasattr(trioconfd, "AdmissionPolicy"):
            options["admission"] = trioconfd.AdmissionPolicy.off()
        async with trioconfd.open_confd_client(b"wakes\n", peers, **options) as client:
            router = client._router
            if policy.endswith("known slow"):
                for peer in peers:
                    for _ in range(8):
                        router.rtt_of(peer).sample(KNOWN_RTT)
            send = router.send

            async def counted_send(*args: Any) -> Any:
                sends[trio.lowlevel.current_task()] += 1
                return await send(*args)

            router.send = counted_send  # type: ignore[method-assign,assignment]
            tasks: list[trio.lowlevel.Task] = []

            async def one_query() -> None:
                tasks.append(trio.lowlevel.current_task())
                await client.query(trioconfd.RequestType.PING, timeout=TIMEOUT)

            before = resource.getrusage(resource.RUSAGE_SELF)
            async with trio.open_nursery() as nursery:
                for _ in range(queries):
                    nursery.start_soon(one_query)
            after = resource.getrusage(resource.RUSAGE_SELF)
            deferred = client.stats.deferred
        woke = sum(wakes[task] for task in tasks)
        # Each query's last wake is its deadline (a verdict; for a query
        # never let out, its only one); each send after its first fan-out
        # followed a wake.
        idle = sum(max(0, wakes[task] - 1 - max(0, sends[task] - 1)) for task in tasks)
        return {
            "queries": queries,
            "policy": policy,
            "wakes_per_query": woke / queries,
            "idle_wakes_per_query": idle / queries,
            "sends_per_query": sum(sends[task] for task in tasks) / queries,
            # Late wakes that put their retransmissions off (adaptive only).
            "deferred_per_query": deferred / queries,
            "cpu_us_per_query": 1e6
            * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            / queries,
        }

    print(json.dumps(trio.run(main)))


def _measure(before: Path) -> dict[str, Any]:
    from ._revisions import ROOT, run_child, silent_sockets

    codes = {"after": ROOT, "before": before}
    sockets, peers = silent_sockets(3)
    cases: list[dict[str, Any]] = []
    try:
        for load in LOADS:
            for policy in POLICIES:
                row: dict[str, Any] = {"queries": load, "policy": policy}
                order = ("before", "after") if len(cases) % 2 == 0 else ("after", "before")
                for name in order:
                    spec = {"peers": peers, "queries": load, "policy": policy, "admission": False}
                    row[name] = run_child(SCRIPT, codes[name], spec)
                spec = {"peers": peers, "queries": load, "policy": policy, "admission": True}
                row["after, admission on"] = run_child(SCRIPT, ROOT, spec)
                cases.append(row)
                _print_row(row)
    finally:
        for sock in sockets:
            sock.close()
    return {"cases": cases}


def _print_row(row: dict[str, Any]) -> None:
    figures = []
    for name in ("before", "after", "after, admission on"):
        got = row[name]
        figures.append(
            f"{name}: {got['wakes_per_query']:.2f} wakes, {got['idle_wakes_per_query']:.2f} idle, "
            f"{got['deferred_per_query']:.2f} deferring, {got['sends_per_query']:.2f} sends, "
            f"{got['cpu_us_per_query']:.0f} µs"
        )
    print(f"{row['queries']:>6} {row['policy']}\n  " + "\n  ".join(figures))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--before", default="db900a2^", help="the commit to compare with")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.client:
        client_main(json.loads(args.client))
        return
    from ._revisions import checked_out

    print("queries at once, policy: per query, wakes by timer, of which with nothing to do and")
    print("deferring (late), send calls (each a fan-out to the silent peers), client CPU")
    with checked_out(args.before) as before:
        results = _measure(before)
    results["before"] = args.before
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
