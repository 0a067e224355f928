"""What the client and the in-process servers share of a Trio UDP socket: a large
receive buffer, the errors that mean a peer is unreachable, and a receive that
reads on past them."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable
from typing import Any

import trio

#: The socket receive buffer asked for, by the client and the in-process
#: server alike: room for a burst of datagrams (the kernel may grant less;
#: see ``net.core.rmem_max``).
RECEIVE_BUFFER_SIZE = 4 * 1024 * 1024


#: Errors a UDP socket reports when a peer cannot be reached: the socket
#: itself is fine, and the other peers may still answer.
PEER_UNREACHABLE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EPROTO,
    }
)
#: Errors of a socket that was closed under its reader.
SOCKET_CLOSED = frozenset({errno.EBADF, errno.ENOTSOCK})


async def receive_datagram(
    sock: trio.socket.SocketType, size: int, on_unreachable: Callable[[OSError], object]
) -> tuple[bytes, Any] | None:
    """The next datagram and its sender from ``sock``; None once the socket is closed.

    An error that says a peer is unreachable goes to ``on_unreachable``, and
    reading goes on; any other error is raised.
    """
    while True:
        try:
            datagram, sender = await sock.recvfrom(size)
        except trio.ClosedResourceError:
            return None
        except OSError as exc:
            if exc.errno in SOCKET_CLOSED:
                return None
            if exc.errno not in PEER_UNREACHABLE:
                raise
            on_unreachable(exc)
            await trio.lowlevel.checkpoint()  # a custom socket's failure may not yield
            continue
        return datagram, sender


def ask_for_a_large_receive_buffer(sock: Any) -> None:
    """Ask the kernel for :data:`RECEIVE_BUFFER_SIZE` bytes of receive buffer for ``sock``.

    The default (about 200 KB on Linux) holds a few hundred datagrams: a
    burst of replies, or of requests, longer than that is dropped. A
    simulated network's socket has no kernel buffer: its default serves.
    """
    with contextlib.suppress(OSError, NotImplementedError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_SIZE)
