"""The cluster-configuration generator: what it builds, and that the real daemon loads it."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from trioconfd import ConfdClientError, NodeRole, RequestType, open_confd_client, requests
from trioconfd.testing import (
    ConfigAnswers,
    Faults,
    fail_over,
    make_cluster_config,
    open_fault_proxy,
)

from .conftest import Cluster


def roles(config: dict[str, Any]) -> list[NodeRole]:
    answers = ConfigAnswers(config)
    return [
        NodeRole(answers.answer(requests.node_role(node["name"])).answer)
        for node in sorted(config["nodes"].values(), key=lambda n: n["primary_ip"])
    ]


def test_shape_and_roles() -> None:
    config = make_cluster_config(
        nodes=7, master_candidates=3, offline=2, drained=1, instances=5, links=("a", "b")
    )
    assert len(config["nodes"]) == 7
    assert len(config["instances"]) == 5
    assert roles(config) == [
        NodeRole.MASTER,
        NodeRole.CANDIDATE,
        NodeRole.CANDIDATE,
        NodeRole.OFFLINE,
        NodeRole.OFFLINE,
        NodeRole.DRAINED,
        NodeRole.REGULAR,
    ]
    links = [i["nics"][0]["nicparams"]["link"] for i in config["instances"].values()]
    assert sorted(links) == ["a", "a", "a", "b", "b"]
    assert all(d["dev_type"] == "drbd" for d in config["disks"].values())


def test_serials_and_determinism() -> None:
    config = make_cluster_config(serial=9, node_serial=4, instance_serial=6, seed=3)
    assert config["serial_no"] == config["cluster"]["serial_no"] == 9
    assert {n["serial_no"] for n in config["nodes"].values()} == {4}
    assert {i["serial_no"] for i in config["instances"].values()} == {6}
    assert config == make_cluster_config(serial=9, node_serial=4, instance_serial=6, seed=3)
    assert config != make_cluster_config(serial=9, node_serial=4, instance_serial=6, seed=4)


def test_the_master_is_the_node_chosen() -> None:
    config = make_cluster_config(nodes=5, master_candidates=3, master=3)
    assert roles(config) == [
        NodeRole.CANDIDATE,
        NodeRole.CANDIDATE,
        NodeRole.MASTER,
        NodeRole.REGULAR,
        NodeRole.REGULAR,
    ]
    assert ConfigAnswers(config).answer(requests.cluster_master()).answer == "node3.example.com"


def test_fail_over_moves_the_master_and_raises_the_serial() -> None:
    config = make_cluster_config(nodes=4, master_candidates=3, serial=7)
    before = copy.deepcopy(config)
    by_number = fail_over(config, 2)
    assert config == before  # a new configuration; the old one is unchanged
    assert roles(by_number)[:2] == [NodeRole.CANDIDATE, NodeRole.MASTER]
    assert by_number["serial_no"] == by_number["cluster"]["serial_no"] == 8
    by_name = fail_over(by_number, "node3.example.com", serial=20)
    assert roles(by_name)[:3] == [NodeRole.CANDIDATE, NodeRole.CANDIDATE, NodeRole.MASTER]
    assert ConfigAnswers(by_name).answer(requests.cluster_master()).serial == 20
    assert fail_over(config, 2) == by_number  # the same arguments, the same result


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (9, "no node 9 in the configuration"),
        ("node9.example.com", "no node 'node9.example.com'"),
        (4, "node4.example.com cannot become the master: it is not an online master candidate"),
        (2.0, "node must be a node's number or name"),
        (True, "node must be a node's number or name"),
    ],
)
def test_fail_over_refuses_a_node_that_cannot_be_master(node: Any, message: str) -> None:
    config = make_cluster_config(nodes=4, master_candidates=3)
    with pytest.raises(ConfdClientError, match=re.escape(message)):
        fail_over(config, node)
    with pytest.raises(ConfdClientError, match="serial must be"):
        fail_over(config, 2, serial=-1)
    with pytest.raises(ConfdClientError, match="not a Ganeti configuration"):
        fail_over({"nodes": []}, 2)
    with pytest.raises(ConfdClientError, match="not a Ganeti configuration"):
        fail_over({**config, "nodes": {"x": None}}, 2)
    with pytest.raises(ConfdClientError, match="config must be a Ganeti configuration"):
        fail_over(None, 2)  # type: ignore[arg-type]
    with pytest.raises(
        ConfdClientError, match=r"serial must be above the configuration's, 1, not 1"
    ):
        fail_over(config, 2, serial=1)
    # The cluster's serial is the one peers report, whatever the file's copy says.
    odd = copy.deepcopy(config)
    odd["serial_no"] = None
    odd["cluster"]["serial_no"] = 5
    assert fail_over(odd, 2)["cluster"]["serial_no"] == 6


def test_drbd_minors_are_unique_per_node() -> None:
    config = make_cluster_config(nodes=3, instances=12)
    seen: set[tuple[str, int]] = set()
    for disk in config["disks"].values():
        node_a, node_b, _port, minor_a, minor_b, _secret = disk["logical_id"]
        for pair in ((node_a, minor_a), (node_b, minor_b)):
            assert pair not in seen
            seen.add(pair)


def test_single_node_or_no_drbd_gives_plain_disks() -> None:
    for config in (make_cluster_config(nodes=1), make_cluster_config(drbd=False)):
        assert {d["dev_type"] for d in config["disks"].values()} == {"plain"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, "nodes must be"),
        ({"nodes": 3, "master_candidates": 4}, "master_candidates must be"),
        ({"nodes": 3, "master_candidates": 3, "offline": 1}, "offline must be"),
        ({"nodes": 3, "master_candidates": 2, "offline": 1, "drained": 1}, "drained must be"),
        ({"links": "br0"}, "links must be"),
        ({"links": []}, "links must be"),
        ({"serial": -1}, "serial must be"),
        ({"master": 0}, "master must be an integer from 1 to 3"),
        ({"master": 4}, "master must be an integer from 1 to 3"),
        ({"master": True}, "master must be an integer"),
        ({"nodes": 4, "master_candidates": 2, "master": 3}, "node3 is not one of the first 2"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        make_cluster_config(**kwargs)


@pytest.mark.interop
@pytest.mark.parametrize(
    "kwargs",
    [
        {"nodes": 1, "instances": 0},
        {"nodes": 2, "instances": 1, "drbd": False, "serial": 5},
        {"nodes": 3, "instances": 2, "master": 3},
        {
            "nodes": 40,
            "master_candidates": 10,
            "offline": 5,
            "drained": 5,
            "instances": 120,
            "links": ("br0", "br1", "br2"),
            "serial": 77,
        },
    ],
)
async def test_the_real_daemon_loads_what_it_makes(
    ganeti_cluster: Cluster, kwargs: dict[str, Any]
) -> None:
    config = make_cluster_config(**kwargs)
    daemon = await ganeti_cluster.start(config, b"generator key", "generated")
    async with open_confd_client(b"generator key", [daemon.address]) as client:
        result = await client.query(RequestType.CLUSTER_MASTER, timeout=5)
        master = f"node{kwargs.get('master', 1)}.example.com"
        assert (result.answer, result.serial) == (master, config["serial_no"])
        result = await client.query(requests.node_pip_list(), timeout=5)
        assert len(result.answer) == kwargs["nodes"]


@pytest.mark.interop
async def test_proxy_in_front_of_the_real_daemon(ganeti_cluster: Cluster) -> None:
    daemon = ganeti_cluster.daemons[0]
    async with (
        open_fault_proxy(daemon.address, to_client=Faults(duplicate=1.0)) as proxy,
        open_confd_client(ganeti_cluster.key, [proxy.address]) as client,
    ):
        result = await client.query(requests.cluster_master(), timeout=5)
        assert result.answer == "node1.example.com"
        assert proxy.stats["to_client"].duplicated == 1
