"""Admission: a query sends only once each peer it asks has room for it.

Each peer has a :class:`PeerWindow`, a ``trio.CapacityLimiter`` whose total
adapts (the arithmetic is :class:`~trioconfd.protocol.Window`'s, sans-IO).
A query takes a place in the window of every peer it asks, in one global
order (by address, as locks are taken in one order, so two queries can
never each hold what the other waits for), and waits, parked, while a
window is full. A place goes back when its peer answers or the request
ends; a retransmission or a hedge takes one more, room or not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Iterable, Sequence
from itertools import pairwise
from typing import Any

import trio
import trio.lowlevel

from ..protocol import Address, AdmissionPolicy, Window


class PeerWindow:
    """The places one peer has for requests in flight: a limiter whose size adapts.

    :meth:`take` is ``CapacityLimiter.acquire``: it waits, first come first
    served, while the window is full; :meth:`give_back` hands the place to
    the next waiter if the window still has room for it.
    """

    __slots__ = ("_closed", "_lot", "answers", "window")

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.window = Window(policy)
        #: replies from the peer so far (to tell a busy peer from a silent one)
        self.answers = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def __repr__(self) -> str:
        return f"<PeerWindow {self.window.in_use}/{self.window.size:.1f} waiting={len(self._lot)}>"

    @property
    def waiting(self) -> int:
        """Tasks parked until this window has room."""
        return len(self._lot)

    def take_nowait(self) -> int | None:
        """A place if one is free and nobody waits for it first (its round), else None."""
        if self._lot or self.window.room < 1:
            return None
        return self.window.take()

    async def take(self) -> int | None:
        """Wait for a place, first come first served; its round (None: the client closed)."""
        taken = self.take_nowait()
        if taken is not None:
            return taken
        await self.wait()
        return self.taken_on_waking()

    def wait(self) -> Awaitable[None]:
        """Park until a place is handed over (or the client closes); cancelled, none is taken.

        The parking lot's own wait, so a parked query holds no frame of ours for it.
        """
        return self._lot.park()

    def taken_on_waking(self) -> int | None:
        """After :meth:`wait`: the round of the place handed over, or None if the client closed."""
        return None if self._closed else self.window.round

    def give_back(self, *, answered: bool) -> None:
        """Return a place; the next waiters get what room there is."""
        window = self.window
        window.give_back(answered=answered)
        lot = self._lot
        while lot and window.room >= 1:
            window.take()
            lot.unpark()

    def close(self) -> None:
        """Wake every waiter, empty-handed."""
        self._closed = True
        self._lot.unpark_all()


class Places:
    """The places one request holds: per peer, its window, the round of its first, how many."""

    __slots__ = ("_admission", "_held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        # peer -> [window, round of the first place, places, the window's answers then]
        self._held: dict[Address, list[Any]] = {}

    def hold(self, peer: Address, window: PeerWindow, taken: int) -> None:
        self._held[peer] = [window, taken, 1, window.answers]

    def again(self, peer: Address, *, lost: bool) -> bool:
        """Whether to send ``peer`` another copy now: a retransmission (``lost``) or a hedge.

        A retransmission says the copy before was lost: the window is cut,
        once per round. It goes, taking one more place, when the window has
        room, or when the peer has answered nothing since the last copy (it
        may be down, or losing datagrams), or the last one was held back; a
        peer busy answering others with its window full is not sent more
        load at once, and the schedule's next retransmission goes. A hedge
        always goes.
        """
        held = self._held.get(peer)
        if held is None:
            window = self._admission.window_of(peer)
        else:
            window = held[0]
            if lost:
                window.window.lost(held[1])
                answers, held[3] = held[3], window.answers
                if answers is not None and window.window.room < 1 and window.answers != answers:
                    held[3] = None  # held back once: the next one goes
                    return False
        taken = window.window.take()
        if held is None:
            self._held[peer] = [window, taken, 1, window.answers]
        else:
            held[2] += 1
            held[3] = window.answers
        return True

    def answered(self, peer: Address) -> None:
        """``peer`` replied: its places go back, and its window may grow."""
        held = self._held.pop(peer, None)
        if held is None:
            return
        window: PeerWindow = held[0]
        window.answers += 1
        window.give_back(answered=True)
        for _ in range(held[2] - 1):
            window.give_back(answered=False)

    def give_back(self, *, timed_out: bool) -> None:
        """The request ended: every place goes back; ``timed_out``: the silent were lost."""
        held, self._held = self._held, {}
        for window, taken, count, _ in held.values():
            if timed_out:
                window.window.lost(taken)
            for _ in range(count):
                window.give_back(answered=False)


class Admission:
    """Every peer's window, and the queries waiting for room in them."""

    __slots__ = ("policy", "windows")

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self.windows: dict[Address, PeerWindow] = {}

    def window_of(self, peer: Address) -> PeerWindow:
        window = self.windows.get(peer)
        if window is None:
            window = self.windows[peer] = PeerWindow(self.policy)
        return window

    def room(self, peer: Address) -> float:
        """Places free in ``peer``'s window (a hedge goes where there is most)."""
        window = self.windows.get(peer)
        return math.inf if window is None else window.window.room

    def roomiest(self, spare: Sequence[Address], *, rng: random.Random) -> Address:
        """The peer of ``spare`` with the most room (where a hedge goes); ties drawn by ``rng``."""
        room = self.room
        most = max(room(peer) for peer in spare)
        return rng.choice([peer for peer in spare if room(peer) == most])

    def admit_nowait(self, targets: Sequence[Address]) -> Places | None:
        """Places with every target at once, if each has room now; else None (none taken)."""
        window_of = self.window_of
        places = Places(self)
        for peer in targets:
            window = window_of(peer)
            taken = window.take_nowait()
            if taken is None:
                places.give_back(timed_out=False)
                return None
            places.hold(peer, window, taken)
        return places

    async def admit(self, targets: Sequence[Address]) -> Places | None:
        """Wait for a place with every target, taken in address order; None if the client closed.

        Cancelled (the query's deadline), it gives back what it took. (Written
        to hold little while it waits: 10,000 parked queries are 10,000 of
        everything here, and the garbage collector walks them all.)
        """
        if any(a > b for a, b in pairwise(targets)):
            targets = sorted(targets)  # the query's own are in order already
        places: Places | None = None
        index = 0
        try:
            while index < len(targets):
                peer = targets[index]
                index += 1
                window = self.window_of(peer)
                taken = window.take_nowait()
                if taken is None:
                    await window.wait()
                    taken = window.taken_on_waking()
                    if taken is None:
                        if places is not None:
                            places.give_back(timed_out=False)
                        return None
                if places is None:
                    places = Places(self)
                places.hold(peer, window, taken)
        except BaseException:
            if places is not None:
                places.give_back(timed_out=False)
            raise
        return places

    def forget(self, peers: Iterable[Address]) -> None:
        """Drop the windows of peers no longer asked (requests holding places keep theirs)."""
        for peer in peers:
            self.windows.pop(peer, None)

    def close(self) -> None:
        """Wake every waiting query, empty-handed (the client closed)."""
        for window in self.windows.values():
            window.close()
