"""The quorum rule: how many replies make an answer safe to trust."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from ._errors import ConfdArgumentError

#: A quorum rule maps the number of peers contacted to the replies needed.
QuorumRule: TypeAlias = Callable[[int], int]


def needed_replies(peer_count: int) -> int:
    """The replies needed from ``peer_count`` contacted peers (Ganeti's rule).

    Fewer than three peers must all answer, fewer than five may miss one,
    otherwise a strict majority: 1→1, 2→2, 3→2, 4→3, 5→3, 6→4, 7→4, 8→5.
    (Ganeti's docstring lists 4→2 and 6→3, contradicting its own rule and
    code; the rule is what the daemon's clients implement.)
    """
    if peer_count < 0:
        raise ValueError(f"peer_count must not be negative, got {peer_count}")
    if peer_count < 3:
        return peer_count
    if peer_count < 5:
        return peer_count - 1
    return peer_count // 2 + 1


#: Ganeti's rule for the peer counts most clusters have, worked out once.
_NEEDED = tuple(needed_replies(count) for count in range(64))


def quorum_of(rule: QuorumRule, peer_count: int) -> int:
    """``rule(peer_count)``, checked where it is used.

    A rule that raises, or answers anything but a whole number from 1 to
    ``peer_count``, is a :class:`ConfdClientError` naming the rule and the count.
    """
    if rule is needed_replies and type(peer_count) is int and 0 <= peer_count < len(_NEEDED):
        return _NEEDED[peer_count]  # (once per query)
    try:
        needed = rule(peer_count)
    except Exception as exc:
        raise ConfdArgumentError(
            f"the quorum rule {_name(rule)} raised {exc!r} for {peer_count} peers"
        ) from exc
    if (
        isinstance(needed, bool)
        or not isinstance(needed, int)
        or not (1 <= needed <= peer_count or needed == peer_count == 0)
    ):
        raise ConfdArgumentError(
            f"the quorum rule {_name(rule)} gave {needed!r} for {peer_count} peers; "
            f"it must give a whole number from 1 to {peer_count}"
        )
    return needed


def _name(rule: QuorumRule) -> str:
    # Only for error messages: quorum_of runs once per query.
    return getattr(rule, "__qualname__", None) or repr(rule)
