"""The floor of the client's shape: the smallest Trio program with it, beside trioconfd.

The floor has the shape the client must have and nothing else: one
``trio.socket`` UDP socket; one receive task that verifies each datagram and
hands it, by rsalt, to its query's memory channel with ``send_nowait``; each
query packs its request, sends it to every peer with ``await sock.sendto``
(fanning out as a query does) and gathers its quorum from its channel under
``trio.move_on_at``. No stats, no retransmission, no admission, no
diagnosis: what any program of this shape pays. It asks what trioconfd and
the raw socket (:mod:`benchmarks.baselines`) ask, of 1, 3 and 5 real
daemons, 256 queries in flight, rounds alternating, in one run::

    python -m benchmarks.shape_floor [--total 20000] [--rounds 3] [--in-flight 256]
                                     [--ballast N] [--json FILE]

Rows: rate and CPU per answered query (getrusage, user + system; then the
user and system parts apart, each the median of the rounds), and for
the Trio programs the scheduler's batches (one per I/O wait) per query and
the datagrams read per batch; for trioconfd, the most of any round of: the
share of queries that waited for places, the windows cut, and the
datagrams sent again. A third Trio row, trioconfd with
``RetryPolicy.off()``, says what its retry schedule costs at this load
(with it, a query waits for a place once its replies take longer than the
first retransmission interval: see README, "Admission"). The harness
(``benchmarks.harness``) runs the same rows. ``--json`` writes the figures
by peer count (``"peers"``) beside the run's settings and date (``"run"``).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import trioconfd
from trioconfd.testing import GanetiConfd

from .baselines import (
    Address,
    drive,
    open_daemons,
    raw_pipelined,
    raw_reply,
    raw_request,
    trioconfd_throughput,
)

PEERS = (1, 3, 5)
#: trioconfd with ``RetryPolicy.off()``: its row says what the retry schedule costs.
NO_RETRY = "trioconfd, no retransmission"
IN_FLIGHT = 256
KEY = b"shape floor key\n"


async def floor_throughput(
    key: bytes,
    addresses: list[Address],
    in_flight: int,
    total: int,
    timeout: float = 5.0,
    *,
    ballast: int = 0,
) -> dict[str, float]:
    """``total`` queries by ``in_flight`` tasks, each asking in turn, in the floor's shape.

    ``ballast``: each query also holds that many small objects (empty lists,
    56 bytes each) from its start, and touches each as it ends: what memory
    a query holds costs, on the floor's own path.
    """
    needed = trioconfd.needed_replies(len(addresses))
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # As the raw socket's: replies that pile up wait in the kernel, not lost.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    await sock.bind(("127.0.0.1", 0))
    routes: dict[str, trio.MemorySendChannel[bytes]] = {}
    received = 0

    async def receive() -> None:
        nonlocal received
        while True:
            datagram, _ = await sock.recvfrom(65536)
            received += 1
            salt = raw_reply(key, datagram)
            channel = routes.get(salt) if salt is not None else None
            if channel is not None:
                try:  # noqa: SIM105 - cheaper per datagram than contextlib.suppress
                    channel.send_nowait(datagram)
                except trio.WouldBlock:
                    pass

    async def query() -> bool:
        held: list[list[int]] | None = [[] for _ in range(ballast)] if ballast else None
        datagram, rsalt = raw_request(key)
        send, replies = trio.open_memory_channel[bytes](len(addresses))
        routes[rsalt] = send
        try:
            for address in addresses:
                await sock.sendto(datagram, address)
            got = 0
            with trio.move_on_at(trio.current_time() + timeout):
                while got < needed:
                    await replies.receive()
                    got += 1
            if held is not None:
                sum(map(len, held))  # each one touched
            return got >= needed
        finally:
            del routes[rsalt]

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            figures = await drive(in_flight, total, query)
            nursery.cancel_scope.cancel()
    figures["received"] = received
    return figures


class BatchCounter(trio.abc.Instrument):
    """Counts the scheduler's batches: one per I/O wait."""

    def __init__(self) -> None:
        self.batches = 0

    def after_io_wait(self, timeout: float) -> None:
        self.batches += 1


async def _counting_batches(run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``run``'s figures, with its batches per answered query and datagrams read per batch."""
    counter = BatchCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        figures = dict(await run)
    finally:
        trio.lowlevel.remove_instrument(counter)
    batches = max(counter.batches, 1)
    figures["batches_per_query"] = batches / max(figures.pop("answered"), 1)
    figures["datagrams_per_batch"] = figures.pop("received") / batches
    return figures


async def cost_per_query(
    daemons: list[GanetiConfd],
    total: int,
    rounds: int,
    peers: tuple[int, ...] = PEERS,
    *,
    in_flight: int = IN_FLIGHT,
    ballast: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Rate and CPU per answered query, ``in_flight`` at a time: the raw socket, the
    shape's floor and trioconfd, for each count of ``peers``; rounds alternate, the best
    of each kept, and each program's ratios to the floor are the median of its rounds'
    (each against the floor's in the same round), as are its user and system CPU.
    With ``ballast``, a row more: the floor with each query holding that many
    more small objects (see :func:`floor_throughput`)."""
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for count in peers:
        addresses = [daemon.address for daemon in daemons[:count]]
        programs: dict[str, Callable[[list[Address], int], Awaitable[dict[str, Any]]]] = {
            "shape floor": lambda addresses, total: floor_throughput(
                KEY, addresses, in_flight, total
            ),
            "trioconfd": lambda addresses, total: trioconfd_throughput(
                KEY, addresses, in_flight, total
            ),
            # Where trioconfd's cost over the floor goes: without its retry
            # schedule, it sends each request once, as the floor does, and
            # its windows are never cut, so no query waits for a place.
            NO_RETRY: lambda addresses, total: trioconfd_throughput(
                KEY, addresses, in_flight, total, retry=trioconfd.RetryPolicy.off()
            ),
        }
        if ballast:
            programs[f"shape floor, {ballast} objects more"] = lambda addresses, total: (
                floor_throughput(KEY, addresses, in_flight, total, ballast=ballast)
            )
        best: dict[str, dict[str, float]] = {}
        # Each program's rate and CPU over the floor's in the same round: the
        # median of these is the ratio reported (the best of each alone, on
        # a machine whose speed drifts by 30% within minutes, pairs one
        # program's lucky round with another's unlucky one).
        ratios: dict[str, list[tuple[float, float]]] = {}
        splits: dict[str, list[tuple[float, float]]] = {}  # user, system µs a query
        for round_ in range(rounds):
            runs = {"raw socket, 64 pipelined": raw_pipelined(KEY, addresses, total)}
            # Each round in the other order: what runs first does not always win.
            order = list(programs) if round_ % 2 == 0 else list(reversed(programs))
            for name in order:
                runs[name] = await programs[name](addresses, total)
            floor = runs["shape floor"]
            for name, run in runs.items():
                splits.setdefault(name, []).append((run["user_us"], run["system_us"]))
                ratios.setdefault(name, []).append(
                    (
                        run["per_second"] / floor["per_second"],
                        run["cpu_us"] / floor["cpu_us"],
                    )
                )
                kept = best.setdefault(name, dict(run))
                kept["per_second"] = max(kept["per_second"], run["per_second"])
                kept["cpu_us"] = min(kept["cpu_us"], run["cpu_us"])
                kept["timeouts"] = max(kept["timeouts"], run["timeouts"])
                for count_name in ("waited_share", "window_cuts", "retransmitted"):
                    if count_name in run:  # trioconfd's: the most of any round
                        kept[count_name] = max(kept[count_name], run[count_name])
        # Batches are counted in a run of their own: an instrument slows
        # every task step of the run it watches.
        for name, program in programs.items():
            counted = await _counting_batches(program(addresses, max(total // 4, 1)))
            best[name]["batches_per_query"] = counted["batches_per_query"]
            best[name]["datagrams_per_batch"] = counted["datagrams_per_batch"]
        for name, row in best.items():
            row["per_second_over_floor"] = statistics.median(rate for rate, _ in ratios[name])
            row["cpu_over_floor"] = statistics.median(cpu for _, cpu in ratios[name])
            row["user_us"] = statistics.median(user for user, _ in splits[name])
            row["system_us"] = statistics.median(system for _, system in splits[name])
            row.pop("answered", None)
            row.pop("received", None)
        figures[str(count)] = best
    return figures


def print_cost_per_query(
    figures: dict[str, dict[str, dict[str, float]]], in_flight: int = IN_FLIGHT
) -> None:
    """The rows; the ratios to the floor are the medians of each round's (see
    :func:`cost_per_query`), the rate and CPU each program's best."""
    print(
        f"{'cost per query, ' + str(in_flight) + ' in flight':<46}{'q/s':>8}{'CPU µs':>9}"
        f"{'user':>7}{'system':>7}{'q/s/floor':>10}{'CPU/floor':>10}{'batch/q':>9}{'dg/batch':>9}{'timeouts':>9}"
        f"{'waited':>8}{'cuts':>6}{'resent':>8}"
    )
    for count, programs in figures.items():
        floor = programs["shape floor"]
        for name, row in programs.items():
            batches = row.get("batches_per_query")
            per_batch = row.get("datagrams_per_batch")
            rate = row.get("per_second_over_floor", row["per_second"] / floor["per_second"])
            cpu = row.get("cpu_over_floor", row["cpu_us"] / floor["cpu_us"])
            split = (  # runs from before the split was kept have none
                f"{row['user_us']:>7.1f}{row['system_us']:>7.1f}" if "user_us" in row else " " * 14
            )
            print(
                f"  {count + ' peer(s), ' + name:<44}{row['per_second']:>8.0f}"
                f"{row['cpu_us']:>9.1f}{split}{rate:>10.2f}{cpu:>10.2f}"
                f"{'' if batches is None else f'{batches:.2f}':>9}"
                f"{'' if per_batch is None else f'{per_batch:.2f}':>9}{row['timeouts']:>9}"
                + (
                    f"{row['waited_share']:>8.2f}{row['window_cuts']:>6}{row['retransmitted']:>8}"
                    if "waited_share" in row
                    else ""
                )
            )


async def _measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    async with open_daemons(KEY, max(args.peers)) as daemons:
        return await cost_per_query(
            daemons,
            args.total,
            args.rounds,
            tuple(args.peers),
            in_flight=args.in_flight,
            ballast=args.ballast,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=20_000, help="queries per program and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds (best kept, ratios' median)"
    )
    parser.add_argument(
        "--peers",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(PEERS),
        help="peer counts, comma-separated (default 1,3,5)",
    )
    parser.add_argument(
        "--in-flight", type=int, default=IN_FLIGHT, help="queries in flight at once (256)"
    )
    parser.add_argument(
        "--ballast",
        type=int,
        default=0,
        help="also run the floor with each query holding this many more small objects",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.in_flight < 1:
        parser.error(f"--in-flight must be 1 or more, not {args.in_flight}")
    if args.ballast < 0:
        parser.error(f"--ballast must be 0 or more, not {args.ballast}")
    figures = trio.run(_measure, args)
    print_cost_per_query(figures, args.in_flight)
    if args.json:
        run = {
            "in_flight": args.in_flight,
            "total": args.total,
            "rounds": args.rounds,
            "ballast": args.ballast,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        args.json.write_text(json.dumps({"run": run, "peers": figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
