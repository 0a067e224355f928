"""Generated Ganeti 3.0 cluster configurations (the schema of ``config.data``)."""

from __future__ import annotations

import copy
import ipaddress
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol import ConfdArgumentError

_CTIME = 1700000000.0
_NODE_NET = ipaddress.ip_network("192.0.2.0/24")
_SECONDARY_NET = ipaddress.ip_network("198.51.100.0/24")
_INSTANCE_NET = ipaddress.ip_network("198.18.0.0/15")
_MASTER_IP = "192.0.2.254"
_FIRST_DRBD_PORT = 11000


def _cluster_section(
    name: str, master_uuid: str, serial: int, links: Sequence[str], uid: str
) -> dict[str, Any]:
    """The ``cluster`` object, with every field the 3.0 daemon insists on."""
    specs = {
        "cpu-count": 1,
        "disk-count": 1,
        "disk-size": 1024,
        "memory-size": 128,
        "nic-count": 1,
        "spindle-use": 1,
    }
    maxima = {**specs, "cpu-count": 8, "disk-count": 16, "disk-size": 1048576, "nic-count": 8}
    return {
        "beparams": {
            "default": {
                "always_failover": False,
                "auto_balance": True,
                "maxmem": 128,
                "minmem": 128,
                "spindle_use": 1,
                "vcpus": 1,
            }
        },
        "blacklisted_os": [],
        "candidate_certs": {},
        "candidate_pool_size": 10,
        "cluster_name": name,
        "compression_tools": ["gzip", "gzip-fast", "gzip-slow"],
        "ctime": _CTIME,
        "data_collectors": {
            collector: {"active": True, "interval": 5000000.0}
            for collector in ("cpu-avg-load", "diskstats", "drbd", "lv", "inst-status-xen")
        },
        "default_iallocator": "hail",
        "default_iallocator_params": {},
        "disk_state_static": {},
        "diskparams": {"drbd": {"resync-rate": 1024, "metavg": "xenvg"}, "plain": {}},
        "drbd_usermode_helper": "/bin/true",
        "enabled_disk_templates": ["drbd", "plain"],
        "enabled_hypervisors": ["kvm"],
        "enabled_user_shutdown": False,
        "file_storage_dir": "",
        "gluster_storage_dir": "",
        "hidden_os": [],
        "highest_used_port": _FIRST_DRBD_PORT,
        "hv_state_static": {},
        "hvparams": {"kvm": {"kernel_path": "", "acpi": True}},
        "install_image": "",
        "instance_communication_network": "",
        "ipolicy": {
            "disk-templates": ["drbd", "plain"],
            "minmax": [{"min": specs, "max": maxima}],
            "spindle-ratio": 32.0,
            "std": specs,
            "vcpu-ratio": 1.0,
        },
        "mac_prefix": "aa:00:00",
        "maintain_node_health": False,
        "master_ip": _MASTER_IP,
        "master_netdev": "eth0",
        "master_netmask": 32,
        "master_node": master_uuid,
        "max_running_jobs": 20,
        "max_tracked_jobs": 25,
        "modify_etc_hosts": True,
        "modify_ssh_setup": True,
        "mtime": _CTIME,
        "ndparams": {
            "cpu_speed": 1.0,
            "exclusive_storage": False,
            "oob_program": "",
            "ovs": False,
            "ovs_link": "",
            "ovs_name": "switch1",
            "spindle_count": 1,
            "ssh_port": 22,
        },
        "nicparams": {"default": {"link": links[0], "mode": "bridged", "vlan": ""}},
        "os_hvp": {},
        "osparams": {},
        "osparams_private_cluster": {},
        "prealloc_wipe_disks": False,
        "primary_ip_family": 2,
        "reserved_lvs": [],
        "rsahostkeypub": "",
        "serial_no": serial,
        "shared_file_storage_dir": "",
        "ssh_key_bits": 2048,
        "ssh_key_type": "rsa",
        "tags": [],
        "tcpudp_port_pool": [],
        "uid_pool": [],
        "use_external_mip_script": False,
        "uuid": uid,
        "volume_group_name": "xenvg",
        "zeroing_image": "",
    }


def _check_count(value: int, name: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfdArgumentError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def make_cluster_config(
    *,
    nodes: int = 3,
    master: int = 1,
    master_candidates: int | None = None,
    offline: int = 0,
    drained: int = 0,
    instances: int = 3,
    links: Sequence[str] = ("br0",),
    drbd: bool = True,
    serial: int = 1,
    node_serial: int = 1,
    instance_serial: int = 1,
    cluster_name: str = "cluster.example.com",
    domain: str = "example.com",
    seed: int = 0,
) -> dict[str, Any]:
    """A valid Ganeti 3.0 configuration (the parsed ``config.data``).

    Nodes are ``node1.<domain>`` … with primary IPs from 192.0.2.0/24; the
    first ``master_candidates`` are master candidates (default: every node),
    node number ``master`` among them is the master, and the last ``offline``
    then ``drained`` of the rest are offline or drained. Instance ``i`` (``instance1.<domain>``
    …) runs on node ``i mod nodes`` with one NIC whose IP (from 198.18.0.0/15)
    is on ``links[i mod len(links)]``, and one disk: DRBD mirrored to the next
    node when ``drbd`` and there are two nodes or more, else plain LVM.
    ``serial`` is the cluster's (and the file's) serial; nodes and instances
    carry ``node_serial`` and ``instance_serial``. The same arguments always
    give the same configuration.
    """
    _check_count(nodes, "nodes", 1, 250)
    candidates = nodes if master_candidates is None else master_candidates
    _check_count(candidates, "master_candidates", 1, nodes)
    if isinstance(master, int) and not isinstance(master, bool) and candidates < master <= nodes:
        raise ConfdArgumentError(
            f"master must be a master candidate: node{master} is not one of the first "
            f"{candidates} (master_candidates={candidates})"
        )
    _check_count(master, "master", 1, nodes)
    _check_count(offline, "offline", 0, nodes - candidates)
    _check_count(drained, "drained", 0, nodes - candidates - offline)
    _check_count(instances, "instances", 0, 100000)
    for name, value in (("serial", serial), ("node_serial", node_serial)):
        _check_count(value, name, 0, 2**53)
    _check_count(instance_serial, "instance_serial", 0, 2**53)
    if isinstance(links, str) or not links or not all(isinstance(x, str) and x for x in links):
        raise ConfdArgumentError(f"links must be a non-empty list of link names, not {links!r}")

    rng = random.Random(seed)

    def new_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    group_uuid = new_uuid()
    node_list: list[dict[str, Any]] = []
    for index in range(nodes):
        role_offline = candidates <= index < candidates + offline
        role_drained = candidates + offline <= index < candidates + offline + drained
        node_list.append(
            {
                "ctime": _CTIME,
                "drained": role_drained,
                "group": group_uuid,
                "master_candidate": index < candidates,
                "master_capable": True,
                "mtime": _CTIME,
                "name": f"node{index + 1}.{domain}",
                "ndparams": {},
                "offline": role_offline,
                "powered": True,
                "primary_ip": str(_NODE_NET[index + 1]),
                "secondary_ip": str(_SECONDARY_NET[index + 1]),
                "serial_no": node_serial,
                "tags": [],
                "uuid": new_uuid(),
                "vm_capable": True,
            }
        )

    disks: dict[str, Any] = {}
    instance_map: dict[str, Any] = {}
    minors = [0] * nodes
    port = _FIRST_DRBD_PORT
    for index in range(instances):
        primary = node_list[index % nodes]
        instance_uuid = new_uuid()
        disk_uuid = new_uuid()
        if drbd and nodes > 1:
            secondary = node_list[(index + 1) % nodes]
            pair = [primary["uuid"], secondary["uuid"]]
            port += 1
            minor_a, minor_b = minors[index % nodes], minors[(index + 1) % nodes]
            minors[index % nodes] += 1
            minors[(index + 1) % nodes] += 1
            disk = {
                "children": [
                    _plain_disk(new_uuid(), pair, f"{instance_uuid}.disk0_{part}", size)
                    for part, size in (("data", 1024), ("meta", 128))
                ],
                "dev_type": "drbd",
                "logical_id": [*pair, port, minor_a, minor_b, f"{rng.getrandbits(160):040x}"],
                "nodes": pair,
                "size": 1024,
            }
        else:
            disk = _plain_disk(disk_uuid, [primary["uuid"]], f"{instance_uuid}.disk0", 1024)
        disk.update(
            {
                "ctime": _CTIME,
                "iv_name": "disk/0",
                "mode": "rw",
                "mtime": _CTIME,
                "params": {},
                "serial_no": 1,
                "uuid": disk_uuid,
            }
        )
        disks[disk_uuid] = disk
        link = links[index % len(links)]
        instance_map[instance_uuid] = {
            "admin_state": "up",
            "admin_state_source": "admin",
            "beparams": {},
            "ctime": _CTIME,
            "disks": [disk_uuid],
            "disks_active": True,
            "hvparams": {},
            "hypervisor": "kvm",
            "mtime": _CTIME,
            "name": f"instance{index + 1}.{domain}",
            "nics": [
                {
                    "ip": str(_INSTANCE_NET[index + 1]),
                    "mac": f"aa:00:00:{index >> 16 & 0xFF:02x}:"
                    f"{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}",
                    "nicparams": {"link": link, "mode": "bridged"},
                    "uuid": new_uuid(),
                }
            ],
            "os": "debootstrap+default",
            "osparams": {},
            "osparams_private": {},
            "primary_node": primary["uuid"],
            "serial_no": instance_serial,
            "tags": [],
            "uuid": instance_uuid,
        }

    return {
        "cluster": _cluster_section(
            cluster_name, node_list[master - 1]["uuid"], serial, links, new_uuid()
        ),
        "ctime": _CTIME,
        "disks": disks,
        "filters": {},
        "instances": instance_map,
        "mtime": _CTIME,
        "networks": {},
        "nodegroups": {
            group_uuid: {
                "alloc_policy": "preferred",
                "diskparams": {},
                "ipolicy": {},
                "mtime": _CTIME,
                "name": "default",
                "ndparams": {},
                "networks": {},
                "serial_no": 1,
                "tags": [],
                "uuid": group_uuid,
            }
        },
        "nodes": {node["uuid"]: node for node in node_list},
        "serial_no": serial,
        "version": 3000000,
    }


def fail_over(
    config: Mapping[str, Any], node: int | str, *, serial: int | None = None
) -> dict[str, Any]:
    """``config`` after a master failover to ``node``: a new configuration.

    ``node`` is a node's number (``2`` for ``node2``, as
    :func:`make_cluster_config` names them) or its name. It must be an
    online master candidate, as Ganeti requires. The configuration's serial
    becomes ``serial`` (default: one more than before; never lower or the
    same, which every peer would take for stale); ``config`` is left as it
    was.
    """
    if not isinstance(config, Mapping):
        raise ConfdArgumentError(f"config must be a Ganeti configuration, not {config!r:.60}")
    failed_over = copy.deepcopy(dict(config))
    nodes = failed_over.get("nodes")
    if (
        not isinstance(nodes, dict)
        or not all(isinstance(entry, dict) for entry in nodes.values())
        or not isinstance(failed_over.get("cluster"), dict)
    ):
        raise ConfdArgumentError("config is not a Ganeti configuration (no nodes or cluster)")
    by_name = {str(entry.get("name")): node_uuid for node_uuid, entry in nodes.items()}
    if isinstance(node, int) and not isinstance(node, bool):
        name = next((n for n in by_name if n.split(".", 1)[0] == f"node{node}"), None)
    elif isinstance(node, str):
        name = node if node in by_name else None
    else:
        raise ConfdArgumentError(f"node must be a node's number or name, not {node!r}")
    if name is None:
        raise ConfdArgumentError(f"no node {node!r} in the configuration")
    entry = nodes[by_name[name]]
    if not entry.get("master_candidate") or entry.get("offline") or entry.get("drained"):
        raise ConfdArgumentError(
            f"{name} cannot become the master: it is not an online master candidate"
        )
    old = max(
        (
            value
            for value in (failed_over.get("serial_no"), failed_over["cluster"].get("serial_no"))
            if isinstance(value, int) and not isinstance(value, bool)
        ),
        default=0,
    )  # the cluster's serial is the one peers report; the file's, its copy
    new = old + 1 if serial is None else serial
    _check_count(new, "serial", 0, 2**53)
    if new <= old:
        # Daemons and clients take the highest serial as the newest: a lower
        # one would be ignored, as stale.
        raise ConfdArgumentError(f"serial must be above the configuration's, {old}, not {new}")
    failed_over["cluster"]["master_node"] = by_name[name]
    failed_over["cluster"]["serial_no"] = new
    failed_over["serial_no"] = new
    return failed_over


def _plain_disk(disk_uuid: str, nodes: list[str], volume: str, size: int) -> dict[str, Any]:
    return {
        "children": [],
        "ctime": _CTIME,
        "dev_type": "plain",
        "logical_id": ["xenvg", volume],
        "mtime": _CTIME,
        "nodes": nodes,
        "params": {},
        "serial_no": 1,
        "size": size,
        "uuid": disk_uuid,
    }
