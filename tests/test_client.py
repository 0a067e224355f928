"""The Trio client against scripted peers: the original client's behaviours and more."""

from __future__ import annotations

import inspect
import logging
import math
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trioconfd
from trioconfd import (
    UPCALL_EXPIRE,
    UPCALL_REPLY,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdReply,
    ConfdRequest,
    ReplyStatus,
    RequestType,
    Upcall,
    open_confd_client,
)
from trioconfd.protocol import pack_reply
from trioconfd.testing import (
    Faults,
    SimulatedCluster,
    make_cluster_config,
    open_simulated_cluster,
)

from .responders import Responder, answer_ping, run_responders, settle, silent, wait_until

KEY = b"test-key\n"


@asynccontextmanager
async def silent_cluster(count: int) -> AsyncIterator[SimulatedCluster]:
    """Simulated peers that hear nothing (crashed), for tests of timing in simulated time."""
    async with open_simulated_cluster([make_cluster_config()] * count, KEY) as cluster:
        for index in range(count):
            cluster.crash(index)
        yield cluster


def asked(responders: list[Responder]) -> int:
    return sum(1 for r in responders if r.requests)


async def test_query_reaches_quorum_and_trusts_the_highest_serial() -> None:
    def handler(request: ConfdRequest, index: int) -> ConfdReply:
        return ConfdReply(ReplyStatus.OK, f"v{index}", 10 + index)

    async with (
        run_responders(3, KEY, handler) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        for r in responders[:2]:
            r.delay = 0.0
        responders[2].delay = 0.3  # the newest peer answers last
        result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1)
        assert (result.sent, result.needed, result.received) == (3, 2, 2)
        assert not result.timed_out
        assert result.serial == 11
        assert result.answer == "v1"
        assert result.ok
        # Asked again and waiting for everyone, the newest wins.
        async with client.request(RequestType.CLUSTER_MASTER, coverage=-1) as replies:
            async for _ in replies:
                pass
        result = replies.result()
        assert (result.received, result.serial, result.answer) == (3, 12, "v2")
        assert client.outstanding == 0


async def test_default_and_maximum_coverage() -> None:
    async with (
        run_responders(8, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders], rng=random.Random(7)) as client,
    ):
        result = await client.query(RequestType.PING)
        assert result.sent == 6  # min(peers, 6)
        assert asked(responders) == 6
        # The quorum, and any reply already accepted when it was reached.
        assert trioconfd.needed_replies(6) <= result.received <= 6
        assert result.received == client.stats.accepted
        for r in responders:
            r.requests.clear()
        result = await client.query(RequestType.PING, coverage=-1)
        assert result.sent == 8
        await settle(lambda: asked(responders) == 8)
        result = await client.query(RequestType.PING, coverage=2)
        assert (result.sent, result.received) == (2, 2)


async def test_each_of_many_peers_counts_once_however_often_it_replies() -> None:
    # Ten peers, past the few whose replies a request keeps as a tuple; each
    # reply comes twice, and the second copy of each is a duplicate.
    upcalls: list[Upcall] = []
    async with (
        run_responders(10, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders], callback=upcalls.append) as client,
    ):
        for responder in responders:
            responder.copies = 2
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request, coverage=-1)
        stats = client.stats
        await settle(lambda: stats.accepted + stats.duplicate == 20)
        assert (stats.accepted, stats.duplicate) == (10, 10)
        assert len([upcall for upcall in upcalls if upcall.server_reply is not None]) == 10
        assert await client.wait_for_reply(request.rsalt, 1) == (False, 10, 10)


async def test_send_request_asks_its_targets_in_the_order_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past eight targets a routing entry keeps them in a set; its datagrams
    # still go in the order chosen (a set's would follow the hash seed, and a
    # run would not replay the same from one process to the next).
    async with (
        run_responders(12, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        router = client._router
        sent_to: list[Any] = []
        send = router.send

        async def recording(datagram: bytes, targets: Any, *rest: Any) -> Any:
            sent_to.extend(targets)
            return await send(datagram, targets, *rest)

        monkeypatch.setattr(router, "send", recording)
        await client.send_request(ConfdRequest(RequestType.PING), coverage=-1)
        assert sent_to == list(client.peers)


async def test_targets_are_a_random_sample() -> None:
    async with (
        run_responders(5, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders], rng=random.Random(3)) as client,
    ):
        samples_seen: list[frozenset[int]] = []
        for _ in range(20):
            request = ConfdRequest(RequestType.PING)
            await client.send_request(request, coverage=2)
            total = 2 * (len(samples_seen) + 1)
            await settle(lambda: sum(len(r.requests) for r in responders) == total)  # noqa: B023
            samples_seen.append(frozenset(r.index for r in responders if request in r.requests))
        samples = set(samples_seen)
        assert all(len(sample) == 2 for sample in samples)
        assert len(samples) > 3


@pytest.mark.parametrize(("coverage", "message"), [(4, "more peers than the 3"), (-2, "must be")])
async def test_bad_coverage_is_refused(coverage: int, message: str) -> None:
    async with (
        run_responders(3, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        with pytest.raises(ConfdClientError, match=message):
            await client.query(RequestType.PING, coverage=coverage)
        with pytest.raises(ConfdClientError, match=message):
            await client.send_request(ConfdRequest(RequestType.PING), coverage=coverage)
        assert client.outstanding == 0


async def test_duplicate_rsalt_is_refused() -> None:
    async with (
        run_responders(1, KEY, silent) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)
        # Another request given the same rsalt, while the first waits.
        twin = ConfdRequest(RequestType.PING, rsalt=request.rsalt)
        with pytest.raises(ConfdClientError, match="duplicate request rsalt"):
            await client.send_request(twin)
        with pytest.raises(ConfdClientError, match="duplicate request rsalt"):
            await client.query(ConfdRequest(RequestType.PING, rsalt=request.rsalt))
        assert client.outstanding == 1
        assert not twin.sent  # refused, so not spent


async def test_send_request_and_wait_for_reply_with_upcalls() -> None:
    upcalls: list[Upcall] = []
    async with (
        run_responders(3, KEY, answer_ping(serial=4)) as responders,
        open_confd_client(KEY, [r.address for r in responders], callback=upcalls.append) as client,
    ):
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request, args=("mine",), coverage=-1)
        timed_out, sent, received = await client.wait_for_reply(request.rsalt, timeout=5)
        assert not timed_out
        assert sent == 3
        assert received >= 2
        await settle(lambda: len(upcalls) == 3)
        addresses = {r.address for r in responders}
        for upcall in upcalls:
            assert upcall.type is UPCALL_REPLY
            assert upcall.salt == request.rsalt
            assert upcall.orig_request is request
            assert upcall.extra_args == ("mine",)
            assert upcall.client is client
            assert upcall.server_reply is not None
            assert upcall.server_reply.serial == 4
            assert (upcall.server_ip, upcall.server_port) in addresses
        assert {(u.server_ip, u.server_port) for u in upcalls} == addresses
        # The request stays until it expires, as in the original client.
        assert client.outstanding == 1
        assert await client.wait_for_reply("no such salt") == (True, 0, 0)


async def test_expiry_fires_on_time(autojump_clock: trio.testing.MockClock) -> None:
    upcalls: list[tuple[float, Upcall]] = []
    async with (
        silent_cluster(2) as cluster,
        open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            callback=lambda up: upcalls.append((trio.current_time(), up)),
        ) as client,
    ):
        start = trio.current_time()
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request, args=42)
        await trio.sleep(9.9)
        assert client.outstanding == 1
        await trio.sleep(0.2)
        assert client.outstanding == 0
        ((when, upcall),) = upcalls
        assert when == pytest.approx(start + 10)
        assert upcall.type is UPCALL_EXPIRE
        assert (upcall.salt, upcall.orig_request, upcall.extra_args) == (request.rsalt, request, 42)
        assert upcall.server_reply is None
        assert await client.wait_for_reply(request.rsalt) == (True, 0, 0)
        assert client.stats.expired == 1


async def test_expiry_cascade(mock_clock: trio.testing.MockClock) -> None:
    order: list[tuple[str, object]] = []
    async with (
        run_responders(1, KEY, silent) as responders,
        open_confd_client(
            KEY,
            [responders[0].address],
            callback=lambda up: order.append((up.salt, up.extra_args)),
        ) as client,
    ):
        requests = [ConfdRequest(RequestType.PING) for _ in range(3)]
        for index, request in enumerate(requests):
            await client.send_request(request, args=index)
            mock_clock.jump(1)
        mock_clock.jump(20)
        # One call expires every overdue request, oldest first.
        client.expire_requests()
        assert order == [(r.rsalt, i) for i, r in enumerate(requests)]
        assert client.outstanding == 0
        # Sending also expires first, as in the original client.
        late = ConfdRequest(RequestType.PING)
        await client.send_request(late)
        mock_clock.jump(10)
        await client.send_request(ConfdRequest(RequestType.PING))
        assert order[-1] == (late.rsalt, None)


async def test_a_callback_that_expires_requests_expires_each_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Ganeti code may well expire requests from its own EXPIRE upcall.
    expired: list[object] = []

    def expire_again(upcall: Upcall) -> None:
        if upcall.type is UPCALL_EXPIRE:
            expired.append(upcall.extra_args)
            upcall.client.expire_requests()

    async with (
        silent_cluster(1) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, callback=expire_again) as client,
    ):
        for index in range(3):
            await client.send_request(ConfdRequest(RequestType.PING), args=index)
        await trio.sleep(20)
        assert expired == [0, 1, 2]
        assert client.stats.expired == 3
        assert client.outstanding == 0


async def test_expire_requests_finds_an_overdue_request_behind_one_a_wait_moved(
    mock_clock: trio.testing.MockClock,
) -> None:
    expired: list[object] = []
    async with (
        run_responders(1, KEY, silent) as responders,
        open_confd_client(
            KEY,
            [responders[0].address],
            callback=lambda upcall: expired.append(upcall.extra_args),
        ) as client,
    ):
        first, second = ConfdRequest(RequestType.PING), ConfdRequest(RequestType.PING)
        await client.send_request(first, args="first")  # expires at 10 s
        mock_clock.jump(5)
        await client.send_request(second, args="second")  # at 15 s
        # A wait of no time leaves the first's expiry where it was.
        assert await client.wait_for_reply(first.rsalt, timeout=0) == (True, 1, 0)
        mock_clock.jump(6)
        client.expire_requests()  # at 11 s, no checkpoint: its own timer has not run
        assert expired == ["first"]
        assert client.outstanding == 1
        mock_clock.jump(5)
        client.expire_requests()
        assert expired == ["first", "second"]


async def test_a_wait_with_no_limit_does_not_keep_its_request_for_ever(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expired: list[object] = []
    async with (
        open_simulated_cluster([make_cluster_config()] * 3, KEY) as cluster,
        open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            max_outstanding=5,
            callback=lambda upcall: (
                expired.append(upcall.salt) if upcall.type is UPCALL_EXPIRE else None
            ),
        ) as client,
    ):
        requests = [ConfdRequest(RequestType.PING) for _ in range(5)]
        for request in requests:
            await client.send_request(request, coverage=-1)
            start = trio.current_time()
            assert await client.wait_for_reply(request.rsalt, math.inf) == (False, 3, 2)
            waited = trio.current_time() - start
            assert 0 < waited < 1
        assert client.outstanding == 5  # as many as the client holds
        await trio.sleep(10 + waited + 0.1)
        # Each expired 10 s after it was sent, and the time waited later.
        assert expired == [request.rsalt for request in requests]
        assert client.outstanding == 0
        await client.send_request(ConfdRequest(RequestType.PING))  # room again


@pytest.mark.parametrize(
    ("waits", "expires_at"),
    [
        ([(0, None, 4)], 14),  # 10 s, and the wait's 4, as in Ganeti
        ([(0, 30, math.inf)], 40),  # 10 s, and the 30 s it was waited on
        # Overlapping: the 2 s some wait had no limit.
        ([(0, 1, math.inf), (0.5, 2, math.inf)], 12),
        # A finite wait begun during one with no limit keeps its own 100 s ...
        ([(0, 1, math.inf), (0.5, None, 100)], 111),
        # ... and one that ends first leaves the request to the one with none.
        ([(0, 200, math.inf), (0.5, None, 1)], 211),
    ],
)
async def test_a_wait_moves_the_expiry_by_its_timeout_and_with_no_limit_by_the_time_waited(
    autojump_clock: trio.testing.MockClock,
    waits: list[tuple[float, float | None, float]],
    expires_at: float,
) -> None:
    async with (
        silent_cluster(3) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        start = trio.current_time()
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)

        async def wait(begin: float, end: float | None, timeout: float) -> None:
            await trio.sleep_until(start + begin)
            with trio.move_on_at(math.inf if end is None else start + end):
                # Waited on all along: it times out with the request still there.
                assert await client.wait_for_reply(request.rsalt, timeout) == (True, 3, 0)
                assert trio.current_time() == pytest.approx(start + begin + timeout)

        async with trio.open_nursery() as nursery:
            for begin, end, timeout in waits:
                nursery.start_soon(wait, begin, end, timeout)
        expiries = client._sent_requests._expiries
        assert all(math.isfinite(expiry) for expiry, _, _ in expiries)
        await trio.sleep_until(start + expires_at - 0.1)
        assert client.outstanding == 1
        await trio.sleep_until(start + expires_at + 0.1)
        assert client.outstanding == 0


@pytest.mark.parametrize(("timeout", "seen"), [(5, (True, 3, 0)), (math.inf, (False, 3, 2))])
async def test_a_wait_that_begins_as_its_request_expires_keeps_it(
    autojump_clock: trio.testing.MockClock, timeout: float, seen: tuple[bool, int, int]
) -> None:
    # The wait's task and the expiry's wake in one batch, in either order
    # (Trio draws it): begun first, the wait moves the expiry on, the expiry
    # task, its timer fired, sleeps on to it, and the wait says what it saw
    # as it ended, though its request expires at that very time. (The peers
    # answer after 15 s; the one with a limit gives up at 15 s.)
    async with (
        open_simulated_cluster([make_cluster_config()] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for index in range(3):
            late = Faults(delay=1.0, delay_range=(15.0, 15.0))
            cluster.set_faults(index, to_client=late if timeout == math.inf else Faults(drop=1.0))
        began_first = 0
        for _ in range(20):
            start = trio.current_time()
            request = ConfdRequest(RequestType.PING)
            await client.send_request(request, coverage=-1)
            await trio.sleep_until(start + 10)  # when it expires
            if client.outstanding:
                began_first += 1
                timed_out, sent, received = await client.wait_for_reply(request.rsalt, timeout)
                assert (timed_out, sent) == seen[:2]
                assert received >= seen[2]  # (the third may have come with the second)
            await trio.sleep_until(start + 30)
            assert client.outstanding == 0
        assert 0 < began_first < 20  # each order came


async def test_a_client_closed_under_its_block_keeps_no_expiry_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        silent_cluster(3) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        requests = [ConfdRequest(RequestType.PING) for _ in range(3)]
        for request in requests:
            await client.send_request(request)

        async def wait_long() -> None:
            with pytest.raises(ConfdClientError):
                await client.wait_for_reply(requests[0].rsalt, 3600)

        background = client._sent_requests._nursery
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_long)
            await trio.sleep(1)
            client._router.socket.close()  # the socket closes under the client
            await trio.sleep(0.5)
        assert client.closed
        assert not background.child_tasks  # no expiry task sleeps on
        assert not client._sent_requests._pending


async def test_a_wait_whose_quorum_rule_fails_moves_no_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken(peers: int) -> int:
        raise ValueError("boom")

    async with (
        silent_cluster(3) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, quorum=broken) as client,
    ):
        start = trio.current_time()
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)
        for timeout in (math.inf, 5):
            with pytest.raises(ConfdClientError, match="the quorum rule"):
                await client.wait_for_reply(request.rsalt, timeout)
        await trio.sleep_until(start + 10.1)
        assert client.outstanding == 0  # at 10 s, as if never waited on


async def test_a_request_waited_on_again_and_again_keeps_a_small_heap_of_expiries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        silent_cluster(1) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)
        expiries = client._sent_requests._expiries
        most = 0
        for _ in range(5000):
            await client.wait_for_reply(request.rsalt, 0.01)
            most = max(most, len(expiries))
        assert client.outstanding == 1  # each wait moved its expiry on
        assert most <= 2 * 1 + 64 + 1


async def test_wait_for_reply_refuses_a_salt_that_is_not_a_str() -> None:
    async with (
        run_responders(1, KEY, answer_ping(1)) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)
        with pytest.raises(ConfdArgumentTypeError, match=r"not ConfdRequest: pass request\.rsalt"):
            await client.wait_for_reply(request)  # type: ignore[arg-type]
        for wrong in (None, 42, [request.rsalt]):
            with pytest.raises(ConfdArgumentTypeError, match="salt must be a request's rsalt"):
                await client.wait_for_reply(wrong)  # type: ignore[arg-type]
        assert (await client.wait_for_reply(request.rsalt))[0] is False


async def test_peer_list_update() -> None:
    async with (
        run_responders(2, KEY, silent) as old,
        run_responders(2, KEY) as new,
        open_confd_client(KEY, [r.address for r in old]) as client,
    ):
        in_flight = ConfdRequest(RequestType.PING)
        await client.send_request(in_flight, coverage=-1)
        client.update_peer_list([r.address for r in new])
        assert client.peers == tuple(r.address for r in new)
        result = await client.query(RequestType.PING, coverage=-1, timeout=5)
        assert result.received == 2
        assert not any(r.requests for r in new if in_flight in r.requests)
        # The earlier request still belongs to the old peers: replies from the
        # new ones for its rsalt do not count.
        forged = pack_reply(ConfdReply(ReplyStatus.OK, 1, 1), in_flight.rsalt, KEY)
        await new[0].sock.sendto(forged, client.local_address[:2])
        await settle(lambda: client.stats.unexpected_peer == 1)
        assert client.stats.accepted == 2
        with pytest.raises(ConfdClientError, match="empty"):
            client.update_peer_list([])
        with pytest.raises(ConfdClientError, match="AF_INET6"):
            client.update_peer_list(["::1"])
        with pytest.raises(ConfdClientError, match="mix"):
            client.update_peer_list(["127.0.0.1", "::1"])
        assert client.peers == tuple(r.address for r in new)


async def test_ipv6_peers() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=2), host="::1") as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        assert client.local_address[0] == "::"
        result = await client.query(RequestType.PING, coverage=-1)
        assert result.received >= 2
        assert result.serial == 2
        assert all(reply.address[0] == "::1" for reply in result.replies)


async def test_ipv4_mapped_peers_are_ipv4_peers() -> None:
    """Replies come from the IPv4 address, so that is the peer (else none would match)."""
    async with (
        run_responders(2, KEY, answer_ping(serial=3)) as responders,
        open_confd_client(
            KEY, [("::ffff:" + host, port) for host, port in (r.address for r in responders)]
        ) as client,
    ):
        assert client.peers == tuple(r.address for r in responders)
        assert len(client.local_address) == 2  # an IPv4 socket
        result = await client.query(RequestType.PING, coverage=-1, timeout=5)
        assert (result.received, result.serial) == (2, 3)
        client.update_peer_list(["::FFFF:7F00:1", "127.0.0.2"])
        assert client.peers == (("127.0.0.1", client.port), ("127.0.0.2", client.port))


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        ([], "empty"),
        (["127.0.0.1", "::1"], r"mix IPv4 and IPv6 addresses \(127.0.0.1 and ::1;"),
        (["0x7f000001"], r"not an IP address \(IPv4: four decimal numbers, a.b.c.d\)"),
        (["127.1:1814"], r"not an IP address \(IPv4: four decimal numbers"),
        (["::ffff:127.0.0.1", "::1"], r"IPv6 addresses \(127.0.0.1 and ::1; ::ffff:a.b.c.d counts"),
        (["not an ip"], "not an IP address or a host name"),
        (["-bad-.example"], "not an IP address or a host name"),
        (["node1:http"], "port 'http' is not a number"),
        (["300.1.1.1"], "not an IP address"),
        ([("127.0.0.1", 0)], "port of peer"),
        ([("127.0.0.1", 1, 2)], "pair"),
        ([42], "not an IP address"),
        ("127.0.0.1", "list of addresses"),
    ],
)
async def test_bad_peer_lists_are_refused(peers: object, message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        async with open_confd_client(KEY, peers):  # type: ignore[arg-type]
            pass


async def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfdClientError, match="port must be"):
        async with open_confd_client(KEY, ["127.0.0.1"], port=70000):
            pass
    with pytest.raises(ConfdClientError, match="callback must be callable"):
        async with open_confd_client(KEY, ["127.0.0.1"], callback=3):  # type: ignore[arg-type]
            pass
    with pytest.raises(ConfdClientError, match="empty"):
        async with open_confd_client(b"", ["127.0.0.1"]):
            pass
    with pytest.raises(ConfdArgumentTypeError, match=r"rng must be a random\.Random, not <class"):
        async with open_confd_client(KEY, ["127.0.0.1"], rng=random.Random):  # type: ignore[arg-type]
            pass
    with pytest.raises(
        ConfdArgumentTypeError, match=r"logger must be a logging\.Logger .*'trioconfd'"
    ):
        async with open_confd_client(KEY, ["127.0.0.1"], logger="trioconfd"):  # type: ignore[arg-type]
            pass
    mine = logging.getLogger("mine")
    async with open_confd_client(KEY, ["127.0.0.1"], logger=mine, rng=random.SystemRandom()):
        pass
    adapted = logging.LoggerAdapter(logging.LoggerAdapter(mine, {}), {})
    async with open_confd_client(KEY, ["127.0.0.1"], logger=adapted):
        pass
    with pytest.raises(ConfdArgumentTypeError, match=r"logger must be a logging\.Logger"):
        async with open_confd_client(
            KEY,
            ["127.0.0.1"],
            logger=logging.LoggerAdapter("mine", {}),  # a name, not a logger
        ):
            pass
    itself = logging.LoggerAdapter(mine, {})
    itself.logger = itself  # type: ignore[assignment]
    with pytest.raises(ConfdArgumentTypeError, match=r"logger must be a logging\.Logger"):
        async with open_confd_client(KEY, ["127.0.0.1"], logger=itself):
            pass
    with pytest.raises(ConfdArgumentTypeError, match="port must be an integer"):
        async with open_confd_client(KEY, ["127.0.0.1"], port="1814"):  # type: ignore[arg-type]
            pass
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        with pytest.raises(ConfdClientError, match="timeout"):
            await client.query(RequestType.PING, timeout=-1)
        with pytest.raises(ConfdClientError, match="unknown request type"):
            await client.query(99)


async def test_default_port_and_repeated_peers() -> None:
    async with open_confd_client(KEY, ["127.0.0.1", "127.0.0.1", ("127.0.0.1", 5)]) as client:
        assert client.port == trioconfd.default_port()
        assert client.peers == (("127.0.0.1", client.port), ("127.0.0.1", 5))


async def test_cancelled_query_leaves_nothing_behind() -> None:
    async with (
        run_responders(1, KEY) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        responders[0].delay = 0.2
        with trio.move_on_after(0.05):
            await client.query(RequestType.PING)
        assert client.outstanding == 0
        await wait_until(lambda: client.stats.unknown_salt == 1)  # the late reply, discarded
        assert client.stats.accepted == 0


async def test_late_reply_after_quorum_is_discarded_and_counted() -> None:
    async with (
        run_responders(3, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        responders[2].delay = 0.2
        result = await client.query(RequestType.PING, coverage=-1)
        assert result.received == 2
        await wait_until(lambda: client.stats.unknown_salt == 1)
        assert client.outstanding == 0


async def test_silent_peers_time_out_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        silent_cluster(3) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        start = trio.current_time()
        result = await client.query(RequestType.PING, timeout=2.5)
        assert trio.current_time() == pytest.approx(start + 2.5)
        assert result.timed_out
        assert (result.sent, result.received, result.answer) == (3, 0, None)
        start = trio.current_time()
        result = await client.query(RequestType.PING)
        assert trio.current_time() == pytest.approx(start + 10)  # the default deadline
        assert client.outstanding == 0


async def test_bad_datagrams_are_counted_and_never_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioconfd")
    upcalls: list[Upcall] = []
    async with (
        run_responders(2, KEY, silent) as responders,
        run_responders(1, KEY, silent) as strangers,
        open_confd_client(
            KEY, [r.address for r in responders], callback=upcalls.append, log_interval=0
        ) as client,
    ):
        async with client.request(RequestType.PING, coverage=-1, timeout=0.5) as replies:
            rsalt = replies.request.rsalt
            target = client.local_address[:2]
            good = pack_reply(ConfdReply(ReplyStatus.OK, "real", 5), rsalt, KEY)
            bad = [
                b"random garbage",
                b"plj0{not json",
                pack_reply(ConfdReply(ReplyStatus.OK, "forged", 99), rsalt, b"wrong key"),
                pack_reply(ConfdReply(ReplyStatus.OK, "stray", 99), "unknown-salt", KEY),
                b"plj0" + b" " * 65000,
            ]
            for datagram in bad:
                await responders[0].sock.sendto(datagram, target)
            await strangers[0].sock.sendto(good, target)  # right salt, wrong sender
            await responders[0].sock.sendto(good, target)
            await responders[0].sock.sendto(good, target)  # a duplicate
            got = [peer_reply async for peer_reply in replies]
        assert [(p.address, p.reply.answer) for p in got] == [(responders[0].address, "real")]
        assert replies.timed_out
        stats = client.stats
        assert stats.malformed == 3  # garbage, bad JSON, oversized
        assert stats.bad_signature == 1
        assert stats.unknown_salt == 1
        assert stats.unexpected_peer == 1
        assert stats.duplicate == 1
        assert stats.accepted == 1
        assert stats.received == stats.accepted + stats.discarded == 8
        assert [u.server_reply.answer for u in upcalls if u.server_reply] == ["real"]
        discards = [r for r in caplog.records if r.message.startswith("discarding")]
        assert len(discards) == stats.discarded
        assert all(r.levelno == logging.DEBUG for r in discards)
        # The receive task is still alive.
        responders[0].handler = answer_ping(3)
        responders[1].handler = answer_ping(3)
        assert (await client.query(RequestType.PING, coverage=-1)).serial == 3


async def test_oversized_datagram_is_counted_as_malformed() -> None:
    async with (
        run_responders(1, KEY, silent) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        await responders[0].sock.sendto(b"plj0" + b" " * 61500, client.local_address[:2])
        await settle(lambda: client.stats.received == 1)
        assert client.stats.malformed == 1


async def test_callback_errors_do_not_break_the_client() -> None:
    def broken(upcall: Upcall) -> None:
        raise RuntimeError("user bug")

    async with (
        run_responders(2, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders], callback=broken) as client,
    ):
        for _ in range(3):
            result = await client.query(RequestType.PING, coverage=-1)
            assert result.ok
        assert client.stats.callback_errors >= 6 - 1
        assert client.outstanding == 0


async def test_an_async_callback_is_refused_up_front() -> None:
    async def handler(upcall: Upcall) -> None:  # pragma: no cover - never called
        pass

    class Handler:
        async def __call__(self, upcall: Upcall) -> None:  # pragma: no cover
            pass

    for callback in (handler, Handler()):
        with pytest.raises(ConfdArgumentTypeError, match="callback is an async function"):
            async with open_confd_client(KEY, ["127.0.0.1"], callback=callback):
                pass  # pragma: no cover


async def test_a_coroutine_a_callback_returns_is_closed_and_counted_as_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made = []

    async def handle(upcall: Upcall) -> None:  # pragma: no cover - never run
        pass

    def callback(upcall: Upcall) -> object:
        made.append(handle(upcall))
        return made[-1]

    async with (
        run_responders(2, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders], callback=callback) as client,
    ):
        assert (await client.query(RequestType.PING, coverage=-1)).ok
        await settle(lambda: client.stats.callback_errors == len(made) >= 2)
    # Closed, never run.
    assert {inspect.getcoroutinestate(coroutine) for coroutine in made} == {"CORO_CLOSED"}
    assert "the callback returned a coroutine" in caplog.text


async def test_streaming_each_reply_as_it_arrives() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=9)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        responders[1].delay = 0.1
        responders[2].delay = 0.2
        seen = []
        async with client.request(RequestType.PING, coverage=-1) as replies:
            async for peer_reply in replies:
                seen.append((peer_reply.address, replies.quorum_reached))
        assert [address for address, _ in seen] == [r.address for r in responders]
        assert [reached for _, reached in seen] == [False, True, True]
        assert not replies.timed_out
        assert replies.result().received == 3


@pytest.mark.parametrize("timeout", [5.0, math.inf])
async def test_every_reader_of_a_stream_stops_once_every_peer_has_replied(
    timeout: float,
) -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=9)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        for index, responder in enumerate(responders):
            responder.delay = 0.05 * index
        read: dict[str, int] = {}
        start = trio.current_time()
        async with client.request(RequestType.PING, coverage=-1, timeout=timeout) as replies:

            async def reader(name: str) -> None:
                read[name] = 0
                async for _ in replies:
                    read[name] += 1

            with trio.fail_after(3):  # without the stop, one reader waits for ever
                async with trio.open_nursery() as nursery:
                    for name in "abc":
                        nursery.start_soon(reader, name)
        assert sum(read.values()) == 3  # each reply read once, by one reader
        assert trio.current_time() - start < 1
        assert not replies.timed_out
        result = replies.result()
        assert (result.received, result.timed_out) == (3, False)
        # The end that stopped the others was never a reply: the channel went back empty.
        assert (await client.query(RequestType.PING, coverage=-1)).received == 2


async def test_a_streams_verdict_counts_the_replies_not_read_yet() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=4)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        async with client.request(RequestType.PING, coverage=-1) as replies:
            await settle(lambda: client.stats.accepted == 3)
            result = replies.result()  # none read yet
            assert (result.received, result.quorum_reached, result.serial) == (3, True, 4)
            # Counted, and still yielded, each once.
            got = [peer_reply.address async for peer_reply in replies]
            assert sorted(got) == sorted(r.address for r in responders)
            assert replies.result().received == 3
        async with client.request(RequestType.PING, coverage=-1) as replies:
            await settle(lambda: client.stats.accepted == 6)
        # Left unread: the verdict after the block counts them too.
        assert replies.result().received == 3


async def test_a_stream_given_no_time_says_it_timed_out() -> None:
    async with (
        run_responders(3, KEY, answer_ping(serial=4)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        async with client.request(RequestType.PING, coverage=-1, timeout=0) as replies:
            assert [peer_reply async for peer_reply in replies] == []
        assert replies.timed_out
        assert replies.result().timed_out


async def test_one_shot_query() -> None:
    async with run_responders(3, KEY, answer_ping(serial=6)) as responders:
        result = await trioconfd.query(KEY, [r.address for r in responders], RequestType.PING)
        assert (result.serial, result.sent) == (6, 3)
        host, port = responders[0].address
        result = await trioconfd.query(KEY.decode(), [host], 0, port=port, timeout=2)
        assert result.ok


async def test_request_object_and_query_argument_are_exclusive() -> None:
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        with pytest.raises(ConfdClientError, match="either"):
            await client.query(ConfdRequest(RequestType.PING), "x")


async def test_local_address_is_bound() -> None:
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        host, port = client.local_address[:2]
        assert host == "0.0.0.0"
        assert port > 0
        probe = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            await probe.sendto(b"x", ("127.0.0.1", port))
            await settle(lambda: client.stats.malformed == 1)


async def test_errors_in_the_block_propagate_unwrapped() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with open_confd_client(KEY, ["127.0.0.1"]):
            raise KeyError("mine")
    with trio.move_on_after(0.01) as scope:
        async with open_confd_client(KEY, ["127.0.0.1"]):
            await trio.sleep_forever()
    assert scope.cancelled_caught
