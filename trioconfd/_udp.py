"""What the client and the in-process servers share of a Trio UDP socket: a large
receive buffer, the errors that mean a peer is unreachable, a receive that
reads on past them, and (on Linux) which peer each of those errors was about."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
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
        # What else an ICMP error becomes, once a socket asks for them
        # (Linux's icmp_err_convert and ICMPv6's): administratively
        # prohibited (EACCES), too big for the path (EMSGSIZE), source route
        # failed (EOPNOTSUPP), host isolated (ENONET). Anyone can send one.
        errno.EACCES,
        errno.EMSGSIZE,
        errno.EOPNOTSUPP,
        getattr(errno, "ENONET", errno.EHOSTUNREACH),
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


# Linux's <linux/in.h> and <linux/in6.h>: the socket options that queue the
# ICMP errors an unconnected UDP socket is sent, each with the address of
# the datagram that caused it (Python's socket module names neither).
_IP_RECVERR = 11
_IPV6_RECVERR = 25
#: ``struct sock_extended_err`` begins with ee_errno (u32) and ee_origin (u8).
_EXTENDED_ERROR = struct.Struct("=IB")
#: A bound on one drain, far above what a socket's buffer can queue: the
#: queue must be emptied, or the socket keeps signalling an error.
_DRAIN_LIMIT = 1_000_000


class ErrorQueue:
    """The ICMP errors a client's UDP socket was sent, each with the peer it was about.

    Without it, Linux reports "port unreachable" to an unconnected UDP
    socket only as an ``ECONNREFUSED`` from its next call (which, a
    ``sendto``, fails to send), naming no address. With ``IP_RECVERR``
    each error is queued with the destination of the datagram that caused
    it; :meth:`drain` reads them. Every caller that meets one of those
    errors drains the queue: a queue left full keeps the socket reporting
    an error (``EPOLLERR``), and its readers would wake for nothing.
    """

    def __init__(self, fd: int) -> None:
        # A socket of our own on the same file: read without blocking, and
        # without going through Trio's wait for readability.
        self._socket = socket.socket(fileno=os.dup(fd))

    @classmethod
    def attach(cls, sock: Any) -> ErrorQueue | None:
        """Ask ``sock``'s kernel to queue its ICMP errors; None where it cannot (not
        Linux, a custom socket)."""
        if sys.platform != "linux":
            return None
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            return cls(sock.fileno())
        except (OSError, NotImplementedError, AttributeError, TypeError, ValueError):
            return None

    def drain(self) -> list[tuple[tuple[str, int], int]]:
        """Each queued error's peer (the address the datagram went to) and errno."""
        errors = []
        for _ in range(_DRAIN_LIMIT):
            try:
                _, ancillary, _, address = self._socket.recvmsg(
                    0, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break  # closed under us, or no queue after all
            for _, _, data in ancillary:
                if len(data) >= _EXTENDED_ERROR.size and isinstance(address, tuple):
                    code = _EXTENDED_ERROR.unpack_from(data)[0]
                    errors.append(((str(address[0]), int(address[1])), code))
        return errors

    def close(self) -> None:
        self._socket.close()
