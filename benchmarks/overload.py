"""Datagrams sent per query as load grows: adaptive retransmission beside the fixed schedule.

Three ``trioconfd serve`` processes on loopback (each its own process, as
daemons are) answer bursts of queries, 1, 256, 2,000 and 10,000 in flight at
once (coverage -1: three first sends each). An overloaded peer answers
late, and a client that asks again on a fixed schedule multiplies the load
it is drowning in; one that learns each peer's round trip
(``RetryPolicy(adaptive=True)``) waits for it. Both run in this process, one after the
other, against the same servers::

    python -m benchmarks.overload [--levels 1,256,2000,10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

import trioconfd
from trioconfd import RequestType, RetryPolicy
from trioconfd.testing import free_udp_port, make_cluster_config

KEY = b"overload benchmark key\n"
LEVELS = (1, 256, 2000, 10000)
# A level of one query in flight asks this many in turn, for a steadier figure.
SEQUENTIAL = 200
# Long enough for the largest burst to be answered, however it is retried.
TIMEOUT = 60.0
POLICIES = {"adaptive": RetryPolicy(adaptive=True), "fixed": RetryPolicy()}


@asynccontextmanager
async def serve_processes(count: int, directory: Path) -> AsyncIterator[list[tuple[str, int]]]:
    """``count`` ``trioconfd serve`` processes; their addresses once each answers."""
    config, key = directory / "config.data", directory / "hmac.key"
    config.write_text(json.dumps(make_cluster_config(nodes=3)))
    key.write_bytes(KEY)
    key.chmod(0o600)
    peers = [("127.0.0.1", free_udp_port()) for _ in range(count)]
    async with trio.open_nursery() as nursery:
        processes = []
        for _, port in peers:
            command = [
                sys.executable, "-m", "trioconfd", "serve", str(config),
                "--key-file", str(key), "--port", str(port),
            ]  # fmt: skip
            processes.append(
                await nursery.start(
                    partial(trio.run_process, command, check=False, capture_stdout=True)
                )
            )
        try:
            with trio.fail_after(60):
                while not (await trioconfd.query(KEY, peers, RequestType.PING, coverage=-1)).ok:
                    pass
            yield peers
        finally:
            for process in processes:
                process.terminate()


async def burst(
    peers: list[tuple[str, int]], in_flight: int, policy: RetryPolicy
) -> dict[str, Any]:
    """``in_flight`` queries at once (or SEQUENTIAL in turn for 1): what they cost on the wire."""
    results = []
    start = time.perf_counter()
    async with trioconfd.open_confd_client(KEY, peers, retry=policy) as client:

        async def one() -> None:
            results.append(
                await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=TIMEOUT)
            )

        if in_flight == 1:
            for _ in range(SEQUENTIAL):
                await one()
        else:
            async with trio.open_nursery() as nursery:
                for _ in range(in_flight):
                    nursery.start_soon(one)
        stats = client.stats
    elapsed = time.perf_counter() - start
    first_sends = sum(3 for _ in results)
    return {
        "queries": len(results),
        "ok": sum(result.ok for result in results),
        "datagrams_per_query": (first_sends + stats.retransmitted) / len(results),
        "retransmitted": stats.retransmitted,
        "seconds": elapsed,
    }


async def measure(levels: tuple[int, ...]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        async with AsyncExitStack() as stack:
            peers = await stack.enter_async_context(serve_processes(3, Path(directory)))
            for level in levels:
                for name, policy in POLICIES.items():
                    print(f"{level} in flight, {name} ...", file=sys.stderr)
                    figures.setdefault(str(level), {})[name] = await burst(peers, level, policy)
                    await trio.sleep(1)  # the servers' queues drain before the next run
    return figures


def print_figures(figures: dict[str, Any]) -> None:
    print(
        f"{'in flight':<11}{'adaptive dg/q':>14}{'fixed dg/q':>12}{'adaptive / fixed':>18}"
        f"{'ok (a/f)':>14}{'s (a/f)':>14}"
    )
    for level, row in figures.items():
        adaptive, fixed = row["adaptive"], row["fixed"]
        print(
            f"{level:<11}{adaptive['datagrams_per_query']:>14.2f}"
            f"{fixed['datagrams_per_query']:>12.2f}"
            f"{adaptive['datagrams_per_query'] / fixed['datagrams_per_query']:>18.2f}"
            f"{adaptive['ok']:>7}/{fixed['ok']:<6}"
            f"{adaptive['seconds']:>7.1f}/{fixed['seconds']:<6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    levels = tuple(int(level) for level in args.levels.split(","))
    figures = trio.run(measure, levels)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
