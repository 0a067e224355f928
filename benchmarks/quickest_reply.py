"""The quickest round trip to a daemon on loopback: what no timeout can undercut.

A query whose timeout is shorter than any reply could take is told so
(``QUICKEST_REPLY``, 0.1 ms). This measures the quickest of many round
trips to one ganeti-confd and to the in-process server, from a raw
blocking socket (no framework: the least a client can add) and from
trioconfd::

    python -m benchmarks.quickest_reply [--count N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import trioconfd
from trioconfd.protocol._aggregate import QUICKEST_REPLY
from trioconfd.testing import make_cluster_config, open_confd_server, open_ganeti_confd

from .baselines import raw_fan_out

KEY = b"quickest reply key\n"


async def _trioconfd_latencies(address: tuple[str, int], count: int) -> list[float]:
    latencies = []
    async with trioconfd.open_confd_client(KEY, [address]) as client:
        for _ in range(count):
            start = time.perf_counter()
            result = await client.query(trioconfd.RequestType.PING, timeout=5)
            latencies.append(time.perf_counter() - start)
            assert result.ok, result.verdict
    return latencies


async def _measure(count: int) -> dict[str, Any]:
    config = make_cluster_config()
    rows: dict[str, Any] = {"quickest_reply_s": QUICKEST_REPLY, "count": count}
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            open_ganeti_confd(config, KEY, Path(tmp)) as daemon,
            open_confd_server(config, KEY) as server,
        ):
            for name, address in (("ganeti-confd", daemon.address), ("in-process", server.address)):
                raw = await trio.to_thread.run_sync(raw_fan_out, KEY, [address], count)
                ours = await _trioconfd_latencies(address, count)
                rows[name] = {"raw socket": min(raw), "trioconfd": min(ours)}
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="round trips per row")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    rows = trio.run(_measure, args.count)
    print(f"quickest of {args.count} round trips on loopback, ms")
    for peer in ("ganeti-confd", "in-process"):
        for client in ("raw socket", "trioconfd"):
            print(f"  {peer:<14} {client:<11} {rows[peer][client] * 1000:6.3f}")
    print(f"  named as too short a timeout below {QUICKEST_REPLY * 1000:g} ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
