"""The fault-injection proxy, in front of the in-process server."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trioconfd import (
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
