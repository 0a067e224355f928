"""What each part of the client's shape costs, in µs, measured beside what it replaced.

A query of the required shape pays, beyond its protocol work: one cancel
scope (entered and left around its wait), one memory-channel hand-off per
reply (the receive task's ``send_nowait`` and the reader's wake-up), one
``trio.socket`` ``sendto`` per peer asked and one ``recvfrom`` per reply.
Each is timed here against the cheaper thing the earlier client did instead,
in the same run::

    python -m benchmarks.shape_costs [--count N]
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

_PAYLOAD = b"x" * 200


async def _per_op(count: int, body: Callable[[], Awaitable[None]]) -> float:
    """µs per call of ``body``, the best of three rounds of ``count`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            await body()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


async def _cancel_scope(count: int) -> tuple[float, float]:
    async def bare() -> None:
        await trio.lowlevel.checkpoint()

    async def scoped() -> None:
        with trio.move_on_at(trio.current_time() + 10):
            await trio.lowlevel.checkpoint()

    return await _per_op(count, scoped), await _per_op(count, bare)


async def _hand_off(count: int) -> tuple[float, float]:
    """A reply passed to a parked reader: by memory channel, and by a hand-parked task."""
    send, receive = trio.open_memory_channel[int](1)
    back_send, back_receive = trio.open_memory_channel[int](1)

    async def echo_channel() -> None:
        async for item in receive:
            back_send.send_nowait(item)

    async def by_channel() -> None:
        send.send_nowait(1)
        await back_receive.receive()

    parked: list[trio.lowlevel.Task | None] = [None, None]

    def wake(index: int) -> None:
        task = parked[index]
        parked[index] = None
        assert task is not None
        trio.lowlevel.reschedule(task)

    async def park(index: int) -> None:
        parked[index] = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)

    async def echo_parked() -> None:
        while True:
            await park(0)
            wake(1)

    async def by_parking() -> None:
        wake(0)
        await park(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_channel)
        await trio.sleep(0.01)
        channel = await _per_op(count, by_channel)
        nursery.start_soon(echo_parked)
        await trio.sleep(0.01)
        parking = await _per_op(count, by_parking)
        nursery.cancel_scope.cancel()
    # Each round trip is two hand-offs.
    return channel / 2, parking / 2


def _open_channel(count: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(count):
        trio.open_memory_channel[Any](3)
    opened = (time.perf_counter() - start) / count * 1e6
    pool = [trio.open_memory_channel[Any](3)]
    start = time.perf_counter()
    for _ in range(count):
        pool.append(pool.pop())
    pooled = (time.perf_counter() - start) / count * 1e6
    return opened, pooled


async def _socket_calls(count: int) -> dict[str, tuple[float, float]]:
    """sendto and recvfrom on loopback: through trio.socket, and on a non-blocking stdlib socket."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    target = sink.getsockname()
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.setblocking(False)
    wrapped = trio.socket.from_stdlib_socket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    batch = 200  # fits the sink's buffer; drained between batches, untimed
    names = ("trio sendto", "stdlib sendto", "trio recvfrom", "stdlib recvfrom")
    totals = dict.fromkeys(names, 0.0)
    try:
        for _ in range(max(1, count // batch)):
            start = time.perf_counter()
            for _ in range(batch):
                await wrapped.sendto(_PAYLOAD, target)
            totals["trio sendto"] += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(batch):
                plain.sendto(_PAYLOAD, target)
            totals["stdlib sendto"] += time.perf_counter() - start
            # The sink now holds twice the batch: half is read each way.
            trio_sink = trio.socket.from_stdlib_socket(sink.dup())
            start = time.perf_counter()
            for _ in range(batch):
                await trio_sink.recvfrom(65536)
            totals["trio recvfrom"] += time.perf_counter() - start
            trio_sink.close()
            start = time.perf_counter()
            for _ in range(batch):
                sink.recvfrom(65536)
            totals["stdlib recvfrom"] += time.perf_counter() - start
    finally:
        for sock in (sink, plain, wrapped):
            sock.close()
    ops = max(1, count // batch) * batch
    per = {name: total / ops * 1e6 for name, total in totals.items()}
    return {
        "sendto": (per["trio sendto"], per["stdlib sendto"]),
        "recvfrom": (per["trio recvfrom"], per["stdlib recvfrom"]),
    }


async def measure_shape_costs(count: int = 20000) -> dict[str, dict[str, float]]:
    """Each part's cost and its predecessor's, in µs per use."""
    scope, bare = await _cancel_scope(count)
    channel, parking = await _hand_off(count)
    opened, pooled = _open_channel(count)
    sockets = await _socket_calls(count)
    rows = {
        "cancel scope around a wait (vs none)": (scope - bare, 0.0),
        "reply hand-off: memory channel (vs hand-parked task)": (channel, parking),
        "reply channel: opened (vs pooled)": (opened, pooled),
        "sendto: trio.socket (vs stdlib non-blocking)": sockets["sendto"],
        "recvfrom: trio.socket (vs stdlib non-blocking)": sockets["recvfrom"],
    }
    return {name: {"shape_us": ours, "before_us": theirs} for name, (ours, theirs) in rows.items()}


def print_shape_costs(costs: dict[str, dict[str, float]]) -> None:
    print(f"{'what the shape costs, µs per use':<56}{'shape':>8}{'before':>8}{'extra':>8}")
    for name, row in costs.items():
        extra = row["shape_us"] - row["before_us"]
        print(f"  {name:<54}{row['shape_us']:>8.1f}{row['before_us']:>8.1f}{extra:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="uses timed per part")
    args = parser.parse_args()
    print_shape_costs(trio.run(measure_shape_costs, args.count))


if __name__ == "__main__":
    main()
