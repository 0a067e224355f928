"""client.watch: a quorum query each interval, a verdict for each trusted change."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioconfd import (
    MAX_REQUEST_SIZE,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClient,
    ConfdClientClosedError,
    QueryResult,
    ReplyStatus,
    RequestType,
    open_confd_client,
)
from trioconfd.testing import (
    Faults,
    SimulatedCluster,
    make_cluster_config,
    open_simulated_cluster,
)

KEY = b"watch key\n"


def failed_over(serial: int) -> dict[str, Any]:
    """The cluster after a failover: node2 is the master, at ``serial``."""
    return make_cluster_config(nodes=3, serial=serial, master=2)


@asynccontextmanager
async def simulated(config: dict[str, Any]) -> AsyncIterator[tuple[SimulatedCluster, ConfdClient]]:
    """Three simulated peers serving ``config``, and a client of theirs."""
    async with (
        open_simulated_cluster([config] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        yield cluster, client


async def test_a_failover_is_seen_at_the_next_interval_and_nothing_else_is_news(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = make_cluster_config(nodes=3, serial=5)
    async with simulated(before) as (cluster, client):
        seen: list[tuple[float, Any, int | None]] = []
        start = trio.current_time()

        async def watcher() -> None:
            async for result in client.watch(RequestType.CLUSTER_MASTER, interval=1.0):
                assert isinstance(result, QueryResult)
                assert result.quorum_reached
                seen.append((trio.current_time() - start, result.answer, result.serial))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await trio.sleep(2.5)  # two more asks, the same answer: nothing yielded
            for index in range(3):  # the failover reaches every peer
                cluster.set_config(index, failed_over(6))
            await trio.sleep(2.0)
            # One peer goes back to the old configuration: a quorum still says 6.
            cluster.set_config(0, before)
            await trio.sleep(2.0)
            # Two of three stale: their quorum says serial 5, older than what
            # was seen: not a change, and not yielded.
            cluster.set_config(1, before)
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()
        assert [(answer, serial) for _, answer, serial in seen] == [
            ("node1.example.com", 5),
            ("node2.example.com", 6),
        ]
        assert seen[0][0] < 0.01  # the first verdict at once
        assert seen[1][0] == pytest.approx(3.0, abs=0.01)  # the first ask after the failover
        assert client.outstanding == 0


async def test_a_watch_without_a_quorum_yields_nothing_until_there_is_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with simulated(make_cluster_config(nodes=3, serial=5)) as (cluster, client):
        cluster.crash(0)
        cluster.crash(1)
        start = trio.current_time()
        with trio.move_on_after(10):
            async for _ in client.watch(
                RequestType.CLUSTER_MASTER, interval=2, coverage=-1, timeout=0.5
            ):
                break
        assert trio.current_time() - start == pytest.approx(10)  # nothing trusted, nothing yielded
        cluster.restart(0)
        async for result in client.watch(RequestType.CLUSTER_MASTER, interval=2, coverage=-1):
            assert (result.answer, result.serial) == ("node1.example.com", 5)
            break


@pytest.mark.parametrize("interval", [0, -1, math.inf, math.nan, True, "1", 10**400])
async def test_a_bad_interval_is_refused_at_once(interval: Any) -> None:
    async with open_confd_client(KEY, [("127.0.0.1", 1814)]) as client:
        with pytest.raises(ConfdArgumentError, match="interval must be a number of seconds") as e:
            client.watch(RequestType.PING, interval=interval)
        wrong_type = isinstance(interval, bool | str)
        assert isinstance(e.value, ConfdArgumentTypeError) == wrong_type


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ({"3": [math.nan]}, "NaN or an infinity"),
        ({"3": {1}}, "set is not JSON"),
        ("x" * (MAX_REQUEST_SIZE + 1), "the daemon reads at most"),
    ],
)
async def test_a_query_no_ask_could_send_is_refused_as_the_watch_is_made(
    query: Any, match: str
) -> None:
    async with open_confd_client(KEY, [("127.0.0.1", 1814)]) as client:
        with pytest.raises(ConfdArgumentError, match=match):
            client.watch(RequestType.CLUSTER_MASTER, query, interval=1)


async def test_replies_that_disagree_at_one_serial_are_not_news_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two configurations at one serial: which reply wins a query is luck,
    # and a watch must not flap between them (a failover script would).
    first = make_cluster_config(nodes=3, serial=6)
    second = make_cluster_config(nodes=3, serial=6, master=2)
    jitter = Faults(delay=1.0, delay_range=(0, 0.01))  # replies in any order
    async with (
        open_simulated_cluster([first, second, second], KEY, to_client=jitter) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        seen: list[Any] = []
        with trio.move_on_after(60):
            async for result in client.watch(RequestType.CLUSTER_MASTER, interval=1.0):
                seen.append((result.answer, result.consistent))
    # The first verdict, and at most one more: a consistent quorum's answer.
    assert len(seen) <= 2, seen
    assert all(consistent for _, consistent in seen[1:]), seen


async def test_a_name_gone_from_the_configuration_is_news(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The daemon answers an error with serial 0 whatever its configuration:
    # that is no stale quorum, but the node gone.
    before = make_cluster_config(nodes=3, serial=5)
    after = make_cluster_config(nodes=2, serial=6)
    async with simulated(before) as (cluster, client):
        seen: list[Any] = []

        async def watcher() -> None:
            async for result in client.watch(
                RequestType.NODE_ROLE_BYNAME, "node3.example.com", interval=1.0
            ):
                seen.append((result.status, result.not_found))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await trio.sleep(1.5)
            for index in range(3):
                cluster.set_config(index, after)
            await trio.sleep(2.0)
            nursery.cancel_scope.cancel()
    assert seen == [(ReplyStatus.OK, False), (ReplyStatus.ERROR, True)]


async def test_a_watch_asleep_when_its_client_closes_raises_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Asleep for its next ask (an hour away) in another task as the client's
    # block exits: it raises then, not an hour later.
    config = make_cluster_config(nodes=3, serial=5)
    ended: list[tuple[str, float]] = []

    async def watcher(client: ConfdClient) -> None:
        try:
            async for _ in client.watch(RequestType.CLUSTER_MASTER, interval=3600):
                pass
        except ConfdClientClosedError:
            ended.append(("closed", trio.current_time()))

    async with trio.open_nursery() as nursery, simulated(config) as (_, client):
        nursery.start_soon(watcher, client)
        await trio.sleep(1)
        closed_at = trio.current_time()
    assert ended == [("closed", closed_at)]
    # And resumed after the block, it raises at once too.
    async with simulated(config) as (_, client):
        watch = client.watch(RequestType.CLUSTER_MASTER, interval=3600)
        await watch.__anext__()
    start = trio.current_time()
    with pytest.raises(ConfdClientClosedError):
        await watch.__anext__()
    assert trio.current_time() == start
