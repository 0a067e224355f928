"""Retransmission that adapts to each peer's round trips, as TCP's does."""

from __future__ import annotations

import math
import socket
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trioconfd import ConfdClientError, RequestType, RetryPolicy, open_confd_client
from trioconfd.protocol import RttEstimate
from trioconfd.testing import Faults, make_cluster_config, serve_confd, simulated_cluster

from .responders import run_responders, silent

KEY = b"adaptive key\n"
CONFIG = make_cluster_config(nodes=3)


# -- the estimate (sans-IO) ----------------------------------------------------


def test_the_first_round_trip_sets_srtt_and_half_of_it_as_variation() -> None:
    estimate = RttEstimate()
    assert estimate.timeout == 0.0  # nothing known: the policy's schedule rules
    estimate.sample(0.2)
    assert (estimate.srtt, estimate.rttvar) == (0.2, 0.1)
    assert estimate.timeout == pytest.approx(0.2 + 4 * 0.1)


def test_later_round_trips_are_smoothed_as_rfc_6298_says() -> None:
    estimate = RttEstimate()
    estimate.sample(0.2)
    estimate.sample(0.1)
    # rttvar = 3/4 * 0.1 + 1/4 * |0.2 - 0.1|; srtt = 7/8 * 0.2 + 1/8 * 0.1
    assert estimate.rttvar == pytest.approx(0.1)
    assert estimate.srtt == pytest.approx(0.1875)
    for _ in range(200):
        estimate.sample(0.01)
    assert estimate.srtt == pytest.approx(0.01, rel=1e-3)
    assert estimate.measured == pytest.approx(0.011, rel=0.05)  # 1 ms granularity at least


@pytest.mark.parametrize("nonsense", [-1.0, math.nan, math.inf])
def test_nonsense_round_trips_teach_nothing(nonsense: float) -> None:
    estimate = RttEstimate()
    estimate.sample(nonsense)
    assert estimate.srtt is None


def test_silence_doubles_the_timeout_once_per_period_and_a_round_trip_resets_it() -> None:
    estimate = RttEstimate()
    estimate.sample(0.05)
    base = estimate.timeout
    estimate.timed_out(now=10.0, waited=0.1)
    assert estimate.backoff == pytest.approx(2 * max(0.1, base))
    for _ in range(1000):  # a thousand queries noticing the same silence
        estimate.timed_out(now=10.0, waited=0.1)
    assert estimate.backoff == pytest.approx(2 * max(0.1, base))
    estimate.timed_out(now=10.0 + estimate.backoff, waited=0.1)  # a period later
    assert estimate.backoff == pytest.approx(4 * max(0.1, base))
    estimate.sample(0.05)
    assert estimate.backoff == 0.0
    estimate.timed_out(now=20.0, waited=0.1)
    estimate.answered_after(estimate.measured * 2)  # late: a slow peer, the backoff stays
    assert estimate.backoff > 0
    estimate.answered_after(estimate.measured / 2)  # prompt: it was loss, the backoff goes
    assert estimate.backoff == 0.0
    estimate.timed_out(now=20.0, waited=0.1)  # and the next silence counts at once
    assert estimate.backoff > 0
    for step in range(100):
        estimate.timed_out(now=100.0 + 100 * step, waited=1.0)
    assert estimate.backoff == 60.0  # it stops growing
    assert "rto=" in repr(estimate)


# -- the policy ----------------------------------------------------------------


@given(
    st.builds(
        RetryPolicy,
        initial=st.floats(1e-3, 10),
        multiplier=st.floats(1, 10),
        max_interval=st.floats(1e-3, 10),
        max_timeout=st.floats(1e-3, 100),
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
        simulated_cluster([CONFIG] * 3, KEY, to_client=slow) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=policy) as client,
    ):
        ok = 0
        for _ in range(queries):
            result = await client.query(RequestType.PING, coverage=-1, timeout=5)
            ok += result.ok
        return client.stats.retransmitted, ok


async def test_slow_peers_are_not_hammered(autojump_clock: trio.testing.MockClock) -> None:
    adaptive, adaptive_ok = await _retransmissions_to_slow_peers(RetryPolicy(), 30)
    fixed, fixed_ok = await _retransmissions_to_slow_peers(RetryPolicy(adaptive=False), 30)
    assert adaptive_ok == fixed_ok == 30
    # The fixed schedule asks all three again at 0.1 s, every time.
    assert fixed == 30 * 3
    # Adaptive: the first queries learn the round trip; then none is asked twice.
    assert adaptive <= 9, adaptive


async def test_the_learned_timeout_is_per_peer(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for _ in range(5):
            assert (await client.query(RequestType.PING, coverage=-1)).ok
        estimates = client._router.rtt
        assert set(estimates) <= set(cluster.peers)
        for estimate in estimates.values():
            assert estimate.srtt is not None
            assert estimate.srtt < 0.01  # the simulated network's 0.2 ms each way
        client.update_peer_list(cluster.peers[:1])
        assert set(client._router.rtt) <= {cluster.peers[0]}  # forgotten with their peers


async def test_lossy_peers_keep_the_schedules_pace(autojump_clock: trio.testing.MockClock) -> None:
    # Lost datagrams look like silence; the timeout they grow is held to
    # max_interval, so retries under loss are as frequent as without adapting.
    lossy = Faults(drop=0.3)
    async with (
        simulated_cluster([CONFIG] * 3, KEY, to_server=lossy, to_client=lossy, seed=3) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        results = []
        async with trio.open_nursery() as nursery:

            async def one() -> None:
                results.append(await client.query(RequestType.PING, coverage=-1, timeout=3))

            for _ in range(200):
                nursery.start_soon(one)
        assert sum(result.ok for result in results) == 200
        for estimate in client._router.rtt.values():
            assert estimate.timeout <= 60


def _receive_buffer(sock: trio.socket.SocketType) -> int:
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


async def test_the_server_asks_for_a_large_receive_buffer() -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default = _receive_buffer(plain)
    async with serve_confd(CONFIG, KEY) as server:
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
        open_confd_client(KEY, [r.address for r in responders]) as client,
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


async def wait_all_tasks_blocked_real() -> None:
    """Until the query has sent and waits (its sends go through the kernel)."""
    for _ in range(10):
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)
