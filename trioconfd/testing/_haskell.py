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
from decimal import ROUND_HALF_EVEN, Decimal
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


def _as_haskell_numbers(value: Any, path: tuple[str, ...] = ()) -> Any:
    """``value`` (at ``path`` in the configuration) with its numbers as the daemon
    writes them back, by the type it reads each field as (:func:`_number_kind`)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return _NUMBER_READERS[_number_kind(path)](value)
    if isinstance(value, list):
        return [_as_haskell_numbers(item, (*path, str(index))) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _as_haskell_numbers(item, (*path, key)) for key, item in value.items()}
    return value


def _number_kind(path: tuple[str, ...]) -> str:
    """How the daemon types the number at ``path``: checked field by field against it.

    - ``free``: inside a container the daemon keeps as JSON (hypervisor and
      disk-template parameters, a disk's ``params``): exactly as written;
    - ``timestamp``: ``ctime`` and ``mtime``, held to the picosecond;
    - ``double``: the few ratios and speeds held as Doubles;
    - ``integer``: a data collector's interval, a whole number of any size;
    - ``int``: every other number, a 64-bit Haskell ``Int``.
    """
    if _is_free_form(path):
        return "free"
    last = path[-1] if path else ""
    if last in ("ctime", "mtime"):
        return "timestamp"
    if last in _DOUBLE_FIELDS:
        return "double"
    if last == "interval" and path[:2] == ("cluster", "data_collectors"):
        return "integer"
    return "int"


_DOUBLE_FIELDS = frozenset({"vcpu-ratio", "spindle-ratio", "cpu_speed"})


_STATES = frozenset({"hv_state_static", "disk_state_static"})


def _is_free_form(path: tuple[str, ...]) -> bool:
    """Whether ``path`` lies inside a container the daemon keeps as plain JSON."""
    if path[:2] in (("cluster", "hvparams"), ("cluster", "diskparams")):
        return len(path) > 3
    if path[:2] == ("cluster", "default_iallocator_params"):
        return len(path) > 2
    # Static states: the cluster's, and each node's and node group's.
    if path[:1] == ("cluster",) and path[1:2] and path[1] in _STATES:
        return len(path) > 2
    if path[:1] in (("nodes",), ("nodegroups",)) and path[2:3] and path[2] in _STATES:
        return len(path) > 3
    if path[:1] == ("nodegroups",) and path[2:3] == ("diskparams",):
        return len(path) > 4
    if path[:2] == ("cluster", "os_hvp"):
        return len(path) > 4
    if path[:1] == ("instances",) and path[2:3] == ("hvparams",):
        return len(path) > 3
    if path[:1] == ("disks",):
        # disks/<uuid>[/children/<n>]*/params/...
        rest = path[2:]
        while rest[:1] == ("children",):
            rest = rest[2:]
        return rest[:1] == ("params",) and len(rest) > 1
    return False


def _free_number(value: int | float) -> int | float:
    # The daemon keeps the decimal as written: 1e300 is 10**300, not the
    # double nearest it (json.dumps writes a float as its repr).
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))
    return value


def _timestamp(value: int | float) -> int | float:
    try:
        picoseconds = round(float(value) * 1e12)
    except (OverflowError, ValueError):
        return value  # past a double's range: the daemon writes what no JSON reads back
    seconds = picoseconds / 10**12
    return int(seconds) if seconds.is_integer() else seconds


def _double(value: int | float) -> int | float:
    try:
        number = float(value)
    except OverflowError:
        return value
    return int(number) if number.is_integer() else number


def _integer(value: int | float) -> int | float:
    # The decimal as written, rounded half to even (2.5 is 2, 3.5 is 4).
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return value
    return int(Decimal(repr(value)).to_integral_value(rounding=ROUND_HALF_EVEN))


def _int(value: int | float) -> int | float:
    # Rounded as an integer of any size, then held in 64 bits.
    whole = _integer(value)
    return as_haskell_int(whole) if isinstance(whole, int) else whole


_NUMBER_READERS = {
    "free": _free_number,
    "timestamp": _timestamp,
    "double": _double,
    "integer": _integer,
    "int": _int,
}


def as_haskell_int(value: int | float) -> int:
    """``value`` as a Haskell ``Int`` holds it: rounded half to even (a float, as
    written), wrapped to 64 bits, signed."""
    if isinstance(value, float):
        whole = _integer(value)
        value = whole if isinstance(whole, int) else 0
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


# What the daemon fills in for a field the configuration leaves out (each
# checked against it: a field it needs and does not find, it refuses the
# whole configuration for).
_CLUSTER_DEFAULTS: dict[str, Any] = {
    "ctime": 0,
    "mtime": 0,
    "tags": [],
    "hv_state_static": {},
    "disk_state_static": {},
}
_NODE_DEFAULTS: dict[str, Any] = {"ctime": 0, "mtime": 0, "tags": []}
_GROUP_DEFAULTS: dict[str, Any] = {"ctime": 0, "mtime": 0, "tags": [], "members": []}
_DISK_DEFAULTS: dict[str, Any] = {
    "ctime": 0,
    "mtime": 0,
    "mode": "rw",
    "iv_name": "",
    "nodes": [],
    "children": [],
}
_NETWORK_DEFAULTS: dict[str, Any] = {"ctime": 0, "mtime": 0, "tags": []}
#: Fields the daemon reads and writes back never, wherever they are.
_NEVER_WRITTEN = ("forthcoming",)
_INSTANCE_DEFAULTS: dict[str, Any] = {
    "ctime": 0,
    "mtime": 0,
    "tags": [],
    "nics": [],
    "disks": [],
    "osparams_private": {},
    "beparams": {},
    "hvparams": {},
    "osparams": {},
}
#: Fields the daemon writes only when they hold something (a node's or a
#: node group's static states).
_LEFT_OUT_WHEN_EMPTY = ("hv_state_static", "disk_state_static")


def _fill(item: Any, defaults: Mapping[str, Any]) -> None:
    """Fill in ``defaults`` and drop null fields: an optional field set to null is
    unset to the daemon, which then writes it not at all."""
    if isinstance(item, dict):
        for name in [name for name, value in item.items() if value is None]:
            del item[name]
        for name in _NEVER_WRITTEN:
            item.pop(name, None)
        for name, value in defaults.items():
            item.setdefault(name, copy.deepcopy(value))


def _drop_nulls(params: Any) -> Any:
    """A parameter dict as the daemon holds it: a null parameter is an unset one."""
    if isinstance(params, dict):
        return {name: _drop_nulls(value) for name, value in params.items() if value is not None}
    return params


def _fill_disk(disk: Any) -> None:
    _fill(disk, _DISK_DEFAULTS)
    if isinstance(disk, dict):
        for child in disk.get("children") or []:
            _fill_disk(child)


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
    for name in ("ctime", "mtime"):
        if view.get(name) is None:
            view[name] = 0
    for disk in (view.get("disks") or {}).values():
        _fill_disk(disk)
    _fill(view.get("cluster"), _CLUSTER_DEFAULTS)
    for network in (view.get("networks") or {}).values():
        _fill(network, _NETWORK_DEFAULTS)
    for section, defaults in (("nodes", _NODE_DEFAULTS), ("nodegroups", _GROUP_DEFAULTS)):
        for item in (view.get(section) or {}).values():
            _fill_node_or_group(item, defaults)
    cluster_beparams = (view.get("cluster") or {}).get("beparams")
    if isinstance(cluster_beparams, dict):
        for group, params in cluster_beparams.items():
            if isinstance(params, dict):
                cluster_beparams[group] = _haskell_beparams(params)
    for instance in (view.get("instances") or {}).values():
        _fill_instance(instance)
    _tags_as_sets(view)
    return view


def _fill_node_or_group(item: Any, defaults: Mapping[str, Any]) -> None:
    _fill(item, defaults)
    if not isinstance(item, dict):
        return
    for name in _LEFT_OUT_WHEN_EMPTY:
        if item.get(name) == {}:
            del item[name]
    for name in ("ndparams", "ipolicy", "networks"):
        if name in item:
            item[name] = _drop_nulls(item[name])


def _fill_instance(instance: Any) -> None:
    _fill(instance, _INSTANCE_DEFAULTS)
    if not isinstance(instance, dict):
        return
    for nic in instance.get("nics") or []:
        _fill(nic, {})
        # A null NIC parameter is an unset one (the cluster's default applies).
        params = nic.get("nicparams") if isinstance(nic, dict) else None
        if isinstance(params, dict):
            nic["nicparams"] = {k: v for k, v in params.items() if v is not None}
    beparams = instance.get("beparams")
    if isinstance(beparams, dict):
        instance["beparams"] = _haskell_beparams(_drop_nulls(beparams))
