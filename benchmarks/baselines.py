"""What trioconfd is measured against: the same wire work done by hand.

- the raw socket: a blocking stdlib socket, no framework, one query after
  another or pipelined;
- the shape's floor: in :mod:`benchmarks.shape_floor`;
- trioconfd itself under the same load, for the same rows.

Each asks the same daemons the same request (CLUSTER_MASTER) as trioconfd,
signs it with HMAC-SHA1, and checks each reply's signature and JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import resource
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

import trioconfd
from trioconfd.testing import GanetiConfd, make_cluster_config, open_ganeti_confd

Address = tuple[str, int]
#: What every program here asks, as trioconfd's queries do (3: the cluster's master).
_REQUEST_TYPE = int(trioconfd.RequestType.CLUSTER_MASTER)


def raw_request(key: bytes) -> tuple[bytes, str]:
    """A signed request datagram and its rsalt."""
    rsalt = str(uuid.uuid4())
    msg = json.dumps({"protocol": 1, "type": _REQUEST_TYPE, "query": None, "rsalt": rsalt})
    salt = str(int(time.time()))
    signature = hmac.new(key, (salt + msg).encode(), hashlib.sha1).hexdigest()
    envelope = json.dumps({"msg": msg, "salt": salt, "hmac": signature})
    return b"plj0" + envelope.encode(), rsalt


def raw_reply(key: bytes, datagram: bytes) -> str | None:
    """The salt (the request's rsalt) of an authentic reply, after parsing it all; else None."""
    try:
        envelope = json.loads(datagram[4:])
        signed = (envelope["salt"] + envelope["msg"]).encode()
        expected = hmac.new(key, signed, hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, envelope["hmac"]):
            return None
        json.loads(envelope["msg"])
        return str(envelope["salt"])
    except (ValueError, KeyError, TypeError):
        return None


def cpu_split() -> tuple[float, float]:
    """This process's CPU time so far: user, system (getrusage)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _cpu_figures(before: tuple[float, float], answered: int) -> dict[str, float]:
    """CPU µs per answered query since ``before`` (:func:`cpu_split`): in all, user, system."""
    user, system = (now - then for now, then in zip(cpu_split(), before, strict=True))
    per_query = 1e6 / max(answered, 1)
    return {
        "cpu_us": (user + system) * per_query,
        "user_us": user * per_query,
        "system_us": system * per_query,
    }


# -- the raw socket -------------------------------------------------------------


def raw_fan_out(key: bytes, addresses: list[Address], count: int) -> list[float]:
    """Latencies of ``count`` queries one at a time, each to every address until a quorum."""
    needed = trioconfd.needed_replies(len(addresses))
    latencies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for index in range(count + count // 10):
            start = time.perf_counter()
            datagram, rsalt = raw_request(key)
            for address in addresses:
                sock.sendto(datagram, address)
            replies = 0
            while replies < needed:
                if raw_reply(key, sock.recv(65536)) == rsalt:
                    replies += 1
            if index >= count // 10:
                latencies.append(time.perf_counter() - start)
    return latencies


def raw_pipelined(
    key: bytes, addresses: list[Address], total: int, window: int = 64
) -> dict[str, float]:
    """``total`` queries, ``window`` sent at a time to every address; each done at its quorum."""
    needed = trioconfd.needed_replies(len(addresses))
    done = lost = 0
    cpu = cpu_split()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.settimeout(1)
        start = time.perf_counter()
        while done + lost < total:
            waiting: dict[str, int] = {}
            for _ in range(min(window, total - done - lost)):
                datagram, rsalt = raw_request(key)
                for address in addresses:
                    sock.sendto(datagram, address)
                waiting[rsalt] = 0
            while waiting:
                try:
                    salt = raw_reply(key, sock.recv(65536))
                except TimeoutError:
                    lost += len(waiting)
                    break
                if salt in waiting:
                    waiting[salt] += 1
                    if waiting[salt] == needed:
                        del waiting[salt]
                        done += 1
        elapsed = time.perf_counter() - start
    return {"per_second": done / elapsed, "timeouts": lost, **_cpu_figures(cpu, done)}


async def drive(
    in_flight: int, total: int, query: Callable[[], Awaitable[bool]]
) -> dict[str, float]:
    """``total`` queries by ``in_flight`` tasks, each asking in turn; ``query`` says if it
    was answered. Rate, timeouts, CPU per answered query (getrusage: in all, user and
    system), and the count."""
    left = total
    answered = timeouts = 0

    async def worker() -> None:
        nonlocal left, answered, timeouts
        while left > 0:
            left -= 1
            if await query():
                answered += 1
            else:
                timeouts += 1

    cpu = cpu_split()
    start = time.perf_counter()
    async with trio.open_nursery() as workers:
        for _ in range(in_flight):
            workers.start_soon(worker)
    elapsed = time.perf_counter() - start
    return {
        "per_second": answered / elapsed,
        "timeouts": timeouts,
        **_cpu_figures(cpu, answered),
        "answered": answered,
    }


async def trioconfd_throughput(
    key: bytes,
    addresses: list[Address],
    in_flight: int,
    total: int,
    timeout: float = 5.0,
    *,
    retry: trioconfd.RetryPolicy | None = None,
) -> dict[str, float]:
    """The same load through trioconfd: ``in_flight`` tasks each asking in turn
    (``retry``: the client's retransmission policy, default its own). Besides
    :func:`drive`'s figures: the share of queries that waited for places,
    the windows cut and the datagrams sent again (``ClientStats``)."""
    async with trioconfd.open_confd_client(key, addresses, retry=retry) as client:

        async def query() -> bool:
            result = await client.query(
                trioconfd.RequestType.CLUSTER_MASTER, coverage=-1, timeout=timeout
            )
            return result.ok

        stats = client.stats
        received = stats.received
        figures = await drive(in_flight, total, query)
        figures["received"] = stats.received - received
        # Where a retry schedule's cost goes under load: each window cut
        # leaves queries waiting for places, parked, before they send.
        figures["waited_share"] = stats.waited / max(total, 1)
        figures["window_cuts"] = stats.window_cuts
        figures["retransmitted"] = stats.retransmitted
    return figures


@asynccontextmanager
async def open_daemons(key: bytes, count: int) -> AsyncIterator[list[GanetiConfd]]:
    """``count`` real ganeti-confd daemons on loopback, one small cluster's config."""
    config = make_cluster_config(nodes=3, instances=3, serial=1)
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(
                    open_ganeti_confd(config, key, Path(tmp, f"daemon{index}"))
                )
                for index in range(count)
            ]
