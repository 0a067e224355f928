"""Ganeti's own API: send a request, wait for its quorum, let it expire.

A request sent with ``send_request`` stays in the table until it expires,
:data:`EXPIRE_TIMEOUT` seconds after it was sent (later while waited on), as
in Ganeti's client; its replies go to the callback. Each such request has a
small task in the client's nursery, asleep in a cancel scope whose deadline
is the expiry. Queries and streams need none of this: they end with the task
that reads them.
"""

from __future__ import annotations

import heapq
import itertools
import math
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

    __slots__ = ("changed", "timer", "waiting_forever")

    def __init__(self, request: ConfdRequest, targets: list[Address], args: Any) -> None:
        super().__init__(request, targets, None, args)
        self.changed: trio.Event | None = None
        self.timer = trio.CancelScope(deadline=trio.current_time() + EXPIRE_TIMEOUT)
        #: waits on it with no time limit, in progress (its expiry is infinite meanwhile)
        self.waiting_forever = 0

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
        self._pending: dict[str, SentRequest] = {}
        # (expiry, order of sending, rsalt): a heap, so that the overdue come
        # first. A wait that moves an expiry pushes the request again; the
        # entry it leaves behind is skipped when it comes up.
        self._expiries: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    async def send(self, request: ConfdRequest, args: Any, targets: list[Address]) -> None:
        """Register ``request`` with an expiry timer, then send it to ``targets``."""
        self.expire_overdue()  # first, as Ganeti's SendRequest does: an expired salt is free
        datagram = pack_request(request, self._router.key)
        route = SentRequest(request, targets, args)
        self._router.add(route)
        request.mark_sent()
        self._pending[request.rsalt] = route
        self._push(route)
        self._nursery.start_soon(self._expire_when_due, route)
        try:
            await self._router.send(datagram, route.targets)
        except BaseException:
            self._forget(route)
            raise

    async def wait(self, salt: str, timeout: float) -> tuple[bool, int, int]:
        """Wait until a quorum of the peers asked has replied: ``(timed_out, sent, received)``.

        The expiry moves ``timeout`` later, as in Ganeti, so that the request
        does not expire while waited on. A wait with no limit
        (``math.inf``) moves it, once it ends, by the time it waited.
        """
        route = self._pending.get(salt)
        if route is not None:
            started, expiry = trio.current_time(), route.timer.deadline
            route.timer.deadline = expiry + timeout
            if timeout == math.inf:
                route.waiting_forever += 1
            else:
                self._push(route)
            needed = quorum_of(self._quorum, len(route.targets))
            try:
                with trio.move_on_after(timeout):
                    while len(route.answered) < needed and self._pending.get(salt) is route:
                        self._router.check_open()  # a closing client wakes its waiters
                        if route.changed is None:
                            route.changed = trio.Event()
                        await route.changed.wait()
            finally:
                if timeout == math.inf:
                    route.waiting_forever -= 1
                    if not route.waiting_forever and self._pending.get(salt) is route:
                        # Not kept for ever: later by the time it was waited on.
                        route.timer.deadline = expiry + (trio.current_time() - started)
                        self._push(route)
        await trio.lowlevel.checkpoint()  # a checkpoint, even when nothing was waited for
        self._router.check_open()
        if route is None or self._pending.get(salt) is not route:
            return True, 0, 0  # unknown, or expired meanwhile
        return len(route.answered) < needed, len(route.targets), len(route.answered)

    def expire_overdue(self) -> None:
        """Forget every request past its expiry, in order of expiry, calling
        ``on_expire`` for each (which may call this again: each expires once)."""
        if self._router.closed_reason is not None:
            self._pending.clear()
            self._expiries.clear()
            return
        now = trio.current_time()
        expiries, pending = self._expiries, self._pending
        while expiries and expiries[0][0] <= now:
            expiry, _, salt = heapq.heappop(expiries)
            route = pending.get(salt)
            if route is not None and route.timer.deadline == expiry:
                self._expire(route)

    def _push(self, route: SentRequest) -> None:
        entry = (route.timer.deadline, next(self._order), route.request.rsalt)
        heapq.heappush(self._expiries, entry)

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
