"""What the client's callback receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ._constants import UpcallType
from ._messages import ConfdReply, ConfdRequest

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


#: A client callback: called once per accepted reply and once per expiry.
Callback: TypeAlias = Callable[[Upcall], object]
