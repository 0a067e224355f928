"""What a query waiting for its replies holds, part by part (tracemalloc).

``count`` queries (2,000 by default) are sent to one UDP socket that never
answers and parked, each in its own task, waiting for replies (or, with
the default admission, most of them for a place in the peer's window); the memory
traced while they wait, less what it was before, is divided by ``count``.
Each allocation is put down to the part of the query that made it (by the
file and function of its innermost frame in trioconfd or Trio), so the
rows say what the task, the channel pair, the cancel scope, the request,
its route, aggregator and schedule cost apiece. The shape's floor (see
:mod:`benchmarks.shape_floor`) is measured the same way, for scale::

    python -m benchmarks.query_memory [--count 2000] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

import trioconfd
from trioconfd import AdmissionPolicy, RequestType, RetryPolicy

from .baselines import raw_request

KEY = b"query memory key\n"

# The part of a query an allocation belongs to, by where it was made: the
# first of these found in its traceback (innermost first) names it.
_PARTS = (
    ("trioconfd/protocol/_messages.py", "request"),
    ("trioconfd/protocol/_wire.py", "datagram"),
    ("trioconfd/protocol/_aggregate.py", "aggregator"),
    ("trioconfd/protocol/_schedule.py", "schedule"),
    ("trioconfd/protocol/_admission.py", "admission places"),
    ("trioconfd/client/_admission.py", "admission places"),
    ("trioconfd/client/_entry.py", "route"),
    ("trioconfd/client/_channels.py", "channel pair"),
    ("trio/_channel.py", "channel pair"),
    ("trioconfd/client/_gather.py", "request in flight"),
    ("trioconfd/client/_client.py", "query frames"),
    ("trio/_timeouts.py", "cancel scope"),
    ("trio/_core/_run.py", "task and cancel scope"),
    ("trio/_core/_ki.py", "task and cancel scope"),
    ("trio/_core/_parking_lot.py", "parking"),
    ("trio/_socket.py", "socket calls"),
    ("benchmarks/query_memory.py", "the caller's frames"),
)


# Parked: a query between its first send and its first retransmission,
# made to last (at the default 0.1 s, 2,000 queries resending under
# tracemalloc keep the event loop busy, and no snapshot sees them at rest).
_PARKED = RetryPolicy(initial=600, max_interval=600, hedge_after=None)


def _part(trace: tracemalloc.Trace) -> str:
    for frame in reversed(trace.traceback):  # the most recent frame first
        name = frame.filename.replace("\\", "/")
        for suffix, part in _PARTS:
            if name.endswith(suffix):
                return part
    return "other"


async def _parked_bytes(
    count: int, start_one: Callable[[trio.Nursery], None], ready: Callable[[], bool]
) -> tuple[float, dict[str, float]]:
    """Bytes per parked query while ``count`` wait, in all and by part."""
    gc.collect()
    tracemalloc.start(25)
    try:
        before = tracemalloc.take_snapshot()
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                start_one(nursery)
            while not ready():  # noqa: ASYNC110 - polling a counter is fine here
                await trio.sleep(0.01)
            # Each parked where it waits, not still in a send's checkpoint.
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            during = tracemalloc.take_snapshot()
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    parts: Counter[str] = Counter()
    for trace in during.traces:
        parts[_part(trace)] += trace.size
    for trace in before.traces:
        parts[_part(trace)] -= trace.size
    total = sum(parts.values())
    return total / count, {part: size / count for part, size in parts.most_common()}


async def measure(count: int) -> dict[str, Any]:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    peer = silent.getsockname()
    figures: dict[str, Any] = {"count": count}
    parked = 0

    async def bare_task() -> None:
        nonlocal parked
        parked += 1
        await trio.sleep_forever()

    try:
        figures["bare task"] = (
            await _parked_bytes(
                count, lambda nursery: nursery.start_soon(bare_task), lambda: parked == count
            )
        )[0]
        # Admission off: every query is sent and waits for replies; then the
        # default client, where most wait for places in the peer's window.
        for program, admission in (
            ("trioconfd", AdmissionPolicy.off()),
            ("trioconfd, default admission", AdmissionPolicy()),
        ):
            async with trioconfd.open_confd_client(
                KEY, [peer], max_outstanding=count, admission=admission, retry=_PARKED
            ) as client:

                async def one_query() -> None:
                    await client.query(RequestType.CLUSTER_MASTER, timeout=600)

                total, parts = await _parked_bytes(
                    count,
                    lambda nursery: nursery.start_soon(one_query),
                    lambda: client.outstanding + client.waiting == count,
                )
                figures[program] = {"bytes": total, "parts": parts}

        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        routes: dict[str, trio.MemorySendChannel[bytes]] = {}

        async def floor_query() -> None:
            datagram, rsalt = raw_request(KEY)
            send, replies = trio.open_memory_channel[bytes](1)
            routes[rsalt] = send
            try:
                await sock.sendto(datagram, peer)
                with trio.move_on_at(trio.current_time() + 600):
                    await replies.receive()
            finally:
                del routes[rsalt]

        with sock:
            total, parts = await _parked_bytes(
                count,
                lambda nursery: nursery.start_soon(floor_query),
                lambda: len(routes) == count,
            )
        figures["shape floor"] = {"bytes": total, "parts": parts}
    finally:
        silent.close()
    return figures


def print_query_memory(figures: dict[str, Any]) -> None:
    print(f"bytes per parked query ({figures['count']} parked), task included")
    print(f"  {'a bare Trio task, for scale':<34}{figures['bare task']:>8.0f}")
    for program in ("shape floor", "trioconfd", "trioconfd, default admission"):
        row = figures[program]
        print(f"  {program:<34}{row['bytes']:>8.0f}")
        for part, size in row["parts"].items():
            if abs(size) >= 8:
                print(f"    {part:<32}{size:>8.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="queries parked at once")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    run: Callable[[], Awaitable[dict[str, Any]]] = lambda: measure(args.count)  # noqa: E731
    figures = trio.run(run)
    print_query_memory(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
