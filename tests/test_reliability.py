"""Loss, hostile datagrams, floods and cancellation, against in-process peers."""

from __future__ import annotations

import gc
import logging
import os
import random
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from trioconfd import (
    MAGIC,
    ConfdClientError,
    ConfdReply,
    ConfdRequest,
    HmacKey,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    Upcall,
    open_confd_client,
)
from trioconfd.protocol import pack_reply
from trioconfd.testing import (
    Faults,
    SimulatedCluster,
    make_cluster_config,
    open_confd_server,
    open_simulated_cluster,
)

from .responders import Responder, answer_ping, run_responders, settle, silent, wait_until

KEY = b"reliability key\n"
CONFIG = make_cluster_config(serial=21)


async def lose_the_first_try(cluster: SimulatedCluster, until: float = 0.05) -> None:
    """Cut every peer off until ``until`` seconds from now: the first datagrams are lost."""
    cluster.partition([])
    await trio.sleep(until)
    cluster.heal()


async def test_silent_peers_are_asked_again_with_the_same_rsalt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(lose_the_first_try, cluster)
        start = trio.current_time()
        result = await client.query(RequestType.PING, timeout=5)
        # Asked again at exactly 0.1 s; the quorum a round trip later.
        assert trio.current_time() - start == pytest.approx(0.1, abs=0.001)
        assert result.ok
        assert result.received == 2
        assert client.stats.retransmitted == 3
        # Each peer answered the second copy once, and those answers counted
        # for the query: the copy carried the first one's rsalt.
        assert [cluster.stats(i)["answered"] for i in range(3)] == [1, 1, 1]
        assert client.stats.accepted == 2
        # Off, the same loss is final.
        nursery.start_soon(lose_the_first_try, cluster)
        start = trio.current_time()
        result = await client.query(RequestType.PING, timeout=0.5, retry=RetryPolicy.off())
        assert trio.current_time() - start == pytest.approx(0.5)
        assert result.timed_out
        assert client.stats.retransmitted == 3
        assert client.outstanding == 0


async def test_retry_off_for_the_whole_client(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulated_cluster([CONFIG], KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=RetryPolicy.off()) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(lose_the_first_try, cluster)
        assert (await client.query(RequestType.PING, timeout=0.4)).timed_out
        nursery.start_soon(lose_the_first_try, cluster)
        assert (await client.query(RequestType.PING, timeout=5, retry=RetryPolicy())).ok
        assert client.stats.retransmitted == 1


class FirstPeers(random.Random):
    """Samples and choices take the first peers, so a test knows who is asked."""

    def sample(self, population: Sequence[Any], k: int, **kwargs: Any) -> list[Any]:
        return list(population)[:k]

    def choice(self, seq: Any) -> Any:
        return seq[0]


async def test_hedging_asks_peers_outside_a_silent_sample(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fast = RetryPolicy(initial=0.02, max_interval=0.05, hedge_after=0.05)
    async with (
        open_simulated_cluster([CONFIG] * 5, KEY) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, retry=fast, rng=FirstPeers()
        ) as client,
    ):
        cluster.crash(0)
        cluster.crash(1)  # the sample (the first two peers) stays silent
        start = trio.current_time()
        result = await client.query(RequestType.PING, coverage=2, timeout=5)
        # Sent at 0 and 0.02; at 0.05 (hedging is due) peer 2 is asked too,
        # at 0.10 (a max_interval on) peer 3; its reply, a round trip later,
        # makes the quorum.
        assert trio.current_time() - start == pytest.approx(0.10, abs=0.002)
        assert not result.timed_out
        assert (result.needed, result.received, result.sent) == (2, 2, 4)
        assert {reply.address for reply in result.replies} == set(cluster.peers[2:4])
        assert client.stats.hedged == 2
        without = RetryPolicy(initial=0.02, max_interval=0.05, hedge_after=None)
        start = trio.current_time()
        result = await client.query(RequestType.PING, coverage=2, timeout=0.3, retry=without)
        assert trio.current_time() - start == pytest.approx(0.3)
        assert result.timed_out
        assert result.sent == 2


async def test_thirty_percent_loss_each_way_still_reaches_quorum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    loss = Faults(drop=0.3)
    async with (
        open_simulated_cluster(
            [CONFIG] * 3, KEY, seed=1, to_server=loss, to_client=loss
        ) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        results = []

        async def one_query() -> None:
            start = trio.current_time()
            results.append(await client.query(RequestType.CLUSTER_MASTER, timeout=3))
            assert trio.current_time() - start <= 3

        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(one_query)
        failures = [r for r in results if not r.ok]
        # Eight tries per peer in 3 s: a miss is about a 1-in-10,000 event.
        assert len(failures) <= 1, [r.verdict for r in failures]
        assert all(r.answer == "node1.example.com" for r in results if r.ok)
        assert all(len({p.address for p in r.replies}) == r.received for r in results)
        assert cluster.stats(0)["to_server"].dropped > 0
        assert client.stats.retransmitted > 0
        assert client.outstanding == 0


async def test_a_down_peer_does_not_break_queries() -> None:
    closed = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await closed.bind(("127.0.0.1", 0))
    down = closed.getsockname()
    closed.close()  # nothing listens there now: the kernel answers ICMP unreachable
    async with (
        run_responders(2, KEY) as responders,
        open_confd_client(KEY, [down, *(r.address for r in responders)]) as client,
    ):
        for _ in range(5):
            result = await client.query(RequestType.PING, coverage=-1, timeout=5)
            assert result.quorum_reached
            assert down not in {reply.address for reply in result.replies}


async def test_hostile_datagrams_while_queries_run() -> None:
    upcalls: list[Upcall] = []
    async with (
        run_responders(2, KEY) as responders,
        run_responders(1, KEY, silent) as strangers,
        open_confd_client(KEY, [r.address for r in responders], callback=upcalls.append) as client,
    ):
        first = await client.query(RequestType.PING, coverage=-1)
        assert first.received == 2
        # Byte for byte the reply responder 0 sent to the first query.
        genuine = pack_reply(
            ConfdReply(ReplyStatus.OK, "answer from 0", 0), first_rsalt(responders), KEY
        )
        for r in responders:
            r.delay = 0.3  # keep the next query open while the attack runs
        target = client.local_address[:2]
        async with client.request(RequestType.PING, coverage=-1, timeout=5) as replies:
            live = replies.request.rsalt
            attacks = {
                "random bytes": os.urandom(64),
                "wrong magic": b"plj1" + genuine[4:],
                "bad JSON": MAGIC + b"{nope",
                "wrong HMAC": pack_reply(
                    ConfdReply(ReplyStatus.OK, "evil", 999), live, KEY
                ).replace(b'"hmac":"', b'"hmac":"0', 1),
                "other key": pack_reply(ConfdReply(ReplyStatus.OK, "evil", 999), live, b"other"),
                "replay": genuine,
                # Signed with another key, for no request in flight: dropped
                # on its envelope, before its signature is checked.
                "stray": genuine.replace(b'"hmac":"', b'"hmac":"0', 1),
                "oversized": MAGIC + b" " * 62000,
            }
            for datagram in attacks.values():
                await responders[0].sock.sendto(datagram, target)
            forged = pack_reply(ConfdReply(ReplyStatus.OK, "evil", 999), live, KEY)
            await strangers[0].sock.sendto(forged, target)  # the right key, an unasked address
            got = [peer_reply async for peer_reply in replies]
        assert sorted(p.address for p in got) == sorted(r.address for r in responders)
        assert {p.reply.answer for p in got} == {"answer from 0", "answer from 1"}
        stats = client.stats
        assert stats.malformed == 4  # random bytes, wrong magic, bad JSON, oversized
        assert stats.bad_signature == 2  # wrong HMAC, other key
        assert stats.unknown_salt == 2  # the replay, the stray
        assert stats.unexpected_peer == 1
        assert stats.accepted == 4
        assert stats.received == stats.accepted + stats.discarded == 13
        assert all(u.server_reply and u.server_reply.answer != "evil" for u in upcalls)
        assert client.outstanding == 0


def first_rsalt(responders: list[Responder]) -> str:
    return responders[0].requests[0].rsalt


FLOOD = r"""
import os, random, socket, sys, json
sys.path.insert(0, sys.argv[3])
from trioconfd import ConfdReply, ReplyStatus, pack_reply
port, count = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(5)
def reply(answer, key):
    return pack_reply(ConfdReply(ReplyStatus.OK, answer, 1), os.urandom(8).hex(), key)
forged = [reply("x" * rng.randrange(100), b"another key") for _ in range(64)]
signed = [reply("y", sys.argv[4].encode()) for _ in range(64)]
junk = [os.urandom(rng.randrange(1, 300)) for _ in range(64)] + [b"plj0" + os.urandom(50)] * 8
pool = forged + signed + junk
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for i in range(count):
        s.sendto(pool[i % len(pool)], ("127.0.0.1", port))
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
async def test_flood_of_garbage_during_live_queries() -> None:
    count = 100_000
    async with (
        open_confd_server(CONFIG, KEY) as one,
        open_confd_server(CONFIG, KEY) as two,
        open_confd_client(KEY, [one.address, two.address]) as client,
    ):
        for _ in range(200):  # warm up caches and allocator pools
            await client.query(RequestType.PING)
        gc.collect()
        before = rss_bytes()
        port = client.local_address[1]
        flood = await trio.lowlevel.open_process(
            [sys.executable, "-c", FLOOD, str(port), str(count), os.getcwd(), KEY.decode()]
        )
        answered = 0
        while flood.returncode is None:
            result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
            assert result.ok, result.verdict
            answered += 1
        await flood.wait()
        assert flood.returncode == 0
        assert client.socket_drops() is not None
        # Every flood datagram is accounted for: read and discarded, or
        # dropped by the kernel and counted there (late replies to queries
        # already decided are discarded too, hence at least).
        await wait_until(lambda: client.stats.discarded + (client.socket_drops() or 0) >= count)
        gc.collect()
        growth = rss_bytes() - before
        stats = client.stats
        # The forged replies carry salts no query awaits: each is dropped on
        # its envelope, its signature never checked.
        assert stats.bad_signature == 0
        assert stats.unknown_salt > 0
        assert stats.malformed > 0
        assert answered > 0
        # 100,000 datagrams kept even at 100 bytes each would be 10 MB.
        assert growth < 4 * 1024 * 1024, growth
        assert client.outstanding == 0


class CancelAtStep(trio.abc.Instrument):
    """Cancel a scope just after a task's Nth step, while it waits at a checkpoint."""

    def __init__(self, task: trio.lowlevel.Task, step: int, scope: trio.CancelScope) -> None:
        self.task, self.step, self.scope, self.seen = task, step, scope, 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.seen += 1
            if self.seen == self.step:
                self.scope.cancel()


async def _cancel_everywhere(
    client: Any, make_call: Callable[[], Any], check: Callable[[], None]
) -> int:
    """Run ``make_call`` cancelled at step 1, 2, … until it finishes uncancelled."""
    step = 0
    while True:
        step += 1
        done = False

        async def victim(
            at: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            nonlocal done
            with trio.CancelScope() as scope:
                instrument = CancelAtStep(trio.lowlevel.current_task(), at, scope)
                trio.lowlevel.add_instrument(instrument)
                try:
                    task_status.started()
                    await make_call()
                    done = True
                finally:
                    trio.lowlevel.remove_instrument(instrument)

        async with trio.open_nursery() as nursery:
            await nursery.start(victim, step)
        check()
        if done:
            return step


async def test_cancellation_at_every_checkpoint_leaves_nothing_behind() -> None:
    async with (
        run_responders(3, KEY, answer_ping(2)) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        # Ganeti's API keeps a request whose send completed until it expires
        # (10 s, longer than this test): those, and nothing else, stay.
        kept: list[ConfdRequest] = []

        def check() -> None:
            assert client.outstanding == len(kept)

        async def one_query() -> None:
            await client.query(RequestType.PING, coverage=-1, timeout=5)

        async def one_stream() -> None:
            async with client.request(RequestType.PING, coverage=-1, timeout=5) as replies:
                async for _ in replies:
                    pass

        async def send_and_wait() -> None:
            request = ConfdRequest(RequestType.PING)
            await client.send_request(request, coverage=-1)
            kept.append(request)
            await client.wait_for_reply(request.rsalt, timeout=5)

        for call in (one_query, one_stream, send_and_wait):
            steps = await _cancel_everywhere(client, call, check)
            assert steps > 1  # the call really was cancelled at one point or more
            result = await client.query(RequestType.PING, coverage=-1, timeout=5)
            assert result.ok  # and the client still works


async def test_an_error_in_the_callers_block_forgets_the_request() -> None:
    async with (
        run_responders(2, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
    ):
        with pytest.raises(RuntimeError, match="caller bug"):
            async with client.request(RequestType.PING, timeout=5):
                raise RuntimeError("caller bug")
        assert client.outstanding == 0


async def test_outstanding_requests_are_bounded() -> None:
    async with (
        run_responders(1, KEY, silent) as responders,
        open_confd_client(KEY, [responders[0].address], max_outstanding=3) as client,
    ):
        for _ in range(3):
            await client.send_request(ConfdRequest(RequestType.PING))
        with pytest.raises(ConfdClientError, match="3 requests are outstanding"):
            await client.query(RequestType.PING)
        assert client.stats.refused == 1
        assert client.outstanding == 3
    with pytest.raises(ConfdClientError, match="max_outstanding"):
        async with open_confd_client(KEY, ["127.0.0.1"], max_outstanding=0):
            pass


async def test_the_key_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = b"super-secret-key-material"
    caplog.set_level(logging.DEBUG)
    async with (
        run_responders(2, secret) as responders,
        open_confd_client(secret, [r.address for r in responders]) as client,
    ):
        await client.query(RequestType.PING)
        await responders[0].sock.sendto(b"garbage", client.local_address[:2])
        forged = pack_reply(ConfdReply(ReplyStatus.OK, 1, 1), "x", b"other")
        await responders[0].sock.sendto(forged, client.local_address[:2])
        await settle(lambda: client.stats.discarded == 2)
        shown = [repr(client), repr(client.stats), repr(HmacKey(secret))]
    with pytest.raises(ConfdClientError) as refused:
        async with open_confd_client(secret, ["not an address"]):
            pass
    shown += [r.getMessage() for r in caplog.records] + [str(refused.value)]
    assert not any(secret.decode() in text for text in shown)


def test_verdicts_say_what_happened() -> None:
    from trioconfd import ReplyAggregator

    silent_result = ReplyAggregator(3).result(timed_out=True)
    assert silent_result.verdict.startswith(
        "timed out: 0 of 3 peers replied, 2 needed; none of the 3 peers asked sent anything back"
    )
    assert "a wrong key" in silent_result.verdict
    partial = ReplyAggregator(3)
    partial.add(("192.0.2.1", 1), ConfdReply(ReplyStatus.OK, 1, 1))
    assert partial.result().verdict == "no quorum: 1 of 3 peers replied, 2 needed"
    assert partial.result(timed_out=True).verdict.startswith(
        "timed out: 1 of 3 peers replied, 2 needed; 2 peers sent nothing back"
    )
    partial.add(("192.0.2.2", 1), ConfdReply(ReplyStatus.OK, 1, 1))
    assert partial.result().verdict == "quorum reached: 2 of 3 peers replied, 2 needed"
