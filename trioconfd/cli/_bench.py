"""``trioconfd bench``: sequential and concurrent query timing against live peers.

Latencies go into a fixed-size histogram, so a run of any length keeps the
same memory; progress shows the rate and the time left; Ctrl-C stops the
run and prints what it measured so far.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO

import trio

from .. import requests
from ..client import ConfdClient, PeerSpec, open_confd_client
from ..protocol import QueryResult
from ._exits import EXIT_INTERRUPTED
from ._histogram import LatencyHistogram


@dataclass
class Phase:
    """The latencies of one phase, how many queries timed out, and for how long it ran."""

    name: str
    latencies: LatencyHistogram = field(default_factory=LatencyHistogram)
    timeouts: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    #: the verdict on the first query that got no quorum (what the run says of it)
    first_timeout: QueryResult | None = None

    @property
    def done(self) -> int:
        return self.latencies.count + self.timeouts

    def figures(self) -> dict[str, float | None]:
        """Counts, rate and latencies (None while no query was answered)."""
        latencies = self.latencies
        answered = latencies.count > 0
        return {
            "queries": self.done,
            "timeouts": self.timeouts,
            "per_second": self.done / self.elapsed if self.elapsed else 0.0,
            "p50_ms": latencies.percentile(0.50) * 1e3 if answered else None,
            "p90_ms": latencies.percentile(0.90) * 1e3 if answered else None,
            "p99_ms": latencies.percentile(0.99) * 1e3 if answered else None,
            "max_ms": latencies.maximum * 1e3 if answered else None,
        }


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class Progress:
    """Progress with rate and time left: a bar on a terminal, a line every few seconds elsewhere."""

    WIDTH = 30

    def __init__(self, stream: TextIO, label: str, total: int, every: float) -> None:
        self.stream, self.label, self.total = stream, label, total
        self.terminal = stream.isatty()
        # A terminal's bar is redrawn often; a log gets a line now and then.
        self.every = 0.1 if self.terminal else every
        self.done = 0
        self._started = time.monotonic()
        self._last = self._started

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self._last >= self.every or (self.terminal and self.done == self.total):
            self._last = now
            self._show(now)

    def _show(self, now: float) -> None:
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = _clock((self.total - self.done) / rate) if rate else "?"
        figures = f"{self.done}/{self.total}  {rate:,.0f} q/s  ETA {left}"
        if self.terminal:
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r{self.label:<11} [{bar}] {figures}\x1b[K{end}")
        else:
            self.stream.write(f"{self.label}: {figures}\n")
        self.stream.flush()

    def interrupted(self) -> None:
        if self.terminal and 0 < self.done < self.total:
            self.stream.write("\n")


async def _one(client: ConfdClient, args: argparse.Namespace, phase: Phase) -> None:
    start = time.perf_counter()
    result = await client.query(requests.ping(), coverage=args.coverage, timeout=args.timeout)
    if result.timed_out:
        phase.timeouts += 1
        if phase.first_timeout is None:
            phase.first_timeout = result
    else:
        phase.latencies.record(time.perf_counter() - start)


async def sequential(
    client: ConfdClient, args: argparse.Namespace, progress: Progress, phase: Phase
) -> None:
    for _ in range(args.requests):
        await _one(client, args, phase)
        progress.advance()


async def concurrent(
    client: ConfdClient, args: argparse.Namespace, progress: Progress, phase: Phase
) -> None:
    left = args.requests

    async def worker() -> None:
        # Each worker asks in turn, like a service under steady load.
        nonlocal left
        while left > 0:
            left -= 1
            await _one(client, args, phase)
            progress.advance()

    async with trio.open_nursery() as nursery:
        for _ in range(args.concurrency):
            nursery.start_soon(worker)


async def _stop_on_ctrl_c(ctrl_c: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in ctrl_c:
        scope.cancel()
        return


async def run_bench(
    key: bytes | str, peers: list[PeerSpec], args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    if args.concurrency > args.requests:
        print(
            f"trioconfd bench: --concurrency {args.concurrency} is more than --requests "
            f"{args.requests}: {args.requests} in flight",
            file=err,
        )
        args.concurrency = args.requests
    phases: list[Phase] = []
    # Ctrl-C is ours from here until the figures are printed: the first
    # cancels the run, and one that comes after it is over (its receiver
    # closing re-raises it) ends the command with the figures printed.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with (
            open_confd_client(key, peers, port=args.port, local_address=args.source) as client,
            trio.open_nursery() as nursery,
        ):
            # Ctrl-C cancels this scope: the phase running stops where it is.
            with trio.CancelScope() as run:
                nursery.start_soon(_stop_on_ctrl_c, ctrl_c, run)
                for name, label, step in (
                    ("sequential", "sequential", sequential),
                    (f"{args.concurrency} in flight", "concurrent", concurrent),
                ):
                    if run.cancel_called:
                        break  # a Ctrl-C between two phases: the next never starts
                    phase = Phase(name)
                    progress = Progress(err, label, args.requests, args.progress_interval)
                    start = time.perf_counter()
                    try:
                        await step(client, args, progress, phase)
                    finally:
                        phase.elapsed = time.perf_counter() - start
                        if run.cancel_called:
                            phase.interrupted = True
                            progress.interrupted()
                        # One a Ctrl-C stopped before any query ended never ran.
                        if phase.done or not phase.interrupted:
                            phases.append(phase)
            interrupted = run.cancel_called
            nursery.cancel_scope.cancel()
        _print_figures(phases, args.json, out)
        _explain_timeouts(phases, err)
        if interrupted:
            print("trioconfd bench: interrupted; the figures above are what ran", file=err)
            return EXIT_INTERRUPTED
        return 0 if all(phase.timeouts == 0 for phase in phases) else 3


def _print_figures(phases: list[Phase], as_json: bool, out: TextIO) -> None:
    if as_json:
        figures = {
            phase.name: {**phase.figures(), "interrupted": phase.interrupted} for phase in phases
        }
        print(json.dumps(figures, indent=2), file=out, flush=True)
        return
    print(
        f"{'phase':<16}{'queries':>8}{'timeouts':>9}{'q/s':>9}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}",
        file=out,
    )
    for phase in phases:
        f = phase.figures()
        latencies = "".join(
            f"{'-' if value is None else f'{value:.2f}':>9}"
            for value in (f["p50_ms"], f["p90_ms"], f["p99_ms"], f["max_ms"])
        )
        print(
            f"{phase.name:<16}{f['queries']:>8.0f}{f['timeouts']:>9.0f}{f['per_second']:>9.0f}"
            + latencies
            + ("  (interrupted)" if phase.interrupted else ""),
            file=out,
            flush=True,
        )


def _explain_timeouts(phases: list[Phase], err: TextIO) -> None:
    """Say why queries got no quorum: the first one's verdict and its likely causes."""
    for phase in phases:
        result = phase.first_timeout
        if result is None:
            continue
        print(
            f"trioconfd bench: {phase.timeouts} of {phase.done} queries ({phase.name}) got no "
            f"quorum in time; the first had {result.received}/{result.sent} replies, "
            f"{result.needed} needed",
            file=err,
        )
        for cause in result.diagnosis:
            print(f"  {cause}", file=err)
        return  # the first phase's causes are the others' too
