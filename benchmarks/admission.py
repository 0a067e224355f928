"""Offered more than it can serve: the client with admission beside the commit before it.

Three real ganeti-confd daemons on loopback answer 2,000 queries one after
another, then 20,000 at 256, 2,000 and 10,000 in flight (timeout 10 s);
then 1,000 and 10,000 queries go at once to three silent sockets (timeout
6 s). Each case runs the client in
its own process, once with this tree's trioconfd and once with another
commit's (checked out in a temporary worktree), alternating, in one run::

    python -m benchmarks.admission [--before REV] [--rounds 1] [--json FILE]

Rows: answered rate, timeouts, datagrams sent per answered query, p99
latency, how late deadlines fired (p99, max), when every query had been
accepted (sent, or waiting in the client), the client's CPU (getrusage), and
the event loop's batches (one per I/O wait) a second, with the datagrams
read and the task steps run per batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

# In a client process, PYTHONPATH puts the trioconfd under test first.
import trioconfd
from trioconfd.testing import make_cluster_config, open_ganeti_confd

SCRIPT = Path(__file__).resolve()
KEY = b"admission benchmark key\n"
DAEMON_CASES = [(1, 2_000), (256, 20_000), (2_000, 20_000), (10_000, 20_000)]
SILENT_CASES = [(1_000, 1_000), (10_000, 10_000)]


def _percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class BatchCounter(trio.abc.Instrument):
    """Counts the scheduler's batches (one per I/O wait) and the task steps run in them."""

    def __init__(self) -> None:
        self.batches = 0
        self.steps = 0

    def after_io_wait(self, timeout: float) -> None:
        self.batches += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def client_main(spec: dict[str, Any]) -> None:
    """In the child process: run one case with whichever trioconfd is on the path."""
    peers = [tuple(peer) for peer in spec["peers"]]
    in_flight, total, timeout = spec["in_flight"], spec["total"], spec["timeout"]

    counter = BatchCounter()

    async def main() -> dict[str, Any]:
        trio.lowlevel.add_instrument(counter)
        async with trioconfd.open_confd_client(KEY, peers) as client:
            latencies: list[float] = []
            lateness: list[float] = []
            accepted_at = 0.0
            left = total
            timeouts = 0
            start = trio.current_time()

            async def worker() -> None:
                nonlocal left, timeouts, accepted_at
                while left > 0:
                    left -= 1
                    began = trio.current_time()
                    accepted_at = max(accepted_at, began - start)
                    result = await client.query(trioconfd.RequestType.PING, timeout=timeout)
                    ended = trio.current_time()
                    if result.ok:
                        latencies.append(ended - began)
                    else:
                        timeouts += 1
                        lateness.append(ended - (began + timeout))

            before = resource.getrusage(resource.RUSAGE_SELF)
            received_before, batches_before = client.stats.received, counter.batches
            steps_before = counter.steps
            async with trio.open_nursery() as nursery:
                for _ in range(in_flight):
                    nursery.start_soon(worker)
            elapsed = trio.current_time() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            stats = client.stats
            batches = max(1, counter.batches - batches_before)
            received = stats.received - received_before
            steps = counter.steps - steps_before
            sent = 3 * total + stats.retransmitted + stats.hedged
            answered = len(latencies)
            return {
                "answered": answered,
                "rate": answered / elapsed,
                "timeouts": timeouts,
                "retransmitted": stats.retransmitted,
                "datagrams_per_answer": sent / answered if answered else None,
                "datagrams": sent,
                "p50_ms": _percentile(latencies, 0.5) * 1e3,
                "p99_ms": _percentile(latencies, 0.99) * 1e3,
                "late_p99_ms": _percentile(lateness, 0.99) * 1e3,
                "late_max_ms": max(lateness, default=0.0) * 1e3,
                "all_accepted_s": accepted_at,
                "elapsed_s": elapsed,
                "batches_per_s": batches / elapsed,
                "datagrams_per_batch": received / batches,
                "tasks_per_batch": steps / batches,
                "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            }

    print(json.dumps(trio.run(main)))


async def _measure(args: argparse.Namespace, before: Path) -> dict[str, Any]:
    from ._revisions import ROOT, run_child, silent_sockets

    codes = {"after": ROOT, "before": before}
    results: dict[str, Any] = {"before": args.before, "cases": []}
    config = make_cluster_config(nodes=3)
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            daemons = [
                await stack.enter_async_context(
                    open_ganeti_confd(config, KEY, Path(tmp, f"d{index}"))
                )
                for index in range(3)
            ]
            peers = [list(daemon.address) for daemon in daemons]
            levels = None if args.levels is None else {int(n) for n in args.levels.split(",")}
            for in_flight, total in DAEMON_CASES:
                if levels is not None and in_flight not in levels:
                    continue
                for round_ in range(args.rounds):
                    for name in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                        spec = {
                            "peers": peers,
                            "in_flight": in_flight,
                            "total": total,
                            "timeout": 10,
                        }
                        figures = run_child(SCRIPT, codes[name], spec)
                        row = {
                            "case": f"3 daemons, {in_flight:,} in flight",
                            "code": name,
                            **figures,
                        }
                        results["cases"].append(row)
                        print(json.dumps(row), flush=True)
    if args.no_silent:
        return results
    sockets, silent = silent_sockets(3)
    try:
        for in_flight, total in SILENT_CASES:
            for name in ("before", "after"):
                spec = {"peers": silent, "in_flight": in_flight, "total": total, "timeout": 6}
                figures = run_child(SCRIPT, codes[name], spec)
                row = {"case": f"3 silent peers, {total:,} at once", "code": name, **figures}
                results["cases"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        for sock in sockets:
            sock.close()
    return results


def _report(results: dict[str, Any]) -> None:
    header = (
        f"{'case':<30} {'code':<7} {'q/s':>6} {'timeouts':>8} {'dg/answer':>9} "
        f"{'p50 ms':>7} {'p99 ms':>8} {'late p99':>8} {'late max':>8} "
        f"{'accepted s':>10} {'CPU s':>6} "
        f"{'batch/s':>8} {'dg/batch':>8} {'steps/batch':>11}"
    )
    print(header)
    for row in results["cases"]:
        per_answer = row["datagrams_per_answer"]
        print(
            f"{row['case']:<30} {row['code']:<7} {row['rate']:>6.0f} {row['timeouts']:>8} "
            f"{'-' if per_answer is None else f'{per_answer:.2f}':>9} "
            f"{row.get('p50_ms', 0):>7.2f} {row['p99_ms']:>8.1f} "
            f"{row['late_p99_ms']:>8.1f} {row['late_max_ms']:>8.1f} "
            f"{row['all_accepted_s']:>10.2f} {row['cpu_s']:>6.1f} "
            f"{row.get('batches_per_s', 0):>8.0f} {row.get('datagrams_per_batch', 0):>8.2f} "
            f"{row.get('tasks_per_batch', 0):>11.1f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--before", default="HEAD~1", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the daemon cases")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--levels", help="only these in-flight levels against the daemons (e.g. 1,256)"
    )
    parser.add_argument("--no-silent", action="store_true", help="skip the silent-peer cases")
    args = parser.parse_args(argv)
    if args.client:
        client_main(json.loads(args.client))
        return

    from ._revisions import checked_out

    with checked_out(args.before) as before:
        started = time.monotonic()
        results = trio.run(_measure, args, before)
        results["seconds"] = time.monotonic() - started
    _report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
