"""The typed request builders: wire shapes, argument checks, and the daemon's answers."""

from __future__ import annotations

from typing import Any

import pytest

from trioconfd import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClientError,
    ConfdRequest,
    MasterField,
    ReplyStatus,
    RequestType,
    open_confd_client,
    requests,
)

from .conftest import CLUSTER_KEY, Cluster

BUILT: list[tuple[ConfdRequest, RequestType, Any]] = [
    (requests.ping(), RequestType.PING, None),
    (requests.cluster_master(), RequestType.CLUSTER_MASTER, None),
    (
        requests.cluster_master([MasterField.IP, 0]),
        RequestType.CLUSTER_MASTER,
        {"3": [1, 0]},
    ),
    (requests.node_role("node2.example.com"), RequestType.NODE_ROLE_BYNAME, "node2.example.com"),
    (
        requests.node_pip_by_instance_ip("198.18.0.2", link="br1"),
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        {"1": "198.18.0.2", "0": "br1"},
    ),
    (
        requests.node_pips_by_instance_ips(["198.18.0.1", "198.18.0.3"]),
        RequestType.NODE_PIP_BY_INSTANCE_IP,
        {"2": ["198.18.0.1", "198.18.0.3"]},
    ),
    (requests.node_pip_list(), RequestType.NODE_PIP_LIST, None),
    (requests.mc_pip_list(), RequestType.MC_PIP_LIST, None),
    (requests.instances_ips_list(), RequestType.INSTANCES_IPS_LIST, None),
    (requests.instances_ips_list("br1"), RequestType.INSTANCES_IPS_LIST, "br1"),
    (requests.node_drbd("node1.example.com"), RequestType.NODE_DRBD, "node1.example.com"),
    (
        requests.node_instances("node1.example.com"),
        RequestType.NODE_INSTANCES,
        "node1.example.com",
    ),
    (
        requests.instance_disks("instance1.example.com"),
        RequestType.INSTANCE_DISKS,
        "instance1.example.com",
    ),
    (requests.config_query("/cluster/uuid"), RequestType.CONFIG_QUERY, "/cluster/uuid"),
    (requests.data_collectors(), RequestType.DATA_COLLECTORS, None),
]


@pytest.mark.parametrize(("request_", "request_type", "wire_query"), BUILT)
def test_builders_make_the_wire_query(
    request_: ConfdRequest, request_type: RequestType, wire_query: Any
) -> None:
    assert request_.type is request_type
    assert request_.query == wire_query
    assert request_.to_wire()["query"] == wire_query


def test_master_fields_are_sent_as_integers() -> None:
    # Strings (what Ganeti 3.0's own confd-client sends) make the daemon drop the request.
    (fields,) = requests.cluster_master([MasterField.NAME]).to_wire()["query"].values()
    assert [type(field) for field in fields] == [int]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: requests.cluster_master(["0"]), "MasterField"),  # type: ignore[list-item]
        (lambda: requests.cluster_master([7]), "MasterField"),
        (lambda: requests.node_role(""), "node must be"),
        (lambda: requests.node_role(None), "node must be"),  # type: ignore[arg-type]
        (lambda: requests.node_pips_by_instance_ips("198.18.0.1"), "not one string"),
        (lambda: requests.node_pip_by_instance_ip("198.18.0.1", link=""), "link must be"),
        (lambda: requests.config_query("cluster/name"), "starts with '/'"),
        (lambda: requests.instance_disks(3), "instance must be"),  # type: ignore[arg-type]
        (lambda: requests.node_pip_by_instance_ip("nope"), "ip must be an IP address"),
        (lambda: requests.node_pip_by_instance_ip("198.18.0.256"), "ip must be an IP address"),
        (lambda: requests.node_pip_by_instance_ip("198.18.0.1\n"), "ip must be an IP address"),
        (
            lambda: requests.node_pips_by_instance_ips(["198.18.0.1", "node1"]),
            "each ip must be an IP address, not 'node1'",
        ),
    ],
)
def test_bad_arguments_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        build()


@pytest.mark.parametrize("name", [None, 123, b"node1"])
def test_a_name_of_the_wrong_type_is_a_type_error(name: Any) -> None:
    with pytest.raises(ConfdArgumentTypeError, match="node must be a non-empty string"):
        requests.node_role(name)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: requests.config_query(123), "a JSON pointer is a str"),  # type: ignore[arg-type]
        (lambda: requests.config_query(None), "a JSON pointer is a str"),  # type: ignore[arg-type]
        (lambda: requests.cluster_master(fields=5), "fields must be MasterField values"),  # type: ignore[arg-type]
        (lambda: requests.cluster_master(fields="0"), "fields must be MasterField values"),  # type: ignore[arg-type]
        (lambda: requests.node_pips_by_instance_ips(123), "ips must be a list"),  # type: ignore[arg-type]
        (lambda: requests.node_pips_by_instance_ips(None), "ips must be a list"),  # type: ignore[arg-type]
    ],
)
def test_a_builders_argument_of_the_wrong_type_is_a_type_error(build: Any, message: str) -> None:
    # (node_pips_by_instance_ips(123) was a bare TypeError, no ConfdClientError at all.)
    with pytest.raises(ConfdArgumentTypeError, match=message):
        build()


def test_an_empty_name_is_a_wrong_value_not_type() -> None:
    with pytest.raises(ConfdArgumentError, match="node must be") as caught:
        requests.node_role("")
    assert not isinstance(caught.value, TypeError)


async def test_every_builder_is_answered_by_the_daemon(ganeti_cluster: Cluster) -> None:
    async with open_confd_client(CLUSTER_KEY, ganeti_cluster.peers) as client:
        assert {built[1] for built in BUILT} == set(RequestType)
        for request_, _, _ in BUILT:
            # Rebuilt each time: a request's rsalt is used once.
            fresh = ConfdRequest(request_.type, request_.query)
            result = await client.query(fresh, timeout=5)
            assert not result.timed_out, fresh
            assert result.status is ReplyStatus.OK, (fresh, result.answer)
