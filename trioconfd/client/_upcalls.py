"""What a client callback is handed, as Ganeti's ``ConfdUpcallPayload``, and its contract."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ..protocol import ConfdArgumentTypeError, ConfdReply, ConfdRequest, UpcallType

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

#: Why an ``async def`` callback is refused (and a coroutine it returns dropped).
NOT_AWAITED = (
    "the callback is called in the client's receive task, which does not await it: "
    "make it a plain function (hand the upcall on to a task of yours, through a "
    "memory channel, to await there)"
)


def check_callback(callback: object) -> None:
    """Refuse what is not callable, and an ``async def`` function (it would never run)."""
    if not callable(callback):
        raise ConfdArgumentTypeError(f"callback must be callable, not {type(callback).__name__}")
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - an instance's async __call__
    ):
        raise ConfdArgumentTypeError(f"callback is an async function: {NOT_AWAITED}")


def refuse_a_coroutine(returned: object) -> None:
    """What a callback returned: a coroutine (a function that made one) is closed
    unrun, and raises, to be counted with the callback's errors."""
    if inspect.iscoroutine(returned):
        returned.close()  # no "never awaited" warning later
        raise ConfdArgumentTypeError(f"the callback returned a coroutine: {NOT_AWAITED}")
