"""An in-process confd server on a Trio UDP socket that answers like ganeti-confd 3.0."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket as stdlib_socket
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import trio

from .._tasks import background_tasks
from .._udp import ask_for_a_large_receive_buffer, receive_datagram
from ..client import check_port
from ..protocol import (
    MAX_REQUEST_SIZE,
    ConfdClientError,
    ConfdError,
    ConfdProtocolError,
    HmacKey,
    KeyLike,
    as_hmac_key,
    format_address,
    pack_reply,
    unpack_request,
)
from ._answers import ConfigAnswers

_LOGGER = logging.getLogger("trioconfd.testing.server")

#: A configuration: the parsed ``config.data``, or the path of one.
ConfigSource: TypeAlias = Mapping[str, Any] | str | os.PathLike[str]


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path``, if it is a regular file: a FIFO (or a device) would
    block the event loop, waiting for a writer, for as long as none comes."""
    # Opened without blocking, then asked what it is: no race with a rename.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device, a directory?)")
        return file.read()


def load_config(source: ConfigSource) -> Mapping[str, Any]:
    """The configuration ``source`` names, parsed; a clear error if it is not one."""
    if isinstance(source, Mapping):
        config = source
    else:
        path = Path(source)
        try:
            config = json.loads(_read_regular_file(path))
        except OSError as exc:
            raise ConfdError(f"cannot read the configuration {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfdError(f"the configuration {path} is not JSON: {exc}") from None
        except RecursionError:
            raise ConfdError(f"the configuration {path} nests too deeply to read") from None
    cluster = config.get("cluster") if isinstance(config, Mapping) else None
    serial = cluster.get("serial_no") if isinstance(cluster, Mapping) else None
    if isinstance(serial, bool) or not (
        isinstance(serial, int) or (isinstance(serial, float) and math.isfinite(serial))
    ):
        raise ConfdError("not a Ganeti configuration: no cluster object with a serial_no")
    for section in ("nodes", "instances", "disks", "nodegroups", "networks"):
        items = config.get(section)
        if items is None:
            continue
        if not isinstance(items, Mapping) or not all(
            isinstance(item, Mapping) for item in items.values()
        ):
            raise ConfdError(f"not a Ganeti configuration: {section!r} is not an object of objects")
    return config


def answers_for(source: ConfigSource) -> ConfigAnswers:
    """The answers to every request from the configuration ``source`` names; a
    :class:`ConfdError` naming what is wrong if it is not one the server can read."""
    config = load_config(source)
    try:
        return ConfigAnswers(config)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, RecursionError) as exc:
        problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfdError(f"not a Ganeti configuration the server can read ({problem})") from None


@dataclass
class ServerStats:
    """What the server did with the datagrams it read."""

    answered: int = 0
    #: dropped unanswered, as the daemon drops them (bad magic, HMAC, timestamp, message)
    dropped: int = 0
    #: datagrams whose handling raised (a bug: logged with its traceback, then skipped)
    errors: int = 0


class ConfdServer:
    """A running in-process confd server; see :func:`open_confd_server`."""

    def __init__(self, sock: trio.socket.SocketType, key: HmacKey, config: ConfigSource) -> None:
        self._socket = sock
        self._key = key
        self._answers = answers_for(config)
        self.stats = ServerStats()

    def __repr__(self) -> str:
        # Never the key: a repr ends up in logs and tracebacks.
        try:
            where = format_address(self.address)
        except OSError:
            where = "closed"
        stats = self.stats
        return (
            f"<ConfdServer {where} serial={self.serial} answered={stats.answered}"
            f" dropped={stats.dropped} errors={stats.errors}>"
        )

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server is bound to."""
        host, port = self._socket.getsockname()[:2]
        return (host, port)

    @property
    def serial(self) -> int:
        """The cluster serial of the configuration being served."""
        return self._answers.serial

    def set_config(self, config: ConfigSource) -> None:
        """Serve another configuration from now on, as the daemon does when config.data changes."""
        self._answers = answers_for(config)

    def reply_to(self, datagram: bytes) -> bytes | None:
        """The reply datagram the daemon would send for ``datagram``, or None if it drops it."""
        try:
            request, _ = unpack_request(datagram, self._key)
        except ConfdProtocolError as exc:
            self.stats.dropped += 1
            _LOGGER.info("Failed to parse incoming message: %s", exc)
            return None
        reply = self._answers.answer(request)
        try:
            return pack_reply(reply, request.rsalt, self._key)
        except ConfdClientError as exc:  # an answer too big for one datagram
            self.stats.dropped += 1
            _LOGGER.info("Cannot send the reply: %s", exc)
            return None

    async def serve(self) -> None:
        while True:
            # Like the daemon, read at most MAX_REQUEST_SIZE bytes (one more so
            # that a longer request is seen, and dropped, as too long).
            received = await receive_datagram(self._socket, MAX_REQUEST_SIZE + 1, _serve_on)
            if received is None:
                return  # the socket was closed
            datagram, sender = received
            try:
                reply = self.reply_to(datagram)
            except Exception:
                # No datagram may stop the server; this one found a bug.
                self.stats.errors += 1
                _LOGGER.exception("answering a datagram from %s failed; serving on", sender)
                continue
            if reply is None:
                continue
            self.stats.answered += 1
            try:
                await self._socket.sendto(reply, sender)
            except OSError as exc:
                # One client's address refused (unreachable, too large...): the
                # others are still served.
                _LOGGER.debug("could not reply to %s: %s", sender, exc)


def _serve_on(error: OSError) -> None:
    _LOGGER.debug("the socket reported %s; serving on", error)


@asynccontextmanager
async def open_confd_server(
    config: ConfigSource,
    hmac_key: KeyLike,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[ConfdServer]:
    """Run a confd server on ``host``:``port`` (0: any free port) for the block.

    It answers every request type from ``config`` (a parsed Ganeti 3.0
    configuration or its path) as Debian's ganeti-confd 3.0 does, and drops
    what the daemon drops: bad magic or HMAC, stale timestamps, undecodable
    messages. ``server.set_config`` swaps the configuration live.
    """
    key = as_hmac_key(hmac_key)
    if not (type(port) is int and port == 0):  # 0: any free port
        port = check_port(port, "the server's port")
    family = stdlib_socket.AF_INET6 if ":" in host else stdlib_socket.AF_INET
    sock = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    with sock:
        # A burst of requests (thousands of queries at once) must wait in the
        # buffer, not be dropped: each drop would cost the client a retry.
        ask_for_a_large_receive_buffer(sock)
        server = ConfdServer(sock, key, config)
        try:
            await sock.bind((host, port))
        except OSError as exc:
            raise ConfdError(f"cannot bind the confd server to {host}:{port}: {exc}") from None
        async with background_tasks() as nursery:
            nursery.start_soon(server.serve)
            yield server
