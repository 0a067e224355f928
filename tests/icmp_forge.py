"""ICMP errors forged about a client's datagrams, in a network namespace of its own.

Run as ``unshare -n python -m tests.icmp_forge MODE ...`` (as root: it sends
raw ICMP on the namespace's loopback, which nothing outside can see). It
prints one line of JSON: what the client did.

- ``one FAMILY TYPE CODE``: one error of that ICMP type and code (``FAMILY``
  4 or 6), then three queries;
- ``burst COUNT``: COUNT port-unreachable errors while the client is busy,
  a query, then the scheduler batches run in 0.3 s of idling.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from typing import Any

import trio

import trioconfd
from trioconfd.testing import make_cluster_config, open_confd_server

KEY = b"icmp key\n"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _icmp_about(family: int, kind: int, code: int, client_port: int, server_port: int) -> None:
    """One forged ICMP error saying a datagram from the client to the server failed."""
    inner_udp = struct.pack("!HHHH", client_port, server_port, 100, 0)
    if family == 4:
        loopback = socket.inet_aton("127.0.0.1")
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 120, 0, 0x4000, 64, 17, 0, loopback, loopback
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        body = struct.pack("!BBHI", kind, code, 0, 1400 if code == 4 else 0) + header + inner_udp
        body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
            raw.sendto(body, ("127.0.0.1", 0))
        return
    loopback6 = socket.inet_pton(socket.AF_INET6, "::1")
    header6 = struct.pack("!IHBB16s16s", 6 << 28, 100, 17, 64, loopback6, loopback6)
    body = struct.pack("!BBHI", kind, code, 0, 1280 if kind == 2 else 0) + header6 + inner_udp
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as raw:
        raw.sendto(body, ("::1", 0))  # the kernel fills in ICMPv6's checksum


class _Batches(trio.abc.Instrument):
    count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


async def _run(mode: str, args: list[int]) -> dict[str, Any]:
    family = args[0] if mode == "one" else 4
    host = "::1" if family == 6 else "127.0.0.1"
    ping = trioconfd.RequestType.PING
    async with (
        open_confd_server(make_cluster_config(), KEY, host=host) as server,
        trioconfd.open_confd_client(KEY, [server.address]) as client,
    ):
        client_port = client.local_address[1]
        first = await client.query(ping, timeout=2)
        if mode == "one":
            _icmp_about(family, args[1], args[2], client_port, server.address[1])
            await trio.sleep(0.05)
            later = [await client.query(ping, timeout=2) for _ in range(3)]
            return {"ok": [first.ok, *(result.ok for result in later)]}
        for _ in range(args[0]):  # while the client is busy, not reading
            _icmp_about(4, 3, 3, client_port, 9)
        after = await client.query(ping, timeout=2)
        await trio.sleep(0.3)  # the receive tasks read the queue, a batch an error
        batches = _Batches()
        trio.lowlevel.add_instrument(batches)
        await trio.sleep(0.3)
        trio.lowlevel.remove_instrument(batches)
        stats = client.stats
        return {
            "ok": [first.ok, after.ok],
            "send_errors": stats.send_errors,
            "idle_batches": batches.count,
        }


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    mode, *numbers = sys.argv[1:]
    print(json.dumps(trio.run(_run, mode, [int(n) for n in numbers])))


if __name__ == "__main__":
    main()
