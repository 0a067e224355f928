"""The daemon's Haskell side: how it shows text, and how its types read a configuration.

ganeti-confd parses config.data into Haskell records: numbers become
Haskell Ints and Doubles, missing fields take defaults, tags become sets,
and error texts are Haskell's ``show`` of them. Answers are computed from
that view, so the in-process server computes them from the same one.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

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


def haskell_view(config: Mapping[str, Any]) -> dict[str, Any]:
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
