"""``trioconfd demo``: a tour of the client against three in-process servers.

Nothing needs to be set up: three servers on loopback serve a generated
cluster, one of them an older configuration, and the tour shows what a user
of the client sees: answers, serials, quorums, and the stale server outvoted.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, TextIO

from .. import requests
from ..client import ConfdClient, Upcall, open_confd_client, query
from ..protocol import ConfdRequest, NodeRole, QueryResult
from ..testing import ConfdServer, make_cluster_config, open_confd_server

KEY = b"demo cluster key\n"
NEW_SERIAL = 42
OLD_SERIAL = 41


def demo_configs() -> tuple[dict[str, Any], dict[str, Any]]:
    """The current configuration (node2 is master) and the stale one (node1 still is)."""
    shape: dict[str, Any] = {
        "nodes": 4,
        "master_candidates": 3,
        "instances": 4,
        "links": ("br0", "br1"),
        "node_serial": 7,
        "instance_serial": 3,
    }
    stale = make_cluster_config(serial=OLD_SERIAL, **shape)
    current = make_cluster_config(serial=NEW_SERIAL, **shape)
    current["cluster"]["master_node"] = list(current["nodes"])[1]
    return current, stale


class Tour:
    def __init__(self, out: TextIO, servers: list[ConfdServer]) -> None:
        self.out = out
        self.names = {server.address: f"mc{index + 1}" for index, server in enumerate(servers)}
        self.step = 0

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def heading(self, title: str, code: str) -> None:
        self.step += 1
        self.say()
        self.say(f"{self.step}. {title}")
        self.say(f"   >>> {code}")

    def result(self, result: QueryResult, shown: Any = None) -> None:
        answer = result.answer if shown is None else shown
        self.say(f"   answer: {answer}")
        self.say(
            f"   serial {result.serial}, {result.received}/{result.sent} replies, "
            f"quorum {result.needed} {'reached' if result.quorum_reached else 'NOT reached'}, "
            f"{'consistent' if result.consistent else 'INCONSISTENT'}"
        )


async def _tour(client: ConfdClient, tour: Tour, upcalls: list[Upcall]) -> None:
    say = tour.say
    tour.heading("Who is the master?", "await client.query(requests.cluster_master(), coverage=-1)")
    result = await client.query(requests.cluster_master(), coverage=-1)
    tour.result(result)
    say(f"   (a quorum always includes a server at serial {NEW_SERIAL}: 2 of 3 are current)")

    tour.heading(
        "Every reply as it arrives: the stale server is outvoted",
        "async with client.request(requests.cluster_master(), coverage=-1) as replies: ...",
    )
    async with client.request(requests.cluster_master(), coverage=-1) as replies:
        async for peer_reply in replies:
            reply = peer_reply.reply
            stale = "   <- stale, outranked" if reply.serial < NEW_SERIAL else ""
            say(
                f"   {tour.names[peer_reply.address]}: {reply.answer} "
                f"(serial {reply.serial}){stale}"
            )
    result = replies.result()
    say(f"   trusted: {result.answer} (serial {result.serial}, the highest)")

    tour.heading("Node roles", "await client.query(requests.node_role('node3.example.com'))")
    for number in range(1, 5):
        name = f"node{number}.example.com"
        role = await client.query(requests.node_role(name))
        say(f"   {name}: {NodeRole(role.answer).name.lower()}")

    tour.heading(
        "Which node runs the instance at 198.18.0.2?",
        "await client.query(requests.node_pip_by_instance_ip('198.18.0.2', link='br1'))",
    )
    tour.result(await client.query(requests.node_pip_by_instance_ip("198.18.0.2", link="br1")))

    tour.heading("DRBD minors on node1", "await client.query(requests.node_drbd('node1'))")
    drbd = await client.query(requests.node_drbd("node1"))
    for node, minor, instance, disk, role, peer in drbd.answer:
        say(f"   {node} minor {minor}: {instance} {disk} ({role}, peer {peer})")
    say(f"   serial {drbd.serial} (node-scoped answers carry the node's serial)")

    tour.heading(
        "Any configuration value by JSON pointer",
        "await client.query(requests.config_query('/cluster/enabled_hypervisors'))",
    )
    tour.result(await client.query(requests.config_query("/cluster/enabled_hypervisors")))

    tour.heading(
        "An error reply: an unknown node",
        "await client.query(requests.node_role('nosuchnode'))",
    )
    error = await client.query(requests.node_role("nosuchnode"))
    say(f"   status {error.status.name if error.status else None}: {error.answer.splitlines()[-1]}")

    tour.heading(
        "Ganeti's callback API on the same client",
        "await client.send_request(request, args='mine'); "
        "await client.wait_for_reply(request.rsalt)",
    )
    request = ConfdRequest(requests.ping().type)
    await client.send_request(request, args="mine", coverage=-1)
    timed_out, sent, received = await client.wait_for_reply(request.rsalt, timeout=5)
    say(f"   wait_for_reply -> timed_out={timed_out}, sent={sent}, received={received}")
    say(f"   the callback saw {len(upcalls)} reply upcalls with extra_args='mine'")


async def run_demo(out: TextIO) -> int:
    current, stale = demo_configs()
    upcalls: list[Upcall] = []
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(open_confd_server(config, KEY))
            for config in (current, current, stale)
        ]
        tour = Tour(out, servers)
        tour.say("trioconfd demo: three in-process confd servers on loopback serve one cluster;")
        tour.say(f"mc3 has not caught up yet (serial {OLD_SERIAL}, the others {NEW_SERIAL}).")
        tour.say()
        for server in servers:
            host, port = server.address
            tag = "   (stale: still thinks node1 is master)" if server.serial < NEW_SERIAL else ""
            tour.say(f"  {tour.names[server.address]}  {host}:{port}  serial {server.serial}{tag}")
        peers = [server.address for server in servers]
        async with open_confd_client(
            KEY, peers, callback=lambda up: upcalls.append(up) if up.extra_args == "mine" else None
        ) as client:
            await _tour(client, tour, upcalls)
        tour.heading(
            "The wrong key meets silence: a timeout, not an answer",
            "await trioconfd.query(b'wrong key', peers, requests.ping(), timeout=0.5)",
        )
        result = await query(b"wrong key", peers, requests.ping(), timeout=0.5)
        tour.say(f"   timed_out={result.timed_out}, replies {result.received}/{result.sent}")
    tour.say()
    tour.say("Done. See README.rst for the API, the CLI and the testing tools.")
    return 0
