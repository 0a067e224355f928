"""The simulated cluster: the unmodified client against simulated peers, in simulated time."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trioconfd
from trioconfd import ConfdClientError, RequestType, open_confd_client
from trioconfd.client._arguments import choose_targets
from trioconfd.protocol import Address
from trioconfd.testing import (
    Faults,
    SimulatedCluster,
    SimulatedNetwork,
    make_cluster_config,
    open_simulated_cluster,
)
from trioconfd.testing._faults import DirectionStats, decide

KEY = b"simulated key\n"
CONFIG = make_cluster_config(serial=5)


def lossy_run(seed: int) -> tuple[list[tuple[bool, int, int, float, Any]], dict[str, int]]:
    """The docs' example: 5 peers, 30% loss each way, 200 queries, in simulated time."""

    async def program() -> tuple[list[tuple[bool, int, int, float, Any]], dict[str, int]]:
        loss = Faults(drop=0.3)
        async with (
            open_simulated_cluster(
                [CONFIG] * 5, KEY, seed=seed, to_server=loss, to_client=loss
            ) as c,
            open_confd_client(KEY, c.peers, port=c.port, rng=random.Random(seed)) as client,
        ):
            start = trio.current_time()
            results = []
            for _ in range(200):
                result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
                results.append(
                    (
                        result.ok,
                        result.received,
                        result.sent,
                        trio.current_time() - start,
                        [reply.address for reply in result.replies],
                    )
                )
            return results, client.stats.as_dict()

    return trio.run(program, clock=trio.testing.MockClock(autojump_threshold=0))


def test_two_hundred_lossy_queries_reach_their_quorum_and_repeat_exactly() -> None:
    results, stats = lossy_run(seed=3)
    assert all(ok for ok, *_ in results)
    assert stats["retransmitted"] > 100  # the loss was real, and retransmission made up for it
    # The same seed, configs, client rng and program: the same story, datagram for datagram.
    assert lossy_run(seed=3) == (results, stats)
    assert lossy_run(seed=4) != (results, stats)


async def test_a_majority_crashed_times_out_at_the_deadline_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 5, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for index in (0, 1, 2):
            cluster.crash(index)
        start = trio.current_time()
        result = await client.query(RequestType.PING, coverage=-1, timeout=2)
        assert trio.current_time() - start == 2  # exactly, in simulated time
        assert result.timed_out
        assert (result.received, result.needed) == (2, 3)
        assert cluster.stats(0)["lost_while_down"] > 0
        cluster.restart(1)
        result = await client.query(RequestType.PING, coverage=-1, timeout=2)
        assert result.ok
        assert result.received == 3
        assert client.outstanding == 0


async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.partition([2])
        result = await client.query(RequestType.PING, coverage=-1, timeout=1)
        assert result.timed_out
        assert [reply.address for reply in result.replies] == [cluster.peers[2]]
        cluster.heal()
        assert (await client.query(RequestType.PING, coverage=-1, timeout=1)).received >= 2


async def test_a_newer_serial_on_a_majority_is_trusted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    newer = make_cluster_config(serial=9)
    async with (
        open_simulated_cluster([CONFIG] * 5, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for index in (1, 3, 4):
            cluster.set_config(index, newer)
        assert [cluster.serial(i) for i in range(5)] == [5, 9, 5, 9, 9]
        for _ in range(20):
            result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1)
            assert result.ok
            assert result.serial == 9  # any 3 of 5 include a peer with serial 9


async def test_faults_on_one_link(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.set_faults(0, to_client=Faults(drop=1.0))
        for _ in range(5):
            result = await client.query(RequestType.PING, coverage=-1, timeout=1)
            assert result.ok
            assert cluster.peers[0] not in {reply.address for reply in result.replies}
        stats = cluster.stats(0)
        assert stats["answered"] >= 5  # it answered every time; its replies were lost
        assert stats["to_client"].dropped == stats["to_client"].received
        assert cluster.stats(1)["to_client"].dropped == 0


async def test_retransmissions_happen_at_their_exact_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for index in range(3):
            cluster.crash(index)
        start = trio.current_time()
        seen: list[tuple[float, int]] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: client.query(RequestType.PING, coverage=-1, timeout=1.2))
            for moment in (0.05, 0.0999, 0.1001, 0.2999, 0.3001, 0.6999, 0.7001, 1.1999):
                await trio.sleep_until(start + moment)
                seen.append((moment, client.stats.retransmitted))
        # Sent at 0; again at 0.1, 0.3 (+0.2), 0.7 (+0.4); 1.2 (+0.5, the cap) is the deadline.
        assert seen == [
            (0.05, 0),
            (0.0999, 0),
            (0.1001, 3),
            (0.2999, 3),
            (0.3001, 6),
            (0.6999, 6),
            (0.7001, 9),
            (1.1999, 9),
        ]
        assert client.outstanding == 0


async def test_one_shot_query_and_the_real_clock() -> None:
    async with open_simulated_cluster([CONFIG] * 3, KEY, seed=1) as cluster:
        result = await trioconfd.query(
            KEY, cluster.peers, RequestType.CLUSTER_MASTER, port=cluster.port, timeout=5
        )
        assert result.ok
        assert result.answer == "node1.example.com"
        assert "peers=3" in repr(cluster)
    # The factory is gone with the block: sockets are real again.
    sock = trio.socket.socket()
    with sock:
        assert not isinstance(sock, trioconfd.testing.SimulatedSocket)


async def test_bad_cluster_arguments() -> None:
    with pytest.raises(ConfdClientError, match="at least one config"):
        async with open_simulated_cluster([], KEY):
            pass  # pragma: no cover
    async with open_simulated_cluster([CONFIG], KEY) as cluster:
        with pytest.raises(ConfdClientError, match="no peer 1"):
            cluster.crash(1)
        with pytest.raises(ConfdClientError, match="no peer -1"):
            cluster.set_faults(-1, to_server=Faults())
    with pytest.raises(ValueError, match="latency"):
        SimulatedNetwork(latency=0)


@pytest.mark.parametrize("configs", [CONFIG, "config.data"])
async def test_one_config_where_a_list_is_due_is_a_clear_error(configs: Any) -> None:
    # Iterated, a dict gave its keys and a path its characters, each read as
    # a file ("cannot read the configuration cluster").
    with pytest.raises(trioconfd.ConfdArgumentTypeError, match="configs must be a list"):
        async with open_simulated_cluster(configs, KEY):
            pass


async def test_faults_of_the_wrong_type_are_refused_as_they_are_set() -> None:
    async with open_simulated_cluster([CONFIG], KEY) as cluster:
        with pytest.raises(trioconfd.ConfdArgumentTypeError, match="to_client must be a Faults"):
            cluster.set_faults(0, to_client={"drop": 1.0})  # type: ignore[arg-type]
    with pytest.raises(trioconfd.ConfdArgumentTypeError, match="to_server must be a Faults"):
        async with open_simulated_cluster([CONFIG], KEY, to_server=0.5):  # type: ignore[arg-type]
            pass


async def test_simulated_sockets_behave_like_udp_sockets() -> None:
    network = SimulatedNetwork(seed=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        one, two = network.socket(), network.socket()
        await one.bind(("127.0.0.5", 9))
        with pytest.raises(OSError, match="already in use"):
            await two.bind(("127.0.0.5", 9))
        await two.sendto(b"hello world", ("127.0.0.5", 9))  # unbound: a port is drawn
        data, source = await one.recvfrom(5)
        assert data == b"hello"  # cut to the buffer, as UDP cuts it
        assert source == ("127.0.0.1", two.getsockname()[1])
        await two.sendto(b"x", ("127.0.0.5", 10))
        await trio.sleep(0.01)
        assert network.unreachable == 1
        with pytest.raises(OSError, match="no socket options"):
            one.setsockopt(0, 0, 0)
        with pytest.raises(NotImplementedError):
            one.fileno()
        with pytest.raises(OSError, match="IPv4 UDP only"):
            network.socket(type=trio.socket.SOCK_STREAM)
        one.close()
        with pytest.raises(OSError, match="closed"):
            await one.sendto(b"x", ("127.0.0.5", 9))
        two.close()
        nursery.cancel_scope.cancel()


async def test_a_datagram_held_for_reordering_goes_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Out at hold_limit since nothing followed it, it went again just after
    # the next datagram, uncounted.
    network = SimulatedNetwork(seed=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        receiver, sender = network.socket(), network.socket()
        await receiver.bind(("127.0.0.5", 9))
        network.link(("127.0.0.5", 9)).to_server.faults = Faults(reorder=1.0, hold_limit=0.05)
        await sender.sendto(b"first", ("127.0.0.5", 9))
        await trio.sleep(1)
        await sender.sendto(b"second", ("127.0.0.5", 9))  # held too, out at hold_limit
        await trio.sleep(1)
        arrived = []
        with trio.move_on_after(1):
            while True:
                arrived.append((await receiver.recvfrom(16))[0])
        assert arrived == [b"first", b"second"]
        stats = network.link(("127.0.0.5", 9)).to_server.stats
        assert (stats.forwarded, stats.reordered, stats.duplicated) == (2, 2, 0)
        nursery.cancel_scope.cancel()


def test_a_duplicate_drawn_with_a_reorder_is_neither_made_nor_counted() -> None:
    stats = DirectionStats()
    fate = decide(Faults(duplicate=1.0, reorder=1.0), random.Random(0), b"x", stats, can_hold=True)
    assert (fate.copies, fate.held, stats.duplicated, stats.reordered) == (1, True, 0, 1)


async def test_a_simulated_send_goes_before_its_task_yields_as_trio_sockets_do() -> None:
    # trio.socket's sendto makes its system call in the caller's step and
    # then yields: datagrams leave in the order their tasks called sendto,
    # whatever order the scheduler runs the tasks in next; a cancelled send
    # sends nothing. (The simulated socket yielded first, so the order in
    # which fifty tasks' datagrams left was the next batch's, shuffled.)
    network = SimulatedNetwork(seed=0)
    called: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(network.run)
        receiver, sender = network.socket(), network.socket()
        await receiver.bind(("127.0.0.5", 9))

        async def send(payload: bytes) -> None:
            called.append(payload)
            await sender.sendto(payload, ("127.0.0.5", 9))

        async with trio.open_nursery() as senders:
            for index in range(50):
                senders.start_soon(send, b"%d" % index)
        arrived = [(await receiver.recvfrom(16))[0] for _ in range(50)]
        assert arrived == called
        with trio.CancelScope() as cancelled:
            cancelled.cancel()
            await sender.sendto(b"never", ("127.0.0.5", 9))
        await trio.sleep(0.01)
        with trio.move_on_after(1):
            await receiver.recvfrom(16)
            pytest.fail("a cancelled send went out")
        receiver.close()
        sender.close()
        nursery.cancel_scope.cancel()


async def _query_with_slow_sends(
    monkeypatch: pytest.MonkeyPatch,
    timeout: float,
    *,
    crashed: bool = False,
    copies: list[tuple[float, Any]] | None = None,
    slow_sends: int = 1000,
) -> tuple[trioconfd.QueryResult, list[Any], trioconfd.ClientStats]:
    """One query to 3 peers whose client's first ``slow_sends`` sends each block
    45 ms (a full send buffer); ``crashed``: the peers are down. Each copy
    that goes, with when, goes on ``copies``."""
    from trioconfd.testing._simnet import SimulatedSocket

    sent: list[Any] = []
    send = SimulatedSocket.sendto
    slow: set[int] = set()

    async def slow_sendto(self: SimulatedSocket, *args: Any) -> int:
        if id(self) in slow:
            if len(sent) < slow_sends:
                await trio.sleep(0.045)
            sent.append(args[-1])
            if copies is not None:
                copies.append((trio.current_time(), args[-1]))
        return await send(self, *args)

    monkeypatch.setattr(SimulatedSocket, "sendto", slow_sendto)
    retry = trioconfd.RetryPolicy(initial=0.1, hedge_after=None)
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=retry) as client,
    ):
        slow.add(id(client._router.socket))
        for index in range(3 if crashed else 0):
            cluster.crash(index)
        result = await client.query(RequestType.PING, coverage=-1, timeout=timeout)
        return result, sent, client.stats


async def test_a_slow_first_fan_out_cut_short_at_the_first_wake_ends_at_the_quorum(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The three sends would take 135 ms, past the first retransmission time
    # (0.1 s), which cuts the third short. The two peers asked have answered
    # by then, the quorum of the three chosen: the third is never asked (it
    # would be asked for nothing), and nobody is asked again.
    result, sent, stats = await _query_with_slow_sends(monkeypatch, timeout=5)
    assert len(sent) == 2
    assert result.ok
    assert (result.sent, result.received, result.needed) == (2, 2, 2)
    assert stats.retransmitted == 0


async def test_a_first_fan_out_cut_short_at_a_wake_goes_on_and_its_last_peer_waits_its_own_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peers are down; the first fan-out's sends are slow, the later ones
    # not. The first wake (0.1 s) cuts the third send short: it goes right
    # after (at 0.145 s), then the first two go again (due since 0.1 s), and
    # that third peer is asked again a full interval after its own first
    # copy, not at once (as if it had gone at the start).
    copies: list[tuple[float, Any]] = []
    result, sent, stats = await _query_with_slow_sends(
        monkeypatch, timeout=1, crashed=True, copies=copies, slow_sends=3
    )
    first, second, third = sent[:3]
    assert len({first, second, third}) == 3
    assert [at for at, _ in copies[:5]] == pytest.approx([0.045, 0.09, 0.145, 0.145, 0.145])
    assert [peer for _, peer in copies[3:5]] == [first, second]
    again = [at for at, peer in copies[3:] if peer == third]
    assert again[0] == pytest.approx(0.145 + 0.1)
    assert result.timed_out
    assert (result.sent, result.received) == (3, 0)  # every peer was asked
    assert set(result.silent) == {first, second, third}
    assert stats.retransmitted >= 3


async def test_a_deadline_that_cuts_the_first_fan_out_short_counts_the_replies_it_got(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only two of three sends go before the deadline (0.1 s); both peers
    # answer in time, the quorum of the three chosen: the verdict says so,
    # and not "never sent"; the third peer was never asked.
    result, sent, _ = await _query_with_slow_sends(monkeypatch, timeout=0.1)
    assert len(sent) == 2
    assert result.ok
    assert (result.sent, result.received, result.needed) == (2, 2, 2)


async def test_a_first_fan_out_cut_short_with_no_reply_names_the_peers_it_asked(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, sent, _ = await _query_with_slow_sends(monkeypatch, timeout=0.1, crashed=True)
    assert len(sent) == 2
    assert result.timed_out
    assert (result.sent, result.received) == (2, 0)
    assert set(result.silent) == set(sent)
    assert not any("not sent" in line for line in result.diagnosis)


async def test_a_stream_read_after_its_deadline_sends_nothing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One peer of three is down. The stream's two replies are read at once;
    # the next read comes after the deadline (0.5 s): it ends the stream,
    # with no copy sent to the silent peer then and no loss counted.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.crash(2)
        async with client.request(RequestType.PING, coverage=-1, timeout=0.5) as replies:
            got = [await replies.__anext__(), await replies.__anext__()]
            await trio.sleep(1)
            with pytest.raises(StopAsyncIteration):
                await replies.__anext__()
        assert len(got) == 2
        assert replies.timed_out
        assert client.stats.retransmitted == 0
        assert client.stats.held_back == 0


async def test_a_reply_from_a_peer_not_asked_yet_is_refused_and_never_counted(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An attacker copies the first peer's signed reply onto the other peers'
    # addresses (the signature does not cover the source) while the slow
    # first fan-out has not reached them. The third peer's copy is refused
    # (no request went there yet); the second's comes while its send waits,
    # and counts for nothing once that send is cut short before it went.
    # The verdict counts only replies from peers asked; the second's own
    # reply, once it is asked (the rest of the fan-out goes at the wake),
    # counts: it is not dropped as a second reply from that peer.
    copies: list[tuple[float, Any]] = []
    result, stats, peers = await _spoofed_query(monkeypatch, 5, copies)
    first, second, third = peers
    assert [peer for _, peer in copies] == [first, second, third]  # then resumed
    assert copies[1][0] > 0.1  # the second send, cut at the first wake, went after it
    assert stats.unexpected_peer == 2  # the copies from the two not asked yet
    assert stats.duplicate == 0
    assert result.ok
    assert (result.sent, result.received) == (3, 2)
    assert {reply.address for reply in result.replies} == {first, second}


async def test_the_places_of_peers_a_first_fan_out_never_reached_are_not_lost(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peers are down and the deadline (0.1 s) cuts the slow first fan-out
    # after two sends: the two peers asked lost their requests (their
    # windows are cut, marked silent); the third was never sent anything,
    # and its window is as it was.
    from trioconfd.testing._simnet import SimulatedSocket

    send = SimulatedSocket.sendto
    slow: set[int] = set()
    sent: list[Any] = []

    async def slow_sendto(self: SimulatedSocket, *args: Any) -> int:
        if id(self) in slow:
            await trio.sleep(0.045)
            sent.append(args[-1])
        return await send(self, *args)

    monkeypatch.setattr(SimulatedSocket, "sendto", slow_sendto)
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        slow.add(id(client._router.socket))
        for index in range(3):
            cluster.crash(index)
        windows = client._router.admission.windows
        result = await client.query(RequestType.PING, coverage=-1, timeout=0.1)
        assert result.timed_out
        assert result.sent == 2
        (never,) = [peer for peer in cluster.peers if peer not in sent]
        for peer in sent:
            assert windows[peer].window.size < 64
            assert windows[peer].silent
        assert windows[never].window.size == 64
        assert not windows[never].silent
        assert windows[never].window.in_use == 0


def _spoofing(monkeypatch: pytest.MonkeyPatch, client_socket: list[Any], peers: list[Any]) -> None:
    """Copies of every reply from ``peers[0]`` to ``client_socket[0]`` also come
    "from" the other peers (the signature does not cover the source)."""
    from trioconfd.testing._simnet import SimulatedSocket

    deliver = SimulatedSocket.deliver

    def spoofing_deliver(self: SimulatedSocket, datagram: bytes, source: Any) -> None:
        deliver(self, datagram, source)
        if client_socket and self is client_socket[0] and tuple(source[:2]) == peers[0]:
            for other in peers[1:]:
                deliver(self, datagram, other)

    monkeypatch.setattr(SimulatedSocket, "deliver", spoofing_deliver)


def _slow_sends(
    monkeypatch: pytest.MonkeyPatch,
    client_socket: list[Any],
    seconds: float,
    copies: list[tuple[float, Any]] | None = None,
) -> None:
    """Each send from ``client_socket[0]`` waits ``seconds`` first (a full buffer);
    each that goes, with when, goes on ``copies``."""
    from trioconfd.testing._simnet import SimulatedSocket

    send = SimulatedSocket.sendto

    async def slow_sendto(self: SimulatedSocket, *args: Any) -> int:
        if client_socket and self is client_socket[0]:
            await trio.sleep(seconds)
            if copies is not None:
                copies.append((trio.current_time(), args[-1]))
        return await send(self, *args)

    monkeypatch.setattr(SimulatedSocket, "sendto", slow_sendto)


async def _spoofed_query(
    monkeypatch: pytest.MonkeyPatch, timeout: float, copies: list[tuple[float, Any]] | None = None
) -> tuple[trioconfd.QueryResult, trioconfd.ClientStats, list[Any]]:
    """A query to 3 peers whose client's sends each wait 60 ms, the first
    peer's replies copied "from" the others; its verdict, stats, and the peers."""
    client_socket: list[Any] = []
    peers: list[Any] = []
    _spoofing(monkeypatch, client_socket, peers)
    _slow_sends(monkeypatch, client_socket, 0.06, copies)
    retry = trioconfd.RetryPolicy(initial=0.1, hedge_after=None)
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=retry) as client,
    ):
        client_socket.append(client._router.socket)
        peers.extend(cluster.peers)
        result = await client.query(RequestType.PING, coverage=-1, timeout=timeout)
        return result, client.stats, peers


async def test_a_copy_refused_at_a_wake_and_again_at_the_deadline_is_counted_once(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second peer's send is cut at the first wake (0.1 s), after a copy
    # "from" it was accepted; its resumed send is cut again by the deadline.
    result, stats, _ = await _spoofed_query(monkeypatch, 0.15)
    assert (result.sent, result.received) == (1, 1)
    assert (stats.accepted, stats.unexpected_peer) == (1, 2)


async def test_a_copy_refused_in_a_stream_is_no_answer_from_its_peer(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream's first fan-out is cut by its deadline after the first send;
    # a copy "from" the second peer came while its send waited: it is not
    # yielded, and at the close it neither grows that peer's window nor
    # gives it a round trip.
    client_socket: list[Any] = []
    peers: list[Any] = []
    _spoofing(monkeypatch, client_socket, peers)
    _slow_sends(monkeypatch, client_socket, 0.06)
    admission = trioconfd.AdmissionPolicy(initial=1, minimum=1, maximum=64)
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=admission) as client,
    ):
        client_socket.append(client._router.socket)
        peers.extend(cluster.peers)
        first, second, third = peers
        async with client.request(RequestType.PING, coverage=-1, timeout=0.1) as replies:
            got = [reply.address async for reply in replies]
        windows = client._router.admission.windows
        assert got == [first]
        assert (client.stats.accepted, client.stats.unexpected_peer) == (1, 2)
        assert windows[second].window.size == windows[third].window.size == 1
        assert windows[second].answers == 0
        estimate = client._router.rtt.get(second)
        assert estimate is None or estimate.srtt is None


class _HedgeSends:
    """The client's sends in a hedging test: the first fan-out's peers (sent
    before 10 ms), then each later copy with its time. The first later copy
    (the hedge) waits 1 s (a full buffer), and if ``spoof`` a copy of a
    reply the client got comes "from" its peer meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, spoof: bool) -> None:
        from trioconfd.testing._simnet import SimulatedSocket

        self.client_socket: list[Any] = []
        self.first: list[Any] = []
        self.copies: list[tuple[float, Any]] = []
        genuine: list[bytes] = []
        deliver = SimulatedSocket.deliver
        send = SimulatedSocket.sendto
        sends = self

        def recording_deliver(self: SimulatedSocket, datagram: bytes, source: Any) -> None:
            if sends.client_socket and self is sends.client_socket[0]:
                genuine.append(datagram)
            deliver(self, datagram, source)

        async def sendto(self: SimulatedSocket, *args: Any) -> int:
            if sends.client_socket and self is sends.client_socket[0]:
                peer = tuple(args[-1][:2])
                if trio.current_time() < 0.01:
                    sends.first.append(peer)
                else:
                    sends.copies.append((trio.current_time(), peer))
                    if len(sends.copies) == 1:
                        if spoof and genuine:
                            deliver(self, genuine[0], args[-1])
                        await trio.sleep(1)
            return await send(self, *args)

        monkeypatch.setattr(SimulatedSocket, "deliver", recording_deliver)
        monkeypatch.setattr(SimulatedSocket, "sendto", sendto)


@asynccontextmanager
async def _one_live_of_four(
    monkeypatch: pytest.MonkeyPatch, *, spoof: bool, retry: trioconfd.RetryPolicy
) -> AsyncIterator[tuple[SimulatedCluster, Address, trioconfd.ConfdClient, _HedgeSends]]:
    """Four simulated peers, all but the first crashed; a client whose first
    sample of three has that live one in (its rng draws as choose_targets),
    its sends recorded (:class:`_HedgeSends`)."""
    sends = _HedgeSends(monkeypatch, spoof=spoof)
    async with open_simulated_cluster([CONFIG] * 4, KEY) as cluster:
        alive = cluster.peers[0]
        for index in (1, 2, 3):
            cluster.crash(index)
        seed = 0
        while alive not in choose_targets(tuple(cluster.peers), 3, random.Random(seed)):
            seed += 1
        async with open_confd_client(
            KEY, cluster.peers, port=cluster.port, retry=retry, rng=random.Random(seed)
        ) as client:
            sends.client_socket[:] = [client._router.socket]
            yield cluster, alive, client, sends


@pytest.mark.parametrize("spoof", [False, True])
async def test_a_hedge_whose_send_never_went_is_neither_asked_nor_answered(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, spoof: bool
) -> None:
    # Three of four peers are down; the query asks three (the live one among
    # them), hedges at 20 ms, and the hedge's send waits past the deadline:
    # that peer was never asked (not counted as sent, its window not cut),
    # and a copy "from" it while its send waited counts for nothing.
    retry = trioconfd.RetryPolicy(initial=1.0, hedge_after=0.02)
    async with _one_live_of_four(monkeypatch, spoof=spoof, retry=retry) as found:
        _, alive, client, sends = found
        result = await client.query(RequestType.PING, coverage=3, timeout=0.1)
        windows = client._router.admission.windows
    assert alive in sends.first
    (never,) = [peer for _, peer in sends.copies]
    assert never not in sends.first
    assert result.timed_out
    assert (result.sent, result.received) == (3, 1)
    assert [reply.address for reply in result.replies] == [alive]
    assert never not in result.silent
    assert windows[never].window.size == 64
    assert not windows[never].silent
    assert windows[never].window.in_use == 0
    assert client.stats.unexpected_peer == int(spoof)


@pytest.mark.parametrize("spoof", [False, True])
async def test_a_hedge_cut_by_a_readers_own_scope_may_be_asked_again(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, spoof: bool
) -> None:
    # A stream to three of four peers (one live) hedges at 20 ms; the
    # hedge's send waits, and the reader's own scope, not the deadline, cuts
    # it before it went (a copy "from" that peer coming meanwhile, if
    # spoof). The stream reads on: that peer, up again, is asked as a hedge
    # later, and its reply counts; no copy goes to it as if it had been
    # asked, nor is its reply refused as from a peer never asked.
    retry = trioconfd.RetryPolicy(initial=1.0, max_interval=0.5, hedge_after=0.02)
    async with (
        _one_live_of_four(monkeypatch, spoof=spoof, retry=retry) as (cluster, alive, client, sends),
        client.request(RequestType.PING, coverage=3, timeout=3) as replies,
    ):
        got = [(await replies.__anext__()).address]
        with trio.move_on_after(0.05):  # cuts the hedge's send
            got.append((await replies.__anext__()).address)
        (cut_at, hedge), *_ = sends.copies
        cluster.restart(cluster.peers.index(hedge))
        got += [reply.address async for reply in replies]
    stats = client.stats
    assert alive in sends.first
    assert got[0] == alive
    assert hedge not in sends.first
    # No copy to the cut hedge but a hedge's again, at the next hedge time.
    again = [at for at, peer in sends.copies[1:] if peer == hedge]
    assert again
    assert again[0] >= cut_at + 0.5 - 1e-9
    assert hedge in got
    assert stats.unexpected_peer == int(spoof)


@pytest.mark.parametrize("timeout", [5.0, math.inf, 0.18])
async def test_a_stream_reader_sending_as_another_takes_the_last_reply_stops_too(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, timeout: float
) -> None:
    # Two tasks read a stream of two peers. The second peer answers late, and
    # the copy sent to it again waits for room (a full send buffer), its
    # reader with it: meanwhile the other reader takes the last reply. The
    # sender, once its send went, stops as well (it waited for the deadline,
    # or for ever without one); or, its send cut short by the deadline (0.18
    # s), it stops without saying the stream timed out.
    from trioconfd.testing._simnet import SimulatedSocket

    send = SimulatedSocket.sendto
    slow_to: list[Any] = []
    sends: dict[Any, int] = {}
    went: dict[Any, int] = {}

    async def sendto(self: SimulatedSocket, datagram: bytes, address: Any) -> int:
        count = sends[address] = sends.get(address, 0) + 1
        if slow_to and address == slow_to[0] and count == 2:
            await trio.sleep(0.1)
        went[address] = went.get(address, 0) + 1
        return await send(self, datagram, address)

    monkeypatch.setattr(SimulatedSocket, "sendto", sendto)
    async with open_simulated_cluster([CONFIG] * 2, KEY) as cluster:
        cluster.set_faults(1, to_client=Faults(delay=1.0, delay_range=(0.15, 0.15)))
        async with open_confd_client(KEY, cluster.peers, port=cluster.port) as client:
            slow_to.append(cluster.peers[1])
            start = trio.current_time()
            stopped: dict[str, float] = {}
            async with client.request(RequestType.PING, coverage=-1, timeout=timeout) as replies:

                async def reader(name: str) -> None:
                    async for _ in replies:
                        pass
                    stopped[name] = trio.current_time() - start

                with trio.fail_after(10):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(reader, "a")
                        nursery.start_soon(reader, "b")
            assert sends[cluster.peers[1]] == 2
            assert went[cluster.peers[1]] == (1 if timeout < 0.2 else 2)  # unless cut short
            assert max(stopped.values()) < 1
            assert not replies.timed_out
            assert replies.result().received == 2


async def test_a_finished_streams_verdict_read_late_reaches_no_other_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Once a stream's block has ended its channel is back in the pool, and the
    # next request may be reading it. Its verdict, read after, must not hand
    # that request anything (the end that stops a stream's other readers).
    async with (
        open_simulated_cluster([CONFIG] * 2, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        async with client.request(RequestType.CLUSTER_MASTER, coverage=-1) as finished:
            assert len([reply async for reply in finished]) == 2
        for index in range(2):
            cluster.set_faults(index, to_client=Faults(delay=1.0, delay_range=(0.5, 0.5)))
        results: list[trioconfd.QueryResult] = []

        async def query() -> None:
            results.append(await client.query(RequestType.CLUSTER_MASTER, coverage=-1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(query)
            await trio.sleep(0.3)  # the query waits on the stream's old channel
            assert finished._exchange.received.statistics().tasks_waiting_receive == 1
            assert finished.result().received == 2
        (result,) = results
        assert sorted(reply.address for reply in result.replies) == sorted(cluster.peers)
        assert result.consistent
