"""What a client callback is handed, as Ganeti's ``ConfdUpcallPayload``, and its contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..protocol import ConfdReply, ConfdRequest, UpcallType

if TYPE_CHECKING:
    from ._client import ConfdClient


@dataclass(frozen=True, slots=True)
class Upcall:
    """The argument of a client callback, like Ganeti's ``ConfdUpcallPayload``.

    A ``REPLY`` upcall has every field; an ``EXPIRE`` upcall has no
    ``server_reply``, ``server_ip`` or ``server_port``.
    """

    type: UpcallType
    salt: str
    orig_request: ConfdRequest
    extra_args: Any
    client: ConfdClient
    server_reply: ConfdReply | None = None
    server_ip: str | None = None
    server_port: int | None = None


#: A client callback: called once per accepted reply and once per expiry. It
#: runs in the client's receive task (expiries: in the request's expiry task),
#: so it must return quickly and never block.
Callback: TypeAlias = Callable[[Upcall], object]

#: A callback that takes longer than this (seconds) is counted in
#: ``stats.slow_callbacks`` and draws a warning (at most one per log interval).
SLOW_CALLBACK = 0.005
