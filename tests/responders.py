"""Scripted confd peers for client tests: each answers as its handler says."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing

from trioconfd import (
    MAGIC,
    ConfdProtocolError,
    ConfdReply,
    ConfdRequest,
    HmacKey,
    ReplyStatus,
)
from trioconfd.protocol import pack_reply, unpack_request

#: Given the request and the responder's index, the reply to send (None: stay
#: silent; a str: the message text, signed as it is, for replies pack_reply
#: cannot make).
Handler = Callable[[ConfdRequest, int], ConfdReply | str | None]


def sign_message(text: str, rsalt: str, key: bytes) -> bytes:
    """A reply datagram carrying the message ``text`` exactly, correctly signed."""
    signature = HmacKey(key).sign((rsalt + text).encode("utf-8"))
    return MAGIC + json.dumps({"hmac": signature, "msg": text, "salt": rsalt}).encode()


def answer_ping(serial: int = 0) -> Handler:
    def handler(request: ConfdRequest, index: int) -> ConfdReply:
        return ConfdReply(ReplyStatus.OK, f"answer from {index}", serial)

    return handler


def silent(request: ConfdRequest, index: int) -> None:
    return None


ANSWER_PING = answer_ping()


@dataclass
class Responder:
    index: int
    sock: trio.socket.SocketType
    handler: Handler
    key: bytes
    delay: float = 0.0
    copies: int = 1
    requests: list[ConfdRequest] = field(default_factory=list)
    client_addresses: list[tuple[object, ...]] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    async def _reply(self, datagram: bytes, to: tuple[object, ...]) -> None:
        await trio.sleep(self.delay)
        for _ in range(self.copies):
            await self.sock.sendto(datagram, to)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            await self._serve(nursery)

    async def _serve(self, nursery: trio.Nursery) -> None:
        while True:
            datagram, sender = await self.sock.recvfrom(65536)
            try:
                request, _ = unpack_request(datagram, self.key)
            except ConfdProtocolError:
                continue
            self.requests.append(request)
            self.client_addresses.append(sender)
            reply = self.handler(request, self.index)
            if isinstance(reply, str):
                datagram = sign_message(reply, request.rsalt, self.key)
                nursery.start_soon(self._reply, datagram, sender)
            elif reply is not None:
                datagram = pack_reply(reply, request.rsalt, self.key)
                nursery.start_soon(self._reply, datagram, sender)


async def settle(condition: Callable[[], bool], rounds: int = 50) -> None:
    """Let every task run until all wait, until ``condition`` holds (no clock polled).

    On loopback a datagram is in its receiver's buffer once ``sendto``
    returns, so when every task is blocked, everything sent has been read.
    A few rounds allow for chains (a request, its reply, the reply's upcall).
    """
    for _ in range(rounds):
        if condition():
            return
        await trio.testing.wait_all_tasks_blocked()
    assert condition(), "still not so after every task had run and blocked"


async def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``limit`` seconds.

    Loopback delivery takes a scheduling round or two; the limit is generous
    so that a loaded machine does not fail the test, and never reached when
    the behaviour under test works.
    """
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - the conditions are counters, not events
            await trio.sleep(0.002)


@asynccontextmanager
async def run_responders(
    count: int,
    key: bytes,
    handler: Handler = ANSWER_PING,
    *,
    host: str = "127.0.0.1",
) -> AsyncIterator[list[Responder]]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    responders = []
    async with trio.open_nursery() as nursery:
        for index in range(count):
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            await sock.bind((host, 0))
            responder = Responder(index, sock, handler, key)
            responders.append(responder)
            nursery.start_soon(responder.serve)
        try:
            yield responders
        finally:
            nursery.cancel_scope.cancel()
            for responder in responders:
                responder.sock.close()
