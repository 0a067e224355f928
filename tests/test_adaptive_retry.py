"""Retransmission that adapts to each peer's round trips, as TCP's does."""

from __future__ import annotations

import contextlib
import math
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioconfd import (
    AdmissionPolicy,
    ConfdClient,
    ConfdClientError,
    ConfdReply,
    ConfdRequest,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    Upcall,
    open_confd_client,
)
from trioconfd.client._gather import RequestInFlight
from trioconfd.protocol import HmacKey, pack_reply, unpack_request
from trioconfd.testing import Faults, make_cluster_config, open_confd_server, open_simulated_cluster
from trioconfd.testing._simnet import SimulatedSocket

from .responders import ANSWER_PING, Handler, Responder, run_responders, silent

KEY = b"adaptive key\n"
ADAPTIVE = RetryPolicy(adaptive=True)
CONFIG = make_cluster_config(nodes=3)


# -- the policy ----------------------------------------------------------------


@given(
    st.builds(
        RetryPolicy,
        initial=st.floats(1e-3, 10),
        multiplier=st.floats(1, 10),
        max_interval=st.floats(1e-3, 10),
        max_timeout=st.floats(1e-3, 100),
        adaptive=st.just(True),
    ),
    st.integers(1, 10_000),
    st.floats(0, 1e6),
)
def test_adaptive_intervals_stay_within_the_policys_bounds(
    policy: RetryPolicy, retransmission: int, timeout: float
) -> None:
    scheduled = policy.interval(retransmission)
    interval = policy.interval_for(retransmission, timeout)
    assert interval >= scheduled  # never sooner than the schedule
    assert interval <= max(scheduled, policy.max_timeout)
    assert interval == max(scheduled, min(timeout, policy.max_timeout))
    fixed = RetryPolicy(
        initial=policy.initial,
        multiplier=policy.multiplier,
        max_interval=policy.max_interval,
        adaptive=False,
    )
    assert fixed.interval_for(retransmission, timeout) == fixed.interval(retransmission)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_timeout": 0}, "max_timeout must be a positive number"),
        ({"max_timeout": math.inf}, "max_timeout must be finite"),
        ({"adaptive": 1}, "adaptive must be True or False"),
    ],
)
def test_bad_adaptive_settings_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        RetryPolicy(**arguments)  # type: ignore[arg-type]


# -- the client, in simulated time --------------------------------------------


async def _retransmissions_to_slow_peers(policy: RetryPolicy, queries: int) -> tuple[int, int]:
    """(retransmissions, queries that reached their quorum) against peers 250-300 ms away."""
    slow = Faults(delay=1.0, delay_range=(0.25, 0.3))
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY, to_client=slow) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=policy) as client,
    ):
        ok = 0
        for _ in range(queries):
            result = await client.query(RequestType.PING, coverage=-1, timeout=5)
            ok += result.ok
        return client.stats.retransmitted, ok


async def test_slow_peers_are_not_hammered(autojump_clock: trio.testing.MockClock) -> None:
    adaptive, adaptive_ok = await _retransmissions_to_slow_peers(RetryPolicy(adaptive=True), 30)
    fixed, fixed_ok = await _retransmissions_to_slow_peers(RetryPolicy(adaptive=False), 30)
    assert adaptive_ok == fixed_ok == 30
    # The fixed schedule asks all three again at 0.1 s, every time.
    assert fixed == 30 * 3
    # Adaptive: the first queries learn the round trip; then none is asked twice.
    assert adaptive <= 9, adaptive


async def test_the_learned_timeout_is_per_peer(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=ADAPTIVE) as client,
    ):
        for _ in range(5):
            assert (await client.query(RequestType.PING, coverage=-1)).ok
        estimates = client._router.rtt
        assert set(estimates) <= set(cluster.peers)
        measured = [estimate.srtt for estimate in estimates.values() if estimate.srtt is not None]
        assert len(measured) >= 2  # the quorum's, at least
        for srtt in measured:
            assert srtt < 0.01  # the simulated network's 0.2 ms each way
        client.update_peer_list(cluster.peers[:1])
        assert set(client._router.rtt) <= {cluster.peers[0]}  # forgotten with their peers


async def test_lossy_peers_keep_the_schedules_pace(autojump_clock: trio.testing.MockClock) -> None:
    # Lost datagrams look like silence, and silence stretches no timeout:
    # retries under loss are as frequent as without adapting. (Admission is
    # off: its windows, halved by the loss, would make some of the 200 wait,
    # and the pace of retries is what is tested here.)
    lossy = Faults(drop=0.3)
    async with (
        open_simulated_cluster(
            [CONFIG] * 3, KEY, to_server=lossy, to_client=lossy, seed=3
        ) as cluster,
        open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            retry=ADAPTIVE,
            admission=AdmissionPolicy.off(),
        ) as client,
    ):
        results = []
        async with trio.open_nursery() as nursery:

            async def one() -> None:
                results.append(await client.query(RequestType.PING, coverage=-1, timeout=3))

            for _ in range(200):
                nursery.start_soon(one)
        # 99%: which copies the loss takes depends on Trio's shuffled order of
        # runnable tasks too, and one run in about forty loses a query's
        # every copy for 3 s.
        assert sum(result.ok for result in results) >= 198
        assert client._router.rtt  # measured
        for estimate in client._router.rtt.values():
            assert estimate.timeout <= 60


def _receive_buffer(sock: trio.socket.SocketType) -> int:
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


async def test_the_server_asks_for_a_large_receive_buffer() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = _receive_buffer(plain)
    async with open_confd_server(CONFIG, KEY) as server:
        granted = _receive_buffer(server._socket)
    # Linux doubles what it grants; it grants up to net.core.rmem_max.
    assert granted > default


async def test_a_query_woken_late_does_not_retransmit_then(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The clock jumps past the retry time as it would when the event loop is
    # saturated: the query puts its retransmission off instead of adding to it.
    async with (
        run_responders(3, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders], retry=ADAPTIVE) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(client.query, RequestType.PING, coverage=-1, timeout=5))
        await wait_all_tasks_blocked_real()
        mock_clock.jump(0.5)  # 0.4 s late for the 0.1 s retry
        await trio.testing.wait_all_tasks_blocked()
        assert client.stats.deferred == 1
        assert client.stats.retransmitted == 0
        mock_clock.jump(0.4)  # on time for the round it was put off to (0.4 s on)
        await trio.testing.wait_all_tasks_blocked()
        assert client.stats.retransmitted == 3
        nursery.cancel_scope.cancel()
    fixed = RetryPolicy(adaptive=False)
    async with (
        run_responders(3, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders], retry=fixed) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(client.query, RequestType.PING, coverage=-1, timeout=5))
        await wait_all_tasks_blocked_real()
        mock_clock.jump(0.5)
        await trio.testing.wait_all_tasks_blocked()
        assert (client.stats.deferred, client.stats.retransmitted) == (0, 3)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _a_client_and_its_silent_peer() -> AsyncIterator[tuple[ConfdClient, socket.socket]]:
    """A client of one peer: a kernel UDP socket on loopback that answers nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        async with open_confd_client(KEY, [peer.getsockname()]) as client:
            yield client, peer


async def test_the_readings_lag_is_told_by_the_kernels_arrival_stamps() -> None:
    # Real time: the stamps are the kernel's clock. The lag is how long the
    # datagram read last had waited, if it was read no longer ago than that:
    # idle time before a datagram that has just come is none; a backlog left
    # while the event loop was held up 50 ms is, and a request sent then
    # waits that much longer before its first retransmission. Once the
    # reading has caught up, the lag stands no longer than it was.
    async with _a_client_and_its_silent_peer() as (client, _):
        router = client._router
        assert router.stamps_arrivals  # Linux, a kernel socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"first", client.local_address)
            await wait_all_tasks_blocked_real()
            assert client.stats.malformed == 1  # read
            assert router.unread() == (False, None)  # nothing waits
            assert router.reading_lag() == 0.0
            await trio.sleep(0.1)  # idle
            sender.sendto(b"stray", client.local_address)
            time.sleep(0.01)  # noqa: ASYNC251 - there by then, unread
            assert router.unread()[0]
            assert router.reading_lag() < 0.01  # the idle time is no lag
            await wait_all_tasks_blocked_real()
            for _ in range(300):
                sender.sendto(b"backlog", client.local_address)
            time.sleep(0.05)  # noqa: ASYNC251 - the event loop held up
            # A few read (one in 8 with its stamp), most wait.
            while client.stats.malformed < 12:
                await trio.lowlevel.checkpoint()
            unread, read_up_to = router.unread()
            assert unread
            assert read_up_to is not None
            lag = router.reading_lag()
            assert 0.05 <= lag < 5
            assert read_up_to == pytest.approx(trio.current_time() - lag)
            start = trio.current_time()
            async with client.request(RequestType.PING, timeout=5) as replies:
                first_retransmission = replies._exchange.schedule.wake_at - start
                assert 0.1 + lag <= first_retransmission < 0.1 + lag + 1
            await wait_all_tasks_blocked_real()
            assert client.stats.malformed == 302  # every one read in turn
            await trio.sleep(router._lag or 0.0)
            assert router.reading_lag() == 0.0


async def test_a_retransmission_waits_while_the_socket_holds_unread_datagrams(
    mock_clock: trio.testing.MockClock,
) -> None:
    # Datagrams wait in the client's socket when its retry time comes (as
    # replies do while the event loop works through others): the query puts
    # its retransmission off an interval, on the fixed schedule too, once in
    # a row: a socket flooded at every wake does not stop it.
    async with (
        run_responders(3, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders]) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(client.query, RequestType.PING, coverage=-1, timeout=5))
        await wait_all_tasks_blocked_real()

        def fill_the_socket() -> None:
            # More than the receive tasks read in the batch the query wakes in.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
                for _ in range(64):
                    flood.sendto(b"not a reply", client.local_address)

        fill_the_socket()
        mock_clock.jump(0.15)  # past the 0.1 s retry time
        await wait_all_tasks_blocked_real()
        assert (client.stats.deferred, client.stats.retransmitted) == (1, 0)
        assert client.stats.malformed == 64  # read since, and counted
        fill_the_socket()
        mock_clock.jump(0.1)  # the time it was put off to
        await wait_all_tasks_blocked_real()
        assert (client.stats.deferred, client.stats.retransmitted) == (1, 3)
        nursery.cancel_scope.cancel()


async def test_a_reply_routed_as_the_query_wakes_is_not_asked_for_again(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The reply reaches the socket while the event loop is held up past the
    # retry time: the query (its deadline passed) and the receive task (its
    # socket readable) wake in one batch, in either order. When the receive
    # task runs first, the reply is in the query's channel when it looks at
    # what to send: it counts it, and asks nobody again (it asked again,
    # half the time).
    async with _a_client_and_its_silent_peer() as (client, peer):
        for _ in range(20):
            with contextlib.suppress(BlockingIOError):
                while True:  # copies of earlier requests sent again
                    peer.recvfrom(4096, socket.MSG_DONTWAIT)
            async with trio.open_nursery() as nursery:
                results: list[Any] = []

                async def ask() -> None:
                    results.append(await client.query(RequestType.PING, timeout=5))  # noqa: B023

                nursery.start_soon(ask)
                # The event loop held up (this task blocks it) from the
                # request's arrival to past its retry time, the reply
                # waiting in the client's socket.
                while True:
                    try:
                        datagram, sender = peer.recvfrom(4096, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        await trio.lowlevel.checkpoint()  # until the query has sent
                    else:
                        break
                request, _ = unpack_request(datagram, HmacKey(KEY))
                reply = ConfdReply(ReplyStatus.OK, "pong", 1)
                peer.sendto(pack_reply(reply, request.rsalt, HmacKey(KEY)), sender)
                mock_clock.jump(0.15)
                time.sleep(0.01)  # noqa: ASYNC251 - on loopback, there by then
            assert results[0].ok
        assert client.stats.retransmitted == 0


async def wait_all_tasks_blocked_real() -> None:
    """Until the query has sent and waits (its sends go through the kernel)."""
    for _ in range(10):
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)


# -- the unlucky peers, against the whole client in simulated time ----


def drops_first_copies() -> Handler:
    """A peer that never hears the first copy of a request, and answers the rest at once."""
    heard: set[str] = set()

    def handler(request: ConfdRequest, index: int) -> ConfdReply | None:
        if request.rsalt not in heard:
            heard.add(request.rsalt)
            return None
        return ConfdReply(ReplyStatus.OK, index, 1)

    return handler


async def _latencies(
    responders: list[Responder], policy: RetryPolicy, queries: int, *, timeout: float = 5
) -> list[float]:
    latencies = []
    async with open_confd_client(KEY, [r.address for r in responders], retry=policy) as client:
        for _ in range(queries):
            start = trio.current_time()
            result = await client.query(RequestType.PING, coverage=-1, timeout=timeout)
            assert result.quorum_reached
            latencies.append(trio.current_time() - start)
        for estimate in client._router.rtt.values():
            assert estimate.timeout < 0.1, estimate  # quick peers, measured as such
    return latencies


async def test_a_peer_that_drops_every_first_copy_keeps_the_schedules_pace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with run_responders(1, KEY, drops_first_copies()) as responders:
        adaptive = await _latencies(responders, RetryPolicy(adaptive=True), 30)
        fixed = await _latencies(responders, RetryPolicy(adaptive=False), 30)
    # Asked again at 0.1 s, answered at once: every time, as the fixed schedule.
    assert max(adaptive) == pytest.approx(0.1, abs=0.01)
    assert max(adaptive) <= max(fixed) + 0.005


async def test_one_slow_peer_does_not_slow_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A answers after 1 s, B loses half its first copies, C is prompt; the
    # quorum is 2 of 3.
    def loses_half_the_first_copies() -> Handler:
        rng = random.Random(4)  # the same luck for both policies
        heard: set[str] = set()

        def handler(request: ConfdRequest, index: int) -> ConfdReply | None:
            if request.rsalt not in heard:
                heard.add(request.rsalt)
                if rng.random() < 0.5:
                    return None
            return ConfdReply(ReplyStatus.OK, index, 1)

        return handler

    async with run_responders(3, KEY) as responders:
        responders[0].delay = 1.0
        peers = [r.address for r in responders]
        latencies: dict[bool, list[float]] = {}
        for policy in (RetryPolicy(adaptive=True), RetryPolicy()):
            async with open_confd_client(KEY, peers, retry=policy) as client:
                # First A alone answers, and is measured slow.
                responders[1].handler = responders[2].handler = silent
                for _ in range(3):
                    await client.query(RequestType.PING, coverage=-1, timeout=5)
                if policy.adaptive:
                    assert client._router.rtt[peers[0]].timeout > 0.5
                responders[1].handler = loses_half_the_first_copies()
                responders[2].handler = ANSWER_PING
                latencies[policy.adaptive] = []
                for _ in range(40):
                    start = trio.current_time()
                    assert (await client.query(RequestType.PING, coverage=-1, timeout=5)).ok
                    latencies[policy.adaptive].append(trio.current_time() - start)
    # A lost copy to B costs B's own 0.1 s, never the wait for A.
    assert max(latencies[True]) == pytest.approx(0.1, abs=0.01)
    assert sorted(latencies[True]) == pytest.approx(sorted(latencies[False]), abs=0.005)


async def test_a_slow_peer_turned_prompt_is_asked_at_the_schedules_pace_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[str] = []

    def loses_every_fourth_first_copy(request: ConfdRequest, index: int) -> ConfdReply | None:
        if request.rsalt not in heard:
            heard.append(request.rsalt)
            if len(heard) % 4 == 0:
                return None
        return ConfdReply(ReplyStatus.OK, index, 1)

    async with (
        run_responders(1, KEY) as responders,
        open_confd_client(KEY, [responders[0].address], retry=ADAPTIVE) as client,
    ):
        responders[0].delay = 3.0
        for _ in range(10):
            assert (await client.query(RequestType.PING, timeout=10)).ok
        estimate = client._router.rtt[responders[0].address]
        assert estimate.timeout > 0.1  # held back: each query asks it again later
        responders[0].delay = 0.0
        responders[0].handler = loses_every_fourth_first_copy
        latencies = []
        for _ in range(20):
            start = trio.current_time()
            assert (await client.query(RequestType.PING, timeout=10)).ok
            latencies.append(trio.current_time() - start)
        # The first prompt reply restarts the estimate (no rttvar jump); from
        # then on each lost copy costs the schedule's 0.1 s.
        assert estimate.timeout < 0.01
        assert max(latencies[1:]) == pytest.approx(0.1, abs=0.01)


# -- a reply accepted before the deadline is in the verdict --------------------

SEVEN = make_cluster_config(nodes=7)


@pytest.mark.parametrize("send_takes", [0.0, 0.01, 0.03])
@pytest.mark.parametrize("busy", [False, True])
async def test_every_reply_accepted_before_the_verdict_is_in_it(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    send_takes: float,
    busy: bool,
) -> None:
    # Seven peers: three answer at once, one only its third copy (at 0.3 s),
    # three are silent. Sending to each silent peer takes ``send_takes``
    # (a full send buffer), so the fourth reply is routed while the query
    # task is still sending; with ``busy``, another task then holds the
    # event loop past the deadline (0.35 s) before the query task runs.
    async with open_simulated_cluster([SEVEN] * 7, KEY) as cluster:
        silent_peers = set(cluster.peers[4:])
        for index in range(4, 7):
            cluster.crash(index)
        send = SimulatedSocket.sendto

        async def slow_send(self: SimulatedSocket, *args: Any) -> int:
            if tuple(args[-1][:2]) in silent_peers:
                await trio.sleep(send_takes)
            return await send(self, *args)

        monkeypatch.setattr(SimulatedSocket, "sendto", slow_send)

        def on_reply(upcall: Upcall) -> None:
            if busy and upcall.server_port is not None and len(seen) == 3:
                autojump_clock.jump(0.06)  # the loop was held: time passed
            seen.append(upcall.salt)

        seen: list[str] = []
        async with (
            open_confd_client(KEY, cluster.peers, port=cluster.port, callback=on_reply) as client,
            trio.open_nursery() as nursery,
        ):

            async def third_copy_only() -> None:
                cluster.partition([0, 1, 2])
                await trio.sleep(0.25)
                cluster.heal()

            nursery.start_soon(third_copy_only)
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.35)
    assert len(seen) == client.stats.accepted == 4
    assert result.received == 4, result
    assert result.quorum_reached
    assert not result.timed_out
    assert result.verdict.startswith("quorum reached: 4 of 7")


@pytest.mark.parametrize("policy", [RetryPolicy(), ADAPTIVE])
async def test_a_query_to_silent_peers_wakes_only_to_send(
    policy: RetryPolicy, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Peers 0.25-0.3 s away, then silent. Each wake of a query after its
    # first fan-out must have a datagram to send (or be its deadline): when
    # adaptive, its first retransmission is planned at the start from the
    # peers' estimates, not found at 0.1 s to be early.
    slow = Faults(delay=1.0, delay_range=(0.25, 0.3))
    sends: list[tuple[float, bool]] = []  # (when, whether the wake sent anything)
    send_due = RequestInFlight.send_due

    async def recorded(in_flight: RequestInFlight) -> None:
        before = in_flight._router.stats.retransmitted + in_flight._router.stats.hedged
        first = in_flight._first_send is not None
        await send_due(in_flight)
        if not first:
            now = in_flight._router.stats.retransmitted + in_flight._router.stats.hedged
            sends.append((trio.current_time(), now > before))

    async with (
        open_simulated_cluster([CONFIG] * 3, KEY, to_client=slow) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=policy) as client,
    ):
        for _ in range(10):
            assert (await client.query(RequestType.PING, coverage=-1, timeout=5)).ok
        for index in range(3):
            cluster.crash(index)
        monkeypatch.setattr(RequestInFlight, "send_due", recorded)
        started = trio.current_time()
        result = await client.query(RequestType.PING, coverage=-1, timeout=3)
    assert result.timed_out
    assert sends, "no wake before the deadline"
    assert all(sent for _, sent in sends), sends  # no wake for nothing
    first_wake = sends[0][0] - started
    if policy.adaptive:
        assert first_wake >= 0.25  # the peers' timeout, known at the start
    else:
        assert first_wake == pytest.approx(policy.initial)


async def test_a_first_retry_time_past_before_the_first_send_does_not_stop_the_fan_out() -> None:
    # Real time: a first retransmission 1 µs after the start has passed by
    # the first send. The wait that began at that time cuts the fan-out
    # short before a single send; the next one, which waits for the
    # deadline while the fan-out is to go, sends it all. (Each wait began at
    # the passed time, the query would spin, sending nothing, until its
    # deadline.)
    fast = RetryPolicy(initial=1e-6, max_interval=0.02, hedge_after=None)
    async with (
        run_responders(3, KEY, silent) as responders,
        open_confd_client(KEY, [r.address for r in responders], retry=fast) as client,
    ):
        result = await client.query(RequestType.PING, coverage=-1, timeout=0.3)
        await wait_all_tasks_blocked_real()
        assert result.timed_out
        assert result.sent == 3
        assert all(len(responder.requests) >= 2 for responder in responders)
        assert client.stats.retransmitted >= 3


async def _read_after_a_stall(client: Any, sender: socket.socket, seconds: float) -> None:
    """A datagram sent to ``client`` while its event loop is held up ``seconds``
    (it waits that long unread, the first one read, with its stamp); until read."""
    sender.sendto(b"stalled", client.local_address)
    time.sleep(seconds)  # noqa: ASYNC251 - the event loop held up
    while client.stats.malformed < 1:
        await trio.lowlevel.checkpoint()


async def test_a_lag_that_has_stood_its_time_says_nothing_of_datagrams_waiting_later() -> None:
    # Real time. One datagram waits half a second unread (the event loop
    # held up): the reading lagged that much. Once that long has passed
    # with nothing read, the lag stands no more: a datagram then waiting
    # unread is judged by the plain rule (no point the reading has
    # reached), not put off by the old lag.
    async with _a_client_and_its_silent_peer() as (client, _):
        router = client._router
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            await _read_after_a_stall(client, sender, 0.5)
            assert 0.5 <= router.reading_lag() < 5
            assert router.unread() == (False, None)  # nothing waits
            await trio.sleep(router.reading_lag() + 0.01)
            assert router.reading_lag() == 0.0
            sender.sendto(b"waiting", client.local_address)
            time.sleep(0.01)  # noqa: ASYNC251 - there by then, unread
            assert router.unread() == (True, None)


async def test_the_lag_stands_for_its_time_on_trios_clock_not_the_wall_clock(
    mock_clock: trio.testing.MockClock,
) -> None:
    # The stamps are on the wall clock, but how long the lag stands is
    # Trio's: a wall clock stepped back cannot keep an old lag standing.
    # Here the wall clock hardly moves while Trio's jumps past the lag.
    async with _a_client_and_its_silent_peer() as (client, _):
        router = client._router
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            await _read_after_a_stall(client, sender, 0.2)
            lag = router.reading_lag()
            assert 0.2 <= lag < 5
            mock_clock.jump(lag / 2)
            assert router.reading_lag() == lag
            mock_clock.jump(lag)
            assert router.reading_lag() == 0.0
