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
    them; its expiry task sleeps in ``timer``, whose deadline is the expiry
    (infinite while a wait is on it)."""

    __slots__ = (
        "changed",
        "expiry",
        "forever_since",
        "order",
        "timer",
        "waiting",
        "waiting_forever",
    )

    def __init__(
        self, request: ConfdRequest, targets: list[Address], args: Any, order: int
    ) -> None:
        super().__init__(request, targets, None, args)
        self.changed: trio.Event | None = None
        #: when it expires once no wait is on it
        self.expiry = trio.current_time() + EXPIRE_TIMEOUT
        self.timer = trio.CancelScope(deadline=self.expiry)
        #: its place among those sent (the first of two with one expiry expires first)
        self.order = order
        #: waits on it in progress; of those, with no limit, and since when there is one
        self.waiting = 0
        self.waiting_forever = 0
        self.forever_since = 0.0

    def wait_begins(self, timeout: float, now: float) -> None:
        """A wait begins: the request does not expire while one is on it. One of
        ``timeout`` seconds moves the expiry as much later (as in Ganeti); waits
        with no limit, by the time they cover (see :meth:`wait_ends`)."""
        if timeout == math.inf:
            if not self.waiting_forever:
                self.forever_since = now
            self.waiting_forever += 1
        else:
            self.expiry += timeout
        self.waiting += 1
        self.timer.deadline = math.inf

    def wait_ends(self, timeout: float, now: float) -> bool:
        """A wait ends; True if it was the last (the timer's deadline is the expiry again)."""
        if timeout == math.inf:
            self.waiting_forever -= 1
            if not self.waiting_forever:
                self.expiry += now - self.forever_since  # the time some wait had no limit
        self.waiting -= 1
        if self.waiting:
            return False
        self.timer.deadline = self.expiry
        return True

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
        # entry it leaves behind is skipped when it comes up, or dropped when
        # such entries outnumber the requests (the heap is made anew).
        self._expiries: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    async def send(self, request: ConfdRequest, args: Any, targets: list[Address]) -> None:
        """Register ``request`` with an expiry timer, then send it to ``targets``."""
        self.expire_overdue()  # first, as Ganeti's SendRequest does: an expired salt is free
        datagram = pack_request(request, self._router.key)
        route = SentRequest(request, targets, args, next(self._order))
        self._router.add(route)
        request.mark_sent()
        self._pending[request.rsalt] = route
        self._push(route)
        self._nursery.start_soon(self._expire_when_due, route)
        try:
            # In the order chosen (past a few, the entry keeps its targets in a
            # set, whose order would follow the hash seed).
            await self._router.send(datagram, targets)
        except BaseException:
            self._forget(route)
            raise

    async def wait(self, salt: str, timeout: float) -> tuple[bool, int, int]:
        """Wait until a quorum of the peers asked has replied: ``(timed_out, sent, received)``.

        The request does not expire while waited on; the expiry moves
        ``timeout`` later, as in Ganeti. Waits with no limit (``math.inf``)
        move it by the time they covered, once the last ends.
        """
        route = self._pending.get(salt)
        seen = (True, 0, 0)  # unknown, expired, or forgotten meanwhile
        if route is not None:
            needed = quorum_of(self._quorum, len(route.targets))  # (a bad rule raises here)
            route.wait_begins(timeout, trio.current_time())
            try:
                with trio.move_on_after(timeout):
                    while len(route.answered) < needed and self._pending.get(salt) is route:
                        self._router.check_open()  # a closing client wakes its waiters
                        if route.changed is None:
                            route.changed = trio.Event()
                        await route.changed.wait()
                if self._pending.get(salt) is route:  # as the wait ends, before it may expire
                    answered = len(route.answered)
                    seen = (answered < needed, len(route.targets), answered)
            finally:
                if route.wait_ends(timeout, trio.current_time()) and (
                    self._pending.get(salt) is route
                ):
                    self._push(route)
        await trio.lowlevel.checkpoint()  # a checkpoint, even when nothing was waited for
        self._router.check_open()
        return seen

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
        """An entry for ``route`` at its expiry (none while that is infinite)."""
        deadline = route.timer.deadline
        if deadline == math.inf:
            return  # pushed once a wait with no limit ends
        expiries = self._expiries
        heapq.heappush(expiries, (deadline, route.order, route.request.rsalt))
        if len(expiries) > 2 * len(self._pending) + 64:
            # Mostly entries moved expiries left behind: one a request again
            # (in place: an expire_overdue running further up reads this list).
            expiries[:] = [
                (other.timer.deadline, other.order, salt)
                for salt, other in self._pending.items()
                if other.timer.deadline != math.inf
            ]
            heapq.heapify(expiries)

    async def _expire_when_due(self, route: SentRequest) -> None:
        # Its deadline is the expiry (a wait moves it later); when the request
        # goes some other way, forgetting it cancels the scope.
        while True:
            with route.timer:
                await trio.sleep_forever()
            if self._router.closed_reason is not None:
                self.expire_overdue()  # forgets them all
                return
            if self._pending.get(route.request.rsalt) is not route:
                return  # forgotten: its send failed
            if route.timer.deadline <= trio.current_time():
                break
            # A wait moved the expiry as the timer fired: on to the new one.
            route.timer = trio.CancelScope(deadline=route.timer.deadline)
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
