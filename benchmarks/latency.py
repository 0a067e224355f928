"""Sequential query latency: trioconfd against a raw-socket baseline, same daemon, same run.

Starts one real ganeti-confd on loopback and times N sequential CLUSTER_MASTER
queries through (a) a blocking socket that packs, signs, sends, receives,
verifies and parses by hand with the standard library, and (b) trioconfd's
``client.query``. Prints p50/p99 of each and their ratio; figures are only
comparable within one run on one machine.

    python -m benchmarks.latency [--queries N] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

import trioconfd
from trioconfd import RequestType
from trioconfd.testing import make_cluster_config, run_ganeti_confd

KEY = b"benchmark key\n"


def raw_round_trip(sock: socket.socket, address: tuple[str, int]) -> float:
    """One request with nothing but the standard library; returns its latency in seconds."""
    start = time.perf_counter()
    rsalt = str(uuid.uuid4())
    msg = json.dumps({"protocol": 1, "type": 3, "query": None, "rsalt": rsalt})
    salt = str(int(time.time()))
    signature = hmac.new(KEY, (salt + msg).encode(), hashlib.sha1).hexdigest()
    sock.sendto(
        b"plj0" + json.dumps({"msg": msg, "salt": salt, "hmac": signature}).encode(), address
    )
    while True:
        datagram, _ = sock.recvfrom(65536)
        envelope = json.loads(datagram[4:])
        expected = hmac.new(KEY, (envelope["salt"] + envelope["msg"]).encode(), hashlib.sha1)
        if envelope["salt"] == rsalt and hmac.compare_digest(
            expected.hexdigest(), envelope["hmac"]
        ):
            json.loads(envelope["msg"])
            return time.perf_counter() - start


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(queries: int) -> dict[str, dict[str, float]]:
    config = make_cluster_config(nodes=3, instances=3, serial=1)
    with tempfile.TemporaryDirectory() as tmp:
        async with run_ganeti_confd(config, KEY, Path(tmp)) as daemon:
            raw: list[float] = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                for _ in range(queries // 10):  # warm up
                    raw_round_trip(sock, daemon.address)
                raw = [raw_round_trip(sock, daemon.address) for _ in range(queries)]
            ours: list[float] = []
            async with trioconfd.open_confd_client(KEY, [daemon.address]) as client:
                for index in range(queries + queries // 10):
                    start = time.perf_counter()
                    result = await client.query(RequestType.CLUSTER_MASTER, timeout=2)
                    elapsed = time.perf_counter() - start
                    if result.timed_out:
                        sys.exit("trioconfd timed out against a local daemon")
                    if index >= queries // 10:
                        ours.append(elapsed)
    figures = {}
    for name, samples in (("raw socket", raw), ("trioconfd", ours)):
        figures[name] = {
            "p50_us": percentile(samples, 0.5) * 1e6,
            "p99_us": percentile(samples, 0.99) * 1e6,
            "mean_us": statistics.fmean(samples) * 1e6,
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = trio.run(measure, args.queries)
    base = figures["raw socket"]["p50_us"]
    print(f"{'client':<12} {'p50 µs':>9} {'p99 µs':>9} {'p50 / raw':>10}")
    for name, row in figures.items():
        print(f"{name:<12} {row['p50_us']:9.1f} {row['p99_us']:9.1f} {row['p50_us'] / base:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
