"""A stream's readers at its edges: its block's exit, its deadline, several at once."""

from __future__ import annotations

import math
import random

import pytest
import trio
import trio.testing

import trioconfd
from trioconfd import (
    AdmissionPolicy,
    ConfdRequestEndedError,
    RequestType,
    open_confd_client,
)
from trioconfd.client._stream import ReplyStream
from trioconfd.testing import Faults, make_cluster_config, open_simulated_cluster
from trioconfd.testing._simulated_run import _trio_scheduler_random

KEY = b"stream edges key"
CONFIG = make_cluster_config()


async def _read_to_the_end(stream: ReplyStream) -> None:
    try:
        async for _ in stream:
            pass
    except ConfdRequestEndedError:
        pass  # its block exited first


def _in_use(client: trioconfd.ConfdClient) -> list[int]:
    return [window.window.in_use for window in client._router.admission.windows.values()]


async def _reader_woken_as_the_block_exits() -> tuple[list[int], int, bool]:
    async with open_simulated_cluster([CONFIG], KEY) as cluster:
        cluster.crash(0)
        async with open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            admission=AdmissionPolicy(initial=1, minimum=1, maximum=1),
        ) as client:
            async with (
                trio.open_nursery() as nursery,
                client.request(RequestType.CLUSTER_MASTER, timeout=2) as stream,
            ):
                nursery.start_soon(_read_to_the_end, stream)
                # The block exits as the reader wakes to send again.
                await trio.sleep_until(stream._exchange.wake_at)
            sent_again = client.stats.retransmitted + client.stats.held_back
            in_use = _in_use(client)
            cluster.restart(0)
            result = await client.query(RequestType.CLUSTER_MASTER, timeout=1)
            return in_use, sent_again, result.saturated


@pytest.mark.parametrize("seed", range(6))
def test_a_reader_woken_as_its_streams_block_exits_sends_nothing_more(seed: int) -> None:
    # Whichever of the two Trio runs first in that batch (the scheduler's
    # seed): the reader must not send once the request has ended. It did in
    # half the seeds, and took a place in the window that never came back, so
    # every later query to that peer was saturated.
    _trio_scheduler_random.seed(seed)
    in_use, sent_again, saturated = trio.run(
        _reader_woken_as_the_block_exits, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert in_use == [0]
    assert sent_again <= 1  # at most the one due, if the reader ran first
    assert not saturated


async def _resending_to_three_as_the_block_exits() -> tuple[int, int]:
    async with open_simulated_cluster([CONFIG] * 3, KEY) as cluster:
        for index in range(3):
            cluster.crash(index)

        def sent() -> int:
            return sum(cluster.stats(index)["lost_while_down"] for index in range(3))

        async with open_confd_client(KEY, cluster.peers, port=cluster.port) as client:
            async with trio.open_nursery() as nursery:
                request = client.request(RequestType.CLUSTER_MASTER, coverage=-1, timeout=2)
                async with request as stream:
                    nursery.start_soon(_read_to_the_end, stream)
                    await trio.sleep_until(stream._exchange.wake_at)
                at_exit = sent()
            return at_exit, sent()


@pytest.mark.parametrize("seed", range(10))
def test_copies_still_to_go_as_a_streams_block_exits_never_go(seed: int) -> None:
    # The reader's copies to three peers go one after another, each send
    # yielding: the block may exit between two of them. Those after it went
    # anyway (two datagrams, in about half the seeds).
    _trio_scheduler_random.seed(seed)
    at_exit, after = trio.run(
        _resending_to_three_as_the_block_exits, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert after == at_exit


async def test_an_ended_requests_send_due_sends_nothing_and_takes_no_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulated_cluster([CONFIG], KEY) as cluster:
        cluster.crash(0)
        async with open_confd_client(KEY, cluster.peers, port=cluster.port) as client:
            async with client.request(RequestType.CLUSTER_MASTER, timeout=5) as stream:
                in_flight = stream._exchange
                await trio.sleep_until(in_flight.wake_at - 0.01)
            await trio.sleep(1)  # the retransmission is long due
            await in_flight.send_due()
            assert client.stats.retransmitted + client.stats.held_back == 0
            assert _in_use(client) == [0]


async def test_several_readers_of_replies_counted_before_they_read_each_get_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three replies in the channel, three readers: the first moves all three
    # to the stream's own list; the others each checkpoint before taking one
    # from it, and one found it emptied meanwhile (IndexError).
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        read: list[int] = []
        async with client.request(RequestType.CLUSTER_MASTER, coverage=-1) as stream:
            await trio.sleep(0.1)  # all three replies wait in the channel

            async def reader() -> None:
                async for _ in stream:
                    read.append(1)

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(reader)
        assert len(read) == 3
        assert stream.result().received == 3


async def test_a_reply_after_a_streams_deadline_is_not_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulated_cluster([CONFIG] * 2, KEY) as cluster:
        cluster.set_faults(1, to_client=Faults(delay=1.0, delay_range=(0.3, 0.3)))
        async with (
            open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
            client.request(RequestType.CLUSTER_MASTER, timeout=0.2) as stream,
        ):
            got = [peer_reply.address async for peer_reply in stream]
            assert got == [cluster.peers[0]]
            assert stream.timed_out
            late_before = client.stats.unknown_salt
            await trio.sleep(0.5)  # the second peer's reply comes now, too late
            assert client.stats.unknown_salt > late_before  # (its copy sent again too)
            assert client.stats.accepted == 1
            result = stream.result()
            # The verdict is the deadline's: one reply, no quorum of two.
            assert (result.received, result.quorum_reached, result.timed_out) == (1, False, True)
            # An iteration that has ended stays ended.
            assert [peer_reply async for peer_reply in stream] == []


async def test_a_streams_verdict_with_its_quorum_is_not_timed_out_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two of three answer: the stream reads on to its deadline for the third
    # (its iteration ends timed out), but the verdict had its quorum in time.
    async with open_simulated_cluster([CONFIG] * 3, KEY) as cluster:
        cluster.crash(2)
        async with open_confd_client(KEY, cluster.peers, port=cluster.port) as client:
            async with client.request(RequestType.CLUSTER_MASTER, coverage=-1, timeout=1) as stream:
                got = [peer_reply async for peer_reply in stream]
            assert len(got) == 2
            assert stream.timed_out
            result = stream.result()
            assert (result.received, result.quorum_reached, result.timed_out) == (2, True, False)


async def test_a_stream_nobody_read_past_its_deadline_says_it_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_simulated_cluster([CONFIG] * 3, KEY) as cluster:
        for index in (1, 2):
            cluster.crash(index)
        async with open_confd_client(KEY, cluster.peers, port=cluster.port) as client:
            async with client.request(RequestType.CLUSTER_MASTER, coverage=-1, timeout=1) as stream:
                await trio.sleep(0.5)
                during = stream.result()
                await trio.sleep(1)
                after_deadline = stream.result()
            after_block = stream.result()
    assert (during.received, during.timed_out) == (1, False)  # the verdict so far
    assert (after_deadline.received, after_deadline.timed_out) == (1, True)
    assert (after_block.received, after_block.timed_out) == (1, True)


@pytest.mark.parametrize("timeout", [0.0, 1e-9, math.inf])
async def test_stream_edges_leave_nothing_behind(
    autojump_clock: trio.testing.MockClock, timeout: float
) -> None:
    async with open_simulated_cluster([CONFIG] * 3, KEY, seed=3) as cluster:
        cluster.crash(1)
        async with open_confd_client(
            KEY, cluster.peers, port=cluster.port, rng=random.Random(3)
        ) as client:
            with trio.move_on_after(2):
                request = client.request(RequestType.CLUSTER_MASTER, coverage=-1, timeout=timeout)
                async with request as stream, trio.open_nursery() as nursery:
                    for _ in range(2):
                        nursery.start_soon(_read_to_the_end, stream)
            assert client.outstanding == 0
            assert _in_use(client) == [0, 0, 0]
