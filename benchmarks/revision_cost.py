"""CPU and rate a query, this tree beside another commit, against the same real daemons.

Each client runs in a process of its own (its ``getrusage`` is its own),
with whichever trioconfd its ``PYTHONPATH`` gives: this tree's, or
``--before``'s, checked out in a temporary worktree. Both ask the same
real daemons (1, 3 and 5 of them by default), 256 in flight, the client's
defaults (or admission windows fixed at ``--window`` places, so that most
queries wait for one, and ``--no-retry``: no retransmission); each run
warms up (2,000 queries) and keeps the best of two drives of ``--total``.
Rounds alternate which commit runs first, and the ratios reported are the
median of each round's (after over before)::

    python -m benchmarks.revision_cost --before REV [--peers 1,3,5] [--rounds 8]
        [--total 8000] [--window N] [--no-retry] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import trio

import trioconfd

SCRIPT = Path(__file__).resolve()
KEY = b"revision cost key\n"
IN_FLIGHT = 256
WARM_UP = 2000


def client_main(spec: dict[str, Any]) -> None:
    """In the child process: the best CPU µs a query and rate of two drives."""
    from benchmarks.baselines import drive  # the commit under test's, as trioconfd

    peers = [tuple(peer) for peer in spec["peers"]]
    window = spec["window"]
    admission = (
        trioconfd.AdmissionPolicy(initial=window, minimum=window, maximum=window)
        if window
        else trioconfd.AdmissionPolicy()
    )
    retry = trioconfd.RetryPolicy.off() if spec["no_retry"] else trioconfd.RetryPolicy()

    async def main() -> dict[str, Any]:
        async with trioconfd.open_confd_client(
            KEY, peers, admission=admission, retry=retry
        ) as client:

            async def query() -> bool:
                result = await client.query(
                    trioconfd.RequestType.CLUSTER_MASTER, coverage=-1, timeout=5
                )
                return result.ok

            await drive(IN_FLIGHT, WARM_UP, query)
            runs = [await drive(IN_FLIGHT, spec["total"], query) for _ in range(2)]
            policies = {"window": client.admission.maximum, "retry": client.retry.enabled}
        return {
            "cpu_us": min(run["cpu_us"] for run in runs),
            "per_second": max(run["per_second"] for run in runs),
            "timeouts": sum(run["timeouts"] for run in runs),
            **policies,
        }

    print(json.dumps(trio.run(main)))


async def _measure(args: argparse.Namespace, before: Path) -> dict[str, Any]:
    from ._revisions import ROOT, run_child
    from .baselines import open_daemons

    codes = {"after": ROOT, "before": before}
    results: dict[str, Any] = {"before": args.before, "peers": {}}
    async with open_daemons(KEY, max(args.peers)) as daemons:
        for count in args.peers:
            spec = {
                "peers": [list(daemon.address) for daemon in daemons[:count]],
                "total": args.total,
                "window": args.window,
                "no_retry": args.no_retry,
            }
            rounds = []
            for round_ in range(args.rounds):
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                runs = {name: run_child(SCRIPT, codes[name], spec) for name in order}
                rounds.append(runs)
                print(count, "peer(s), round", round_, json.dumps(runs), flush=True)
            results["peers"][str(count)] = {
                "rounds": rounds,
                "cpu_after_over_before": statistics.median(
                    runs["after"]["cpu_us"] / runs["before"]["cpu_us"] for runs in rounds
                ),
                "rate_after_over_before": statistics.median(
                    runs["after"]["per_second"] / runs["before"]["per_second"] for runs in rounds
                ),
            }
    return results


def _report(results: dict[str, Any]) -> None:
    print(f"after (this tree) over before ({results['before']}), median of paired rounds")
    print(f"{'peers':>6} {'CPU a query':>12} {'rate':>8}")
    for count, row in results["peers"].items():
        cpu, rate = row["cpu_after_over_before"], row["rate_after_over_before"]
        print(f"{count:>6} {cpu:>12.3f} {rate:>8.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--before", default="HEAD~1", help="the commit to compare with")
    parser.add_argument(
        "--peers",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 3, 5],
        help="daemon counts, comma-separated (default 1,3,5)",
    )
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds")
    parser.add_argument("--total", type=int, default=8000, help="queries a drive")
    parser.add_argument("--window", type=int, default=0, help="fixed admission windows")
    parser.add_argument("--no-retry", action="store_true", help="no retransmission")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.client:
        client_main(json.loads(args.client))
        return

    from ._revisions import checked_out

    with checked_out(args.before) as before:
        results = trio.run(_measure, args, before)
    _report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
