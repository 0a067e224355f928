"""What a wider fuzzer found between the in-process server and ganeti-confd 3.0,
each behaviour pinned: as the daemon was seen to answer (the unit tests), and
side by side with the daemon itself where the interop tests reach it."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioconfd import MAGIC, ConfdRequest, HmacKey, RequestType
from trioconfd.protocol import ConfdProtocolError, unpack_request
from trioconfd.testing import ConfigAnswers, make_cluster_config, open_confd_server

from .conftest import Cluster
from .differential import Probe, outcomes, sign

KEY = b"differential key\n"  # the key tests/differential.py signs with
BIG, NEGATIVE_HUGE = 2**63, -(2**70)


def _config_query(config: dict[str, Any], pointer: str) -> Any:
    reply = ConfigAnswers(config).answer(_request(RequestType.CONFIG_QUERY, pointer))
    return reply.answer if reply.ok else ("error", reply.answer)


def _request(request_type: RequestType, query: Any) -> ConfdRequest:
    return ConfdRequest(request_type, query)


def _ids(config: dict[str, Any]) -> tuple[str, str, str, str]:
    """The first node, node group, instance and disk, by UUID."""
    node, group, instance, disk = (
        sorted(config[section])[0] for section in ("nodes", "nodegroups", "instances", "disks")
    )
    return node, group, instance, disk


# -- 1. numbers: kept as written where the daemon keeps JSON, typed elsewhere ----


def _numbers_config(value: Any) -> dict[str, Any]:
    config = make_cluster_config(nodes=2, instances=1)
    node, _, instance, disk = _ids(config)
    config["cluster"]["hvparams"]["kvm"]["fuzz"] = value
    config["cluster"]["diskparams"]["drbd"]["fuzz"] = value
    config["instances"][instance]["hvparams"]["fuzz"] = value
    config["disks"][disk]["params"]["fuzz"] = value
    config["disks"][disk]["children"][0]["params"]["fuzz"] = value
    config["cluster"]["ipolicy"]["vcpu-ratio"] = value
    if abs(value) < 1e21:  # beyond, a documented difference (docs/testing.rst)
        config["cluster"]["ctime"] = value
        config["nodes"][node]["mtime"] = value
    config["disks"][disk]["size"] = value
    config["cluster"]["data_collectors"]["drbd"]["interval"] = value
    return config


def _number_pointers(config: dict[str, Any]) -> dict[str, str]:
    node, _, instance, disk = _ids(config)
    return {
        "free": "/cluster/hvparams/kvm/fuzz",
        "free (disk template)": "/cluster/diskparams/drbd/fuzz",
        "free (instance)": f"/instances/{instance}/hvparams/fuzz",
        "free (disk)": f"/disks/{disk}/params/fuzz",
        "free (disk child)": f"/disks/{disk}/children/0/params/fuzz",
        "double": "/cluster/ipolicy/vcpu-ratio",
        "timestamp": "/cluster/ctime",
        "timestamp (node)": f"/nodes/{node}/mtime",
        "int": f"/disks/{disk}/size",
        "integer": "/cluster/data_collectors/drbd/interval",
    }


# Each value as the daemon wrote it back, by the kind of field it was in
# (read off ganeti-confd 3.0 with tests/differential.py's campaigns).
_NUMBERS = [
    (BIG, {"free": BIG, "double": BIG, "timestamp": BIG, "int": -(2**63), "integer": BIG}),
    (
        NEGATIVE_HUGE,
        {"free": NEGATIVE_HUGE, "double": NEGATIVE_HUGE, "timestamp": NEGATIVE_HUGE, "int": 0},
    ),
    (1e300, {"free": 10**300, "double": int(1e300), "int": 0, "integer": 10**300}),
    (2.5, {"free": 2.5, "double": 2.5, "timestamp": 2.5, "int": 2, "integer": 2}),
    (3.5, {"int": 4, "integer": 4}),
    (1e17, {"free": 10**17, "double": 10**17, "timestamp": 99999999999999984}),
    (7e-13, {"free": 7e-13, "double": 7e-13, "timestamp": 1e-12, "int": 0}),
    (0.1, {"free": 0.1, "timestamp": 0.1, "int": 0, "integer": 0}),
    (1700000000.123456789, {"timestamp": 1700000000.1234567, "int": 1700000000}),
]


@pytest.mark.parametrize(("value", "expected"), _NUMBERS)
def test_numbers_read_as_the_daemon_types_each_field(value: Any, expected: dict[str, Any]) -> None:
    config = _numbers_config(value)
    for where, pointer in _number_pointers(config).items():
        kind = where.split(" ")[0]
        if kind in expected and (kind != "timestamp" or abs(value) < 1e21):
            answer = _config_query(config, pointer)
            assert answer == expected[kind], (where, answer)
            assert type(answer) is type(expected[kind]), (where, answer)


# -- 2, 3. fields left out, or null -----------------------------------------------


def test_fields_left_out_take_the_daemons_defaults_or_stay_out() -> None:
    config = make_cluster_config(nodes=2, instances=1)
    _, group, instance, disk = _ids(config)
    for name in ("mtime", "tags"):
        del config["nodegroups"][group][name]
    for name in ("beparams", "hvparams", "osparams"):
        del config["instances"][instance][name]
    for name in ("children", "iv_name", "nodes", "params"):
        config["disks"][disk].pop(name)
    answers = ConfigAnswers(config)
    view = answers.view
    assert (view["nodegroups"][group]["mtime"], view["nodegroups"][group]["tags"]) == (0, [])
    assert [view["instances"][instance][n] for n in ("beparams", "hvparams", "osparams")] == [
        {},
        {},
        {},
    ]
    filled = view["disks"][disk]
    assert (filled["children"], filled["iv_name"], filled["nodes"]) == ([], "", [])
    assert "params" not in filled  # the daemon adds none


def test_a_disk_childs_missing_fields() -> None:
    config = make_cluster_config(nodes=2, instances=1)
    _, _, _, disk = _ids(config)
    child = config["disks"][disk]["children"][0]
    for name in ("ctime", "mtime", "nodes", "params"):
        child.pop(name, None)
    pointer = f"/disks/{disk}/children/0"
    assert _config_query(config, pointer + "/ctime") == 0
    shown = _config_query(config, pointer)
    assert (shown["mtime"], shown["nodes"], "params" in shown) == (0, [], False)


def test_null_optional_fields_are_left_out_and_empty_static_states_too() -> None:
    config = make_cluster_config(nodes=2, instances=1)
    node, group, instance, disk = _ids(config)
    nic = config["instances"][instance]["nics"][0]
    nic["ip"], nic["name"] = None, None
    config["disks"][disk]["name"] = None
    config["nodes"][node]["hv_state_static"] = {}
    config["nodegroups"][group]["disk_state_static"] = {}
    config["nodes"][node]["disk_state_static"] = {"plain": {"xenvg": {"total": 10}}}
    view = ConfigAnswers(config).view
    assert "ip" not in view["instances"][instance]["nics"][0]
    assert "name" not in view["instances"][instance]["nics"][0]
    assert "name" not in view["disks"][disk]
    assert "hv_state_static" not in view["nodes"][node]
    assert "disk_state_static" not in view["nodegroups"][group]
    assert view["nodes"][node]["disk_state_static"] == {"plain": {"xenvg": {"total": 10}}}
    assert _config_query(config, f"/instances/{instance}/nics/0/ip") == ("error", 2)


# -- 4, 5, 8. requests as the daemon reads them ------------------------------------------


def _datagram(text: str, *, raw: str, signed: str, key: bytes = KEY) -> bytes:
    salt = str(int(time.time()))
    signature = HmacKey(key).sign(salt.encode() + text.encode(signed))
    return MAGIC + json.dumps(
        {"msg": text, "salt": salt, "hmac": signature}, ensure_ascii=False
    ).encode(raw)


_RAW_CAFE = '{"protocol":1,"type":1,"query":"café","rsalt":"r"}'


def test_raw_bytes_are_read_as_latin_1_and_signed_as_utf_8() -> None:
    # A byte 0xE9 is "é" to the daemon, which checks the signature over "é"
    # in UTF-8: answered.
    request, _ = unpack_request(_datagram(_RAW_CAFE, raw="latin-1", signed="utf-8"), KEY)
    assert request.query == "café"
    # A raw UTF-8 "é" is two characters to it, "Ã©": that signature fails.
    for raw, signed in (("utf-8", "utf-8"), ("latin-1", "latin-1")):
        with pytest.raises(ConfdProtocolError, match="HMAC mismatch"):
            unpack_request(_datagram(_RAW_CAFE, raw=raw, signed=signed), KEY)
    double_encoded = _RAW_CAFE.encode().decode("latin-1")
    request, _ = unpack_request(_datagram(double_encoded, raw="latin-1", signed="utf-8"), KEY)
    assert request.query == "cafÃ©"


@pytest.mark.parametrize(
    ("query", "read_as"),
    [
        ({"2": [["x"]]}, {"2": ["x"]}),
        ({"2": [["x", "y"]]}, {"2": ["xy"]}),
        ({"2": [[]]}, {"2": [""]}),
        ({"1": list("198.18.0.1")}, {"1": "198.18.0.1"}),
        ({"1": "198.18.0.1", "0": list("br0")}, {"0": "br0", "1": "198.18.0.1"}),
    ],
)
def test_a_string_in_a_dict_query_may_be_a_list_of_characters(
    query: dict[str, Any], read_as: dict[str, Any]
) -> None:
    text = json.dumps({"protocol": 1, "type": 3, "query": query, "rsalt": "r"})
    request, _ = unpack_request(_datagram(text, raw="utf-8", signed="utf-8"), KEY)
    assert request.query == read_as


@pytest.mark.parametrize("query", [{"2": [["xy"]]}, {"2": [[["x"]]]}, list("node1"), {"2": "ab"}])
def test_other_nesting_is_still_dropped(query: Any) -> None:
    text = json.dumps({"protocol": 1, "type": 3, "query": query, "rsalt": "r"})
    with pytest.raises(ConfdProtocolError):
        unpack_request(_datagram(text, raw="utf-8", signed="utf-8"), KEY)


@pytest.mark.parametrize("field", ["type", "protocol"])
def test_numbers_of_hundreds_of_digits_wrap_as_the_daemons_do(field: str) -> None:
    message: dict[str, Any] = {"protocol": 1, "type": 0, "query": None, "rsalt": "r"}
    message[field] = 10**399 + 3  # 10**399 is a multiple of 2**64
    text = json.dumps(message)
    request, _ = unpack_request(_datagram(text, raw="utf-8", signed="utf-8"), KEY)
    assert (request.type if field == "type" else request.protocol) == 3
    message["query"] = {"3": [10**399 + 1]}
    request, _ = unpack_request(_datagram(json.dumps(message), raw="utf-8", signed="utf-8"), KEY)
    assert request.query == {"3": [1]}


# -- 6, 7. instance IPs and a node's instances ---------------------------------------------


def test_an_instance_ip_leads_to_the_first_instance_of_that_exact_name() -> None:
    config = make_cluster_config(nodes=3, instances=3)
    first, _, third = (config["instances"][uuid] for uuid in sorted(config["instances"]))
    third["name"] = first["name"]  # the same name, a later UUID, another node
    third["primary_node"] = next(n for n in config["nodes"] if n != first["primary_node"])
    third["nics"][0]["ip"] = "198.19.0.1"
    answers = ConfigAnswers(config)
    reply = answers.answer(_request(RequestType.NODE_PIP_BY_INSTANCE_IP, {"1": "198.19.0.1"}))
    primary = config["nodes"][first["primary_node"]]["primary_ip"]
    assert reply.answer == primary


def test_a_nodes_secondary_instances_are_listed_once_as_the_daemon_reckons_them() -> None:
    config = make_cluster_config(nodes=4, instances=2, drbd=True)
    names = {uuid: node["name"] for uuid, node in config["nodes"].items()}
    first = config["instances"][sorted(config["instances"])[0]]
    primary = first["primary_node"]
    others = [uuid for uuid in sorted(config["nodes"]) if uuid != primary]
    disk = config["disks"][first["disks"][0]]
    twin = copy.deepcopy(disk)  # a second disk to the same secondary
    twin["uuid"] = "ffffffff-0000-4000-8000-000000000001"
    config["disks"][twin["uuid"]] = twin
    stray = copy.deepcopy(disk)  # a DRBD disk between two other nodes
    stray["uuid"] = "ffffffff-0000-4000-8000-000000000002"
    stray["logical_id"][:2] = others[1:3]
    config["disks"][stray["uuid"]] = stray
    first["disks"] += [twin["uuid"], stray["uuid"]]
    answers = ConfigAnswers(config)

    def secondaries(node: str) -> list[str]:
        reply = answers.answer(_request(RequestType.NODE_INSTANCES, names[node]))
        return [instance["name"] for instance in reply.answer[1]]

    mirror = disk["logical_id"][1] if disk["logical_id"][0] == primary else disk["logical_id"][0]
    assert secondaries(mirror).count(first["name"]) == 1  # two disks, listed once
    # Neither end is the primary: the daemon takes the disk's first end.
    assert first["name"] in secondaries(others[1])
    assert first["name"] not in secondaries(others[2]) or others[2] == mirror


# -- side by side with the daemon ---------------------------------------------------------


async def _compare(cluster: Cluster, config: dict[str, Any], probes: list[Probe]) -> None:
    daemon = await cluster.start(config, KEY, f"fidelity{id(config)}")
    async with open_confd_server(config, KEY) as server:
        ours = await outcomes(server.address, probes)
    real = await outcomes(daemon.address, probes)
    differing = [
        (probe.group, theirs, mine)
        for probe, theirs, mine in zip(probes, real, ours, strict=True)
        if theirs != mine
    ]
    assert not differing, differing[:3]
    assert any(outcome is not None for outcome in real)  # it did answer


def _text(request_type: int, query: Any) -> str:
    return json.dumps({"protocol": 1, "type": request_type, "query": query, "rsalt": "r"})


@pytest.mark.interop
@pytest.mark.parametrize("value", [value for value, _ in _NUMBERS])
async def test_numbers_as_the_daemon_writes_them(ganeti_cluster: Cluster, value: Any) -> None:
    config = _numbers_config(value)
    pointers = [
        pointer
        for where, pointer in _number_pointers(config).items()
        if not where.startswith("timestamp") or abs(value) < 1e21
    ]
    await _compare(ganeti_cluster, config, [Probe("q", sign(_text(10, p))) for p in pointers])


@pytest.mark.interop
async def test_objects_with_fields_left_out_or_null_as_the_daemon_shows_them(
    ganeti_cluster: Cluster,
) -> None:
    config = make_cluster_config(nodes=3, instances=2)
    node, group, instance, disk = _ids(config)
    for name in ("mtime", "tags"):
        del config["nodegroups"][group][name]
    for name in ("beparams", "hvparams"):
        del config["instances"][instance][name]
    config["instances"][instance]["osparams"] = None
    config["instances"][instance]["nics"][0].pop("ip")
    config["disks"][disk].pop("iv_name")
    config["disks"][disk]["name"] = None
    child = config["disks"][disk]["children"][0]
    for name in ("ctime", "params", "nodes"):
        child.pop(name)
    config["nodes"][node]["hv_state_static"] = {}
    pointers = [
        f"/nodegroups/{group}",
        f"/nodegroups/{group}/mtime",
        f"/instances/{instance}",
        f"/instances/{instance}/nics/0/ip",
        f"/disks/{disk}",
        f"/disks/{disk}/children/0/ctime",
        f"/nodes/{node}",
    ]
    probes = [Probe("q", sign(_text(10, pointer))) for pointer in pointers]
    name = config["instances"][instance]["name"]
    probes += [Probe("q", sign(_text(9, name))), Probe("q", sign(_text(8, "node1")))]
    await _compare(ganeti_cluster, config, probes)


@pytest.mark.interop
async def test_requests_as_the_daemon_reads_them(ganeti_cluster: Cluster) -> None:
    texts = [
        _text(3, {"2": [["x"]]}),
        _text(3, {"2": [[]]}),
        _text(2, {"1": list("198.18.0.1")}),
        _text(3, {"2": [["xy"]]}),
        json.dumps({"protocol": 1, "type": 10**399 + 3, "query": None, "rsalt": "r"}),
    ]
    probes = [Probe("q", sign(text)) for text in texts]
    probes += [
        Probe("raw", _datagram(_RAW_CAFE, raw=raw, signed=signed))
        for raw, signed in (("latin-1", "utf-8"), ("utf-8", "utf-8"), ("latin-1", "latin-1"))
    ]
    await _compare(ganeti_cluster, make_cluster_config(), probes)


@pytest.mark.interop
async def test_instance_ips_and_node_instances_as_the_daemon_finds_them(
    ganeti_cluster: Cluster,
) -> None:
    config = make_cluster_config(nodes=4, instances=4, links=("br0", "br1"))
    instances = [config["instances"][uuid] for uuid in sorted(config["instances"])]
    instances[3]["name"] = instances[0]["name"]
    for instance in instances[:2]:  # extra NICs with another's IP
        nic = copy.deepcopy(instances[2]["nics"][0])
        nic["uuid"] = f"{len(instance['nics']):032x}"
        instance["nics"].append(nic)
    for instance in instances:  # several disks each, mirrored anywhere
        instance["disks"] = sorted(config["disks"])[:3]
    ips = [nic["ip"] for instance in instances for nic in instance["nics"]]
    probes = [Probe("q", sign(_text(2, {"1": ip}))) for ip in ips]
    probes.append(Probe("q", sign(_text(2, {"2": ips}))))
    probes += [Probe("q", sign(_text(8, node["name"]))) for node in config["nodes"].values()]
    await _compare(ganeti_cluster, config, probes)


# -- 8. a request of any shape raises only the protocol's errors ------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
_request_members = st.fixed_dictionaries(
    {},
    optional={
        "protocol": _json_values,
        "type": _json_values | st.integers(min_value=-(10**400), max_value=10**400),
        "query": _json_values,
        "rsalt": _json_values,
    },
)


@given(_request_members, st.sampled_from(["utf-8", "latin-1"]))
def test_a_signed_request_of_any_shape_is_read_or_refused_as_malformed(
    message: dict[str, Any], raw: str
) -> None:
    text = json.dumps(message, ensure_ascii=raw == "utf-8")
    try:
        datagram = _datagram(text, raw=raw, signed="utf-8")
    except UnicodeEncodeError:
        datagram = _datagram(
            text.encode("latin-1", "replace").decode("latin-1"), raw=raw, signed="utf-8"
        )
    try:
        request, _ = unpack_request(datagram, KEY)
    except ConfdProtocolError:
        return
    assert isinstance(request, ConfdRequest)
    assert -(2**63) <= request.protocol < 2**63


# -- a second review's finds: what Ganeti 3.0 itself writes, and its kin --------------

_NETWORK = "aaaaaaaa-0000-4000-8000-000000000001"


def _as_ganeti_writes_it() -> tuple[dict[str, Any], list[str]]:
    """A configuration with what a real cluster's holds and the generator does not,
    and pointers to each: "forthcoming", networks, static states, params with nulls."""
    config = make_cluster_config(nodes=2, instances=1)
    node, group, instance, disk = _ids(config)
    config["instances"][instance]["forthcoming"] = False  # on every instance Ganeti 3.0 creates
    config["disks"][disk]["forthcoming"] = False
    config["nodes"][node]["hv_state_static"] = {"kvm": {"mem_total": 1.5}}
    config["nodegroups"][group]["diskparams"] = {"drbd": {"x": 2**63}}
    config["cluster"]["default_iallocator_params"] = {"x": 0.1}
    config["cluster"]["disk_state_static"] = {"plain": {"xenvg": {"disk_total": 1e300}}}
    config["instances"][instance]["beparams"] = {"vcpus": None, "maxmem": "1g"}
    config["nodes"][node]["ndparams"] = {"ssh_port": None}
    config["cluster"]["beparams"]["default"]["maxmem"] = "1g"
    config["networks"][_NETWORK] = {
        "name": "net1", "network": "192.0.2.0/28", "mac_prefix": None, "serial_no": 1,
        "uuid": _NETWORK,
    }  # fmt: skip
    del config["ctime"]
    config["nodes"][node]["serial_no"] = 5.0
    config["instances"][instance]["serial_no"] = 3.0
    pointers = [
        f"/instances/{instance}",
        f"/instances/{instance}/forthcoming",
        f"/disks/{disk}",
        f"/nodes/{node}",
        f"/nodegroups/{group}/diskparams",
        "/cluster/default_iallocator_params",
        "/cluster/disk_state_static",
        "/cluster/beparams",
        f"/networks/{_NETWORK}",
        f"/networks/{_NETWORK}/mac_prefix",
        "/ctime",
    ]
    return config, pointers


def test_what_ganeti_writes_is_read_as_the_daemon_reads_it() -> None:
    config, _ = _as_ganeti_writes_it()
    node, group, instance, disk = _ids(config)
    view = ConfigAnswers(config).view
    assert "forthcoming" not in view["instances"][instance]
    assert "forthcoming" not in view["disks"][disk]
    assert view["nodes"][node]["hv_state_static"] == {"kvm": {"mem_total": 1.5}}
    assert view["nodegroups"][group]["diskparams"] == {"drbd": {"x": 2**63}}
    assert view["cluster"]["default_iallocator_params"] == {"x": 0.1}
    assert view["cluster"]["disk_state_static"]["plain"]["xenvg"]["disk_total"] == 10**300
    assert view["instances"][instance]["beparams"] == {"maxmem": 1024}
    assert view["nodes"][node]["ndparams"] == {}
    assert view["cluster"]["beparams"]["default"]["maxmem"] == 1024
    network = view["networks"][_NETWORK]
    assert (network["ctime"], network["tags"], "mac_prefix" in network) == (0, [], False)
    assert view["ctime"] == 0
    answers = ConfigAnswers(config)
    reply = answers.answer(_request(RequestType.INSTANCE_DISKS, "instance1.example.com"))
    assert (reply.serial, type(reply.serial)) == (3, int)


def test_an_instance_named_empty_is_found_by_that_name() -> None:
    config = make_cluster_config(nodes=2, instances=1)
    instance = next(iter(config["instances"].values()))
    instance["name"] = ""
    ip = instance["nics"][0]["ip"]
    reply = ConfigAnswers(config).answer(_request(RequestType.NODE_PIP_BY_INSTANCE_IP, {"1": ip}))
    assert reply.answer == config["nodes"][instance["primary_node"]]["primary_ip"]


def test_an_astral_character_is_two_characters_in_a_list_string() -> None:
    text = json.dumps({"protocol": 1, "type": 0, "query": None, "rsalt": ["\U0001f600"]})
    with pytest.raises(ConfdProtocolError, match="not a string"):
        unpack_request(_datagram(text, raw="utf-8", signed="utf-8"), KEY)


@pytest.mark.interop
async def test_what_ganeti_writes_as_the_daemon_shows_it(ganeti_cluster: Cluster) -> None:
    config, pointers = _as_ganeti_writes_it()
    probes = [Probe("q", sign(_text(10, pointer))) for pointer in pointers]
    probes += [Probe("q", sign(_text(9, "instance1.example.com")))]
    probes += [Probe("q", sign(_text(request_type, "node1"))) for request_type in (7, 8)]
    await _compare(ganeti_cluster, config, probes)
