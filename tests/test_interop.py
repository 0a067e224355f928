"""The client against Ganeti's real ganeti-confd daemons on loopback."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
import trio

from trioconfd import (
    ConfdRequest,
    ErrorCode,
    MasterField,
    NodeRole,
    Query,
    QueryKey,
    ReplyStatus,
    RequestType,
    open_confd_client,
    pack_request,
    query,
)

from .conftest import CLUSTER_KEY, Cluster, interop_config

pytestmark = pytest.mark.interop

OK = ReplyStatus.OK
ERROR = ReplyStatus.ERROR


def _node_ip(number: int) -> str:
    return f"192.0.2.{number}"


def _instance_ip(number: int) -> str:
    return f"198.18.0.{number}"


# (request type, query, expected status, expected answer or a predicate, serial)
CASES: list[tuple[RequestType, Any, ReplyStatus, Any, int]] = [
    (RequestType.PING, None, OK, 3000000, 0),
    (RequestType.CLUSTER_MASTER, None, OK, "node1.example.com", 100),
    (
        RequestType.CLUSTER_MASTER,
        {QueryKey.FIELDS: [MasterField.NAME, MasterField.IP, MasterField.MNODE_PIP]},
        OK,
        ["node1.example.com", "192.0.2.254", _node_ip(1)],
        100,
    ),
    (RequestType.NODE_ROLE_BYNAME, "node1.example.com", OK, NodeRole.MASTER, 100),
    (RequestType.NODE_ROLE_BYNAME, "node2.example.com", OK, NodeRole.CANDIDATE, 100),
    (RequestType.NODE_ROLE_BYNAME, "node4.example.com", OK, NodeRole.OFFLINE, 100),
    (RequestType.NODE_ROLE_BYNAME, "node5.example.com", OK, NodeRole.DRAINED, 100),
    (RequestType.NODE_ROLE_BYNAME, "node6.example.com", OK, NodeRole.REGULAR, 100),
    (RequestType.NODE_ROLE_BYNAME, "nosuchnode", ERROR, lambda a: "nosuchnode" in a, 0),
    (
        RequestType.NODE_PIP_LIST,
        None,
        OK,
        lambda a: sorted(a) == sorted(_node_ip(n) for n in range(1, 7)),
        100,
    ),
    (
        RequestType.MC_PIP_LIST,
        None,
        OK,
        lambda a: sorted(a) == [_node_ip(n) for n in (1, 2, 3)],
        100,
    ),
    (
        RequestType.INSTANCES_IPS_LIST,
        None,
        OK,
        lambda a: sorted(a) == [_instance_ip(n) for n in (1, 3, 5)],
        100,
    ),
    (
        RequestType.INSTANCES_IPS_LIST,
        "br1",
        OK,
        lambda a: sorted(a) == [_instance_ip(n) for n in (2, 4, 6)],
        100,
    ),
    (
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        {QueryKey.IP: _instance_ip(3)},
        OK,
        _node_ip(3),
        100,
    ),
    (
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        {QueryKey.IP: _instance_ip(2), QueryKey.LINK: "br1"},
        OK,
        _node_ip(2),
        100,
    ),
    (RequestType.NODE_PIP_BY_INSTANCE_IP, {QueryKey.IP: "203.0.113.9"}, ERROR, 0, 0),
    (
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        {QueryKey.IPLIST: [_instance_ip(1), "203.0.113.9"]},
        OK,
        [[0, _node_ip(1), 100], [1, 0, 0]],
        100,
    ),
    (
        RequestType.NODE_DRBD,
        "node1.example.com",
        OK,
        lambda rows: (
            {(r[0], r[2], r[4], r[5]) for r in rows}
            == {
                ("node1.example.com", "instance1.example.com", "primary", "node2.example.com"),
                ("node1.example.com", "instance6.example.com", "secondary", "node6.example.com"),
            }
        ),
        7,
    ),
    (
        RequestType.NODE_INSTANCES,
        "node2.example.com",
        OK,
        lambda a: (
            [[i["name"] for i in part] for part in a]
            == [["instance2.example.com"], ["instance1.example.com"]]
        ),
        7,
    ),
    (
        RequestType.INSTANCE_DISKS,
        "instance1.example.com",
        OK,
        lambda disks: [d["dev_type"] for d in disks] == ["drbd"],
        9,
    ),
    (RequestType.CONFIG_QUERY, "/cluster/cluster_name", OK, "cluster.example.com", 100),
    (RequestType.CONFIG_QUERY, "/no/such/path", ERROR, ErrorCode.ARGUMENT, 0),
    (RequestType.DATA_COLLECTORS, None, OK, lambda a: a["diskstats"]["active"] is True, 100),
]


async def test_every_request_type_is_answered(ganeti_cluster: Cluster) -> None:
    assert {case[0] for case in CASES} == set(RequestType)
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        for request_type, wire_query, status, expected, serial in CASES:
            result = await client.query(request_type, wire_query, coverage=-1, timeout=5)
            context = (request_type.name, wire_query, result.answer)
            assert not result.timed_out, context
            assert (result.sent, result.needed) == (3, 2), context
            assert result.received >= 2, context
            assert result.consistent, context
            assert result.status is status, context
            assert result.serial == serial, context
            if callable(expected):
                assert expected(result.answer), context
            else:
                assert result.answer == expected, context
            peers = set(ganeti_cluster.peers)
            assert all(reply.address in peers for reply in result.replies)
        assert client.outstanding == 0
        assert client.stats.discarded == client.stats.unknown_salt  # only late replies


async def test_newest_serial_wins(ganeti_cluster: Cluster) -> None:
    newer = interop_config(serial=200)
    newer["cluster"]["cluster_name"] = "renamed.example.com"
    daemons = ganeti_cluster.daemons
    daemons[2].write_config(newer)
    await daemons[2].wait_for_serial(CLUSTER_KEY, 200)
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        # Heard from everyone, the one newer daemon outranks the two stale ones.
        async with client.request(
            RequestType.CONFIG_QUERY, "/cluster/cluster_name", coverage=-1, timeout=5
        ) as replies:
            async for _ in replies:
                pass
        result = replies.result()
        assert result.received == 3
        assert (result.serial, result.answer) == (200, "renamed.example.com")
        assert result.consistent  # differing answers, but under differing serials
        # Once a majority is newer, every quorum contains a newer reply.
        daemons[1].write_config(newer)
        await daemons[1].wait_for_serial(CLUSTER_KEY, 200)
        for _ in range(10):
            result = await client.query(RequestType.CONFIG_QUERY, "/cluster/cluster_name")
            assert (result.serial, result.answer) == (200, "renamed.example.com")


async def test_a_daemon_with_another_key_is_never_counted(ganeti_cluster: Cluster) -> None:
    stranger = await ganeti_cluster.start(ganeti_cluster.config, b"another key", "stranger")
    peers = [*ganeti_cluster.peers[:2], stranger.address]
    async with open_confd_client(CLUSTER_KEY, peers) as client:
        for _ in range(5):
            result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=5)
            assert result.ok
            assert stranger.address not in {reply.address for reply in result.replies}
        async with client.request(RequestType.PING, coverage=-1, timeout=0.5) as replies:
            addresses = [peer_reply.address async for peer_reply in replies]
        assert sorted(addresses) == sorted(ganeti_cluster.peers[:2])
        assert replies.timed_out
    # The stranger on its own never answers our key.
    result = await query(CLUSTER_KEY, [stranger.address], RequestType.PING, timeout=0.5)
    assert result.timed_out
    assert result.received == 0


async def test_quorum_with_one_daemon_stopped(ganeti_cluster: Cluster) -> None:
    await ganeti_cluster.daemons[0].stop()
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        for _ in range(5):
            result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=5)
            assert not result.timed_out
            assert (result.sent, result.received) == (3, 2)
            assert result.answer == "node1.example.com"
            assert ganeti_cluster.daemons[0].address not in {r.address for r in result.replies}
        assert client.outstanding == 0


async def test_ipv4_mapped_ipv6_peers_are_the_daemons_ipv4_addresses(
    ganeti_cluster: Cluster,
) -> None:
    """``::ffff:a.b.c.d`` peers reach the daemons, and their replies count."""
    mapped = [(f"::ffff:{host}", port) for host, port in ganeti_cluster.peers]
    async with open_confd_client(CLUSTER_KEY, mapped) as client:
        assert client.peers == tuple(ganeti_cluster.peers)
        result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=5)
        assert result.ok
        assert result.answer == "node1.example.com"
        assert {reply.address for reply in result.replies} <= set(ganeti_cluster.peers)
        assert client.stats.unexpected_peer == 0
    # The same peers as ipaddress writes them: ::ffff:7f00:1 for ::ffff:127.0.0.1.
    in_hex = [(str(ipaddress.IPv6Address(host)), port) for host, port in mapped]
    assert all(not host.startswith("::ffff:127.") for host, _ in in_hex)
    result = await query(CLUSTER_KEY, in_hex, RequestType.PING, coverage=-1, timeout=5)
    assert result.ok
    assert not result.timed_out


async def test_all_silent_times_out_at_the_deadline(ganeti_cluster: Cluster) -> None:
    for daemon in ganeti_cluster.daemons:
        await daemon.stop()
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        start = trio.current_time()
        result = await client.query(RequestType.CLUSTER_MASTER, coverage=-1, timeout=0.75)
        elapsed = trio.current_time() - start
        assert result.timed_out
        assert (result.sent, result.received, result.answer) == (3, 0, None)
        assert 0.75 <= elapsed < 2.0
        assert client.outstanding == 0


async def test_wrong_key_meets_silence(ganeti_cluster: Cluster) -> None:
    result = await query(b"not the key", ganeti_cluster.peers, RequestType.PING, timeout=0.5)
    assert result.timed_out
    assert result.received == 0


async def test_original_api_against_the_daemon(ganeti_cluster: Cluster) -> None:
    from trioconfd import ConfdRequest, Upcall

    upcalls: list[Upcall] = []
    async with open_confd_client(
        CLUSTER_KEY, ganeti_cluster.peers, callback=upcalls.append
    ) as client:
        request = ConfdRequest(RequestType.NODE_ROLE_BYNAME, "node2.example.com")
        await client.send_request(request, args="role", coverage=-1)
        timed_out, sent, received = await client.wait_for_reply(request.rsalt, timeout=5)
        assert (timed_out, sent) == (False, 3)
        assert received >= 2
        assert all(u.server_reply and u.server_reply.answer == NodeRole.CANDIDATE for u in upcalls)
        assert {u.extra_args for u in upcalls} == {"role"}


async def test_non_ascii_names_from_the_daemon(ganeti_cluster: Cluster) -> None:
    """The daemon writes its text 8-bit (one byte per character) yet signs its UTF-8.

    Characters up to U+00FF survive that and are read back; a name beyond
    U+00FF is lost in the writing, so no reply mentioning it authenticates.
    """
    config = interop_config(serial=300)
    nodes = {node["name"]: node for node in config["nodes"].values()}
    nodes["node2.example.com"]["name"] = "nöde2.example.com"
    nodes["node3.example.com"]["name"] = "węzeł3.example.com"
    instances = {instance["name"]: instance for instance in config["instances"].values()}
    instances["instance1.example.com"]["name"] = "café-ñandú1.example.com"
    for daemon in ganeti_cluster.daemons:
        daemon.write_config(config)
        await daemon.wait_for_serial(CLUSTER_KEY, 300)
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        role = await client.query(RequestType.NODE_ROLE_BYNAME, "nöde2.example.com", timeout=5)
        assert (role.ok, role.answer) == (True, NodeRole.CANDIDATE)
        names = await client.query(RequestType.CONFIG_QUERY, "/instances", timeout=5)
        assert names.ok
        assert "café-ñandú1.example.com" in {i["name"] for i in names.answer.values()}
        nodes_seen = await client.query(RequestType.CONFIG_QUERY, "/nodes", timeout=1)
        # One character of node 3's name is beyond U+00FF: the whole node list is lost.
        assert nodes_seen.timed_out
        assert nodes_seen.received == 0
        assert client.stats.bad_signature + client.stats.malformed >= 3  # one per daemon


async def test_replies_up_to_the_largest_udp_payload(ganeti_cluster: Cluster) -> None:
    """The daemon sends replies past Ganeti's 61,440 bytes; they count."""
    config = interop_config(serial=400)
    config["cluster"]["tags"] = ["x" * 1000]
    daemon = ganeti_cluster.daemons[0]
    daemon.write_config(config)
    await daemon.wait_for_serial(CLUSTER_KEY, 400)
    request = ConfdRequest(RequestType.CONFIG_QUERY, "/cluster/tags", rsalt="r" * 36)

    async def reply_size() -> int:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.sendto(pack_request(request, CLUSTER_KEY), daemon.address)
            with trio.fail_after(5):
                return len(await sock.recv(70000))

    overhead = await reply_size() - 1000
    # 65,507: the most UDP carries over IPv4. Serials of three digits, like 400.
    for serial, size in enumerate((61_441, 64_000, 65_507), start=401):
        config["cluster"]["tags"] = ["x" * (size - overhead)]
        config["serial_no"] = config["cluster"]["serial_no"] = serial
        daemon.write_config(config)
        await daemon.wait_for_serial(CLUSTER_KEY, serial)
        assert await reply_size() == size
        async with open_confd_client(CLUSTER_KEY, [daemon.address]) as client:
            result = await client.query(RequestType.CONFIG_QUERY, "/cluster/tags", timeout=5)
            assert result.ok, client.stats
            assert result.answer == ["x" * (size - overhead)]


async def test_the_daemon_saying_not_found_reads_as_not_found(ganeti_cluster: Cluster) -> None:
    # Each way Ganeti 3.0 says a name or an address is unknown (a text with
    # ECodeNoEnt, the UNKNOWN_ENTRY code) is one property; other answers are not.
    unknown: list[tuple[RequestType, Query]] = [
        (RequestType.NODE_ROLE_BYNAME, "nosuchnode"),
        (RequestType.NODE_DRBD, "nosuchnode"),
        (RequestType.NODE_INSTANCES, "nosuchnode"),
        (RequestType.INSTANCE_DISKS, "nosuchinstance"),
        (RequestType.NODE_PIP_BY_INSTANCE_IP, {QueryKey.IP: "203.0.113.9"}),
    ]
    known: list[tuple[RequestType, Query]] = [
        (RequestType.NODE_ROLE_BYNAME, "node1.example.com"),
        (RequestType.INSTANCE_DISKS, "instance1.example.com"),
        (RequestType.CONFIG_QUERY, "/no/such/path"),  # ARGUMENT: a reply cannot tell
        (RequestType.CLUSTER_MASTER, "a string"),  # a query of the wrong kind
    ]
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        for request_type, query in unknown:
            result = await client.query(request_type, query, coverage=-1, timeout=5)
            assert result.not_found, (request_type.name, result.answer)
        for request_type, query in known:
            result = await client.query(request_type, query, coverage=-1, timeout=5)
            assert not result.not_found, (request_type.name, result.answer)
