"""Admission: a query sends only once each peer it asks has room for it.

Each peer has a :class:`PeerWindow`, a ``trio.CapacityLimiter`` whose total
adapts (the arithmetic is :class:`~trioconfd.protocol.Window`'s, sans-IO).
A query takes a place in the window of every peer it asks, and waits,
parked in a full window's line, until it holds a place with each
(:meth:`Admission.admit`: places are held in one order of addresses while
waiting, as locks are; a window that hands it a place moves it on to the
next full window's line, :meth:`Admission.go_on`). A place goes back
when its peer answers or the request ends; a retransmission or a hedge
takes one more, room or not.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import trio
import trio.lowlevel

from ..protocol import Address, AdmissionPolicy, Window
from ._stats import ClientStats

# How far down another window's line a window with room looks for a
# sample that may ask its peer instead (see Admission.waiter_for).
_LOOK_AHEAD = 8
# Places one request holds with one peer at most: its latest copy's and the
# one before's. A copy sent again after that goes in the place of the
# oldest, presumed lost: a request to a peer that never answers does not
# fill its window on its own, however long its deadline.
_PLACES_PER_PEER = 2


class Waiter:
    """One query waiting in a window's line until it holds a place with every peer it asks.

    It waits on a ``trio.Event``, set once it holds them all (or when it is
    to look again, or the client closes): no task is parked by hand. A
    window that hands it a place takes its other places for it, and moves it
    on to the next full window's line, while its task sleeps on.
    """

    __slots__ = (
        "again",
        "line",
        "needed",
        "places",
        "ready",
        "reserved",
        "sampling",
        "spare",
        "spares_in_vain",
        "targets",
        "woken",
    )

    def __init__(
        self, targets: list[Address], spare: list[Address], places: Places, needed: int
    ) -> None:
        self.targets = targets
        self.spare = spare
        #: the places it holds while it waits
        self.places = places
        #: fewer targets than this cannot make its quorum
        self.needed = needed
        #: set to wake it (an event is set once: each wait has its own)
        self.woken = trio.Event()
        #: the window whose line it waits in
        self.line: PeerWindow | None = None
        #: woken holding a place with every target
        self.ready = False
        #: woken to look again (the peer it waited for turned silent, say);
        #: woken with neither set: the client closed
        self.again = False
        #: the windows whose places it holds while it waits (see Window.reserved)
        self.reserved: list[Window] = []
        #: counted in Admission.samples_waiting while it waits
        self.sampling = False
        #: the spare peers whose place, handed to it, had to go back (it blocked
        #: below it): their windows hand it none again while it waits (see go_on)
        self.spares_in_vain: tuple[Address, ...] = ()

    def reserve(self) -> None:
        """Its places send nothing while it waits: they do not count towards their
        windows' use (see :meth:`Window.give_back`).

        Those taken since it last reserved are added: while it waits, its
        places are only added to (each in turn at the end of ``places.held``),
        or given back all at once with :meth:`unreserve` first.
        """
        reserved, held = self.reserved, self.places.held
        if len(held) > len(reserved):
            for entry in list(held.values())[len(reserved) :]:
                counts = entry[0].window
                counts.reserved += 1
                reserved.append(counts)

    def unreserve(self) -> None:
        for counts in self.reserved:
            counts.reserved -= 1
        self.reserved = []

    def release_live(self) -> None:
        """Give back the places it holds with peers that answer, waiting on (its
        line moves only as requests to a silent peer end)."""
        self.unreserve()
        self.places.give_back_live()
        self.reserve()

    def leave_line(self) -> None:
        """Out of the line it waits in, if any (its wait was cancelled; what it holds,
        :meth:`Admission.admit` gives back)."""
        if self.line is not None:
            del self.line.line[self]
            self.line._admission.skippers.pop(self, None)
            self.line = None

    @trio.lowlevel.enable_ki_protection  # as Event.set: a wake is never half done
    def wake(self, *, ready: bool = False, again: bool = False) -> None:
        """Out of its line: ``ready`` (it holds every place), to look ``again``, or,
        neither, because the client closed."""
        if self.line is not None:
            self.line._admission.skippers.pop(self, None)
        self.line = None
        self.ready = ready
        self.again = again
        self.woken.set()


class PeerWindow:
    """The places one peer has for requests in flight: a limiter whose size adapts.

    Like ``trio.CapacityLimiter`` on a ``ParkingLot``: queries wait in its
    :attr:`line`, first come first served, while it is full, and
    :meth:`give_back` hands a place to the next.
    """

    __slots__ = ("_admission", "answers", "line", "peer", "silent", "window")

    def __init__(self, admission: Admission, peer: Address) -> None:
        self.peer = peer
        self.window = Window(admission.policy)
        #: replies from the peer so far, counted as the receive task routes
        #: them (to tell a busy peer from a silent one)
        self.answers = 0
        #: a request to it went unanswered (sent again, or to its deadline)
        #: while it answered nothing else, and it has not answered since
        self.silent = False
        #: the queries parked until it has room, in order
        self.line: OrderedDict[Waiter, None] = OrderedDict()
        self._admission = admission

    def __repr__(self) -> str:
        return f"<PeerWindow {self.window.in_use}/{self.window.size:.1f} waiting={len(self.line)}>"

    @property
    def waiting(self) -> int:
        """Queries parked until this window has room."""
        return len(self.line)

    def take_nowait_fails(self) -> bool:
        """Whether :meth:`take_nowait` would find no place (without taking one)."""
        return bool(self.line) or self.window.room < 1

    def take_nowait(self) -> int | None:
        """A place if one is free and nobody waits for it first (its round), else None."""
        if self.line or self.window.room < 1:
            return None
        return self.window.take()

    def join(self, waiter: Waiter) -> None:
        """Put ``waiter`` at the end of the line (waiting, or about to)."""
        waiter.line = self
        self.line[waiter] = None

    def hand(self, waiter: Waiter) -> None:
        """Give ``waiter`` (just out of a line) a place here; it goes on (see
        :meth:`Admission.go_on`)."""
        self._admission.go_on(waiter, self, self.window.take())

    @trio.lowlevel.enable_ki_protection  # as CapacityLimiter.release
    def give_back(self, answered: bool) -> None:
        """Return a place; the next waiters get what room there is.

        With none waiting here, a sample waiting for another (full) window
        that may ask this peer instead gets it. (It cannot pass round for
        ever: the sample takes this peer among its targets, so this window
        cannot hand it a place again unless it is full; and a sample that
        had to give such a place back is not handed one by that peer's window
        again while it waits, see :meth:`Admission.go_on`.)
        """
        window = self.window
        window.give_back(answered)
        line = self.line
        admission = self._admission
        if not line and not admission.samples_waiting and not admission.skippers:
            return  # nobody to hand it to (the usual case, while there is room)
        while window.room >= 1:
            if line:
                waiter = line.popitem(last=False)[0]
            elif admission.samples_waiting and (found := admission.waiter_for(self)):
                waiter = found
            else:
                if admission.skippers:
                    # A query stuck behind a peer that turned silent, which
                    # could go without it: let it look again (one a place,
                    # the longest stuck first).
                    stuck = next(iter(admission.skippers))
                    del admission.skippers[stuck]
                    stuck.leave_line()
                    stuck.wake(again=True)
                return
            self.hand(waiter)

    @trio.lowlevel.enable_ki_protection  # as CapacityLimiter.release
    def turn_silent(self) -> None:
        """Its peer answers nothing: its line moves only as requests to it end.

        The queries waiting in it give back the places they hold with peers
        that answer (others may use them meanwhile), and those that can
        leave the peer out and find room now with every other peer they ask
        look again. The rest wait on, not woken: waking them all costs
        10,000 queries parked on silent peers their deadlines (up to half a
        second late at p99, where they are a few ms late without).
        """
        if self.silent:
            return
        self.silent = True
        peer, window_of = self.peer, self._admission.window_of
        for waiter in list(self.line):
            if waiter.line is not self:
                continue  # handed a place by another window meanwhile
            waiter.release_live()
            if len(waiter.targets) <= waiter.needed:
                continue  # it cannot go without this peer
            if all(
                not window_of(other).take_nowait_fails()
                for other in waiter.targets
                if other != peer
            ):
                del self.line[waiter]
                waiter.wake(again=True)
            else:
                # Looked at again when a place comes back elsewhere.
                self._admission.skippers[waiter] = None

    def close(self) -> None:
        """Wake every waiter, empty-handed."""
        line, self.line = self.line, OrderedDict()
        for waiter in line:
            waiter.wake()


#: What a request holds with one peer: the peer's window, the window's round
#: when the first place was taken, how many places, and the window's answers
#: as the last copy went (None: a copy was held back since). A tuple, made
#: anew on the rare change: one object a peer, not a list and its items.
Hold = tuple[PeerWindow, int, int, int | None]


class Places:
    """The places one request holds: per peer, a :data:`Hold`."""

    __slots__ = ("_admission", "held")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.held: dict[Address, Hold] = {}

    def hold(self, peer: Address, window: PeerWindow, taken: int) -> None:
        self.held[peer] = (window, taken, 1, window.answers)

    def again(self, peer: Address, *, lost: bool) -> bool:
        """Whether to send ``peer`` another copy now: a retransmission (``lost``) or a hedge.

        A retransmission says the copy before was lost: the window is cut,
        once per round. It goes, taking one more place, when the window has
        room, or when the peer has answered nothing since the last copy (it
        may be down, or losing datagrams: the window is marked silent), or
        the last one was held back; a peer busy answering others with its
        window full is not sent more load at once, and the schedule's next
        retransmission goes. A request holds two places with a peer at most:
        a third copy takes the place of the first. A hedge always goes.
        """
        held = self.held
        hold = held.get(peer)
        if hold is None:
            window = self._admission.window_of(peer)
            held[peer] = (window, window.window.take(), 1, window.answers)
            return True
        window, round_taken, count, answers = hold
        if lost:
            self._lose(window, round_taken)
            if answers == window.answers:
                window.turn_silent()
            elif answers is not None and window.window.room < 1:
                held[peer] = (window, round_taken, count, None)  # held back once: the next one goes
                return False
        if count < _PLACES_PER_PEER:
            window.window.take()
            count += 1
        held[peer] = (window, round_taken, count, window.answers)
        return True

    def _lose(self, window: PeerWindow, round_taken: int) -> None:
        """A request that took its place with ``window`` in ``round_taken`` was lost:
        the window is cut once a round (counted if it shrank)."""
        counts = window.window
        size = counts.size
        if counts.lost(round_taken) and counts.size < size:
            self._admission.stats.window_cuts += 1

    def answered(self, peer: Address) -> None:
        """``peer`` replied: its places go back, and its window may grow."""
        hold = self.held.pop(peer, None)
        if hold is None:
            return
        window, _, count, _ = hold
        window.give_back(True)  # answered
        if count > 1:  # retransmissions and hedges took more
            for _ in range(count - 1):
                window.give_back(answered=False)

    def give_back_live(self) -> None:
        """Give back the places held with peers that are not silent."""
        for peer in [peer for peer, held in self.held.items() if not held[0].silent]:
            window, _, count, _ = self.held.pop(peer)
            for _ in range(count):
                window.give_back(answered=False)

    def holds_above(self, peer: Address) -> bool:
        """Whether it holds a place with a peer of higher address than ``peer``."""
        return any(other > peer for other in self.held)

    def give_back_above(self, peer: Address) -> None:
        """Give back the places held with peers of higher address than ``peer``."""
        for other in [other for other in self.held if other > peer]:
            window = self.held.pop(other)[0]
            window.give_back(answered=False)

    def give_back_unasked(self, peers: Iterable[Address]) -> None:
        """Give back the places held with ``peers``, never sent the request (its first
        fan-out ended before them): nothing of theirs was lost."""
        for peer in peers:
            hold = self.held.pop(peer, None)
            if hold is not None:
                window, _, count, _ = hold
                for _ in range(count):
                    window.give_back(answered=False)

    def give_back(self, timed_out: bool) -> None:
        """The request ended: every place goes back; ``timed_out``: the silent were lost."""
        held = self.held
        if held:  # (a query answered by every peer holds none by now: no dict made)
            self.held = {}
        for window, taken, count, answers in held.values():
            if timed_out:
                self._lose(window, taken)
                if answers == window.answers:
                    window.turn_silent()
            for _ in range(count):
                window.give_back(answered=False)
        if self._admission.gone:
            self._admission.drop_free()


class Admission:
    """Every peer's window, and the queries waiting for room in them."""

    __slots__ = (
        "closed",
        "gone",
        "peers",
        "policy",
        "samples_waiting",
        "skippers",
        "stats",
        "windows",
    )

    def __init__(self, policy: AdmissionPolicy, stats: ClientStats | None = None) -> None:
        self.policy = policy
        #: where its cuts are counted (``window_cuts``): the client's counters
        self.stats = ClientStats() if stats is None else stats
        self.windows: dict[Address, PeerWindow] = {}
        #: parked queries that may ask another peer instead (a sample's spare)
        self.samples_waiting = 0
        #: set by :meth:`close`: no query waits any more
        self.closed = False
        #: peers no longer asked whose windows are still held or waited for
        self.gone: set[Address] = set()
        #: the peers asked now, once they have changed (None: all so far)
        self.peers: set[Address] | None = None
        #: queries waiting in the line of a peer that turned silent, which could
        #: go without it once another peer they ask has room, in the order they
        #: were found so (a set's order would follow their addresses in memory:
        #: a simulated run would not replay the same)
        self.skippers: dict[Waiter, None] = {}

    def window_of(self, peer: Address) -> PeerWindow:
        window = self.windows.get(peer)
        if window is None:
            window = self.windows[peer] = PeerWindow(self, peer)
            if self.peers is not None and peer not in self.peers:
                # Asked by a query that chose it before the peers changed.
                self.gone.add(peer)
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
        windows = self.windows
        places = Places(self)
        held = places.held
        for peer in targets:
            window = windows.get(peer) or self.window_of(peer)
            counts = window.window
            # take_nowait and hold, inlined: this runs once per query
            if window.line or counts.size - counts.in_use < 1:
                places.give_back(timed_out=False)
                return None
            counts.in_use += 1
            held[peer] = (window, counts.round, 1, window.answers)
        return places

    async def admit(
        self, targets: list[Address], spare: list[Address] | None = None, *, needed: int = 0
    ) -> Places | None:
        """Wait for a place with every target; None if the client closed.

        It takes what room there is, and while a target's window is full it
        waits in that window's line, holding only its places with peers of
        lower address (those above go back first). As locks taken in one
        order, no two queries can each hold what the other waits for; and a
        query handed a place keeps it (unless a sample's swap leaves it
        waiting for a window of lower address), so a freed place goes to one
        query, not down a line of them passing it on. The window that hands it a
        place takes its next places for it, and puts it in the next full
        window's line (:meth:`go_on`): its task wakes once, holding them all.

        A sample (``spare``: the peers it may ask instead) swaps a full
        target for a spare peer with room; waits in the line likely to move
        first (fewest waiting for each place its window has: a peer that
        answers nothing keeps a small window); and, parked, is handed a
        place by a spare peer's window that has room and nobody waiting.
        A target whose window is full and whose peer answers nothing
        (:attr:`PeerWindow.silent`) is not waited for while more than
        ``needed`` targets are left: the query asks the others, who can
        still reach its quorum. ``targets`` and ``spare`` are changed in
        place. Cancelled (the query's deadline), it gives back what it holds.
        """
        spare = spare or []
        targets.sort()  # the order places are held in while waiting
        places = Places(self)
        waiter: Waiter | None = None
        try:
            while True:
                blocked = self._take_all(places, targets, spare, needed)
                if blocked is None:
                    return places
                if self.closed:  # woken with a place just as the client closed
                    places.give_back(timed_out=False)
                    return None
                line = self._line_to_wait_in(blocked, targets, spare)
                places.give_back_above(line.peer)
                if waiter is None:
                    waiter = Waiter(targets, spare, places, needed)
                    self.stats.waited += 1
                # In ``line`` (and the lines go_on moves it to) until woken.
                try:
                    self._join(line, waiter)
                    await waiter.woken.wait()
                finally:
                    self._leave(waiter)  # cancelled (or interrupted): out of the line
                if waiter.ready:
                    return places
                if not waiter.again:
                    places.give_back(timed_out=False)
                    return None  # the client closed
        except BaseException:
            places.give_back(timed_out=False)
            raise

    @trio.lowlevel.enable_ki_protection  # all of it, or (interrupted before) none
    def _join(self, line: PeerWindow, waiter: Waiter) -> None:
        """Into ``line``, its places reserved, with an event to be woken by (nothing
        can wake it before it waits: this and the wait are one step)."""
        if waiter.woken.is_set():  # woken before, to look again
            waiter.woken = trio.Event()
        if waiter.spare:
            self.samples_waiting += 1
            waiter.sampling = True
        waiter.reserve()
        line.join(waiter)

    @trio.lowlevel.enable_ki_protection
    def _leave(self, waiter: Waiter) -> None:
        """Undo what :meth:`_join` did, if it did."""
        waiter.unreserve()
        waiter.leave_line()
        if waiter.sampling:
            waiter.sampling = False
            self.samples_waiting -= 1

    @trio.lowlevel.enable_ki_protection  # as CapacityLimiter.release
    def go_on(self, waiter: Waiter, window: PeerWindow, taken: int) -> None:
        """``window`` handed ``waiter`` a place (of round ``taken``): take its other
        places for it, and wake it once it holds them all.

        If another target's window is full, it waits on in that line, its task
        not woken: the loop :meth:`admit` would run, run here. (Held even if
        its wait was cancelled meanwhile: :meth:`admit` gives back all it holds.)
        Were it to give back a place to wait in another line (a sample's
        swap), it is woken to look again in its own task instead, so that
        a place handed on never hands on another here.
        """
        waited_in, waiter.line = waiter.line, None
        self.skippers.pop(waiter, None)
        places, targets, spare = waiter.places, waiter.targets, waiter.spare
        places.hold(window.peer, window, taken)
        swapped = False
        if waited_in is not None and window is not waited_in:
            # A spare peer's window, with room: it asks that peer instead.
            swapped = True
            blocked, index = targets.index(waited_in.peer), spare.index(window.peer)
            targets[blocked], spare[index] = window.peer, waited_in.peer
        if self.closed:
            waiter.unreserve()
            waiter.wake()
            return
        blocked_at = self._take_all(places, targets, spare, waiter.needed)
        if blocked_at is None:
            waiter.unreserve()  # its places now carry its sends
            waiter.wake(ready=True)
            return
        line = self._line_to_wait_in(blocked_at, targets, spare)
        # A place above that line (kept while a silent peer's line gave back
        # those below, or after a sample's swap) would break the order.
        if places.holds_above(line.peer):
            if swapped:
                # Its own task gives that place back, and the window would hand
                # it to the next sample in the same plight: samples passing
                # places round, none ever let in, for as long as their
                # deadlines (and for ever on an autojumping clock). Once a
                # spare peer each (another spare's place may still let it in).
                waiter.spares_in_vain = (*waiter.spares_in_vain, window.peer)
            waiter.unreserve()
            waiter.wake(again=True)
            return
        waiter.reserve()  # the places just taken
        line.join(waiter)

    def _take_all(
        self, places: Places, targets: list[Address], spare: list[Address], needed: int
    ) -> int | None:
        """Take a place with each target ``places`` lacks, a spare standing in for a full one;
        a full, silent target is dropped while more than ``needed`` are left.

        None when all are held, else the index of the target that has none.
        """
        window_of, held = self.window_of, places.held
        index = 0
        while index < len(targets):
            target = targets[index]
            if target in held:
                index += 1
                continue
            own = window_of(target)
            peer, window = target, own
            taken = window.take_nowait()
            if taken is None:
                for other_index, other in enumerate(spare):
                    window = window_of(other)
                    taken = window.take_nowait()
                    if taken is not None:
                        targets[index], spare[other_index] = other, target
                        peer = other
                        break
                else:
                    if own.silent and len(targets) > needed:
                        del targets[index]  # the others can still reach its quorum
                        continue
                    return index
            places.hold(peer, window, taken)
            index += 1
        return None

    def _line_to_wait_in(
        self, blocked: int, targets: list[Address], spare: list[Address]
    ) -> PeerWindow:
        """The blocked target's window, or a spare peer's whose line moves sooner."""
        window_of = self.window_of
        if not spare:  # asking every peer: nothing to choose
            return window_of(targets[blocked])

        def backlog(peer: Address) -> float:
            window = window_of(peer)
            if window.silent:
                return math.inf  # its line moves only as requests to it end
            return (window.waiting + 1) / window.window.size

        best = min(range(len(spare)), key=lambda index: backlog(spare[index]), default=None)
        if best is not None and backlog(spare[best]) < backlog(targets[blocked]):
            targets[blocked], spare[best] = spare[best], targets[blocked]
        return window_of(targets[blocked])

    def waiter_for(self, window: PeerWindow) -> Waiter | None:
        """A sample parked in another window's line that may ask ``window``'s peer instead.

        Taken out of the longest line (for each place its window has), from
        the first few in it.
        """
        peer = window.peer
        found: tuple[float, PeerWindow, Waiter] | None = None
        for other in self.windows.values():
            if other is window or not other.line:
                continue
            backlog = len(other.line) / other.window.size
            if found is not None and backlog <= found[0]:
                continue
            for count, waiter in enumerate(other.line):
                if count == _LOOK_AHEAD:
                    break
                if peer in waiter.spare and peer not in waiter.spares_in_vain:
                    found = (backlog, other, waiter)
                    break
        if found is None:
            return None
        del found[1].line[found[2]]
        return found[2]

    def forget(self, peers: Iterable[Address], *, keep: Iterable[Address] = ()) -> None:
        """Drop the windows of ``peers`` (no longer asked) once nothing holds or waits
        for them; ``keep``: the peers asked now, whose windows stay.

        A window with places held or queries in its line stays until they
        are through (then the request that gives its last place back drops
        it): a dropped window that later got a place back would hand it to
        a query of another line, and a peer asked again would have two
        windows.
        """
        self.peers = set(keep)
        self.gone.update(peers)
        self.gone.difference_update(self.peers)
        self.drop_free()

    def drop_free(self) -> None:
        """Drop the windows of peers no longer asked that nothing holds or waits for."""
        windows = self.windows
        for peer in list(self.gone):
            window = windows.get(peer)
            if window is None:
                self.gone.discard(peer)
            elif not window.line and window.window.in_use == 0:
                del windows[peer]
                self.gone.discard(peer)

    def close(self) -> None:
        """Wake every waiting query, empty-handed (the client closed); none waits after."""
        self.closed = True
        for window in self.windows.values():
            window.close()
