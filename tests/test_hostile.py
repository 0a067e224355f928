"""Hostile and careless use: costly garbage, replays, odd addresses, deep answers,
slow callbacks, floods of discards."""

from __future__ import annotations

import gc
import itertools
import socket
import time

import pytest
import trio

from trioconfd import (
    ConfdClient,
    ConfdClientError,
    ConfdReply,
    ConfdRequest,
    QueryResult,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    open_confd_client,
    pack_reply,
)

from .garbage import COSTLY_GARBAGE
from .responders import Handler, run_responders, wait_until

KEY = b"hostile key\n"


def client_address(client: ConfdClient) -> tuple[str, int]:
    """Where the client's replies go, on loopback."""
    return ("127.0.0.1", client.local_address[1])


async def test_queries_reach_their_quorum_while_costly_garbage_floods_in() -> None:
    """Bursts of the costliest garbage: every query still ends with a quorum, and no
    scheduler round spends more than 2 ms of CPU (a general JSON parse of one such
    datagram took 2.5 to 15 ms, on every round a burst lasted).

    The stall is measured in this thread's CPU time, so that other processes on
    a busy machine cannot add to it; the collector is off while it is measured.
    """
    garbage = itertools.cycle(COSTLY_GARBAGE.values())
    rounds = 0
    longest = 0.0
    bursts_done = trio.Event()

    async def tick() -> None:
        nonlocal rounds, longest
        last = time.thread_time()
        while not bursts_done.is_set():
            await trio.lowlevel.checkpoint()
            now = time.thread_time()
            longest = max(longest, now - last)
            last = now
            rounds += 1

    async def flood(target: tuple[str, int]) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            for _ in range(20):
                for datagram in itertools.islice(garbage, 64):
                    await attacker.sendto(datagram, target)
                await trio.sleep(0.005)
        bursts_done.set()

    async with (
        run_responders(3, KEY) as responders,
        open_confd_client(KEY, [r.address for r in responders], retry=RetryPolicy.off()) as client,
    ):
        target = client_address(client)
        results = []
        gc.disable()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                nursery.start_soon(flood, target)
                while not bursts_done.is_set():
                    results.append(await client.query(RequestType.PING, timeout=5))
        finally:
            gc.enable()
        assert results
        assert all(result.ok for result in results)
        assert client.stats.malformed >= 64  # the garbage did arrive, and was counted
        assert client.stats.accepted >= 2 * len(results)  # each reached its quorum of 2
        assert rounds > 1000
        assert longest < 0.002, f"a scheduler round took {longest * 1e3:.1f} ms of CPU"


# -- a request is sent once: replies to it never answer another send -----------


async def test_a_reused_request_is_sent_renewed_so_a_captured_reply_cannot_answer_it() -> None:
    answering = True

    def first_only(request: ConfdRequest, index: int) -> ConfdReply | None:
        return ConfdReply(ReplyStatus.OK, "first answer", 5) if answering else None

    async with (
        run_responders(1, KEY, first_only) as (peer,),
        open_confd_client(KEY, [peer.address], retry=RetryPolicy.off()) as client,
    ):
        request = ConfdRequest(RequestType.CLUSTER_MASTER)
        first = await client.query(request, timeout=5)
        assert first.answer == "first answer"
        assert request.sent
        # What an eavesdropper kept of the first exchange.
        captured = pack_reply(ConfdReply(ReplyStatus.OK, "first answer", 5), request.rsalt, KEY)
        answering = False
        async with trio.open_nursery() as nursery:
            results = []

            async def ask_again() -> None:
                results.append(await client.query(request, timeout=0.5))

            nursery.start_soon(ask_again)
            await wait_until(lambda: len(peer.requests) == 2)
            # Replayed from the peer's own address, as a late duplicate would come.
            await peer.sock.sendto(captured, client_address(client))
        (result,) = results
        assert result.timed_out
        assert result.received == 0
        assert client.stats.unknown_salt == 1
        assert peer.requests[1].rsalt != request.rsalt  # sent renewed
        assert peer.requests[1].type == request.type
        assert peer.requests[1].query == request.query


async def test_send_request_refuses_a_request_sent_before() -> None:
    async with run_responders(1, KEY) as (peer,), open_confd_client(KEY, [peer.address]) as client:
        request = ConfdRequest(RequestType.PING)
        await client.send_request(request)
        with pytest.raises(ConfdClientError, match=r"was sent before.*renewed"):
            await client.send_request(request)
        await client.query(request, timeout=5)  # a query sends it renewed
        await client.send_request(request.renewed())
        assert client.outstanding == 2
        await wait_until(lambda: len(peer.requests) == 3)
        assert len({r.rsalt for r in peer.requests if r.type is RequestType.PING}) == 3


def test_renewed_is_the_same_question_under_a_fresh_rsalt() -> None:
    request = ConfdRequest(RequestType.NODE_ROLE_BYNAME, "node1", rsalt="mine")
    assert not request.sent
    request.mark_sent()
    renewed = request.renewed()
    assert (renewed.type, renewed.query, renewed.protocol) == (
        request.type,
        request.query,
        request.protocol,
    )
    assert renewed.rsalt != "mine"
    assert not renewed.sent
    assert request.sent
    # Being sent is not part of the value: equal, same hash, same repr.
    assert request == ConfdRequest(RequestType.NODE_ROLE_BYNAME, "node1", rsalt="mine")
    assert "sent" not in repr(request)


# -- answers nested as deep as the decoder allows ------------------------------


def sending(text: str) -> Handler:
    """A peer that answers every request with the message ``text``, signed."""

    def handler(request: ConfdRequest, index: int) -> str:
        return text

    return handler


async def test_deeply_nested_signed_answers_never_raise_from_a_query() -> None:
    """A query made deep down a task's stack compares its replies there.

    Replies nested as deeply as the receive task could decode them once made
    ``==`` raise RecursionError out of the query; now they are compared anyway.
    """

    async def deep_down(levels: int) -> QueryResult:
        if levels == 0:
            return await client.query(RequestType.PING, coverage=-1, timeout=0.5)
        return await deep_down(levels - 1)

    for depth in (400, 900, 950, 980, 1000, 5000):
        text = '{"protocol":1,"status":0,"answer":%s,"serial":1}' % ("[" * depth + "]" * depth)
        async with (
            run_responders(3, KEY, sending(text)) as responders,
            open_confd_client(
                KEY, [r.address for r in responders], retry=RetryPolicy.off()
            ) as client,
        ):
            result = await deep_down(100)
            # Decoded and counted, or too deep to decode and discarded.
            if client.stats.malformed:
                assert result.received == 0
                assert result.timed_out
            else:
                assert result.ok
                assert result.consistent
