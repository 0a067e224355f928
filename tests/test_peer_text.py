"""Peers written as text and host names, in the API as on the command line.

Names are resolved through Trio, so the tests give Trio a resolver of their
own: nothing here asks a DNS server. Only ``localhost`` goes to the real
resolver, which answers it from /etc/hosts.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trioconfd import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    RequestType,
    open_confd_client,
    query,
    resolve_peers,
)
from trioconfd.cli._main import EXIT_OK, EXIT_USAGE
from trioconfd.testing import ConfdServer, free_udp_port, make_cluster_config, open_confd_server

from .conftest import write_key_file
from .test_cli import run_cli, run_cli_without_a_network

KEY = b"peer text key\n"
CONFIG = make_cluster_config(nodes=2, serial=3)


class HostsResolver(trio.abc.HostnameResolver):
    """Answers from a table of names, as /etc/hosts would; counts the lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def getaddrinfo(  # noqa: PLR0917 - trio's signature
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if name not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[Any] = []
        for ip in self.table[name]:
            if ":" in ip:
                infos.append((socket.AF_INET6, type, proto, "", (ip, int(port or 0), 0, 0)))
            else:
                infos.append((socket.AF_INET, type, proto, "", (ip, int(port or 0))))
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@contextmanager
def resolving(table: dict[str, list[str]]) -> Iterator[HostsResolver]:
    resolver = HostsResolver(table)
    previous = trio.socket.set_custom_hostname_resolver(resolver)
    try:
        yield resolver
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


@pytest.fixture
async def server() -> AsyncIterator[ConfdServer]:
    async with open_confd_server(CONFIG, KEY) as server:
        yield server


async def test_peers_as_ip_port_strings(server: ConfdServer) -> None:
    port = server.address[1]
    result = await query(KEY, [f"127.0.0.1:{port}"], RequestType.PING)
    assert result.ok
    async with open_confd_client(KEY, [f"127.0.0.1:{port}", "127.0.0.2"], port=9) as client:
        assert client.peers == (("127.0.0.1", port), ("127.0.0.2", 9))


async def test_ipv6_peers_as_bracketed_strings() -> None:
    async with open_confd_server(CONFIG, KEY, host="::1") as server:
        result = await query(KEY, [f"[::1]:{server.address[1]}"], RequestType.PING)
    assert result.ok


async def test_host_names_are_resolved_once_at_open(server: ConfdServer) -> None:
    port = server.address[1]
    table = {"mc1.cluster": ["127.0.0.1"], "mc2.cluster": ["::1", "127.0.0.2"]}
    with resolving(table) as resolver:
        async with open_confd_client(
            KEY, [f"mc1.cluster:{port}", ("mc2.cluster", 9)], port=port
        ) as client:
            # mc2 has both families; with no IP peer to follow, IPv4 wins.
            assert client.peers == (("127.0.0.1", port), ("127.0.0.2", 9))
            for _ in range(3):
                assert (await client.query(RequestType.PING, coverage=1)).received <= 1
    assert sorted(resolver.lookups) == ["mc1.cluster", "mc2.cluster"]  # once each


async def test_names_follow_the_family_of_the_ip_peers() -> None:
    with resolving({"mc.cluster": ["127.0.0.3", "::1"]}):
        family, peers = await resolve_peers(["::1", "mc.cluster"], 1814)
        assert (family, peers) == (socket.AF_INET6, [("::1", 1814)])  # one peer, once
        family, peers = await resolve_peers(["127.0.0.1", "mc.cluster"], 1814)
        assert (family, peers) == (socket.AF_INET, [("127.0.0.1", 1814), ("127.0.0.3", 1814)])


async def test_a_name_that_does_not_resolve_is_a_clear_error() -> None:
    with resolving({"v4only.cluster": ["127.0.0.3"]}):
        with pytest.raises(
            ConfdClientError,
            match=r"cannot resolve peer 'nosuch\.cluster': Name or service not known",
        ):
            async with open_confd_client(KEY, ["127.0.0.1", "nosuch.cluster"]):
                pass
        with pytest.raises(ConfdClientError, match=r"'v4only\.cluster' has no IPv6 address"):
            await resolve_peers(["::1", "v4only.cluster"], 1814)


async def test_update_peers_takes_addresses_and_says_so(server: ConfdServer) -> None:
    async with open_confd_client(KEY, [server.address]) as client:
        with pytest.raises(ConfdClientError, match=r"'mc1\.cluster' is a host name"):
            client.update_peer_list(["mc1.cluster"])
        with resolving({"mc1.cluster": ["127.0.0.1"]}):
            _, resolved = await resolve_peers([f"mc1.cluster:{server.address[1]}"])
        client.update_peer_list(resolved)
        assert client.peers == (server.address,)


@pytest.mark.parametrize("peer", [1234, b"127.0.0.1", None, (1234, 1814), ["127.0.0.1", 1814]])
async def test_a_peer_of_the_wrong_type_is_a_type_error_naming_it(peer: Any) -> None:
    with pytest.raises(ConfdArgumentTypeError, match=rf"peer {re.escape(repr(peer))} is not"):
        async with open_confd_client(KEY, [peer]):
            pass
    async with open_confd_client(KEY, ["127.0.0.1"]) as client:
        with pytest.raises(ConfdArgumentTypeError, match="is not an IP address"):
            client.update_peer_list([peer])


@pytest.mark.parametrize("local", [123, b"127.0.0.1", (None, 0)])
async def test_a_local_address_of_the_wrong_type_is_a_type_error(local: Any) -> None:
    with pytest.raises(ConfdArgumentTypeError, match=r"local_address .* is not an IP address"):
        async with open_confd_client(KEY, ["127.0.0.1"], local_address=local):
            pass


async def test_a_tuple_not_a_pair_is_a_wrong_value_not_type() -> None:
    with pytest.raises(ConfdArgumentError, match="must be an address or an") as caught:
        async with open_confd_client(KEY, [("127.0.0.1", 1814, 0)]):  # type: ignore[list-item]
            pass
    assert not isinstance(caught.value, TypeError)


async def test_localhost_from_the_hosts_file(server: ConfdServer) -> None:
    result = await query(KEY, [f"localhost:{server.address[1]}"], RequestType.PING)
    assert result.ok
    assert result.replies[0].address == server.address


async def test_the_cli_takes_names_and_serve_binds_as_peers_are_written(tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path, KEY)
    config = tmp_path / "config.data"
    config.write_text(json.dumps(CONFIG))
    port = free_udp_port()
    async with trio.open_nursery() as nursery:
        serving = await nursery.start(
            partial(
                trio.run_process,
                [
                    sys.executable,
                    "-m",
                    "trioconfd",
                    "serve",
                    str(config),
                    "--key-file",
                    str(key_file),
                    "--bind",
                    f"localhost:{port}",
                ],
                check=False,
                capture_stdout=True,
            )
        )
        try:
            with trio.fail_after(30):
                while True:
                    done = await run_cli(
                        "ping",
                        "--peer",
                        f"localhost:{port}",
                        "--key-file",
                        str(key_file),
                        "--timeout",
                        "0.5",
                    )
                    if done.returncode != 3:
                        break
        finally:
            serving.terminate()
    assert done.returncode == EXIT_OK, done.stderr
    done = await run_cli(
        "serve", str(config), "--key-file", str(key_file), "--bind", "127.0.0.1:1", "--port", "2"
    )
    assert done.returncode == EXIT_USAGE
    assert "names a port and --port 2 another" in done.stderr.decode()


async def test_the_cli_names_a_peer_that_does_not_resolve() -> None:
    # Without a network the resolver reaches no DNS server: a name outside
    # /etc/hosts fails at once, and nothing leaves the machine.
    done = await run_cli_without_a_network(
        "ping", "--peer", "mc9.cluster.invalid", "--hmac-key", "k"
    )
    assert done.returncode == EXIT_USAGE
    assert "cannot resolve peer 'mc9.cluster.invalid'" in done.stderr.decode()


@pytest.mark.parametrize(
    "peer", ["::1%1", "::1%lo", ("::1%1", 1814), "[::1%lo]:1814", "fe80::1%eth0"]
)
async def test_an_ipv6_zone_index_is_refused_at_open(peer: Any) -> None:
    # Accepted, it would send to ::1 and discard the replies (from "::1",
    # not "::1%1") as an unexpected peer, or fail every send.
    with pytest.raises(ConfdClientError, match=r"has an IPv6 zone index \(%(1|lo|eth0)\)"):
        async with open_confd_client(KEY, [peer]):
            pass
    with pytest.raises(ConfdClientError, match="zone index"):
        async with open_confd_client(KEY, ["::1"], local_address=peer):
            pass
    async with open_confd_client(KEY, ["::1"]) as client:
        with pytest.raises(ConfdClientError, match="zone index"):
            client.update_peer_list([peer])
        assert client.peers == (("::1", 1814),)


async def test_the_cli_refuses_a_zone_index_in_one_line(tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path, KEY)
    done = await run_cli("master", "--key-file", str(key_file), "--peer", "[::1%lo]:1814")
    assert done.returncode == EXIT_USAGE
    errors = done.stderr.decode().splitlines()
    assert errors == [
        "trioconfd: error: '::1%lo' has an IPv6 zone index (%lo), which "
        "trioconfd does not support: give an address without '%' "
        "(a global or loopback one)"
    ], errors
    assert done.stdout == b""


async def test_a_local_address_says_any_port_with_one_zero_or_more() -> None:
    for written in ("127.0.0.1:0", "127.0.0.1:00", "127.0.0.1:000"):
        async with open_confd_client(KEY, ["127.0.0.1"], local_address=written) as client:
            host, port = client.local_address[:2]
            assert (host, port > 0) == ("127.0.0.1", True)
    # What was wrong is said of the text as it was given.
    with pytest.raises(ConfdClientError, match=r"bad local_address '\[::1:0': the '\[' is never"):
        async with open_confd_client(KEY, ["::1"], local_address="[::1:0"):
            pass  # pragma: no cover
