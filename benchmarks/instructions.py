"""Instructions a query, counted by cachegrind: a figure this machine's noise does not move.

CPU time here drifts by 30% within minutes; the instructions a client
process executes do not. Each program (the shape's floor, this tree's
trioconfd, and ``--before``'s if given) runs under ``valgrind
--tool=cachegrind`` in a process of its own, twice (``--small`` and
``--large`` queries), against the same real daemons; its count a query is
the difference of the two runs over the difference in queries, so that
start-up and warm-up cancel out::

    python -m benchmarks.instructions [--peers 1] [--in-flight 256] [--before REV]

Needs valgrind. Under it a client runs about 50 times slower, so replies
pile up unread and queries take longer than the first retransmission
interval: trioconfd runs without retransmission (``RetryPolicy.off()``),
and what is counted is each query's own work, not how the schedule
behaves under load. ``--schedule planned`` counts the default schedule's
own work too (planning each query's first retransmission, moving its
cancel scope's deadline to it), with its times too far off (30 s) for any
retransmission to fire. Counts at 3 or more peers move by about 3% from
run to run (how many replies each read finds), at 1 peer by under 1%.

``--cache`` also simulates the caches (slower still): the first-level data
cache's misses a query, and the misses of this core's second-level cache
(read from sysfs, simulated as cachegrind's last level). Memory a query
touches that is no longer in that cache (256 queries' objects outgrow it)
costs time that no instruction count shows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

import trioconfd

SCRIPT = Path(__file__).resolve()
#: trioconfd's retry schedule: none, or the default one with times too far off to fire.
SCHEDULES = {
    "off": trioconfd.RetryPolicy.off(),
    "planned": trioconfd.RetryPolicy(initial=30.0, max_interval=30.0, max_timeout=30.0),
}
KEY = b"instructions key\n"
#: What a run counts: cachegrind's name for each figure, as its report spells it.
COUNTERS = {"instructions": "I refs", "D1 misses": "D1 misses", "L2 misses": "LLd misses"}
_L2 = Path("/sys/devices/system/cpu/cpu0/cache/index2")


def counter_of(report: str, name: str) -> int:
    """One figure of cachegrind's report (its stderr), by its name there ("I refs")."""
    pattern = r"\s+".join(map(re.escape, name.split())) + r":\s+([\d,]+)"
    found = re.search(pattern, report)
    if found is None:
        raise ValueError(f"no {name!r} line in cachegrind's report")
    return int(found.group(1).replace(",", ""))


def instructions_of(report: str) -> int:
    """The instructions cachegrind counted, from its report (its stderr)."""
    return counter_of(report, COUNTERS["instructions"])


def second_level_cache(sysfs: Path = _L2) -> str:
    """This core's second-level cache as cachegrind's ``--LL`` wants it: size,
    ways, line size, in bytes (from sysfs)."""
    try:
        level = (sysfs / "level").read_text().strip()
        size = (sysfs / "size").read_text().strip()
        ways = int((sysfs / "ways_of_associativity").read_text())
        line = int((sysfs / "coherency_line_size").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"--cache: cannot read the second-level cache from {sysfs}: {exc}"
        ) from None
    units = {"K": 1 << 10, "M": 1 << 20}
    if level != "2" or not size[:-1].isascii() or not size[:-1].isdigit() or size[-1] not in units:
        raise SystemExit(f"--cache: {sysfs} is not a second-level cache of a known size ({size!r})")
    total = int(size[:-1]) * units[size[-1]]
    sets = total // (ways * line) if ways > 0 and line > 0 else 0
    if sets < 1 or sets * ways * line != total or sets & (sets - 1) or line & (line - 1):
        # cachegrind simulates only power-of-two sets and lines
        raise SystemExit(
            f"--cache: {sysfs} gives a geometry cachegrind cannot simulate: "
            f"{total} bytes, {ways} ways, {line}-byte lines"
        )
    return f"{total},{ways},{line}"


def client_main(spec: dict[str, Any]) -> None:
    """In the child process: ``spec["queries"]`` queries by ``spec["program"]``."""
    from benchmarks.baselines import drive
    from benchmarks.shape_floor import floor_throughput

    peers = [tuple(peer) for peer in spec["peers"]]

    async def main() -> dict[str, float]:
        if spec["program"] == "floor":
            return await floor_throughput(KEY, peers, spec["in_flight"], spec["queries"])
        async with trioconfd.open_confd_client(
            KEY, peers, retry=SCHEDULES[spec["schedule"]]
        ) as client:

            async def query() -> bool:
                result = await client.query(
                    trioconfd.RequestType.CLUSTER_MASTER, coverage=-1, timeout=60
                )
                return result.ok

            return await drive(spec["in_flight"], spec["queries"], query)

    figures = trio.run(main)
    print(json.dumps({"timeouts": figures["timeouts"]}))


def _count(code: Path, spec: dict[str, Any], cache: str | None) -> dict[str, int]:
    """What one child run counts under cachegrind: its instructions, and with
    ``cache`` (the second-level cache to simulate) its misses too."""
    simulation = ["--cache-sim=no"] if cache is None else ["--cache-sim=yes", f"--LL={cache}"]
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            *simulation,
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            str(SCRIPT),
            "--client",
            json.dumps(spec),
        ],
        env={**os.environ, "PYTHONPATH": str(code)},
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode:
        raise RuntimeError(f"valgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    if json.loads(done.stdout.strip().splitlines()[-1])["timeouts"]:
        raise RuntimeError(f"queries timed out under cachegrind: {spec}")
    counted = COUNTERS if cache is not None else {"instructions": COUNTERS["instructions"]}
    return {figure: counter_of(done.stderr, name) for figure, name in counted.items()}


async def _measure(
    args: argparse.Namespace, before: Path | None
) -> dict[str, float] | dict[str, dict[str, float]]:
    from ._revisions import ROOT
    from .baselines import open_daemons

    programs = [("shape floor", ROOT, "floor"), ("trioconfd", ROOT, "trioconfd")]
    if before is not None:
        programs.append((f"trioconfd at {args.before}", before, "trioconfd"))
    cache = second_level_cache() if args.cache else None
    figures: dict[str, dict[str, float]] = {}
    async with open_daemons(KEY, args.peers) as daemons:
        base = {
            "peers": [list(daemon.address) for daemon in daemons],
            "in_flight": args.in_flight,
            "schedule": args.schedule,
        }
        for name, code, program in programs:
            spec = {**base, "program": program}
            small = await trio.to_thread.run_sync(
                _count, code, {**spec, "queries": args.small}, cache
            )
            large = await trio.to_thread.run_sync(
                _count, code, {**spec, "queries": args.large}, cache
            )
            figures[name] = {
                figure: (large[figure] - small[figure]) / (args.large - args.small)
                for figure in large
            }
            row = "".join(f" {count:>12,.0f}" for count in figures[name].values())
            print(f"  {name:<32}{row}", flush=True)
    if cache is None:  # the instructions alone, as before
        return {name: row["instructions"] for name, row in figures.items()}
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--peers", type=int, default=1, help="real daemons asked (default 1)")
    parser.add_argument("--in-flight", type=int, default=256, help="queries in flight")
    parser.add_argument("--small", type=int, default=500, help="queries of the shorter run")
    parser.add_argument("--large", type=int, default=2500, help="queries of the longer run")
    parser.add_argument("--before", help="also count another commit's trioconfd")
    parser.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="off",
        help="trioconfd's retry schedule (default off; planned: the default one, never firing)",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also simulate the caches: D1 and second-level misses a query",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.client:
        client_main(json.loads(args.client))
        return
    if args.large <= args.small:
        parser.error("--large must be more queries than --small")

    from ._revisions import checked_out

    print(
        f"instructions a query, {args.peers} peer(s), {args.in_flight} in flight, "
        f"retry schedule {args.schedule}"
        + (f"; then D1 and L2 ({second_level_cache()}) misses" if args.cache else "")
    )
    if args.before is None:
        figures = trio.run(_measure, args, None)
    else:
        with checked_out(args.before) as before:
            figures = trio.run(_measure, args, before)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
