"""What the kernel knows about a UDP socket that the socket API does not say."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def udp_socket_drops(fd: int, family: socket.AddressFamily) -> int | None:
    """Datagrams the kernel dropped for this socket (full receive buffer), or None.

    Linux lists every UDP socket in ``/proc/net/udp`` (``udp6`` for IPv6)
    with its inode and a ``drops`` count; elsewhere there is no such file.
    Read on demand only, never per datagram.
    """
    table = Path("/proc/net/udp6" if family == socket.AF_INET6 else "/proc/net/udp")
    try:
        inode = str(os.fstat(fd).st_ino)
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[9] == inode:
            return int(fields[-1])
    return None
