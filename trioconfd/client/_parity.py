"""Ganeti's own API: send a request, wait for its quorum, let it expire.

A request sent with ``send_request`` stays in the table until it expires,
:data:`EXPIRE_TIMEOUT` seconds after it was sent (later while waited on), as
in Ganeti's client; its replies go to the callback. Each such request has a
small task in the client's nursery, asleep in a cancel scope whose deadline
is the expiry. Queries and streams need none of this: they end with the task
that reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio.lowlevel

from ..protocol import (
    EXPIRE_TIMEOUT,
    Address,
    ConfdRequest,
    PeerReply,
    QuorumRule,
    pack_request,
    quorum_of,
)
from ._entry import RoutingEntry
from ._router import Router


class SentRequest(RoutingEntry):
    """A request sent with ``send_request``: no task reads its replies. They go to
    the callback; a task in ``wait_for_reply`` is woken by ``changed`` to count
    them; its expiry task sleeps in ``timer``, whose deadline is the expiry."""

    __slots__ = ("changed", "timer")

    def __init__(self, request: ConfdRequest, targets: list[Address], args: Any) -> None:
        super().__init__(request, targets, None, args)
        self.changed: trio.Event | None = None
        self.timer = trio.CancelScope(deadline=trio.current_time() + EXPIRE_TIMEOUT)

    def deliver(self, peer_reply: PeerReply) -> None:
        self.wake()

    def wake(self) -> None:
        """Wake a task waiting in ``wait_for_reply`` to look again."""
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def end(self) -> None:
        """The client is closing: its expiry task and its waiters wake."""
        self.timer.cancel()
        self.wake()


def _expiry(route: SentRequest) -> float:
    return route.timer.deadline


class SentRequests:
    """The requests sent with ``send_request``, until they expire.

    ``on_expire`` is called for each, in order of expiry (the client's upcall).
    """

    def __init__(
        self,
        router: Router,
        nursery: trio.Nursery,
        quorum: QuorumRule,
        on_expire: Callable[[SentRequest], None],
    ) -> None:
        self._router = router
        self._nursery = nursery
        self._quorum = quorum
        self._on_expire = on_expire
        # In order of expiry, but for a request whose wait moved it later
        # (its own timer task expires that one on time).
        self._pending: dict[str, SentRequest] = {}

    async def send(self, request: ConfdRequest, args: Any, targets: list[Address]) -> None:
        """Register ``request`` with an expiry timer, then send it to ``targets``."""
        self.expire_overdue()  # first, as Ganeti's SendRequest does: an expired salt is free
        datagram = pack_request(request, self._router.key)
        route = SentRequest(request, targets, args)
        self._router.add(route)
        request.mark_sent()
        self._pending[request.rsalt] = route
        self._nursery.start_soon(self._expire_when_due, route)
        try:
            await self._router.send(datagram, route.targets)
        except BaseException:
            self._forget(route)
            raise

    async def wait(self, salt: str, timeout: float) -> tuple[bool, int, int]:
        """Wait until a quorum of the peers asked has replied: ``(timed_out, sent, received)``."""
        route = self._pending.get(salt)
        if route is not None:
            # Waiting moves the expiry later, so that it does not expire while waited on.
            route.timer.deadline += timeout
            self._pending[salt] = self._pending.pop(salt)
            needed = quorum_of(self._quorum, len(route.targets))
            with trio.move_on_after(timeout):
                while len(route.answered) < needed and self._pending.get(salt) is route:
                    self._router.check_open()  # a closing client wakes its waiters
                    if route.changed is None:
                        route.changed = trio.Event()
                    await route.changed.wait()
        await trio.lowlevel.checkpoint()  # a checkpoint, even when nothing was waited for
        self._router.check_open()
        if route is None or self._pending.get(salt) is not route:
            return True, 0, 0  # unknown, or expired meanwhile
        return len(route.answered) < needed, len(route.targets), len(route.answered)

    def expire_overdue(self) -> None:
        """Forget every request past its expiry, oldest first, calling ``on_expire`` for each."""
        if self._router.closed_reason is not None:
            self._pending.clear()
            return
        now = trio.current_time()
        overdue = []
        for route in self._pending.values():
            if _expiry(route) > now:
                break
            overdue.append(route)
        for route in sorted(overdue, key=_expiry):
            self._expire(route)

    async def _expire_when_due(self, route: SentRequest) -> None:
        # Its deadline is the expiry (a wait moves it later); when the request
        # goes some other way, forgetting it cancels the scope.
        with route.timer:
            await trio.sleep_forever()
        self.expire_overdue()
        if self._pending.get(route.request.rsalt) is route:
            self._expire(route)

    def _expire(self, route: SentRequest) -> None:
        self._forget(route)
        self._router.stats.expired += 1
        self._on_expire(route)

    def _forget(self, route: SentRequest) -> None:
        if self._pending.get(route.request.rsalt) is route:
            del self._pending[route.request.rsalt]
        self._router.remove(route)
        route.end()
