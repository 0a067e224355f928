"""A query without a quorum says what actually happened: send failures, silence, discards."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioconfd import (
    ConfdReply,
    ReplyStatus,
    RequestType,
    RetryPolicy,
    open_confd_client,
)
from trioconfd._udp import ErrorQueue
from trioconfd.cli._exits import EXIT_TIMEOUT
from trioconfd.client import format_address
from trioconfd.client._router import Router
from trioconfd.protocol import pack_reply, unpack_request
from trioconfd.testing import Faults, make_cluster_config, open_simulated_cluster

from .conftest import write_key_file
from .responders import run_responders, silent
from .test_cli import _can_unshare, run_cli, run_cli_without_a_network
from .test_client_shape import RecordingFactory, RecordingSocket, installed

KEY = b"diagnosis key\n"
NOT_THE_KEY = b"another cluster's key\n"


class UnreachableSocket(RecordingSocket):
    """Every send fails as on a host whose route to the peers is gone."""

    async def sendto(self, *args: Any) -> int:
        await trio.lowlevel.checkpoint()
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))


async def test_send_failures_are_named_with_the_os_error() -> None:
    peers = [("127.0.0.1", 9), ("127.0.0.2", 9)]
    with installed(RecordingFactory(UnreachableSocket)):
        async with open_confd_client(KEY, peers) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.3)
            assert client.stats.send_errors >= 2
    assert result.timed_out
    unreachable = os.strerror(errno.ENETUNREACH)
    assert dict(result.send_errors) == dict.fromkeys(
        peers, f"[Errno {errno.ENETUNREACH}] {unreachable}"
    )
    assert result.diagnosis == (
        f"could not send to 127.0.0.1:9, 127.0.0.2:9: [Errno {errno.ENETUNREACH}] {unreachable}",
    )
    assert "wrong key" not in result.verdict


@asynccontextmanager
async def answering_peer(
    *, sign_with: bytes = KEY, answer_from_elsewhere: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """A peer that answers every request, signed with ``sign_with``, perhaps from another port."""
    async with trio.open_nursery() as nursery:
        with (
            trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
            trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as elsewhere,
        ):
            await sock.bind(("127.0.0.1", 0))
            await elsewhere.bind(("127.0.0.1", 0))

            async def serve() -> None:
                while True:
                    datagram, sender = await sock.recvfrom(65536)
                    request, _ = unpack_request(datagram, KEY)
                    reply = pack_reply(ConfdReply(ReplyStatus.OK, 1, 1), request.rsalt, sign_with)
                    await (elsewhere if answer_from_elsewhere else sock).sendto(reply, sender)

            nursery.start_soon(serve)
            yield sock.getsockname()
            nursery.cancel_scope.cancel()


async def test_bad_signatures_point_at_the_key() -> None:
    async with (
        answering_peer(sign_with=NOT_THE_KEY) as peer,
        open_confd_client(KEY, [peer]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=0.3)
    cause, which = result.diagnosis
    assert cause.endswith("replies had a bad signature: the peers sign with another key than ours")
    assert which == f"no reply accepted from {peer[0]}:{peer[1]}"
    assert int(cause.split()[0]) >= 1  # the first send and each retransmission
    assert ("bad_signature", int(cause.split()[0])) in result.discards


async def test_replies_from_unasked_addresses_point_at_a_multihomed_peer() -> None:
    async with (
        answering_peer(answer_from_elsewhere=True) as peer,
        open_confd_client(KEY, [peer]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=0.3)
    cause, which = result.diagnosis
    assert "authentic replies came from addresses not asked: a peer may be multihomed" in cause
    assert which == f"no reply accepted from {peer[0]}:{peer[1]}"
    assert dict(result.discards)["unexpected_peer"] >= 1


async def test_silence_points_at_key_clock_port_or_daemon() -> None:
    async with run_responders(3, KEY, silent) as responders:
        peers = [responder.address for responder in responders]
        async with open_confd_client(KEY, peers) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.3)
    assert result.send_errors == ()
    assert result.discards == ()
    (cause,) = result.diagnosis
    assert cause.startswith("none of the 3 peers asked sent anything back")
    assert "a wrong key" in cause
    assert "a clock over 300 s off" in cause


async def test_a_streams_verdict_explains_itself_too() -> None:
    async with (
        answering_peer(sign_with=NOT_THE_KEY) as peer,
        open_confd_client(KEY, [peer]) as client,
        client.request(RequestType.PING, timeout=0.3) as replies,
    ):
        async for _ in replies:
            pass
        result = replies.result()
    assert result.timed_out
    assert "bad signature" in result.verdict


async def test_the_cli_names_send_failures_in_a_namespace_without_a_network() -> None:
    done = await run_cli_without_a_network(
        "ping", "--peer", "127.0.0.1:1814", "--peer", "127.0.0.2:1814",
        "--hmac-key", "k", "--timeout", "0.3",
    )  # fmt: skip
    assert done.returncode == 3
    stderr = done.stderr.decode()
    assert (
        "could not send to 127.0.0.1:1814, 127.0.0.2:1814: [Errno 101] Network is unreachable"
        in stderr
    )
    assert "wrong key" not in stderr


# -- the cause named, where the client can know it ------------------------------


def _closed_port(host: str = "127.0.0.1") -> tuple[str, int]:
    """A loopback port where nothing listens (bound, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return (host, sock.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_a_port_where_nothing_listens_is_named(host: str) -> None:
    closed = [_closed_port(host), _closed_port(host)]
    async with run_responders(1, KEY, silent, host=host) as responders:
        quiet = responders[0].address
        async with open_confd_client(KEY, [*closed, quiet]) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.3)
            assert client.stats.send_errors == 0  # another's ICMP error fails no send
    assert result.timed_out
    assert set(result.unreachable) == {(peer, "port unreachable") for peer in closed}
    assert result.silent == (*closed, quiet) or set(result.silent) == {*closed, quiet}
    named = ", ".join(f"{format_address(peer)}" for peer, _ in result.unreachable)
    assert result.diagnosis == (
        f"nothing listens on {named} (port unreachable)",
        f"no reply accepted from {format_address(quiet)}",
    )


async def test_an_unreachable_peer_fails_no_send_to_the_others() -> None:
    # Linux fails the next call on a socket with an ICMP error it was sent,
    # and does not send: each such send is made again once the error is read.
    async with run_responders(2, KEY) as responders:
        peers = [_closed_port(), *(responder.address for responder in responders)]
        async with open_confd_client(KEY, peers) as client:
            for _ in range(50):
                result = await client.query(RequestType.PING, coverage=-1, timeout=5)
                assert result.received == 2, result.verdict
            assert client.stats.send_errors == 0
            assert set(client._router.unreachable) == {peers[0]}  # the errors did come


async def test_the_network_errors_leave_the_receive_tasks_idle() -> None:
    # An ICMP error that a send (to another peer) met and that was left in
    # the queue keeps the socket signalling an error: its readers would
    # wake for nothing, thousands of batches a second, at full CPU.
    class Batches(trio.abc.Instrument):
        count = 0

        def after_io_wait(self, timeout: float) -> None:
            self.count += 1

    async with run_responders(1, KEY, silent) as responders:
        peers = [_closed_port(), responders[0].address]
        async with open_confd_client(KEY, peers) as client:
            batches = Batches()
            trio.lowlevel.add_instrument(batches)
            # Each query sends to both, in the sample's order: the closed
            # port first, in about half of them.
            results = [
                await client.query(RequestType.PING, coverage=-1, timeout=0.05) for _ in range(10)
            ]
            trio.lowlevel.remove_instrument(batches)
    assert batches.count < 100, batches.count  # a few waits a query, not a spin
    assert all([peer for peer, _ in result.unreachable] == peers[:1] for result in results)


@pytest.mark.parametrize(
    ("timeout", "cause"),
    [
        (0, "a zero timeout can't wait for any reply: give one above 0"),
        (
            0.00001,
            "the timeout, 1e-05 s, is shorter than a reply takes (a round trip to a daemon "
            "takes 0.1 ms or more, even on loopback): give a longer one",
        ),
    ],
)
async def test_a_timeout_too_short_for_any_reply_says_so(timeout: float, cause: str) -> None:
    async with (
        run_responders(1, KEY) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=timeout)
    assert result.timed_out
    assert result.diagnosis[0] == cause


async def test_a_timeout_shorter_than_the_measured_round_trip_is_named(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = Faults(delay=1.0, delay_range=(0.2, 0.2))
    async with (
        open_simulated_cluster([make_cluster_config()] * 3, KEY, to_client=slow) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, retry=RetryPolicy(adaptive=True)
        ) as client,
    ):
        for _ in range(5):
            assert (await client.query(RequestType.PING, coverage=-1, timeout=5)).ok
        estimates = [e.srtt for e in client._router.rtt.values() if e.srtt is not None]
        result = await client.query(RequestType.PING, coverage=-1, timeout=0.1)
    assert result.timed_out
    assert result.round_trip == min(estimates)
    assert result.round_trip > 0.1  # learned from replies 0.2 s away
    assert result.diagnosis[0] == (
        f"the timeout, 0.1 s, is shorter than the peers' round trip as measured, "
        f"{result.round_trip * 1000:.3g} ms: give a longer one"
    )


async def test_silence_names_the_silent_peers_and_a_key_without_its_newline() -> None:
    async with run_responders(2, KEY, silent) as responders:
        peers = [responder.address for responder in responders]
        async with open_confd_client(KEY.rstrip(b"\n"), peers) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.2)
    assert set(result.silent) == set(peers)
    (cause,) = result.diagnosis
    listed = ", ".join(format_address(peer) for peer in result.silent)
    assert cause.startswith(f"none of the 2 peers asked sent anything back ({listed}); ")
    assert "a wrong key (ours has no trailing newline" in cause


async def test_the_cli_names_the_ports_where_nothing_listens(tmp_path: Path) -> None:
    first, second = _closed_port(), _closed_port()
    key_file = write_key_file(tmp_path, KEY)
    done = await run_cli(
        "master", f"--peer=127.0.0.1:{first[1]}", f"--peer=127.0.0.1:{second[1]}",
        "--key-file", str(key_file), "--timeout", "1",
    )  # fmt: skip
    assert done.returncode == EXIT_TIMEOUT
    assert done.stdout == b""
    ports = sorted([first[1], second[1]])
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "trioconfd: no quorum: 0/2 replies in time, 2 needed"
    assert lines[1] in {
        f"  nothing listens on 127.0.0.1:{a}, 127.0.0.1:{b} (port unreachable)"
        for a, b in (ports, ports[::-1])
    }


# -- forged ICMP errors, in a network namespace of their own ------------------------


_ROOT = str(Path(__file__).resolve().parent.parent)


async def _forge(*args: str) -> dict[str, Any]:
    if not _can_unshare():
        if os.environ.get("CI"):
            pytest.fail("unshare -n is needed in CI (run as root)")
        pytest.skip("unshare -n is not permitted here")
    done = await trio.run_process(
        ["unshare", "-n", sys.executable, "-m", "tests.icmp_forge", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=_ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("family", "kind", "code"),
    [
        ("6", "1", "1"),  # ICMPv6 administratively prohibited: EACCES
        ("6", "1", "5"),  # policy failure: EACCES
        ("6", "2", "0"),  # packet too big: EMSGSIZE
        ("4", "3", "4"),  # fragmentation needed: EMSGSIZE
        ("4", "3", "8"),  # source host isolated: ENONET
        ("4", "3", "5"),  # source route failed: EOPNOTSUPP
        ("4", "3", "3"),  # port unreachable: ECONNREFUSED
    ],
)
async def test_a_forged_icmp_error_of_any_kind_leaves_the_client_running(
    family: str, kind: str, code: str
) -> None:
    # With the error queue on, the kernel reports every ICMP error the
    # socket is sent, whoever sent it: none may stop the receive task.
    result = await _forge("one", family, kind, code)
    assert result["ok"] == [True, True, True, True]


async def test_a_burst_of_icmp_errors_is_read_whole_and_the_client_idles() -> None:
    # More errors than one read of the queue took, while the client was
    # busy: left unread, they kept the socket signalling and the readers
    # spinning (a scheduler batch every few microseconds, at full CPU).
    result = await _forge("burst", "1200")
    assert result["ok"] == [True, True]
    assert result["send_errors"] == 0
    assert result["idle_batches"] < 20, result


async def test_silence_beside_an_authentic_reply_blames_no_key() -> None:
    # One peer answered with our key: the key and the clocks are right, so
    # the silent two are down or slow, and the verdict says that instead.
    async with (
        run_responders(1, KEY) as answering,
        run_responders(2, KEY, silent) as quiet,
    ):
        peers = [answering[0].address, *(responder.address for responder in quiet)]
        async with open_confd_client(KEY, peers) as client:
            result = await client.query(RequestType.PING, coverage=-1, timeout=0.3)
    assert (result.received, result.needed, result.timed_out) == (1, 2, True)
    (cause,) = result.diagnosis
    listed = ", ".join(format_address(peer) for peer in result.silent)
    assert cause == (
        f"2 peers sent nothing back ({listed}); the 1 that answered signed with our key, "
        "so the key and the clocks are right: the others may be down, or slower than the "
        "0.3 s timeout"
    )
    assert result.round_trip is not None  # measured by that reply
    assert result.round_trip < 0.3


class _QueuedErrors:
    """A socket whose error queue is a list: a read finding it empty waits."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.queue: list[int] = []
        self.found_empty = trio.Event()

    async def recvmsg(self, bufsize: int, ancbufsize: int, flags: int) -> tuple[Any, ...]:
        assert flags == socket.MSG_ERRQUEUE
        if not self.queue:
            self.found_empty.set()
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        extended = struct.pack("=IB", self.queue.pop(0), 2).ljust(16, b"\0")
        return b"", [(socket.IPPROTO_IP, 11, extended)], 0, ("127.0.0.2", 1814)


async def test_errors_that_come_while_the_queue_is_read_are_read_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A task reads the queue and finds it empty; an error comes, another task
    # meets it and asks for the queue to be read: the drain then has it read
    # again. (Left there, with its signal taken, it kept the socket
    # signalling and the receive tasks spinning, one run in 20.) One pass a
    # drain: what it read comes back at once, and a flood of errors cannot
    # keep one drain going.
    sock = _QueuedErrors()
    asked_again: list[int] = []
    queue = ErrorQueue(sock, read_again=lambda: asked_again.append(len(sock.queue)))  # type: ignore[arg-type]
    sock.queue.append(errno.ECONNREFUSED)
    drained: list[list[tuple[tuple[str, int], int]]] = []

    async def drain() -> None:
        drained.append(await queue.drain())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await sock.found_empty.wait()
        sock.queue.append(errno.EHOSTUNREACH)
        assert await queue.drain() == []  # the other task: the one reading has it read again
    peer = ("127.0.0.2", 1814)
    assert drained == [[(peer, errno.ECONNREFUSED)]]
    assert asked_again == [1]  # once, with the new error still queued
    # The next drain (a receive task's, in the client) reads what was left.
    assert await queue.drain() == [(peer, errno.EHOSTUNREACH)]
    assert sock.queue == []
    assert asked_again == [1]  # nobody asked during that drain


@asynccontextmanager
async def _a_clients_error_queue() -> AsyncIterator[tuple[Router, ErrorQueue]]:
    """A client's router and its error queue (Linux)."""
    async with open_confd_client(b"key", [("127.0.0.1", 9)]) as client:
        router = client._router
        assert router.error_queue is not None
        yield router, router.error_queue


@pytest.mark.skipif(sys.platform != "linux", reason="the error queue is Linux's")
async def test_a_drain_asked_for_meanwhile_is_done_again_by_a_receive_task() -> None:
    async with _a_clients_error_queue() as (_, queue):
        drained = trio.Event()
        drain = queue.drain

        async def counted() -> list[tuple[tuple[str, int], int]]:
            drained.set()
            return await drain()

        queue.drain = counted  # type: ignore[method-assign]
        queue._read_again()  # as a drain that was asked for meanwhile ends
        with trio.fail_after(5):
            await drained.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="the error queue is Linux's")
async def test_a_receive_task_drains_again_before_it_reads_the_socket() -> None:
    # A receive task drains the queue from the top of its loop, and another
    # drain is asked for meanwhile: that task drains once more before it
    # reads the socket (a read first would wait on a socket that signals
    # for the errors left queued, and spin).
    async with _a_clients_error_queue() as (router, queue):
        seen: list[tuple[trio.lowlevel.Task, str]] = []
        hold, holding = trio.Event(), trio.Event()
        read_to_the_end = queue._read_to_the_end

        async def one_pass() -> list[tuple[tuple[str, int], int]]:
            seen.append((trio.lowlevel.current_task(), "drain"))
            if not hold.is_set():  # the first pass is held
                holding.set()
                await hold.wait()
            return await read_to_the_end()

        def noting(method: Any) -> Any:
            async def read(*args: Any) -> Any:
                if not (len(args) > 2 and args[2] & socket.MSG_ERRQUEUE):
                    seen.append((trio.lowlevel.current_task(), "read"))
                return await method(*args)

            return read

        queue._read_to_the_end = one_pass  # type: ignore[method-assign]
        router.socket.recvfrom = noting(router.socket.recvfrom)  # type: ignore[method-assign]
        router.socket.recvmsg = noting(router.socket.recvmsg)  # type: ignore[method-assign]
        router._have_errors_read()  # the receive tasks leave their reads, and one drains
        with trio.fail_after(5):
            await holding.wait()
            assert await queue.drain() == []  # asked for meanwhile
            hold.set()
            await trio.sleep(0.05)
        drainer = seen[0][0]
        assert seen[0][1] == "drain"
        assert [what for task, what in seen if task is drainer][:2] == ["drain", "drain"]
