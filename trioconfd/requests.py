"""Typed builders for the 12 request types, in the query shapes the daemon accepts.

Each returns a fresh :class:`~trioconfd.ConfdRequest` to pass to
``client.query``, ``client.request`` or ``client.send_request``::

    from trioconfd import requests
    result = await client.query(requests.node_role("node2.example.com"))

Arguments are checked here, so a wrong one is a clear error at once rather
than a request the daemon drops in silence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .protocol import (
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdRequest,
    MasterField,
    QueryKey,
    RequestType,
)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfdArgumentTypeError(f"{what} must be a non-empty string, not {value!r}")
    if not value:
        raise ConfdArgumentError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _ip(value: object, what: str) -> str:
    # The daemon looks the text up as written: anything but an IP address
    # can only ever answer UNKNOWN_ENTRY.
    text = _name(value, what)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfdArgumentError(f"{what} must be an IP address, not {value!r}") from None
    return text


def _with_link(query: dict[str, object], link: str | None) -> dict[str, object]:
    if link is not None:
        query[QueryKey.LINK.value] = _name(link, "link")
    return query


def ping() -> ConfdRequest:
    """PING: answered with the configuration format version, serial 0."""
    return ConfdRequest(RequestType.PING)


def cluster_master(fields: Iterable[MasterField | int] | None = None) -> ConfdRequest:
    """CLUSTER_MASTER: the master's name, or the listed :class:`MasterField` values."""
    if fields is None:
        return ConfdRequest(RequestType.CLUSTER_MASTER)
    if isinstance(fields, str | bytes) or not isinstance(fields, Iterable):
        raise ConfdArgumentTypeError(f"fields must be MasterField values, not {fields!r}")
    try:
        # The daemon drops the request unless every field is a JSON integer.
        wire = [int(MasterField(field)) for field in fields]
    except (TypeError, ValueError):
        raise ConfdArgumentError(f"fields must be MasterField values, not {fields!r}") from None
    return ConfdRequest(RequestType.CLUSTER_MASTER, {QueryKey.FIELDS.value: wire})


def node_role(node: str) -> ConfdRequest:
    """NODE_ROLE_BYNAME: the node's :class:`NodeRole`."""
    return ConfdRequest(RequestType.NODE_ROLE_BYNAME, _name(node, "node"))


def node_pip_by_instance_ip(ip: str, link: str | None = None) -> ConfdRequest:
    """NODE_PIP_BY_INSTANCE_IP: the primary IP of the node running the instance with ``ip``."""
    query = _with_link({QueryKey.IP.value: _ip(ip, "ip")}, link)
    return ConfdRequest(RequestType.NODE_PIP_BY_INSTANCE_IP, query)


def node_pips_by_instance_ips(ips: Iterable[str], link: str | None = None) -> ConfdRequest:
    """NODE_PIP_BY_INSTANCE_IP with an IP list: one ``[status, answer, serial]`` per IP."""
    if isinstance(ips, str):
        raise ConfdArgumentError("ips must be a list of addresses, not one string")
    if not isinstance(ips, Iterable):
        raise ConfdArgumentTypeError(f"ips must be a list of addresses, not {ips!r}")
    wire = [_ip(ip, "each ip") for ip in ips]
    query = _with_link({QueryKey.IPLIST.value: wire}, link)
    return ConfdRequest(RequestType.NODE_PIP_BY_INSTANCE_IP, query)


def node_pip_list() -> ConfdRequest:
    """NODE_PIP_LIST: every node's primary IP."""
    return ConfdRequest(RequestType.NODE_PIP_LIST)


def mc_pip_list() -> ConfdRequest:
    """MC_PIP_LIST: the master candidates' primary IPs."""
    return ConfdRequest(RequestType.MC_PIP_LIST)


def instances_ips_list(link: str | None = None) -> ConfdRequest:
    """INSTANCES_IPS_LIST: instance IPs on ``link`` (default: the cluster's default link)."""
    return ConfdRequest(
        RequestType.INSTANCES_IPS_LIST, None if link is None else _name(link, "link")
    )


def node_drbd(node: str) -> ConfdRequest:
    """NODE_DRBD: ``[node, minor, instance, disk, role, peer node]`` rows."""
    return ConfdRequest(RequestType.NODE_DRBD, _name(node, "node"))


def node_instances(node: str) -> ConfdRequest:
    """NODE_INSTANCES: ``[[primary instances], [secondary instances]]``."""
    return ConfdRequest(RequestType.NODE_INSTANCES, _name(node, "node"))


def instance_disks(instance: str) -> ConfdRequest:
    """INSTANCE_DISKS: the instance's disk objects."""
    return ConfdRequest(RequestType.INSTANCE_DISKS, _name(instance, "instance"))


def config_query(pointer: str) -> ConfdRequest:
    """CONFIG_QUERY: the configuration value at an RFC 6901 JSON pointer."""
    # The daemon answers "" and relative paths with an ARGUMENT error.
    if not isinstance(pointer, str):
        raise ConfdArgumentTypeError(f"a JSON pointer is a str starting with '/', not {pointer!r}")
    if not pointer.startswith("/"):
        raise ConfdArgumentError(f"a JSON pointer starts with '/', not {pointer!r}")
    return ConfdRequest(RequestType.CONFIG_QUERY, pointer)


def data_collectors() -> ConfdRequest:
    """DATA_COLLECTORS: ``{name: {"active": bool, "interval": number}}``."""
    return ConfdRequest(RequestType.DATA_COLLECTORS)


__all__ = [
    "cluster_master",
    "config_query",
    "data_collectors",
    "instance_disks",
    "instances_ips_list",
    "mc_pip_list",
    "node_drbd",
    "node_instances",
    "node_pip_by_instance_ip",
    "node_pip_list",
    "node_pips_by_instance_ips",
    "node_role",
    "ping",
]
