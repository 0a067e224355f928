"""trioconfd against its baselines, in one run on one machine: ``nox -s bench``.

Starts real ganeti-confd daemons on loopback and measures, side by side:

- sequential latency: trioconfd, a raw blocking socket doing the same work by
  hand, and Ganeti's own Python client (Debian's ganeti-3.0, when installed);
- throughput with 1 to 1024 queries in flight, against the raw socket
  pipelining 64 at a time and Ganeti's client doing its best;
- fan-out: quorum queries to 1, 3, 5 and 9 daemons;
- memory per in-flight request, and over a long run against the in-process
  server;
- what each part of the client's shape (cancel scope, memory channel,
  trio.socket calls) costs, beside what the earlier client did instead.

Every figure that is compared is a ratio taken in this run: these machines
are shared and noisy, so absolute times mean little across runs.

    python -m benchmarks.harness [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

import trioconfd
from trioconfd import RequestType
from trioconfd.testing import (
    GanetiConfd,
    make_cluster_config,
    open_confd_server,
    open_ganeti_confd,
)

from .baselines import raw_fan_out, raw_pipelined
from .garbage_costs import measure_garbage_costs, print_garbage_costs
from .garbage_costs import ratios as garbage_ratios
from .query_memory import measure as measure_query_memory
from .shape_costs import measure_shape_costs, print_shape_costs
from .shape_floor import cost_per_query, print_cost_per_query

KEY = b"benchmark key\n"
GANETI_PYTHON = "/usr/bin/python3"
GANETI_LIBRARY = "/usr/share/ganeti/3.0/ganeti/confd/client.py"
IN_FLIGHT = (1, 16, 64, 256, 1024)
FAN_OUT = (1, 3, 5, 9)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- Ganeti's own client -------------------------------------------------------


def ganeti_client(daemon: GanetiConfd, sequential: int, pipelined: int) -> dict[str, Any] | None:
    if not (os.path.exists(GANETI_LIBRARY) and os.path.exists(GANETI_PYTHON)):
        return None
    script = Path(__file__).with_name("ganeti_client.py")
    key_file = daemon.data_dir / "hmac.key"
    done = subprocess.run(
        [
            GANETI_PYTHON,
            str(script),
            str(daemon.port),
            str(key_file),
            str(sequential),
            str(pipelined),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- trioconfd -------------------------------------------------------------------


async def ours_sequential(client: trioconfd.ConfdClient, count: int) -> list[float]:
    latencies = []
    for index in range(count + count // 10):
        start = time.perf_counter()
        result = await client.query(RequestType.CLUSTER_MASTER, timeout=2)
        elapsed = time.perf_counter() - start
        if result.timed_out:
            raise SystemExit("trioconfd timed out against a local daemon")
        if index >= count // 10:
            latencies.append(elapsed)
    return latencies


async def ours_throughput(
    client: trioconfd.ConfdClient, in_flight: int, total: int
) -> dict[str, float]:
    """``total`` queries, ``in_flight`` at a time; queries per second and timeouts.

    ``in_flight`` tasks each ask in turn, the way a service under steady load
    would, rather than a task per query (which would time Trio's spawning).
    """
    timeouts = 0
    left = total

    async def worker() -> None:
        nonlocal timeouts, left
        while left > 0:
            left -= 1
            result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
            timeouts += result.timed_out

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - start
    return {"per_second": total / elapsed, "timeouts": timeouts}


async def fan_out(daemons: list[GanetiConfd], count: int) -> dict[int, dict[str, float]]:
    figures = {}
    for peers in FAN_OUT:
        addresses = [daemon.address for daemon in daemons[:peers]]
        async with trioconfd.open_confd_client(KEY, addresses) as client:
            latencies = []
            for index in range(count + count // 10):
                start = time.perf_counter()
                result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=2)
                if result.timed_out:
                    raise SystemExit(f"a {peers}-peer query timed out")
                if index >= count // 10:
                    latencies.append(time.perf_counter() - start)
        raw = raw_fan_out(KEY, addresses, count)
        figures[peers] = {
            "p50_us": percentile(latencies, 0.5) * 1e6,
            "p99_us": percentile(latencies, 0.99) * 1e6,
            "raw_p50_us": percentile(raw, 0.5) * 1e6,
        }
    return figures


async def memory_per_request(count: int) -> dict[str, float]:
    """What one query in flight costs, against a peer that never answers (see
    :mod:`benchmarks.query_memory`, which also says what each part costs)."""
    figures = await measure_query_memory(count)
    task, query = figures["bare task"], figures["trioconfd"]["bytes"]
    return {"task_bytes": task, "query_with_task_bytes": query, "query_bytes": query - task}


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def long_run(total: int, in_flight: int = 64) -> dict[str, Any]:
    """``total`` queries against two in-process servers; the process's RSS as it goes."""
    config = make_cluster_config(serial=1)
    samples = []
    step = max(1, total // 10)
    async with (
        open_confd_server(config, KEY) as one,
        open_confd_server(config, KEY) as two,
        trioconfd.open_confd_client(KEY, [one.address, two.address]) as client,
    ):
        done = timeouts = 0
        slots = trio.Semaphore(in_flight)

        async def query() -> None:
            nonlocal done, timeouts
            try:
                result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
                timeouts += result.timed_out
                done += 1
            finally:
                slots.release()

        async with trio.open_nursery() as nursery:
            for index in range(total):
                await slots.acquire()
                nursery.start_soon(query)
                if index % step == step - 1:
                    samples.append(rss_bytes())
    settled = samples[1:]  # the first sample is taken while still warming up
    return {
        "queries": done,
        "timeouts": timeouts,
        "rss_mib": [round(sample / 2**20, 2) for sample in samples],
        "growth_after_warmup_mib": round((settled[-1] - settled[0]) / 2**20, 2),
    }


# -- the run ----------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sequential = 500 if args.quick else 3000
    throughput_total = 3000 if args.quick else 20000
    long_total = 50_000 if args.quick else 1_000_000
    config = make_cluster_config(nodes=3, instances=3, serial=1)
    results: dict[str, Any] = {}
    say = print if not args.quiet else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            daemons = []
            for index in range(max(FAN_OUT)):
                daemons.append(
                    await stack.enter_async_context(
                        open_ganeti_confd(config, KEY, Path(tmp, f"d{index}"))
                    )
                )
            daemon = daemons[0]
            say("sequential latency ...", file=sys.stderr)
            raw = raw_fan_out(KEY, [daemon.address], sequential)
            async with trioconfd.open_confd_client(KEY, [daemon.address]) as client:
                ours = await ours_sequential(client, sequential)
                say("throughput ...", file=sys.stderr)
                throughput = {
                    n: await ours_throughput(client, n, max(throughput_total, 20 * n))
                    for n in IN_FLIGHT
                }
            raw_pipe = raw_pipelined(KEY, [daemon.address], throughput_total)
            say("Ganeti's client ...", file=sys.stderr)
            ganeti = ganeti_client(daemon, sequential, throughput_total)
            say("fan-out ...", file=sys.stderr)
            fan = await fan_out(daemons, sequential // 2)
            say("cost per query ...", file=sys.stderr)
            cost = await cost_per_query(daemons, throughput_total, 1 if args.quick else 3)
    say("memory ...", file=sys.stderr)
    memory = await memory_per_request(2000 if args.quick else 10000)
    long = await long_run(long_total)
    say("shape costs ...", file=sys.stderr)
    shape = await measure_shape_costs(5000 if args.quick else 20000)
    say("garbage costs ...", file=sys.stderr)
    garbage = measure_garbage_costs(100 if args.quick else 300)

    def latency(samples: list[float]) -> dict[str, float]:
        return {"p50_us": percentile(samples, 0.5) * 1e6, "p99_us": percentile(samples, 0.99) * 1e6}

    results["sequential"] = {"raw socket": latency(raw), "trioconfd": latency(ours)}
    if ganeti is not None:
        results["sequential"]["ganeti client"] = latency(ganeti["latencies"])
        results["ganeti_pipelined"] = {
            "per_second": ganeti["pipelined_per_second"],
            "timeouts": ganeti["pipelined_timeouts"],
        }
    results["throughput"] = {str(n): figures for n, figures in throughput.items()}
    results["raw_pipelined_64"] = raw_pipe
    results["fan_out"] = {str(n): figures for n, figures in fan.items()}
    results["cost_per_query"] = cost
    results["memory"] = memory
    results["long_run"] = long
    results["shape_costs"] = shape
    results["garbage_costs"] = garbage
    return results


def ratios(results: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(what, ratio, target, met) for each target of the benchmark."""
    sequential = results["sequential"]
    ours = sequential["trioconfd"]["p50_us"]
    rows = [
        (
            "sequential p50: trioconfd / raw socket",
            ours / sequential["raw socket"]["p50_us"],
            "<= 1.5",
            ours / sequential["raw socket"]["p50_us"] <= 1.5,
        )
    ]
    at_256 = results["throughput"]["256"]
    ratio = at_256["per_second"] / results["raw_pipelined_64"]["per_second"]
    rows.append(
        (
            "256 in flight: trioconfd / raw pipelined q/s, 0 timeouts",
            ratio,
            ">= 0.6",
            ratio >= 0.6 and at_256["timeouts"] == 0,
        )
    )
    if "ganeti_pipelined" in results:
        ratio = at_256["per_second"] / results["ganeti_pipelined"]["per_second"]
        rows.append(("256 in flight: trioconfd / Ganeti's client q/s", ratio, ">= 5", ratio >= 5))
    fan = results["fan_out"]
    ratio = fan["5"]["p50_us"] / fan["1"]["p50_us"]
    rows.append(("5-peer / 1-peer quorum query p50", ratio, "<= 1.5", ratio <= 1.5))
    for peers, programs in results.get("cost_per_query", {}).items():
        ours, floor = programs["trioconfd"], programs["shape floor"]
        ratio = ours.get("cpu_over_floor", ours["cpu_us"] / floor["cpu_us"])
        rows.append(
            (f"{peers} peer(s): trioconfd / floor, CPU per query", ratio, "<= 1.15", ratio <= 1.15)
        )
        ratio = ours.get("per_second_over_floor", ours["per_second"] / floor["per_second"])
        rows.append((f"{peers} peer(s): trioconfd / floor, q/s", ratio, ">= 0.95", ratio >= 0.95))
    per_query = results["memory"]["query_bytes"]
    rows.append(
        (
            "bytes per in-flight query (task excluded) / 2048",
            per_query / 2048,
            "<= 1",
            per_query <= 2048,
        )
    )
    if "garbage_costs" in results:
        garbage = garbage_ratios(results["garbage_costs"])
        ratio = garbage["worst_shape_refusal_per_ip_list_authentication"]
        rows.append(
            (
                "worst garbage refused unread / authenticating 60 KB",
                ratio,
                "<= 1",
                ratio <= 1,
            )
        )
        ratio = garbage["escapes_envelope_per_ip_list_authentication"]
        rows.append(("60 KB envelope of escapes / authenticating 60 KB", ratio, "<= 2", ratio <= 2))
        # At a short reply's size a reply in ganeti-confd's layout is read
        # by three calls in C, garbage token by token (README, "Garbage is
        # cheap to refuse").
        ratio = garbage["worst_short_refusal_per_short_authentication"]
        rows.append(
            ("worst short garbage / authenticating a short reply", ratio, "<= 3", ratio <= 3)
        )
    return rows


def print_report(results: dict[str, Any]) -> None:
    print(f"{'sequential latency':<34}{'p50 µs':>10}{'p99 µs':>10}{'p50 / raw':>11}")
    base = results["sequential"]["raw socket"]["p50_us"]
    for name, row in results["sequential"].items():
        print(
            f"  {name:<32}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}{row['p50_us'] / base:>11.2f}"
        )
    print(f"{'throughput (CLUSTER_MASTER)':<34}{'q/s':>10}{'timeouts':>10}{'/ raw':>11}")
    raw = results["raw_pipelined_64"]["per_second"]
    print(
        f"  {'raw socket, 64 pipelined':<32}{raw:>10.0f}"
        f"{results['raw_pipelined_64']['timeouts']:>10}{1:>11.2f}"
    )
    if "ganeti_pipelined" in results:
        row = results["ganeti_pipelined"]
        print(
            f"  {'Ganeti client, 64 pipelined':<32}{row['per_second']:>10.0f}"
            f"{row['timeouts']:>10}{row['per_second'] / raw:>11.2f}"
        )
    for n, row in results["throughput"].items():
        print(
            f"  {'trioconfd, ' + n + ' in flight':<32}{row['per_second']:>10.0f}"
            f"{row['timeouts']:>10}{row['per_second'] / raw:>11.2f}"
        )
    print(
        f"{'fan-out (coverage -1)':<34}{'p50 µs':>10}{'p99 µs':>10}{'/ 1 peer':>11}"
        f"{'raw p50':>10}{'raw / 1':>9}"
    )
    one = results["fan_out"]["1"]["p50_us"]
    raw_one = results["fan_out"]["1"]["raw_p50_us"]
    for n, row in results["fan_out"].items():
        print(
            f"  {n + ' peers':<32}{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}"
            f"{row['p50_us'] / one:>11.2f}{row['raw_p50_us']:>10.1f}"
            f"{row['raw_p50_us'] / raw_one:>9.2f}"
        )
    if "cost_per_query" in results:
        print_cost_per_query(results["cost_per_query"])
    memory = results["memory"]
    print("memory per in-flight query")
    print(f"  {'trioconfd (task excluded)':<32}{memory['query_bytes']:>10.0f} B")
    print(f"  {'a bare Trio task, for scale':<32}{memory['task_bytes']:>10.0f} B")
    long = results["long_run"]
    print(
        f"long run: {long['queries']} queries, {long['timeouts']} timeouts, RSS MiB "
        f"{long['rss_mib']}, growth after warm-up {long['growth_after_warmup_mib']} MiB"
    )
    if "shape_costs" in results:
        print_shape_costs(results["shape_costs"])
    if "garbage_costs" in results:
        print_garbage_costs(results["garbage_costs"])
    print("targets")
    for what, ratio, target, met in ratios(results):
        print(f"  {what:<50}{ratio:>7.2f}  (target {target}) {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")
    args = parser.parse_args()
    results = trio.run(measure, args)
    print_report(results)
    if args.json:
        results["targets"] = [
            {"what": what, "ratio": ratio, "target": target, "met": met}
            for what, ratio, target, met in ratios(results)
        ]
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
