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

import copy
import math
import re
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

_OK = ReplyStatus.OK
_ERROR = ReplyStatus.ERROR
_ARGUMENT_ERROR = ConfdReply(_ERROR, int(ErrorCode.ARGUMENT), 0)
_UNKNOWN_ENTRY = (int(_ERROR), int(ErrorCode.UNKNOWN_ENTRY), 0)

# The daemon's data collectors, and the interval it reports when none is set (µs).
_COLLECTORS = ("cpu-avg-load", "diskstats", "drbd", "inst-status-xen", "lv", "xen-cpu-avg-load")
_DEFAULT_INTERVAL = 5000000
_XEN_HYPERVISORS = frozenset({"xen-pvm", "xen-hvm"})

_ASCII_NAMES = (
    "NUL",
    "SOH",
    "STX",
    "ETX",
    "EOT",
    "ENQ",
    "ACK",
    "a",
    "b",
    "t",
    "n",
    "v",
    "f",
    "r",
    "SO",
    "SI",
    "DLE",
    "DC1",
    "DC2",
    "DC3",
    "DC4",
    "NAK",
    "SYN",
    "ETB",
    "CAN",
    "EM",
    "SUB",
    "ESC",
    "FS",
    "GS",
    "RS",
    "US",
)


def haskell_show(text: str) -> str:
    """``text`` as Haskell's ``show`` writes a String (quotes and escapes included)."""
    out = ['"']
    for index, char in enumerate(text):
        code = ord(char)
        following = text[index + 1 : index + 2]
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif 32 <= code < 127:
            out.append(char)
        elif code == 127:
            out.append("\\DEL")
        elif code < 32:
            out.append("\\" + _ASCII_NAMES[code])
            if _ASCII_NAMES[code] == "SO" and following == "H":
                out.append("\\&")  # so "\SO" "H" does not read back as "\SOH"
        elif code > 0xFFFF:
            # The daemon reads a JSON "\\ud83d\\ude00" as two characters, the
            # surrogates, and shows each (clients escape astral characters so).
            code -= 0x10000
            out.append(f"\\{0xD800 + (code >> 10)}\\{0xDC00 + (code & 0x3FF)}")
            if following.isdigit() and following.isascii():
                out.append("\\&")
        else:
            out.append(f"\\{code}")
            if following.isdigit() and following.isascii():
                out.append("\\&")
    out.append('"')
    return "".join(out)


class _NotFound(Exception):
    """Ganeti's OpPrereqError with ECodeNoEnt."""

    def __init__(self, kind: str, name: str, problem: str) -> None:
        super().__init__(f"{kind} name {name} {problem}")
        self.message = f"{kind} name {name} {problem}"

    def shown(self) -> str:
        """Haskell's ``show`` of the exception."""
        return f"OpPrereqError {haskell_show(self.message)} ECodeNoEnt"

    def formatted(self) -> str:
        """Ganeti's ``formatError`` of the exception."""
        return (
            "Failure: prerequisites not met for this operation:\n"
            f"error type: ECodeNoEnt, error details:\n{self.message}"
        )


def _lookup(kind: str, name: str, by_uuid: Mapping[str, Any], by_name: Mapping[str, Any]) -> Any:
    """Ganeti's getItem: a UUID, an exact name, or one name that ``name + "."`` begins."""
    if name in by_uuid:
        return by_uuid[name]
    if name in by_name:
        return by_name[name]
    prefix = name + "."
    matches = [full for full in by_name if full.startswith(prefix)]
    if len(matches) == 1:
        return by_name[matches[0]]
    raise _NotFound(kind, name, "has multiple matches" if matches else "not found")


def _drbd_minors(disk: Mapping[str, Any], node: str) -> list[tuple[int, str]]:
    """(minor, peer node UUID) of ``node`` in a disk and its children, the disk first."""
    minors = []
    logical_id = disk.get("logical_id")
    if disk.get("dev_type") == "drbd" and isinstance(logical_id, list) and len(logical_id) == 6:
        node_a, node_b, _port, minor_a, minor_b, _secret = logical_id
        if node_a == node:
            minors.append((minor_a, node_b))
        elif node_b == node:
            minors.append((minor_b, node_a))
    for child in disk.get("children") or []:
        minors.extend(_drbd_minors(child, node))
    return minors


def _as_haskell_numbers(value: Any) -> Any:
    """``value`` with its numbers as the daemon writes them back.

    It writes a whole number held as a double without a fraction
    (``1700000000.0`` goes out as ``1700000000``, ``1.0`` as ``1``), so a
    client gets an int where this JSON had a float; and it holds integers in
    64 bits (a serial of 2**64 + 5 is 5).
    """
    if isinstance(value, float) and value.is_integer():
        return as_haskell_int(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return as_haskell_int(value)
    if isinstance(value, list):
        return [_as_haskell_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_haskell_numbers(item) for key, item in value.items()}
    return value


def as_haskell_int(value: int) -> int:
    """``value`` as a Haskell ``Int`` holds it: wrapped to 64 bits, signed."""
    return (value + 2**63) % 2**64 - 2**63


_MEMORY_UNITS = {"": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_MEMORY_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([mgt]?)(?:i?b)?\s*", re.IGNORECASE)


def _haskell_beparams(beparams: dict[str, Any]) -> dict[str, Any]:
    """Backend parameters as the daemon reads them: memory given as text ("1g") in MiB."""
    read = dict(beparams)
    for name in ("maxmem", "minmem", "memory"):
        value = read.get(name)
        match = _MEMORY_TEXT.fullmatch(value) if isinstance(value, str) else None
        if match is not None:
            number, unit = match.groups()
            read[name] = math.ceil(float(number) * _MEMORY_UNITS[unit.lower()])
    for name in ("vcpus", "spindle_use"):
        value = read.get(name)
        if isinstance(value, str) and value.strip().isdigit():
            read[name] = int(value)
    return read


# What the daemon fills in for a field the configuration leaves out.
_CLUSTER_DEFAULTS: dict[str, Any] = {
    "ctime": 0,
    "mtime": 0,
    "tags": [],
    "hv_state_static": {},
    "disk_state_static": {},
}
_NODE_DEFAULTS: dict[str, Any] = {"ctime": 0, "mtime": 0, "tags": []}
_DISK_DEFAULTS: dict[str, Any] = {"ctime": 0, "mtime": 0, "mode": "rw"}
_INSTANCE_DEFAULTS: dict[str, Any] = {
    "ctime": 0,
    "mtime": 0,
    "tags": [],
    "nics": [],
    "disks": [],
    "osparams_private": {},
}


def _fill(item: Any, defaults: Mapping[str, Any]) -> None:
    if isinstance(item, dict):
        for name, value in defaults.items():
            item.setdefault(name, copy.deepcopy(value))


def _tags_as_sets(view: dict[str, Any]) -> None:
    """Tags are sets to the daemon: sorted, each once."""
    items = [view.get("cluster") or {}]
    for section in ("nodes", "instances", "nodegroups", "networks", "disks"):
        items += (view.get(section) or {}).values()
    for item in items:
        if isinstance(item.get("tags"), list):
            item["tags"] = sorted(set(item["tags"]))


def _haskell_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as the daemon serialises it back (the defaults it fills in)."""
    view: dict[str, Any] = _as_haskell_numbers(dict(config))

    def fill_disk(disk: dict[str, Any]) -> None:
        disk.setdefault("iv_name", "")
        disk.setdefault("mode", "rw")
        disk.setdefault("params", {})
        disk.setdefault("children", [])
        for child in disk["children"]:
            fill_disk(child)

    for disk in (view.get("disks") or {}).values():
        _fill(disk, _DISK_DEFAULTS)
        for child in disk.get("children") or []:
            fill_disk(child)
    _fill(view.get("cluster"), _CLUSTER_DEFAULTS)
    for node in (view.get("nodes") or {}).values():
        _fill(node, _NODE_DEFAULTS)
    for instance in (view.get("instances") or {}).values():
        _fill(instance, _INSTANCE_DEFAULTS)
    for group in (view.get("nodegroups") or {}).values():
        group.setdefault("members", [])
        group.setdefault("ctime", 0)
    for instance in (view.get("instances") or {}).values():
        instance.setdefault("tags", [])
        for nic in instance.get("nics") or []:
            # A null NIC parameter is an unset one (the cluster's default applies).
            params = nic.get("nicparams")
            if isinstance(params, dict):
                nic["nicparams"] = {k: v for k, v in params.items() if v is not None}
        beparams = instance.get("beparams")
        if isinstance(beparams, dict):
            instance["beparams"] = _haskell_beparams(beparams)
    _tags_as_sets(view)
    # Collector intervals are whole microseconds to the daemon.
    for collector in (view.get("cluster", {}).get("data_collectors") or {}).values():
        if isinstance(collector.get("interval"), float):
            collector["interval"] = round(collector["interval"])
    return view


def _pointer_tokens(pointer: str) -> list[str]:
    """The daemon's reading of a JSON pointer: its tokens, up to where it stops.

    A token runs to the next ``/``; ``~0`` is ``~`` and ``~1`` is ``/``. The
    daemon stops reading, and ignores the rest, at a ``~`` that escapes
    nothing (keeping the token so far) and at an empty token that is not the
    last (``//``); an empty last token (a trailing ``/``) is kept.
    """
    tokens: list[str] = []
    position, end = 0, len(pointer)
    while position < end and pointer[position] == "/":
        position += 1
        token: list[str] = []
        while position < end and pointer[position] != "/":
            char = pointer[position]
            if char == "~":
                escaped = pointer[position + 1 : position + 2]
                if escaped not in ("0", "1"):
                    break
                token.append("~" if escaped == "0" else "/")
                position += 2
            else:
                token.append(char)
                position += 1
        if token:
            tokens.append("".join(token))
        elif position == end:
            tokens.append("")
        else:
            break
        if position < end and pointer[position] == "~":
            break
    return tokens


def _array_index(token: str) -> int:
    """The daemon's index for ``token``: its leading decimal digits, in 64 bits."""
    digits = len(token) - len(token.lstrip("0123456789"))
    if not digits or not token[:digits].isascii():
        raise KeyError(token)
    return as_haskell_int(int(token[:digits]))


def _json_pointer(document: Any, pointer: str) -> Any:
    """The value at ``pointer``, read as the daemon reads it; KeyError when not there."""
    tokens = _pointer_tokens(pointer)
    if not tokens:
        raise KeyError(pointer)
    value = document
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and 0 <= _array_index(token) < len(value):
            value = value[_array_index(token)]
        else:
            raise KeyError(token)
    return value


class ConfigAnswers:
    """Answers every request type from one configuration (indexed once)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.view = _haskell_view(config)
        cluster = config["cluster"]
        self.cluster = cluster
        self.serial: int = as_haskell_int(cluster["serial_no"])
        self.nodes: dict[str, dict[str, Any]] = dict(config.get("nodes") or {})
        self.nodes_by_name = {node["name"]: node for node in self.nodes.values()}
        self.instances: dict[str, dict[str, Any]] = dict(
            sorted((config.get("instances") or {}).items())
        )
        self.instances_by_name = {inst["name"]: inst for inst in self.instances.values()}
        self.disks: dict[str, Any] = self.view.get("disks") or {}
        default_nic = (cluster.get("nicparams") or {}).get("default") or {}
        self.default_link: str = default_nic.get("link", "")
        self.links = self._link_map(default_nic)
        master = self.nodes.get(cluster.get("master_node", ""))
        self.master_name: str | None = None if master is None else master["name"]
        self.master_node = master

    def _link_map(self, default_nic: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """link → {instance IP → instance name}; later instances (by UUID) win."""
        links: dict[str, dict[str, str]] = {}
        for instance in self.instances.values():
            for nic in instance.get("nics") or []:
                ip = nic.get("ip")
                if ip is None:
                    continue
                params = {k: v for k, v in (nic.get("nicparams") or {}).items() if v is not None}
                link = {**default_nic, **params}.get("link", "")
                links.setdefault(link, {})[ip] = instance["name"]
        return links

    def node(self, name: str) -> dict[str, Any]:
        return _lookup("Node", name, self.nodes, self.nodes_by_name)  # type: ignore[no-any-return]

    def instance(self, name: str) -> dict[str, Any]:
        found = _lookup("Instance", name, self.instances, self.instances_by_name)
        return found  # type: ignore[no-any-return]

    # -- one method per request type; each returns (status, answer, serial) --

    def ping(self, query: Any) -> tuple[int, Any, int]:
        return _OK, self.view.get("version"), 0

    def _missing_master(self) -> _NotFound:
        return _NotFound("Node", str(self.cluster.get("master_node")), "not found")

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
        except _NotFound as exc:
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
        if name is None:
            return _UNKNOWN_ENTRY
        try:
            node = self.nodes[self.instance(name)["primary_node"]]
        except (_NotFound, KeyError):
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
        except _NotFound as exc:
            return _ERROR, exc.shown(), 0
        rows = []
        for instance in self.instances.values():
            role = "primary" if instance.get("primary_node") == node["uuid"] else "secondary"
            disk_uuids = instance.get("disks") or []
            if any(uuid not in self.disks for uuid in disk_uuids):
                continue  # the daemon cannot read this instance's disks: no rows
            for index, disk_uuid in enumerate(disk_uuids):
                disk = self.disks[disk_uuid]
                for minor, peer in _drbd_minors(disk, node["uuid"]):
                    try:
                        peer_name = self.nodes[peer]["name"]
                    except KeyError:
                        return _ERROR, _NotFound("Node", peer, "not found").shown(), 0
                    disk_name = f"disk/{index}"
                    rows.append([node["name"], minor, instance["name"], disk_name, role, peer_name])
        return _OK, rows, as_haskell_int(node["serial_no"])

    def node_instances(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        try:
            node = self.node(name)
        except _NotFound as exc:
            return _ERROR, f"Node not found in the configuration: {exc.shown()}", 0
        views = self.view.get("instances") or {}
        primaries, secondaries = [], []
        for uuid, instance in self.instances.items():
            if instance.get("primary_node") == node["uuid"]:
                primaries.append(views[uuid])
            for disk_uuid in instance.get("disks") or []:
                disk = self.disks.get(disk_uuid) or {}
                if node["uuid"] in self._secondary_nodes(disk, instance):
                    secondaries.append(views[uuid])
        return _OK, [primaries, secondaries], as_haskell_int(node["serial_no"])

    @staticmethod
    def _secondary_nodes(disk: Mapping[str, Any], instance: Mapping[str, Any]) -> list[str]:
        logical_id = disk.get("logical_id")
        if disk.get("dev_type") != "drbd" or not isinstance(logical_id, list):
            return []
        return [node for node in logical_id[:2] if node != instance.get("primary_node")]

    def instance_disks(self, query: Any) -> tuple[int, Any, int]:
        name = self._plain(query)
        try:
            instance = self.instance(name)
        except _NotFound as exc:
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
            return _OK, _json_pointer(self.view, path), self.serial
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
