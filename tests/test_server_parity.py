"""The in-process server answers exactly as the real ganeti-confd does.

The same datagrams (same rsalt, same timestamp) go to both; the replies must
match field for field, and both must drop the same requests.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import trio

from trioconfd import MAGIC, HmacKey, unpack_reply
from trioconfd.testing import (
    ConfdServer,
    GanetiConfd,
    fail_over,
    make_cluster_config,
    open_confd_server,
)

from .conftest import Cluster, interop_config

pytestmark = pytest.mark.interop

KEY = b"parity key\n"


def _signed(msg: Any, key: bytes = KEY, salt: str | None = None) -> bytes:
    text = msg if isinstance(msg, str) else json.dumps(msg)
    salt = str(int(time.time())) if salt is None else salt
    signature = HmacKey(key).sign((salt + text).encode())
    return MAGIC + json.dumps({"msg": text, "salt": salt, "hmac": signature}).encode()


def _request(rsalt: str, request_type: Any, query: Any = None) -> bytes:
    return _signed({"protocol": 1, "type": request_type, "query": query, "rsalt": rsalt})


def _requests_for(config: dict[str, Any]) -> dict[str, bytes]:
    """A broad set of requests for ``config``: every type, its errors, and drops."""
    nodes = [node["name"] for node in config["nodes"].values()]
    node_uuids = list(config["nodes"])
    instances = [instance["name"] for instance in config["instances"].values()]
    ips = [nic["ip"] for i in config["instances"].values() for nic in i["nics"] if "ip" in nic]
    queries: list[tuple[Any, Any]] = [
        (0, None),
        (0, "ignored"),
        (3, None),
        (3, {"3": [0, 1, 2]}),
        (3, {"3": [2, 2, 0]}),
        (3, {"3": []}),
        (3, {}),
        (3, "plain"),
        (3, {"3": [1.5]}),
        (1, None),
        (1, {"0": "br0", "1": "198.18.0.1", "2": ["a", "b"], "3": [0, 2]}),
        (1, "nosuchnode"),
        (1, "node1"),
        (1, "node1.example"),
        (1, node_uuids[0]),
        (4, None),
        (4, "ignored"),
        (5, None),
        (6, None),
        (6, "br0"),
        (6, "br1"),
        (6, "nosuchlink"),
        (6, {"0": "br0"}),
        (2, {"2": [*ips, "203.0.113.1"]}),
        (2, {"2": ips, "0": "br1"}),
        (2, {"1": "203.0.113.1"}),
        (2, {}),
        (2, "plain"),
        (2, None),
        (7, "nosuchnode"),
        (7, None),
        (8, "nosuchnode"),
        (8, "node2"),
        (8, {"1": "x"}),
        (9, "nosuchinstance"),
        (9, "instance1"),
        (9, None),
        (10, "/cluster/cluster_name"),
        (10, "/cluster"),
        (10, "/nodes"),
        (10, "/instances"),
        (10, "/disks"),
        (10, "/nodegroups"),
        (10, "/version"),
        (10, "/cluster/enabled_hypervisors/0"),
        (10, "/cluster/enabled_hypervisors/7"),
        (10, "/cluster/enabled_hypervisors/-"),
        (10, "/cluster/data_collectors/lv/active"),
        (10, ""),
        (10, "/"),
        (10, "cluster"),
        (10, "/nope"),
        (10, None),
        (11, None),
    ]
    queries += [(1, name) for name in nodes]
    queries += [(7, name) for name in nodes] + [(8, name) for name in nodes]
    queries += [(9, name) for name in instances]
    queries += [(2, {"1": ip}) for ip in ips]
    requests = {f"q{index}": _request(f"q{index}", *query) for index, query in enumerate(queries)}
    # What the daemon drops in silence.
    ping = {"protocol": 1, "type": 0, "query": None}
    requests |= {
        "bad-hmac": _signed({**ping, "rsalt": "bad-hmac"}, key=b"another key"),
        "stale": _signed({**ping, "rsalt": "stale"}, salt=str(int(time.time()) - 400)),
        "future": _signed({**ping, "rsalt": "future"}, salt=str(int(time.time()) + 400)),
        "unknown-type": _request("unknown-type", 12),
        "unknown-key": _request("unknown-key", 3, {"4": 1}),
        "bad-field": _request("bad-field", 3, {"3": [7]}),
        "string-fields": _request("string-fields", 3, {"3": ["0", "1"]}),
        "list-query": _request("list-query", 3, [1]),
        "extra-key": _signed({**ping, "rsalt": "extra-key", "extra": 1}),
        "no-protocol": _signed({"type": 0, "query": None, "rsalt": "no-protocol"}),
        "too-long": _request("too-long", 1, "x" * 5000),
        "bad-magic": b"plj1" + _request("bad-magic", 0)[4:],
        "not-json": _signed("{not json", salt=None),
    }
    return requests


async def _replies(address: tuple[str, int], datagrams: dict[str, bytes]) -> dict[str, Any]:
    """Send every datagram; return the decoded replies by rsalt (a silent second ends it)."""
    replies: dict[str, Any] = {}
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for datagram in datagrams.values():
            await sock.sendto(datagram, address)
        while True:
            with trio.move_on_after(1.0) as idle:
                reply_datagram = await sock.recv(65536)
            if idle.cancelled_caught:
                return replies
            reply, rsalt = unpack_reply(reply_datagram, KEY)
            replies[rsalt] = (reply.status, _canonical(reply.answer), reply.serial)


def _canonical(value: Any) -> str:
    """JSON with sorted keys and integral floats as integers, as a comparable string."""

    def normal(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, list):
            return [normal(each) for each in item]
        if isinstance(item, dict):
            return {key: normal(each) for key, each in item.items()}
        return item

    return json.dumps(normal(value), sort_keys=True)


async def _assert_same(daemon: GanetiConfd, server: ConfdServer, config: dict[str, Any]) -> None:
    datagrams = _requests_for(config)
    real = await _replies(daemon.address, datagrams)
    ours = await _replies(server.address, datagrams)
    assert set(ours) == set(real), "answered by one, dropped by the other"
    assert "bad-hmac" not in real
    assert "q0" in real
    for rsalt in real:
        assert ours[rsalt] == real[rsalt], (rsalt, datagrams[rsalt][:200])
    assert server.stats.answered == len(real)
    assert server.stats.dropped == len(datagrams) - len(real)


def _plain_xen_config() -> dict[str, Any]:
    """No DRBD, a Xen hypervisor, collector settings, and names that collide on prefixes."""
    config = make_cluster_config(
        nodes=4,
        master_candidates=2,
        instances=5,
        links=("br0", "br1", "br2"),
        drbd=False,
        serial=31,
        node_serial=3,
        instance_serial=4,
        seed=9,
    )
    cluster = config["cluster"]
    cluster["enabled_hypervisors"] = ["xen-pvm", "kvm"]
    cluster["data_collectors"] = {
        "lv": {"active": False, "interval": 2.5},
        "inst-status-xen": {"active": True, "interval": 1000.0},
    }
    names = [
        "node1.a.example.com",
        "node1.b.example.com",
        "node2.example.com",
        "node3.example.com",
    ]
    for node, name in zip(config["nodes"].values(), names, strict=True):
        node["name"] = name
    return config


@pytest.mark.parametrize("which", ["drbd cluster", "plain xen cluster"])
async def test_server_answers_like_the_daemon(ganeti_cluster: Cluster, which: str) -> None:
    config = interop_config() if which == "drbd cluster" else _plain_xen_config()
    daemon = await ganeti_cluster.start(config, KEY, "parity")
    async with open_confd_server(config, KEY) as server:
        await _assert_same(daemon, server, config)


async def test_live_config_swap_matches_the_daemon_reload(ganeti_cluster: Cluster) -> None:
    config = interop_config()
    daemon = await ganeti_cluster.start(config, KEY, "parity")
    async with open_confd_server(config, KEY) as server:
        newer = fail_over(interop_config(serial=149), 2)  # serial 150
        daemon.write_config(newer)
        server.set_config(newer)
        await daemon.wait_for_serial(KEY, 150)
        assert server.serial == 150
        await _assert_same(daemon, server, newer)
