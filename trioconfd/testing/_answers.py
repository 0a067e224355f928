"""Answering confd requests from a configuration, exactly as ganeti-confd 3.0 does.

Every rule here was checked against Debian's daemon; its quirks are kept on
purpose (they are what a client meets on a real cluster):

- names are looked up as Ganeti does: a UUID, an exact name, or a unique
  prefix ending at a dot ("node1" finds "node1.example.com");
- NODE_ROLE_BYNAME calls a node MASTER only when asked by its full name;
- NODE_PIP_LIST and MC_PIP_LIST list nodes in descending UUID order;
- error texts are Haskell's ``show`` of the daemon's exceptions;
- ping and error replies carry serial 0, node-scoped answers the node's
  serial, instance-scoped ones the instance's, the rest the cluster's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..protocol import (
    ConfdReply,
    ConfdRequest,
    ErrorCode,
    MasterField,
    NodeRole,
    QueryKey,
    ReplyStatus,
    RequestType,
)
from ._haskell import as_haskell_int, haskell_show, haskell_view
from ._lookup import NotFound, drbd_minors, lookup
from ._pointer import json_pointer

_OK = ReplyStatus.OK
_ERROR = ReplyStatus.ERROR
_ARGUMENT_ERROR = ConfdReply(_ERROR, int(ErrorCode.ARGUMENT), 0)
_UNKNOWN_ENTRY = (int(_ERROR), int(ErrorCode.UNKNOWN_ENTRY), 0)

# The daemon's data collectors, and the interval it reports when none is set (µs).
_COLLECTORS = ("cpu-avg-load", "diskstats", "drbd", "inst-status-xen", "lv", "xen-cpu-avg-load")
_DEFAULT_INTERVAL = 5000000
_XEN_HYPERVISORS = frozenset({"xen-pvm", "xen-hvm"})


class ConfigAnswers:
    """Answers every request type from one configuration (indexed once)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.view = haskell_view(config)
        cluster = config["cluster"]
        self.cluster = cluster
        self.serial: int = as_haskell_int(cluster["serial_no"])
        self.nodes: dict[str, dict[str, Any]] = dict(config.get("nodes") or {})
        self.nodes_by_name = {node["name"]: node for node in self.nodes.values()}
        self.instances: dict[str, dict[str, Any]] = dict(
            sorted((config.get("instances") or {}).items())
        )
        # By name, as the daemon looks names up: the last UUID wins a shared
        # name, and an instance without one is found by its UUID only.
        self.instances_by_name = {
            inst["name"]: inst for inst in self.instances.values() if inst.get("name")
        }
        self.disks: dict[str, Any] = self.view.get("disks") or {}
        default_nic = (cluster.get("nicparams") or {}).get("default") or {}
        self.default_link: str = default_nic.get("link", "")
        self.links = self._link_map(default_nic)
        master = self.nodes.get(cluster.get("master_node", ""))
        self.master_name: str | None = None if master is None else master["name"]
        self.master_node = master

    def _link_map(self, default_nic: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """link → {instance IP → instance name (its UUID if it has none)}; the last NIC
        (instances by UUID, each one's NICs in order) wins."""
        links: dict[str, dict[str, str]] = {}
        for uuid, instance in self.instances.items():
            for nic in instance.get("nics") or []:
                ip = nic.get("ip")
                if ip is None:
                    continue
                params = {k: v for k, v in (nic.get("nicparams") or {}).items() if v is not None}
                link = {**default_nic, **params}.get("link", "")
                name = instance.get("name")
                links.setdefault(link, {})[ip] = uuid if name is None else name
        return links

    def _instance_named(self, name: str) -> dict[str, Any] | None:
        """The first instance (by UUID) named exactly ``name``: how the daemon goes
        from an instance IP to its node (no UUID, no prefix)."""
        for instance in self.instances.values():
            if instance.get("name") == name:
                return instance
        return None

    def node(self, name: str) -> dict[str, Any]:
        return lookup("Node", name, self.nodes, self.nodes_by_name)  # type: ignore[no-any-return]

    def instance(self, name: str) -> dict[str, Any]:
        found = lookup("Instance", name, self.instances, self.instances_by_name)
        return found  # type: ignore[no-any-return]

    # -- one method per request type; each returns (status, answer, serial) --

    def ping(self, query: Any) -> tuple[int, Any, int]:
        return _OK, self.view.get("version"), 0

    def _missing_master(self) -> NotFound:
        return NotFound("Node", str(self.cluster.get("master_node")), "not found")

    def cluster_master(self, query: Any) -> tuple[int, Any, int]:
        if isinstance(query, str):
            return _ARGUMENT_ERROR.status, _ARGUMENT_ERROR.answer, 0
        if self.master_name is None or self.master_node is None:
            # The daemon formats the error for a plain query, shows it for fields.
            missing = self._missing_master()
            return _ERROR, missing.formatted() if query is None else missing.shown(), 0
        if query is None:
            return _OK, self.master_name, self.serial
        values = {
            MasterField.NAME: self.master_name,
            MasterField.IP: self.cluster.get("master_ip"),
            MasterField.MNODE_PIP: self.master_node.get("primary_ip"),
        }
        fields = query.get(QueryKey.FIELDS.value, [])
        return _OK, [values[MasterField(field)] for field in fields], self.serial

    def node_role(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        if self.master_name is None:
            return _ERROR, self._missing_master().formatted(), 0
        try:
            node = self.node(name)
        except NotFound as exc:
            return _ERROR, exc.formatted(), 0
        # The daemon compares the name as asked with the master's full name.
        if name == self.master_name:
            role = NodeRole.MASTER
        elif node.get("drained"):
            role = NodeRole.DRAINED
        elif node.get("offline"):
            role = NodeRole.OFFLINE
        elif node.get("master_candidate"):
            role = NodeRole.CANDIDATE
        else:
            role = NodeRole.REGULAR
        return _OK, int(role), self.serial

    def node_pip_list(self, query: Any) -> tuple[int, Any, int]:
        nodes = sorted(self.nodes.items(), reverse=True)
        return _OK, [node["primary_ip"] for _, node in nodes], self.serial

    def mc_pip_list(self, query: Any) -> tuple[int, Any, int]:
        nodes = sorted(self.nodes.items(), reverse=True)
        ips = [node["primary_ip"] for _, node in nodes if node.get("master_candidate")]
        return _OK, ips, self.serial

    def instances_ips_list(self, query: Any) -> tuple[int, Any, int]:
        if isinstance(query, dict):
            return _ERROR, "Invalid query type", 0
        link = self.default_link if query is None else query
        return _OK, sorted(self.links.get(link, {})), self.serial

    def _pip_by_instance_ip(self, link: str, ip: str) -> tuple[int, Any, int]:
        name = self.links.get(link, {}).get(ip)
        instance = None if name is None else self._instance_named(name)
        if instance is None or instance.get("primary_node") is None:
            return _UNKNOWN_ENTRY
        try:
            node = self.node(instance["primary_node"])
        except NotFound:
            return _UNKNOWN_ENTRY
        return int(_OK), node["primary_ip"], self.serial

    def node_pip_by_instance_ip(self, query: Any) -> tuple[int, Any, int]:
        if not isinstance(query, dict):
            return _ARGUMENT_ERROR.status, _ARGUMENT_ERROR.answer, 0
        link = query.get(QueryKey.LINK.value, self.default_link)
        ip = query.get(QueryKey.IP.value)
        if ip is not None:
            status, answer, serial = self._pip_by_instance_ip(link, ip)
            return ReplyStatus(status), answer, serial
        triples = [
            list(self._pip_by_instance_ip(link, each))
            for each in query.get(QueryKey.IPLIST.value, [])
        ]
        return _OK, triples, self.serial

    def node_drbd(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        try:
            node = self.node(name)
        except NotFound as exc:
            return _ERROR, exc.shown(), 0
        rows = []
        for instance in self.instances.values():
            role = "primary" if instance.get("primary_node") == node["uuid"] else "secondary"
            disk_uuids = instance.get("disks") or []
            if any(uuid not in self.disks for uuid in disk_uuids):
                continue  # the daemon cannot read this instance's disks: no rows
            for index, disk_uuid in enumerate(disk_uuids):
                disk = self.disks[disk_uuid]
                for minor, peer in drbd_minors(disk, node["uuid"]):
                    try:
                        peer_name = self.nodes[peer]["name"]
                    except KeyError:
                        return _ERROR, NotFound("Node", peer, "not found").shown(), 0
                    disk_name = f"disk/{index}"
                    name = instance.get("name") or ""
                    rows.append([node["name"], minor, name, disk_name, role, peer_name])
        return _OK, rows, as_haskell_int(node["serial_no"])

    def node_instances(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        try:
            node = self.node(name)
        except NotFound as exc:
            return _ERROR, f"Node not found in the configuration: {exc.shown()}", 0
        views = self.view.get("instances") or {}
        primaries, secondaries = [], []
        for uuid, instance in self.instances.items():
            primary = instance.get("primary_node")
            if primary == node["uuid"]:
                primaries.append(views[uuid])
            # Once, however many of its disks mirror to the node.
            secondary_nodes = {
                self._secondary_node(self.disks.get(disk_uuid) or {}, primary)
                for disk_uuid in instance.get("disks") or []
            }
            if node["uuid"] in secondary_nodes:
                secondaries.append(views[uuid])
        return _OK, [primaries, secondaries], as_haskell_int(node["serial_no"])

    @staticmethod
    def _secondary_node(disk: Mapping[str, Any], primary: object) -> str | None:
        """A DRBD disk's secondary node as the daemon reckons it: its second end if the
        primary is its first, else its first (even when the primary is neither)."""
        logical_id = disk.get("logical_id")
        if disk.get("dev_type") != "drbd" or not isinstance(logical_id, list):
            return None
        first, second = logical_id[:2]
        return str(second if primary == first else first)

    def instance_disks(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        try:
            instance = self.instance(name)
        except NotFound as exc:
            return _ERROR, f"Instance not found in the configuration: {exc.shown()}", 0
        try:
            disks = [self.disks[uuid] for uuid in instance.get("disks") or []]
        except KeyError as exc:
            missing = f"Disk uuid {exc.args[0]} not found"
            return (
                _ERROR,
                f"Could not retrieve disks: OpPrereqError {haskell_show(missing)} ECodeNoEnt",
                0,
            )
        return _OK, disks, as_haskell_int(instance["serial_no"])

    def config_query(self, query: Any) -> tuple[int, Any, int]:
        path = self._plain(query)
        try:
            return _OK, json_pointer(self.view, path), self.serial
        except KeyError:
            return _ARGUMENT_ERROR.status, _ARGUMENT_ERROR.answer, 0

    def data_collectors(self, query: Any) -> tuple[int, Any, int]:
        configured = self.view["cluster"].get("data_collectors") or {}
        xen = bool(_XEN_HYPERVISORS & set(self.cluster.get("enabled_hypervisors") or []))
        answer = {}
        for name in _COLLECTORS:
            settings = configured.get(name) or {}
            active = bool(settings.get("active", True))
            if name == "inst-status-xen":
                active = active and xen
            answer[name] = {
                "active": active,
                "interval": settings.get("interval", _DEFAULT_INTERVAL),
            }
        return _OK, answer, self.serial

    @staticmethod
    def _plain(query: Any) -> str:
        if isinstance(query, str):
            return query
        raise _WrongQuery(query)

    def answer(self, request: ConfdRequest) -> ConfdReply:
        """The daemon's reply to ``request`` (decoded as the daemon decodes it)."""
        handler = self._handlers[request.type]
        try:
            status, answer, serial = handler(self, request.query)
        except _WrongQuery as exc:
            status, answer, serial = _ERROR, f"Invalid query type {exc.shown()}", 0
        return ConfdReply(ReplyStatus(status), answer, serial)

    _handlers: ClassVar[dict[RequestType, Callable[[ConfigAnswers, Any], tuple[int, Any, int]]]] = {
        RequestType.PING: ping,
        RequestType.CLUSTER_MASTER: cluster_master,
        RequestType.NODE_ROLE_BYNAME: node_role,
        RequestType.NODE_PIP_LIST: node_pip_list,
        RequestType.MC_PIP_LIST: mc_pip_list,
        RequestType.INSTANCES_IPS_LIST: instances_ips_list,
        RequestType.NODE_PIP_BY_INSTANCE_IP: node_pip_by_instance_ip,
        RequestType.NODE_DRBD: node_drbd,
        RequestType.NODE_INSTANCES: node_instances,
        RequestType.INSTANCE_DISKS: instance_disks,
        RequestType.CONFIG_QUERY: config_query,
        RequestType.DATA_COLLECTORS: data_collectors,
    }


_FIELD_NAMES = {
    MasterField.NAME: "ReqFieldName",
    MasterField.IP: "ReqFieldIp",
    MasterField.MNODE_PIP: "ReqFieldMNodePip",
}


class _WrongQuery(Exception):
    """A decodable query of the wrong kind for its request type."""

    def __init__(self, query: Any) -> None:
        super().__init__(query)
        self.query = query

    def shown(self) -> str:
        """Haskell's ``show`` of the decoded query."""
        if self.query is None:
            return "EmptyQuery"
        query = self.query

        def maybe(key: QueryKey) -> str:
            value = query.get(key.value)
            return "Nothing" if value is None else f"Just {haskell_show(value)}"

        ips = ",".join(haskell_show(ip) for ip in query.get(QueryKey.IPLIST.value, []))
        fields = ",".join(_FIELD_NAMES[MasterField(f)] for f in query.get("3", []))
        return (
            f"DictQuery (ConfdReqQ {{confdReqQIp = {maybe(QueryKey.IP)}, "
            f"confdReqQIpList = [{ips}], confdReqQLink = {maybe(QueryKey.LINK)}, "
            f"confdReqQFields = [{fields}]}})"
        )
