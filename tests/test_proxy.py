"""The fault-injection proxy, in front of the in-process server."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import trioconfd
from trioconfd import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdRequest,
    RequestType,
    RetryPolicy,
    open_confd_client,
    pack_request,
    unpack_reply,
)
from trioconfd.testing import (
    Faults,
    make_cluster_config,
    open_confd_server,
    open_fault_proxy,
    open_simulated_cluster,
)

from .responders import settle

KEY = b"proxy key"
CONFIG = make_cluster_config(serial=4)


async def test_clean_relay() -> None:
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address) as proxy,
        open_confd_client(KEY, [proxy.address]) as client,
    ):
        for _ in range(3):
            result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
            assert (result.answer, result.serial) == ("node1.example.com", 4)
        assert proxy.stats["to_server"].forwarded == 3
        assert proxy.stats["to_client"].forwarded == 3


async def test_dropping_everything_means_silence() -> None:
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address, to_server=Faults(drop=1.0)) as proxy,
        open_confd_client(KEY, [proxy.address]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=0.3)
        assert result.timed_out
        assert server.stats.answered == 0
        # Sent, then sent again 0.1 s later (the default policy): both dropped.
        assert client.stats.retransmitted == 1
        assert proxy.stats["to_server"].dropped == 2
        proxy.to_server = Faults()
        result = await client.query(RequestType.PING, timeout=5)
        assert not result.timed_out


async def test_duplicates_count_once() -> None:
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address, to_client=Faults(duplicate=1.0)) as proxy,
        open_confd_client(KEY, [proxy.address]) as client,
    ):
        async with client.request(RequestType.PING, timeout=5) as replies:
            got = [peer_reply async for peer_reply in replies]
            # The copy arrives while the request is still open: counted, not delivered.
            await settle(lambda: client.stats.duplicate == 1)
        assert len(got) == 1
        assert proxy.stats["to_client"].duplicated == 1
        assert client.stats.accepted == 1


async def test_corruption_is_caught() -> None:
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address, to_client=Faults(corrupt=1.0), seed=3) as proxy,
        open_confd_client(KEY, [proxy.address]) as client,
    ):
        for _ in range(10):
            result = await client.query(RequestType.CLUSTER_MASTER, timeout=0.1)
            # A flip JSON cannot see could pass; then the answer is intact.
            assert result.timed_out or result.answer == "node1.example.com"
        stats = client.stats
        assert proxy.stats["to_client"].corrupted == 10
        assert stats.malformed + stats.bad_signature + stats.accepted == 10
        assert stats.malformed + stats.bad_signature >= 7


async def test_delay() -> None:
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(
            server.address, to_server=Faults(delay=1.0, delay_range=(0.2, 0.2))
        ) as proxy,
        open_confd_client(KEY, [proxy.address]) as client,
    ):
        start = trio.current_time()
        result = await client.query(RequestType.PING, timeout=5)
        assert not result.timed_out
        assert trio.current_time() - start >= 0.2
        assert proxy.stats["to_server"].delayed == 1 + client.stats.retransmitted


async def test_reorder() -> None:
    faults = Faults(reorder=1.0, hold_limit=2.0)
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address, to_client=faults) as proxy,
    ):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            for rsalt in ("first", "second"):
                request = ConfdRequest(RequestType.PING, rsalt=rsalt)
                await sock.sendto(pack_request(request, KEY), proxy.address)
            salts = [unpack_reply(await sock.recv(65536), KEY)[1] for _ in range(2)]
        assert salts == ["second", "first"]
        assert proxy.stats["to_client"].reordered == 1


async def test_held_datagram_is_released_after_the_hold_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One request, sent once: its reply is held for reordering, and nothing
    # follows it, so only the hold limit can release it.
    faults = Faults(reorder=1.0, hold_limit=0.1)
    async with (
        open_simulated_cluster([CONFIG], KEY) as cluster,
        open_fault_proxy(cluster.peers[0], to_client=faults) as proxy,
        open_confd_client(KEY, [proxy.address], retry=RetryPolicy.off()) as client,
    ):
        start = trio.current_time()
        result = await client.query(RequestType.PING, timeout=5)
        assert not result.timed_out
        assert trio.current_time() - start == pytest.approx(0.1, abs=0.005)
        assert proxy.stats["to_client"].reordered == 1


async def _run_lossy(seed: int) -> tuple[int, set[str]]:
    """Send 40 pings through a proxy that drops half; which got answers?"""
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address, to_server=Faults(drop=0.5), seed=seed) as proxy,
    ):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        answered: set[str] = set()
        with sock:
            for index in range(40):
                request = ConfdRequest(RequestType.PING, rsalt=str(index))
                await sock.sendto(pack_request(request, KEY), proxy.address)
            while True:
                with trio.move_on_after(0.3) as idle:
                    answered.add(unpack_reply(await sock.recv(65536), KEY)[1])
                if idle.cancelled_caught:
                    break
        return proxy.stats["to_server"].dropped, answered


async def test_same_seed_same_run() -> None:
    first = await _run_lossy(7)
    assert first == await _run_lossy(7)
    assert 8 < first[0] < 32
    assert len(first[1]) == 40 - first[0]
    assert first != await _run_lossy(8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop": 1.5}, "drop must be a probability"),
        ({"corrupt": -0.1}, "corrupt must be"),
        ({"delay_range": (0.5, 0.1)}, "delay_range"),
        ({"hold_limit": 0}, "hold_limit"),
    ],
)
def test_bad_faults_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        Faults(**kwargs)  # type: ignore[arg-type]


async def test_a_datagram_to_an_upstream_socket_not_from_the_server_is_not_relayed() -> None:
    # Relayed, a forged datagram would reach the client from the proxy's
    # address, as the server's reply does: the client's check on who
    # answered would be passed.
    async with open_confd_server(CONFIG, KEY) as server, open_fault_proxy(server.address) as proxy:
        with trio.socket.socket(type=socket.SOCK_DGRAM) as client:
            await client.bind(("127.0.0.1", 0))
            with trio.socket.socket(type=socket.SOCK_DGRAM) as upstream_spy:
                await upstream_spy.bind(("127.0.0.1", 0))
                # The proxy opens the client's upstream socket as it relays.
                await client.sendto(b"not a request", proxy.address)
                await settle(lambda: proxy.stats["to_server"].forwarded == 1)
                (relay,) = proxy._sockets.values()
                await upstream_spy.sendto(b"FORGED", relay.getsockname())
                await settle(lambda: proxy.stats["to_client"].strays == 1)
            with trio.move_on_after(0.2):
                await client.recvfrom(100)
                pytest.fail("a forged datagram was relayed to the client")


async def test_the_oldest_clients_socket_goes_past_max_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("trioconfd.testing._proxy.MAX_CLIENTS", 3)
    async with (
        open_confd_server(CONFIG, KEY) as server,
        open_fault_proxy(server.address) as proxy,
    ):
        for _ in range(10):  # ten clients, each a fresh socket (and port)
            result = await trioconfd.query(KEY, [proxy.address], RequestType.PING, timeout=5)
            assert result.ok
        assert len(proxy._sockets) == 3
        # An evicted client's socket is closed, and the proxy relays on.
        assert (await trioconfd.query(KEY, [proxy.address], RequestType.PING, timeout=5)).ok


@pytest.mark.parametrize(
    ("upstream", "error", "match"),
    [
        (("127.0.0.1", 70000), ConfdArgumentError, "port"),
        ("127.0.0.1:1814", ConfdArgumentTypeError, "a \\(host, port\\) pair"),
        ((1234, 1814), ConfdArgumentTypeError, "a \\(host, port\\) pair"),
        (("::1", 1814), ConfdArgumentError, "no IPv4 address"),
    ],
)
async def test_a_bad_upstream_is_refused_as_the_proxy_opens(
    upstream: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with open_fault_proxy(upstream):  # type: ignore[arg-type]
            pass


async def test_faults_of_the_wrong_type_are_refused_naming_them() -> None:
    async with open_confd_server(CONFIG, KEY) as server, open_fault_proxy(server.address) as proxy:
        with pytest.raises(ConfdArgumentTypeError, match="to_server must be a Faults"):
            proxy.to_server = None  # type: ignore[assignment]
        with pytest.raises(ConfdArgumentTypeError, match="to_client must be a Faults"):
            proxy.to_client = {"drop": 1.0}  # type: ignore[assignment]
    with pytest.raises(ConfdArgumentTypeError, match="hold_limit must be"):
        Faults(hold_limit="0.1")  # type: ignore[arg-type]
    with pytest.raises(ConfdArgumentTypeError, match="delay_range's low must be"):
        Faults(delay_range=("0", "1"))  # type: ignore[arg-type]
    with pytest.raises(ConfdArgumentTypeError, match="delay_range must be a \\(low, high\\) pair"):
        Faults(delay_range=(0,))  # type: ignore[arg-type]


@pytest.mark.parametrize("upstream_host", ["0.0.0.0", "127.0.0.2"])
async def test_a_server_on_a_wildcard_address_is_relayed_from_where_it_answers(
    upstream_host: str,
) -> None:
    # Bound to 0.0.0.0, the server answers from 127.0.0.1 whatever address
    # the proxy wrote to: that is the server, not a stray.
    async with open_confd_server(CONFIG, KEY, host="0.0.0.0") as server:
        upstream = (upstream_host, server.address[1])
        async with open_fault_proxy(upstream) as proxy:
            result = await trioconfd.query(KEY, [proxy.address], RequestType.PING, timeout=5)
            assert result.ok
            assert proxy.stats["to_client"].strays == 0
