"""The differential fuzzer: the same bytes to ganeti-confd and to open_confd_server.

Each round generates a configuration (a generated cluster, then seeded
mutations of the kinds real clusters hold), starts the real daemon and the
in-process server on it with one key, and sends both exactly the same
datagrams: generated requests of every type, and malformed ones. Each
datagram goes from its own socket, so a reply is matched to its request
whatever its rsalt. The outcomes (no reply, or the reply's status, answer
and serial as the client reads them) must be identical, but for the
differences the docs list (``KNOWN_DIFFERENCES``).

Run a long campaign with::

    python -m tests.differential --rounds 40 --requests 400 --seed 1
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from trioconfd import MAGIC, ConfdProtocolError, HmacKey, unpack_reply
from trioconfd.testing import (
    find_ganeti_confd,
    make_cluster_config,
    open_confd_server,
    open_ganeti_confd,
)

KEY = b"differential key\n"

#: The one difference forgiven (docs/testing.rst lists it): the daemon writes
#: characters above U+00FF truncated to 8 bits, so its reply to a request
#: carrying one can be unreadable where ours is not. Float digit formatting,
#: the other, never shows: answers are compared as parsed JSON.
EIGHT_BIT_TEXT = "the daemon's 8-bit text"

Outcome = tuple[Any, ...] | None  # (status, answer as canonical JSON, serial), or no reply


# -- configurations ---------------------------------------------------------------

Mutation = Callable[[dict[str, Any], random.Random], None]


def _pick(rng: random.Random, mapping: dict[str, Any]) -> Any:
    return mapping[rng.choice(sorted(mapping))] if mapping else None


def _latin1_names(config: dict[str, Any], rng: random.Random) -> None:
    node = _pick(rng, config["nodes"])
    node["name"] = node["name"].replace("node", rng.choice(["nöde", "nodé", "ñode"]), 1)
    instance = _pick(rng, config["instances"])
    if instance is not None:
        instance["name"] = instance["name"].replace("instance", "café", 1)


def _null_link(config: dict[str, Any], rng: random.Random) -> None:
    instance = _pick(rng, config["instances"])
    if instance is not None:
        instance["nics"][0]["nicparams"]["link"] = None


def _beparams_as_text(config: dict[str, Any], rng: random.Random) -> None:
    instance = _pick(rng, config["instances"])
    if instance is not None:
        instance["beparams"] = {"maxmem": rng.choice(["1g", "512m", "2048"]), "minmem": 128}


def _messy_tags(config: dict[str, Any], rng: random.Random) -> None:
    tags = ["zeta", "alpha", "mid", "alpha", "Beta"]
    rng.shuffle(tags)
    config["cluster"]["tags"] = list(tags)
    node = _pick(rng, config["nodes"])
    node["tags"] = list(reversed(tags))


def _wrapping_serial(config: dict[str, Any], rng: random.Random) -> None:
    serial = 2**64 + rng.randrange(1, 100)
    config["cluster"]["serial_no"] = config["serial_no"] = serial


def _shared_ip(config: dict[str, Any], rng: random.Random) -> None:
    instances = [config["instances"][uuid] for uuid in sorted(config["instances"])]
    if len(instances) >= 2:
        first, second = rng.sample(instances, 2)
        second["nics"][0]["ip"] = first["nics"][0]["ip"]
        second["nics"][0]["nicparams"]["link"] = first["nics"][0]["nicparams"]["link"]


def _dangling_disk(config: dict[str, Any], rng: random.Random) -> None:
    instance = _pick(rng, config["instances"])
    if instance is not None:
        instance["disks"].append("00000000-0000-4000-8000-00000000dead")


def _no_master(config: dict[str, Any], rng: random.Random) -> None:
    config["cluster"]["master_node"] = "00000000-0000-4000-8000-000000000000"


def _missing_optional_fields(config: dict[str, Any], rng: random.Random) -> None:
    node = _pick(rng, config["nodes"])
    for name in rng.sample(["mtime", "ctime", "tags"], 2):
        node.pop(name, None)
    instance = _pick(rng, config["instances"])
    if instance is not None:
        for name in rng.sample(["mtime", "ctime", "tags", "osparams_private", "nics"], 2):
            instance.pop(name, None)
    cluster = config["cluster"]
    for name in rng.sample(["hv_state_static", "disk_state_static", "tags", "mtime"], 2):
        cluster.pop(name, None)
    disk = _pick(rng, config["disks"])
    if disk is not None:
        for name in rng.sample(["mode", "params", "mtime", "ctime"], 2):
            disk.pop(name, None)


def _odd_numbers(config: dict[str, Any], rng: random.Random) -> None:
    config["cluster"]["ipolicy"]["vcpu-ratio"] = rng.choice([1.0, 2.5, 4.0])
    config["cluster"]["ndparams"]["cpu_speed"] = rng.choice([1.0, 1.5])
    node = _pick(rng, config["nodes"])
    node["ctime"] = rng.choice([1700000000.25, 1700000000.0, 1700000000])


_HUGE_NUMBERS = (
    9223372036854775808,
    -1180591620717411303424,
    10**30 + 7,
    1e300,
    -1e300,
    2.5e-300,
    1e22,
    0.1,
    1700000000.123456789,
)


def _huge_numbers(config: dict[str, Any], rng: random.Random) -> None:
    """Numbers past 64 bits, and floats near a double's ends, where the daemon keeps
    JSON as written (hypervisor and disk-template parameters, a disk's params)."""

    def numbers() -> Any:
        value = rng.choice(_HUGE_NUMBERS)
        shape = rng.random()
        return (
            value
            if shape < 0.6
            else [value, rng.choice(_HUGE_NUMBERS)]
            if shape < 0.8
            else {"nested": value}
        )

    cluster = config["cluster"]
    containers = [cluster["hvparams"].setdefault("kvm", {})]
    containers.append(cluster["diskparams"].setdefault("drbd", {}))
    containers.append(cluster.setdefault("default_iallocator_params", {}))
    containers.append(cluster.setdefault("hv_state_static", {}).setdefault("kvm", {}))
    group = _pick(rng, config["nodegroups"])
    containers.append(group.setdefault("diskparams", {}).setdefault("drbd", {}))
    containers.append(_pick(rng, config["nodes"]).setdefault("disk_state_static", {}))
    instance = _pick(rng, config["instances"])
    if instance is not None:
        containers.append(instance.setdefault("hvparams", {}))
    disk = _pick(rng, config["disks"])
    if disk is not None:
        containers.append(disk.setdefault("params", {}))
        for child in disk.get("children") or []:
            containers.append(child.setdefault("params", {}))
    for container in containers:
        for index in range(rng.randint(1, 3)):
            container[f"fuzz_{index}"] = numbers()
    # And the typed fields around them: 64-bit serials and sizes, picosecond times.
    node = _pick(rng, config["nodes"])
    node["ctime"] = rng.choice([1e17, 1700000000.123456789, 7e-13, 2**63])
    if disk is not None:
        disk["size"] = rng.choice([2**64 + 5, 2.5, 3.5, 10**30])


#: Each kind of object's fields the daemon can do without (checked one by one
#: against it: it refuses a configuration without any of the others).
OPTIONAL_FIELDS = {
    "cluster": ["ctime", "mtime", "tags", "hv_state_static", "disk_state_static",
                "drbd_usermode_helper", "volume_group_name"],
    "node": ["ctime", "mtime", "tags", "hv_state_static", "disk_state_static"],
    "nodegroup": ["ctime", "mtime", "tags", "members"],
    "instance": ["ctime", "mtime", "tags", "nics", "disks", "osparams_private", "beparams",
                 "hvparams", "osparams"],
    "disk": ["ctime", "mtime", "mode", "iv_name", "nodes", "children", "params"],
    "child": ["ctime", "mtime", "mode", "iv_name", "nodes", "children", "params"],
    "nic": ["ip", "name", "network"],
}  # fmt: skip


def _objects_of_each_kind(config: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    disk = _pick(rng, config["disks"])
    instance = _pick(rng, config["instances"])
    return {
        "cluster": config["cluster"],
        "node": _pick(rng, config["nodes"]),
        "nodegroup": _pick(rng, config["nodegroups"]),
        "instance": instance,
        "disk": disk,
        "child": rng.choice(disk["children"]) if disk and disk.get("children") else None,
        "nic": rng.choice(instance["nics"]) if instance and instance.get("nics") else None,
    }


def _fields_dropped_everywhere(config: dict[str, Any], rng: random.Random) -> None:
    """Optional fields left out, or set to null, in objects of every kind."""
    for kind, item in _objects_of_each_kind(config, rng).items():
        if item is None:
            continue
        for name in rng.sample(OPTIONAL_FIELDS[kind], rng.randint(1, 2)):
            if rng.random() < 0.7:
                item.pop(name, None)
            else:
                item[name] = None


def _static_states(config: dict[str, Any], rng: random.Random) -> None:
    """Nodes' and node groups' static states, empty (left out) or not (kept)."""
    for item in (_pick(rng, config["nodes"]), _pick(rng, config["nodegroups"])):
        item["hv_state_static"] = rng.choice([{}, {"kvm": {"mem_total": 4096}}])
        item["disk_state_static"] = rng.choice([{}, {"plain": {"xenvg": {"total": 10}}}])


def _nics_without_ip(config: dict[str, Any], rng: random.Random) -> None:
    for instance in rng.sample(
        list(config["instances"].values()), min(2, len(config["instances"]))
    ):
        for nic in instance.get("nics") or []:
            if rng.random() < 0.5:
                nic.pop("ip", None)
            else:
                nic["ip"] = None


def _extra_nics(config: dict[str, Any], rng: random.Random) -> None:
    """Instances with more NICs, some with another instance's IP, on its link or not."""
    instances = [config["instances"][uuid] for uuid in sorted(config["instances"])]
    ips = [nic["ip"] for i in instances for nic in i.get("nics") or [] if nic.get("ip")]
    for instance in instances:
        for _ in range(rng.randint(0, 2)):
            ip = rng.choice(ips) if ips and rng.random() < 0.7 else f"198.19.{rng.randrange(256)}.1"
            link = rng.choice([None, "br0", "br1", "br2"])
            instance.setdefault("nics", []).append(
                {
                    "ip": ip,
                    "mac": f"aa:00:01:00:{rng.randrange(256):02x}:{rng.randrange(256):02x}",
                    "nicparams": {} if link is None else {"link": link, "mode": "bridged"},
                    "uuid": f"{rng.getrandbits(128):032x}",
                }
            )


def _several_disks(config: dict[str, Any], rng: random.Random) -> None:
    """Instances with several disks: another instance's DRBD disk, mirrored elsewhere."""
    disks = sorted(config["disks"])
    for instance in config["instances"].values():
        for disk in rng.sample(disks, min(len(disks), rng.randint(0, 2))):
            if disk not in instance["disks"]:
                instance["disks"].append(disk)


def _duplicate_instance_names(config: dict[str, Any], rng: random.Random) -> None:
    instances = [config["instances"][uuid] for uuid in sorted(config["instances"])]
    if len(instances) >= 2:
        first, second = rng.sample(instances, 2)
        second["name"] = first["name"]


def _as_ganeti_writes(config: dict[str, Any], rng: random.Random) -> None:
    """What Ganeti 3.0 itself writes and the generator does not: "forthcoming" on
    instances and disks, a network, parameters set to null, memory as text."""
    for section in ("instances", "disks"):
        for item in config[section].values():
            item["forthcoming"] = False
            for child in item.get("children") or []:
                child["forthcoming"] = False
    uuid = f"{rng.getrandbits(128):032x}"
    network: dict[str, Any] = {
        "name": f"net{rng.randrange(10)}",
        "network": "192.0.2.0/28",
        "serial_no": rng.randint(1, 9),
        "uuid": uuid,
        "mac_prefix": rng.choice([None, "aa:00:01"]),
        "ctime": 1700000000.5,
        "tags": ["b", "a", "b"],
    }
    for name in rng.sample(["ctime", "tags", "mac_prefix"], rng.randint(0, 3)):
        network.pop(name)
    config.setdefault("networks", {})[uuid] = network
    instance = _pick(rng, config["instances"])
    if instance is not None:
        instance["beparams"] = {"vcpus": None, "maxmem": rng.choice(["1g", "512m", 128])}
    _pick(rng, config["nodes"])["ndparams"] = {"ssh_port": None}
    config["cluster"]["beparams"]["default"]["maxmem"] = rng.choice(["1g", "2048", 128])


MUTATIONS: dict[str, Mutation] = {
    "latin-1 names": _latin1_names,
    "null link": _null_link,
    "beparams as text": _beparams_as_text,
    "messy tags": _messy_tags,
    "wrapping serial": _wrapping_serial,
    "shared ip": _shared_ip,
    "dangling disk": _dangling_disk,
    "no master": _no_master,
    "missing optional fields": _missing_optional_fields,
    "odd numbers": _odd_numbers,
    "huge numbers": _huge_numbers,
    "fields dropped everywhere": _fields_dropped_everywhere,
    "static states": _static_states,
    "nics without ip": _nics_without_ip,
    "extra nics": _extra_nics,
    "several disks": _several_disks,
    "duplicate instance names": _duplicate_instance_names,
    "as ganeti writes": _as_ganeti_writes,
}


_DROPPING = (_missing_optional_fields, _fields_dropped_everywhere, _nics_without_ip)


def generate_config(rng: random.Random, mutations: int) -> tuple[dict[str, Any], list[str]]:
    """A generated cluster with ``mutations`` seeded mutations; and their names."""
    nodes = rng.randint(1, 6)
    candidates = rng.randint(1, nodes)
    offline = rng.randint(0, nodes - candidates)
    config = make_cluster_config(
        nodes=nodes,
        master_candidates=candidates,
        offline=offline,
        drained=rng.randint(0, nodes - candidates - offline),
        instances=rng.randint(0, 8),
        links=rng.choice([("br0",), ("br0", "br1"), ("br0", "br1", "br2")]),
        drbd=rng.random() < 0.7,
        serial=rng.randint(1, 10**6),
        node_serial=rng.randint(1, 50),
        instance_serial=rng.randint(1, 50),
        seed=rng.randrange(2**32),
    )
    applied = rng.sample(sorted(MUTATIONS), min(mutations, len(MUTATIONS)))
    # Fields are left out last: the other mutations edit fields a full object has.
    applied.sort(key=lambda name: MUTATIONS[name] in _DROPPING)
    for name in applied:
        MUTATIONS[name](config, rng)
    return config, applied


# -- requests -----------------------------------------------------------------------


@dataclass
class Probe:
    """One datagram to send to both, and the group it belongs to (for the report).

    ``beyond_latin1``: its text holds characters above U+00FF, which the
    daemon writes truncated (its "8-bit text"), so its reply may be unreadable.
    """

    group: str
    datagram: bytes
    beyond_latin1: bool = False


def sign(msg: str, *, salt: str | None = None, key: bytes = KEY, **envelope: Any) -> bytes:
    """``msg`` in a correctly signed envelope (extra envelope members as given)."""
    salt = str(int(time.time())) if salt is None else salt
    signature = HmacKey(key).sign((salt + msg).encode("utf-8", "surrogatepass"))
    return MAGIC + json.dumps({"msg": msg, "salt": salt, "hmac": signature, **envelope}).encode()


def _request_text(request_type: Any, query: Any, rsalt: Any = "r") -> str:
    return json.dumps({"protocol": 1, "type": request_type, "query": query, "rsalt": rsalt})


def _names(config: dict[str, Any], section: str) -> list[str]:
    return sorted(item["name"] for item in (config.get(section) or {}).values())


def _pointers(config: dict[str, Any], rng: random.Random) -> list[str]:
    """JSON pointers into ``config``: real paths, and odd spellings of them."""
    pointers = ["", "/", "/cluster", "/version", "/nope", "cluster", "/cluster/cluster_name"]
    for _ in range(6):
        path, value = [], config
        while isinstance(value, dict | list) and value and rng.random() < 0.8:
            if isinstance(value, dict):
                key = rng.choice(sorted(value))
                path.append(key.replace("~", "~0").replace("/", "~1"))
                value = value[key]
            else:
                index = rng.randrange(len(value))
                path.append(str(index))
                value = value[index]
        pointers.append("/" + "/".join(path))
    # Whole objects of every kind, and the containers kept as JSON: every
    # field a default fills in, or a number is read into, shows.
    pointers += ["/cluster/hvparams", "/cluster/diskparams", "/nodegroups", "/networks", "/ctime"]
    pointers += ["/cluster/default_iallocator_params", "/cluster/hv_state_static"]
    for section in ("nodes", "instances", "disks"):
        for uuid in sorted(config.get(section) or {})[:3]:
            pointers.append(f"/{section}/{uuid}")
    for uuid, disk in sorted((config.get("disks") or {}).items())[:2]:
        pointers += [f"/disks/{uuid}/children/{n}" for n in range(len(disk.get("children") or []))]
        pointers += [f"/disks/{uuid}/children/0/ctime", f"/disks/{uuid}/params"]
    for uuid in sorted(config.get("nodegroups") or {}):
        pointers += [f"/nodegroups/{uuid}/mtime", f"/nodegroups/{uuid}/tags"]
    for uuid, instance in sorted((config.get("instances") or {}).items())[:2]:
        pointers += [
            f"/instances/{uuid}/nics/{n}/ip" for n in range(len(instance.get("nics") or []))
        ]
        pointers.append(f"/instances/{uuid}/hvparams")
    pointers += [
        "/cluster/enabled_hypervisors/0abc",
        "/cluster/enabled_hypervisors/00",
        "/cluster/enabled_hypervisors/0e1",
        "/cluster/enabled_hypervisors/18446744073709551616",
        "/cluster//master_netdev",
        "/cluster~/uuid",
        "/cluster~2/x",
        "/cluster/enabled_hypervisors/-",
    ]
    return pointers


def valid_probes(config: dict[str, Any], rng: random.Random) -> Iterator[Probe]:
    """Well-formed requests of every type, about what the configuration holds."""
    nodes = [*_names(config, "nodes"), "nosuchnode", "node1"]
    instances = [*_names(config, "instances"), "nosuchinstance", "instance1"]
    ips = [
        nic.get("ip")
        for instance in (config.get("instances") or {}).values()
        for nic in instance.get("nics") or []
        if nic.get("ip")
    ] + ["203.0.113.9"]
    links = [None, "br0", "br1", "nosuchlink"]
    yield Probe("ping", sign(_request_text(0, None)))
    yield Probe("cluster master", sign(_request_text(3, None)))
    yield Probe("cluster master", sign(_request_text(3, {"3": rng.sample([0, 1, 2], 2)})))
    yield Probe("node pip list", sign(_request_text(4, None)))
    yield Probe("mc pip list", sign(_request_text(5, None)))
    yield Probe("data collectors", sign(_request_text(11, None)))
    for name in rng.sample(nodes, min(3, len(nodes))):
        for request_type, group in ((1, "node role"), (7, "node drbd"), (8, "node instances")):
            yield Probe(group, sign(_request_text(request_type, name)))
    for name in rng.sample(instances, min(3, len(instances))):
        yield Probe("instance disks", sign(_request_text(9, name)))
    for link in links:
        yield Probe("instance ips", sign(_request_text(6, link)))
    ip = rng.choice(ips)
    link = rng.choice(links)
    by_ip: dict[str, Any] = {"1": ip} if link is None else {"1": ip, "0": link}
    yield Probe("node pip by instance ip", sign(_request_text(2, by_ip)))
    yield Probe("node pip by instance ip", sign(_request_text(2, {"2": rng.sample(ips, len(ips))})))
    for pointer in _pointers(config, rng):
        yield Probe("config query", sign(_request_text(10, pointer)))


def malformed_probes(rng: random.Random) -> Iterator[Probe]:
    """Requests the daemon may read differently: odd envelopes, salts, numbers, keys."""
    now = int(time.time())
    ping = _request_text(0, None)
    yield Probe("salt form", sign(ping, salt=f" {now}"))
    yield Probe("salt form", sign(ping, salt=f"({now})"))
    yield Probe("salt form", sign(ping, salt=hex(now)))
    yield Probe("salt form", sign(ping, salt=f"000000{now}"))
    signature = HmacKey(KEY).sign((str(now) + ping).encode())
    upper = MAGIC + json.dumps({"msg": ping, "salt": str(now), "hmac": signature.upper()}).encode()
    yield Probe("hmac case", upper)
    yield Probe("extra envelope key", sign(ping, version=1))
    yield Probe("extra envelope key", sign(ping, key_selector=""))
    spaced = MAGIC + b" " + sign(ping)[len(MAGIC) :]
    yield Probe("whitespace", spaced)
    yield Probe("duplicate keys", sign('{"protocol":1,"type":0,"type":3,"query":null,"rsalt":"r"}'))
    yield Probe("wrapping integers", sign(_request_text(2**64 + 3, None)))
    yield Probe("wrapping integers", sign('{"protocol":1,"type":1e400,"query":null,"rsalt":"r"}'))
    yield Probe("list rsalt", sign(_request_text(0, None, rsalt=["a"])))
    yield Probe("long request", sign(_request_text(1, "n" * rng.randint(4100, 4500))))
    surrogate = '{"protocol":1,"type":0,"query":null,"rsalt":"\\udfff"}'
    yield Probe("surrogate rsalt", sign(surrogate), beyond_latin1=True)
    yield Probe("astral text", sign(_request_text(1, "n\U0001f600")), beyond_latin1=True)
    yield Probe("astral text", sign(_request_text(7, "n\U0001f600")), beyond_latin1=True)
    # Raw bytes above ASCII, not \u escapes: the daemon reads each byte as a
    # character (Latin-1) and checks the signature over that text in UTF-8.
    for name in ("caf\u00e9", "n\u00f6de1", "instanc\u00e9"):
        text = _request_text(1, name).replace(json.dumps(name), f'"{name}"')
        for raw, signed in (("utf-8", "utf-8"), ("latin-1", "utf-8"), ("latin-1", "latin-1")):
            yield Probe(f"raw {raw} bytes", _raw_envelope(text, raw, signed))
    # Strings written as lists of one-character strings, in a dict query.
    yield Probe("nested query", sign(_request_text(3, {"2": [["x"]]})))
    yield Probe("nested query", sign(_request_text(3, {"2": [[]]})))
    yield Probe("nested query", sign(_request_text(3, {"2": [[["x"]]]})))
    yield Probe("nested query", sign(_request_text(2, {"1": list("198.18.0.1")})))
    yield Probe("nested query", sign(_request_text(2, {"1": "198.18.0.1", "0": list("br0")})))
    yield Probe("nested query", sign(_request_text(1, list("node1"))))
    # Numbers with hundreds of digits, where the daemon reads a 64-bit Int.
    many = 10**399
    yield Probe("long numbers", sign(_request_text(many + 3, None)))
    long_protocol = {"protocol": many + 1, "type": 0, "query": None, "rsalt": "r"}
    yield Probe("long numbers", sign(json.dumps(long_protocol)))
    yield Probe("long numbers", sign(_request_text(3, {"3": [many + 1]})))
    yield Probe("long numbers", sign(_request_text(-many - 7, None)))


def _raw_envelope(text: str, raw: str, signed: str) -> bytes:
    """A request whose message is written with raw ``raw`` bytes, signed over the
    message encoded in ``signed``."""
    salt = str(int(time.time()))
    signature = HmacKey(KEY).sign(salt.encode() + text.encode(signed))
    envelope = json.dumps({"msg": text, "salt": salt, "hmac": signature}, ensure_ascii=False)
    return MAGIC + envelope.encode(raw)


# -- sending ----------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    # No normalising of numbers: 1 and 1.0 differ (a client sees int or float).
    return json.dumps(value, sort_keys=True)


async def outcomes(address: tuple[str, int], probes: list[Probe]) -> list[Outcome]:
    """Each probe's outcome at ``address``, each sent from a socket of its own."""
    results: list[Outcome] = [None] * len(probes)
    async with trio.open_nursery() as nursery:
        for index, probe in enumerate(probes):
            nursery.start_soon(_one, address, probe, results, index)
    return results


async def _one(address: tuple[str, int], probe: Probe, results: list[Outcome], index: int) -> None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(probe.datagram, address)
        with trio.move_on_after(1.0):
            datagram = await sock.recv(70000)
            try:
                reply, _ = unpack_reply(datagram, KEY)
            except ConfdProtocolError as exc:
                results[index] = ("unreadable", type(exc).__name__)
                return
            results[index] = (int(reply.status), _canonical(reply.answer), reply.serial)


def _first_difference(real: Any, ours: Any, path: str = "") -> str:
    if isinstance(real, dict) and isinstance(ours, dict):
        for key in sorted(set(real) | set(ours)):
            if key not in ours:
                return f"{path}/{key}: only the daemon has it ({str(real[key])[:80]})"
            if key not in real:
                return f"{path}/{key}: only ours has it ({str(ours[key])[:80]})"
            if real[key] != ours[key] or type(real[key]) is not type(ours[key]):
                return _first_difference(real[key], ours[key], f"{path}/{key}")
    if isinstance(real, list) and isinstance(ours, list) and len(real) == len(ours):
        for index, (left, right) in enumerate(zip(real, ours, strict=True)):
            if json.dumps(left) != json.dumps(right):
                return _first_difference(left, right, f"{path}/{index}")
    return f"{path or 'answer'}: daemon {str(real)[:160]!s} / ours {str(ours)[:160]!s}"


def describe(real: Outcome, ours: Outcome) -> str:
    """Where two outcomes differ, in a line."""
    if real is None or ours is None or real[0] == "unreadable" or ours[0] == "unreadable":
        return f"daemon {str(real)[:200]} / ours {str(ours)[:200]}"
    parts = []
    if real[0] != ours[0]:
        parts.append(f"status {real[0]} / {ours[0]}")
    if real[2] != ours[2]:
        parts.append(f"serial {real[2]} / {ours[2]}")
    if real[1] != ours[1]:
        parts.append(_first_difference(json.loads(real[1]), json.loads(ours[1])))
    return "; ".join(parts)


# -- a campaign --------------------------------------------------------------------------


@dataclass
class Report:
    total: int = 0
    identical: int = 0
    known: int = 0
    differences: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, probe: Probe, mutations: list[str], real: Outcome, ours: Outcome) -> None:
        self.total += 1
        if real == ours:
            self.identical += 1
            return
        group = probe.group
        key = f"{group} [{', '.join(mutations) or 'no mutation'}]"
        if probe.beyond_latin1 and real is not None and real[0] == "unreadable":
            self.known += 1  # EIGHT_BIT_TEXT
            return
        self.differences[group] += 1
        examples = self.examples.setdefault(group, [])
        if len(examples) < 3:
            examples.append(f"{key}: {describe(real, ours)}")

    def summary(self) -> str:
        lines = [f"{self.identical} identical of {self.total} ({self.known} known differences)"]
        for group, count in self.differences.most_common():
            lines.append(f"  {group}: {count}")
            lines += [f"    {example}" for example in self.examples[group]]
        return "\n".join(lines)


async def campaign(
    binary: str, root: Path, *, seed: int, rounds: int, requests: int, mutations: int = 2
) -> Report:
    """``rounds`` configurations, ``requests`` probes each, against both."""
    rng = random.Random(seed)
    report = Report()
    for number in range(rounds):
        config, applied = generate_config(rng, mutations)
        probes = list(valid_probes(config, rng)) + list(malformed_probes(rng))
        probes = probes[:requests] if requests < len(probes) else probes
        async with AsyncExitStack() as stack:
            daemon = await stack.enter_async_context(
                open_ganeti_confd(config, KEY, root / f"round{number}", binary=binary)
            )
            server = await stack.enter_async_context(open_confd_server(config, KEY))
            real = await outcomes(daemon.address, probes)
            ours = await outcomes(server.address, probes)
        for probe, theirs, mine in zip(probes, real, ours, strict=True):
            report.add(probe, applied, theirs, mine)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="ganeti-confd against open_confd_server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--mutations", type=int, default=2)
    args = parser.parse_args()
    binary = find_ganeti_confd()
    if binary is None:
        sys.exit("ganeti-confd not found")
    with tempfile.TemporaryDirectory() as root:
        report = trio.run(
            lambda: campaign(
                binary,
                Path(root),
                seed=args.seed,
                rounds=args.rounds,
                requests=args.requests,
                mutations=args.mutations,
            )
        )
    print(report.summary())
    sys.exit(0 if not report.differences else 1)


if __name__ == "__main__":
    main()
