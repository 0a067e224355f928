"""Finding a node, an instance or a disk's DRBD minors in a configuration, as Ganeti does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._haskell import haskell_show


class NotFound(Exception):
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


def lookup(kind: str, name: str, by_uuid: Mapping[str, Any], by_name: Mapping[str, Any]) -> Any:
    """Ganeti's getItem: a UUID, an exact name, or one name that ``name + "."`` begins."""
    if name in by_uuid:
        return by_uuid[name]
    if name in by_name:
        return by_name[name]
    prefix = name + "."
    matches = [full for full in by_name if full.startswith(prefix)]
    if len(matches) == 1:
        return by_name[matches[0]]
    raise NotFound(kind, name, "has multiple matches" if matches else "not found")


def drbd_minors(disk: Mapping[str, Any], node: str) -> list[tuple[int, str]]:
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
        minors.extend(drbd_minors(child, node))
    return minors
