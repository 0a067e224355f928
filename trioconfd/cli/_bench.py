"""``trioconfd bench``: sequential and concurrent query timing against live peers."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import TextIO

import trio

from .. import requests
from ..client import ConfdClient, PeerSpec, open_confd_client


@dataclass
class Phase:
    """The latencies (seconds) of one phase, and how many queries timed out."""

    name: str
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    elapsed: float = 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def figures(self) -> dict[str, float]:
        done = len(self.latencies) + self.timeouts
        return {
            "queries": done,
            "timeouts": self.timeouts,
            "per_second": done / self.elapsed if self.elapsed else 0.0,
            "p50_ms": self.percentile(0.50) * 1e3,
            "p90_ms": self.percentile(0.90) * 1e3,
            "p99_ms": self.percentile(0.99) * 1e3,
            "max_ms": max(self.latencies, default=float("nan")) * 1e3,
        }


class Progress:
    """A one-line progress bar on a terminal; nothing on a pipe."""

    WIDTH = 30

    def __init__(self, stream: TextIO, label: str, total: int) -> None:
        self.stream, self.label, self.total = stream, label, total
        self.enabled = stream.isatty()
        self.done = 0
        self._last = 0.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r{self.label:<11} [{bar}] {self.done}/{self.total}")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


async def _one(client: ConfdClient, args: argparse.Namespace, phase: Phase) -> None:
    start = time.perf_counter()
    result = await client.query(requests.ping(), coverage=args.coverage, timeout=args.timeout)
    if result.timed_out:
        phase.timeouts += 1
    else:
        phase.latencies.append(time.perf_counter() - start)


async def sequential(client: ConfdClient, args: argparse.Namespace, progress: Progress) -> Phase:
    phase = Phase("sequential")
    start = time.perf_counter()
    for _ in range(args.requests):
        await _one(client, args, phase)
        progress.advance()
    phase.elapsed = time.perf_counter() - start
    return phase


async def concurrent(client: ConfdClient, args: argparse.Namespace, progress: Progress) -> Phase:
    phase = Phase(f"{args.concurrency} in flight")
    left = args.requests

    async def worker() -> None:
        # Each worker asks in turn, like a service under steady load.
        nonlocal left
        while left > 0:
            left -= 1
            await _one(client, args, phase)
            progress.advance()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(args.concurrency, args.requests)):
            nursery.start_soon(worker)
    phase.elapsed = time.perf_counter() - start
    return phase


async def run_bench(
    key: bytes | str, peers: list[PeerSpec], args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    async with open_confd_client(key, peers, port=args.port, local_address=args.source) as client:
        phases = [
            await sequential(client, args, Progress(err, "sequential", args.requests)),
            await concurrent(client, args, Progress(err, "concurrent", args.requests)),
        ]
    if args.json:
        print(json.dumps({phase.name: phase.figures() for phase in phases}, indent=2), file=out)
    else:
        print(
            f"{'phase':<16}{'queries':>8}{'timeouts':>9}{'q/s':>9}"
            f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}",
            file=out,
        )
        for phase in phases:
            f = phase.figures()
            print(
                f"{phase.name:<16}{f['queries']:>8.0f}{f['timeouts']:>9.0f}{f['per_second']:>9.0f}"
                f"{f['p50_ms']:>9.2f}{f['p90_ms']:>9.2f}{f['p99_ms']:>9.2f}{f['max_ms']:>9.2f}",
                file=out,
            )
    return 0 if all(phase.timeouts == 0 for phase in phases) else 3
