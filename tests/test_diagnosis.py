"""A query without a quorum says what actually happened: send failures, silence, discards."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trioconfd import (
    ConfdReply,
    ReplyStatus,
    RequestType,
    open_confd_client,
)
from trioconfd.protocol import pack_reply, unpack_request

from .responders import run_responders, silent
from .test_cli import run_cli_without_a_network
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
    (cause,) = result.diagnosis
    assert cause.endswith("replies had a bad signature: the peers sign with another key than ours")
    assert int(cause.split()[0]) >= 1  # the first send and each retransmission
    assert ("bad_signature", int(cause.split()[0])) in result.discards


async def test_replies_from_unasked_addresses_point_at_a_multihomed_peer() -> None:
    async with (
        answering_peer(answer_from_elsewhere=True) as peer,
        open_confd_client(KEY, [peer]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=0.3)
    (cause,) = result.diagnosis
    assert "authentic replies came from addresses not asked: a peer may be multihomed" in cause
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


async def test_a_zero_timeout_says_it_cannot_wait() -> None:
    async with (
        run_responders(1, KEY) as responders,
        open_confd_client(KEY, [responders[0].address]) as client,
    ):
        result = await client.query(RequestType.PING, timeout=0)
    assert result.timed_out
    assert result.diagnosis[0] == "a zero timeout can't wait for any reply: give one above 0"


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
