"""Testing an application that asks confd, with trioconfd.testing and pytest-trio.

    pytest examples/test_app.py      (with trio_mode on, as in this project)

The application here is ``primary_node_of``; the tests run it against
in-process servers, including a stale one and a configuration change.
"""

from __future__ import annotations

import trioconfd
from trioconfd import requests
from trioconfd.testing import make_cluster_config, open_confd_server

KEY = b"test key"


async def primary_node_of(client: trioconfd.ConfdClient, instance_ip: str) -> str | None:
    """The application code under test: the primary IP of an instance's node."""
    result = await client.query(requests.node_pip_by_instance_ip(instance_ip))
    return result.answer if result.ok else None


async def test_finds_the_node() -> None:
    config = make_cluster_config(nodes=3, instances=3)
    async with (
        open_confd_server(config, KEY) as one,
        open_confd_server(config, KEY) as two,
        trioconfd.open_confd_client(KEY, [one.address, two.address]) as client,
    ):
        assert await primary_node_of(client, "198.18.0.2") == "192.0.2.2"
        assert await primary_node_of(client, "203.0.113.7") is None


async def test_a_stale_server_is_outvoted() -> None:
    old = make_cluster_config(nodes=3, instances=3, serial=1)
    new = make_cluster_config(nodes=3, instances=3, serial=2, drbd=False)
    # In the new configuration instance 1 has moved to node 3.
    instance = next(i for i in new["instances"].values() if i["name"].startswith("instance1"))
    instance["primary_node"] = list(new["nodes"])[2]
    async with (
        open_confd_server(new, KEY) as one,
        open_confd_server(new, KEY) as two,
        open_confd_server(old, KEY) as stale,
        trioconfd.open_confd_client(KEY, [one.address, two.address, stale.address]) as client,
    ):
        for _ in range(10):  # whichever two answer first, the newest wins
            assert await primary_node_of(client, "198.18.0.1") == "192.0.2.3"
