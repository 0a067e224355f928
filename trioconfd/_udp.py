"""What the client and the in-process servers share of a Trio UDP socket: a large
receive buffer, the errors that mean a peer is unreachable, a receive that
reads on past them, and (on Linux) which peer each of those errors was about."""

from __future__ import annotations

import array
import contextlib
import errno
import platform
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


# Linux's SO_TIMESTAMP, as <asm-generic/socket.h> numbers it for the
# architectures below (others number it differently; Python's socket module
# does not name it): each datagram read with ``recvmsg`` comes with the time
# the kernel received it, a ``struct timeval``, as ancillary data.
_SO_TIMESTAMP = 29
_GENERIC_SOCKET_NUMBERS = frozenset(
    {"x86_64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv6l", "riscv64", "s390x"}
)
_TIMEVAL = struct.Struct("@ll")
#: Room in a ``recvmsg``'s ancillary buffer for one arrival stamp.
ARRIVAL_STAMP_SPACE = socket.CMSG_SPACE(_TIMEVAL.size) if hasattr(socket, "CMSG_SPACE") else 0


def ask_for_arrival_stamps(sock: Any) -> bool:
    """Have the kernel stamp each datagram ``sock`` receives with when it came
    (``SO_TIMESTAMP``, read with ``recvmsg``); whether it will (Linux on the
    common architectures, a kernel socket)."""
    if (
        sys.platform != "linux"
        or platform.machine() not in _GENERIC_SOCKET_NUMBERS
        or not ARRIVAL_STAMP_SPACE
    ):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMP, 1)
    except (OSError, NotImplementedError, AttributeError, TypeError, ValueError):
        return False
    return True


def arrival_of(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received a datagram (on ``time.time()``'s clock), from the
    ancillary data ``recvmsg`` read with it; None if it carries no stamp."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMP and len(data) == _TIMEVAL.size:
            seconds, microseconds = _TIMEVAL.unpack(data)
            return float(seconds) + float(microseconds) / 1e6
    return None


# Linux's <linux/in.h> and <linux/in6.h>: the socket options that queue the
# ICMP errors an unconnected UDP socket is sent, each with the address of
# the datagram that caused it (Python's socket module names neither).
_IP_RECVERR = 11
_IPV6_RECVERR = 25
#: The ancillary messages that carry a queued error (an arrival stamp may come too).
_RECVERR_MESSAGES = frozenset(
    {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
)
#: ``struct sock_extended_err`` begins with ee_errno (u32) and ee_origin (u8).
_EXTENDED_ERROR = struct.Struct("=IB")
#: A bound on one drain, far above what a socket's buffer can queue: the
#: queue must be emptied, or the socket keeps signalling an error.
_DRAIN_LIMIT = 1_000_000


#: How long a read of the error queue waits for an entry before it takes
#: the queue for empty (a read that finds one returns at once).
_EMPTY_WAIT = 0.0005


class ErrorQueue:
    """The ICMP errors a client's UDP socket was sent, each with the peer it was about.

    Without it, Linux reports "port unreachable" to an unconnected UDP
    socket only as an ``ECONNREFUSED`` from its next call (which, a
    ``sendto``, fails to send), naming no address. With ``IP_RECVERR``
    each error is queued with the destination of the datagram that caused
    it; :meth:`drain` reads them, through the client's own Trio socket.
    Whoever meets one of those errors has the queue drained: a queue left
    full keeps the socket signalling an error (``EPOLLERR``), and its
    readers would wake for nothing.
    """

    def __init__(
        self, sock: trio.socket.SocketType, read_again: Callable[[], None] = lambda: None
    ) -> None:
        self._socket = sock
        self._read_again = read_again
        self._draining = False
        # Asked while draining: errors may have come after the reading found
        # the queue empty (their signal taken by whoever asked).
        self._asked_again = False

    @classmethod
    def attach(cls, sock: Any, read_again: Callable[[], None] = lambda: None) -> ErrorQueue | None:
        """Ask ``sock``'s kernel to queue its ICMP errors; None where it cannot (not
        Linux, a custom socket). ``read_again``: see :meth:`drain`."""
        if sys.platform != "linux" or not hasattr(sock, "recvmsg"):
            return None
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        except (OSError, NotImplementedError, AttributeError, TypeError, ValueError):
            return None
        return cls(sock, read_again)

    async def drain(self) -> list[tuple[tuple[str, int], int]]:
        """Each queued error's peer (the address the datagram went to) and errno.

        One task at a time reads the queue, to its end (a read that finds
        nothing in :data:`_EMPTY_WAIT`); another asking meanwhile gets ``[]``.
        The errors that made it ask may have come after the reading found the
        queue empty, and the socket's error flag was taken by that other
        task's read: left there, they would keep the socket signalling, and
        its readers spinning, with nobody to read them. So a drain that was
        asked for meanwhile ends by calling ``read_again``: the client has a
        receive task drain the queue once more before it reads the socket.
        One pass a drain: what it read is returned at once, however long
        errors keep coming (a task may then drain pass after pass).
        """
        if self._draining:
            self._asked_again = True
            return []
        self._draining = True
        self._asked_again = False
        try:
            errors = await self._read_to_the_end()
        finally:
            self._draining = False
        if self._asked_again:
            self._read_again()
        return errors

    async def _read_to_the_end(self) -> list[tuple[tuple[str, int], int]]:
        sock = self._socket
        errors: list[tuple[tuple[str, int], int]] = []
        for _ in range(_DRAIN_LIMIT):
            with trio.move_on_after(_EMPTY_WAIT):
                try:
                    _, ancillary, _, address = await sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
                except (trio.BusyResourceError, trio.ClosedResourceError, OSError):
                    return errors  # another task waits on the socket (so: empty), or closed
                for level, kind, data in ancillary:
                    if (
                        (level, kind) in _RECVERR_MESSAGES
                        and len(data) >= _EXTENDED_ERROR.size
                        and isinstance(address, tuple)
                    ):
                        code = _EXTENDED_ERROR.unpack_from(data)[0]
                        errors.append(((str(address[0]), int(address[1])), code))
                continue
            return errors  # none came in time: the queue is empty
        return errors


def unread_datagram_check(sock: Any) -> Callable[[], bool] | None:
    """A check of whether ``sock`` holds a datagram nobody has read yet (the
    ``FIONREAD`` ioctl); None where it cannot be asked (a custom socket, or
    a platform without it)."""
    try:
        import fcntl  # noqa: PLC0415 - not on Windows
        import termios  # noqa: PLC0415 - not on Windows

        request = termios.FIONREAD
        fileno = sock.fileno()
    except (ImportError, AttributeError, OSError, NotImplementedError):
        return None
    if not isinstance(fileno, int) or fileno < 0:
        return None
    size = array.array("i", [0])
    ioctl = fcntl.ioctl

    def holds_unread() -> bool:
        try:
            ioctl(fileno, request, size)
        except OSError:
            return False  # closed meanwhile: nothing to read
        return size[0] > 0

    try:
        holds_unread()
    except (TypeError, ValueError):
        return None
    return holds_unread
