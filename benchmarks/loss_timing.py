"""A query's latency under loss and slowness, in real time: adaptive beside fixed.

Peers in this process answer as the case says; the client runs in a
process of its own (``--client``), so that neither steals the other's event
loop. Cases (three peers, every query to all three, quorum 2):

- ``proxy, loss 30%``: three in-process confd servers behind
  ``open_fault_proxy(drop=0.3)`` both ways;
- ``loss 30%``: scripted peers that lose 30% of datagrams each way (the
  same luck for both policies, request for request);
- ``drops first copies``: every peer ignores the first copy of each request;
- ``slow, lossy, prompt``: A answers after 1 s, B loses half its first
  copies, C is prompt;
- ``slow, then prompt``: each peer answers after 1 s for the first 10
  requests it hears, then at once, losing every fourth first copy.

The policies alternate, ``--rounds`` times each; latencies are pooled.
Run::

    python -m benchmarks.loss_timing [--queries 400] [--concurrency 8] [--rounds 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import sys
from collections.abc import Callable
from typing import Any

import trio

import trioconfd
from trioconfd import ConfdReply, ReplyStatus, RequestType, RetryPolicy
from trioconfd.protocol import ConfdProtocolError, format_address, pack_reply, unpack_request
from trioconfd.testing import Faults, make_cluster_config, open_confd_server, open_fault_proxy

KEY = b"loss timing key\n"
TIMEOUT = 3.0
POLICIES = {"adaptive": RetryPolicy(adaptive=True), "fixed": RetryPolicy()}

# A peer's behaviour: given what it has heard, (answer?, delay before answering).
Behaviour = Callable[[str, int, random.Random], tuple[bool, float]]


def lossy(loss: float) -> Behaviour:
    def behave(rsalt: str, copy: int, rng: random.Random) -> tuple[bool, float]:
        return rng.random() >= loss and rng.random() >= loss, 0.0  # the request, then the reply

    return behave


def drops_first(rsalt: str, copy: int, rng: random.Random) -> tuple[bool, float]:
    return copy > 1, 0.0


def slow(delay: float) -> Behaviour:
    return lambda rsalt, copy, rng: (True, delay)


def loses_first_copies(loss: float) -> Behaviour:
    return lambda rsalt, copy, rng: (copy > 1 or rng.random() >= loss, 0.0)


def slow_then_prompt(slow_for: int, delay: float) -> Behaviour:
    heard: list[str] = []

    def behave(rsalt: str, copy: int, rng: random.Random) -> tuple[bool, float]:
        if copy == 1:
            heard.append(rsalt)
        if len(heard) <= slow_for:
            return True, delay
        return copy > 1 or len(heard) % 4 != 0, 0.0

    return behave


PROXIED = "proxy, loss 30%"
CASES: dict[str, Callable[[], list[Behaviour]]] = {
    PROXIED: lambda: [],
    "loss 30%": lambda: [lossy(0.3), lossy(0.3), lossy(0.3)],
    "drops first copies": lambda: [drops_first, drops_first, drops_first],
    "slow, lossy, prompt": lambda: [slow(1.0), loses_first_copies(0.5), lossy(0.0)],
    "slow, then prompt": lambda: [slow_then_prompt(10, 1.0) for _ in range(3)],
}


async def _peer(sock: trio.socket.SocketType, behave: Behaviour, seed: int) -> None:
    rng = random.Random(seed)
    copies: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        while True:
            datagram, sender = await sock.recvfrom(65536)
            try:
                request, _ = unpack_request(datagram, KEY)
            except ConfdProtocolError:
                continue
            copy = copies[request.rsalt] = copies.get(request.rsalt, 0) + 1
            answer, delay = behave(request.rsalt, copy, rng)
            if answer:
                reply = pack_reply(ConfdReply(ReplyStatus.OK, 0, 1), request.rsalt, KEY)
                nursery.start_soon(_answer, sock, reply, sender, delay)


async def _answer(sock: trio.socket.SocketType, reply: bytes, to: Any, delay: float) -> None:
    await trio.sleep(delay)
    await sock.sendto(reply, to)


async def _start_peers(name: str, nursery: trio.Nursery) -> list[str]:
    """The case's three peers, running in ``nursery``: their addresses."""
    if name == PROXIED:
        config = make_cluster_config(nodes=3)
        lossy_link = Faults(drop=0.3)
        peers = []
        for index in range(3):
            server = await nursery.start(_serve_behind_proxy, config, lossy_link, index)
            peers.append(format_address(server))
        return peers
    peers = []
    for index, behave in enumerate(CASES[name]()):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        peers.append(f"127.0.0.1:{sock.getsockname()[1]}")
        nursery.start_soon(_peer, sock, behave, index)
    return peers


async def _serve_behind_proxy(
    config: dict[str, Any], faults: Faults, seed: int, *, task_status: Any
) -> None:
    async with (
        open_confd_server(config, KEY) as server,
        open_fault_proxy(server.address, to_server=faults, to_client=faults, seed=seed) as proxy,
    ):
        task_status.started(proxy.address)
        await trio.sleep_forever()


async def _run_case(name: str, queries: int, concurrency: int, rounds: int) -> dict[str, Any]:
    pooled: dict[str, dict[str, Any]] = {
        policy: {"latencies": [], "timeouts": 0, "retransmitted": 0} for policy in POLICIES
    }
    for _ in range(rounds):
        for policy_name in POLICIES:
            async with trio.open_nursery() as nursery:
                peers = await _start_peers(name, nursery)
                command = [sys.executable, "-m", "benchmarks.loss_timing", "--client"]
                command += [policy_name, str(queries), str(concurrency), *peers]
                done = await trio.run_process(command, capture_stdout=True)
                figures = json.loads(done.stdout)
                nursery.cancel_scope.cancel()
            into = pooled[policy_name]
            into["latencies"] += figures["latencies"]
            into["timeouts"] += figures["timeouts"]
            into["retransmitted"] += figures["retransmitted"]
    return {policy: _summary(figures) for policy, figures in pooled.items()}


def _summary(figures: dict[str, Any]) -> dict[str, Any]:
    latencies = sorted(figures["latencies"])

    def percentile(fraction: float) -> float:
        if not latencies:
            return math.nan
        return float(round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))], 1))

    return {
        "timeouts": figures["timeouts"],
        "p50_ms": percentile(0.5),
        "p90_ms": percentile(0.9),
        "p99_ms": percentile(0.99),
        "max_ms": percentile(1.0),
        "retransmitted": figures["retransmitted"],
    }


async def _client(policy_name: str, queries: int, concurrency: int, peers: list[str]) -> None:
    latencies: list[float] = []
    timeouts = 0
    async with trioconfd.open_confd_client(KEY, peers, retry=POLICIES[policy_name]) as client:
        limiter = trio.CapacityLimiter(concurrency)

        async def one() -> None:
            nonlocal timeouts
            async with limiter:
                start = trio.current_time()
                result = await client.query(RequestType.PING, coverage=-1, timeout=TIMEOUT)
                if result.quorum_reached:
                    latencies.append(trio.current_time() - start)
                else:
                    timeouts += 1

        async with trio.open_nursery() as nursery:
            for _ in range(queries):
                nursery.start_soon(one)
        retransmitted = client.stats.retransmitted
    print(
        json.dumps(
            {
                "latencies": [round(latency * 1e3, 3) for latency in latencies],
                "timeouts": timeouts,
                "retransmitted": retransmitted,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--client"]:
        policy_name, queries, concurrency, *peers = args[1:]
        trio.run(_client, policy_name, int(queries), int(concurrency), peers)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=400, help="queries per case and policy")
    parser.add_argument("--concurrency", type=int, default=8, help="queries in flight at once")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each policy, alternating")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args(args)
    results = {}
    print(f"{'case':22} {'policy':9} timeouts   p50 ms   p90 ms   p99 ms   max ms  resent")
    for name in CASES:
        results[name] = trio.run(
            _run_case, name, options.queries, options.concurrency, options.rounds
        )
        for policy_name, f in results[name].items():
            print(
                f"{name:22} {policy_name:9} {f['timeouts']:8} {f['p50_ms']:8} {f['p90_ms']:8}"
                f" {f['p99_ms']:8} {f['max_ms']:8} {f['retransmitted']:7}"
            )
    if options.json:
        with open(options.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
