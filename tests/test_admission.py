"""Admission: each peer's adaptive window, queries waiting for room, and goodput under overload."""

from __future__ import annotations

import json
import math
import random
import socket
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioconfd import (
    MAGIC,
    AdmissionPolicy,
    ConfdArgumentError,
    ConfdArgumentTypeError,
    ConfdClient,
    ConfdClientClosedError,
    ConfdClientError,
    ConfdRequest,
    QueryResult,
    RequestType,
    RetryPolicy,
    open_confd_client,
)
from trioconfd.client import _client as _client_module
from trioconfd.client._admission import Admission, PeerWindow, Places, Waiter
from trioconfd.protocol import Window
from trioconfd.testing import Capacity, Faults, make_cluster_config, open_simulated_cluster

KEY = b"admission key\n"
CONFIG = make_cluster_config(nodes=3)
A, B, C = ("192.0.2.1", 1814), ("192.0.2.2", 1814), ("192.0.2.3", 1814)


def fixed(size: int) -> AdmissionPolicy:
    """A window that stays ``size`` places."""
    return AdmissionPolicy(initial=size, minimum=size, maximum=size)


def full_windows(*peers: Any) -> tuple[Admission, list[Places]]:
    """An admission whose windows have one place each, every one taken (held here)."""
    admission = Admission(fixed(1))
    held = [admission.admit_nowait([peer]) for peer in peers]
    assert None not in held
    return admission, cast("list[Places]", held)


def release(places: Places | None) -> None:
    """Give back the places ``admit_nowait`` took (it found room)."""
    assert places is not None
    places.give_back(timed_out=False)


class HandsCounted:
    """Places handed on (``PeerWindow.hand``), counted in :attr:`count`; past
    ``limit`` (if any), one more raises: a place passed round in a loop never
    lets an autojumping clock move, and the test would hang, not fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, limit: int | None = None) -> None:
        self.count = 0
        hand = PeerWindow.hand

        def counted(window: PeerWindow, waiter: Waiter) -> None:
            self.count += 1
            if limit is not None and self.count > limit:
                raise RuntimeError(f"places handed on past {limit}: passed round in a loop")
            hand(window, waiter)

        monkeypatch.setattr(PeerWindow, "hand", counted)


async def read_to_the_end(client: Any, coverage: int = 0, timeout: float = 30) -> None:
    """A stream read to its end: its places held until every peer asked answers."""
    async with client.request(RequestType.PING, coverage=coverage, timeout=timeout) as replies:
        async for _ in replies:
            pass


# -- the window, sans-IO ------------------------------------------------------


def test_a_window_grows_by_one_per_reply_until_its_first_loss_then_by_a_fraction() -> None:
    window = Window(AdmissionPolicy(initial=4, minimum=2, maximum=100))
    for _ in range(4):
        window.take()
    for _ in range(4):
        # Each reply grows it by one while half of it or more was in use:
        # 4 of 4, 3 of 5, then 2 of 6 is not.
        window.give_back(answered=True)
    assert window.size == 6
    for _ in range(6):
        window.take()
    assert window.lost(window.round)
    assert window.size == 3  # halved
    window.give_back(answered=True)
    assert window.size == pytest.approx(3 + 1 / 3)  # past the threshold: 1/size a reply


def test_a_window_grows_only_while_half_used_or_more() -> None:
    window = Window(AdmissionPolicy(initial=8, minimum=2, maximum=100))
    for _ in range(100):
        window.take()
        window.give_back(answered=True)  # one in flight at a time: 1 of 8
    assert window.size == 8
    window.take()
    window.give_back(answered=False)  # no reply: no growth, whatever the use
    assert window.size == 8


def test_a_window_is_cut_once_a_round_and_stays_within_its_bounds() -> None:
    window = Window(AdmissionPolicy(initial=64, minimum=10, maximum=70))
    rounds = [window.take() for _ in range(20)]
    assert window.lost(rounds[0])
    assert not window.lost(rounds[1])  # let in before the cut: says nothing new
    assert window.size == 32
    assert window.room == 12
    assert window.lost(window.take())
    assert window.lost(window.take())
    assert window.size == 10  # the floor
    window = Window(AdmissionPolicy(initial=64, minimum=10, maximum=70))
    for _ in range(64):
        window.take()
    for _ in range(64):
        window.give_back(answered=True)
    assert window.size == 70  # the ceiling


def test_no_admission_means_a_window_without_end() -> None:
    window = Window(AdmissionPolicy.off())
    assert window.room == math.inf
    assert not window.lost(window.take())
    assert window.size == math.inf


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial": 0}, "initial must be an integer from 1 to 1,000,000"),
        ({"minimum": 1.5}, "minimum must be an integer from 1 to 1,000,000"),
        ({"maximum": True}, "maximum must be an integer from 1 to 1,000,000"),
        ({"maximum": 10**400}, "maximum must be an integer from 1 to 1,000,000"),
        ({"initial": 8, "minimum": 16}, "the window must start within its bounds"),
        ({"initial": 2048}, "the window must start within its bounds"),
        ({"decrease": 1}, "decrease must be a number between 0 and 1"),
        ({"decrease": math.nan}, "decrease must be a number between 0 and 1"),
        ({"enabled": "yes"}, "enabled must be True or False"),
        ({"initial": -(10**5000)}, "initial must be .*, not an integer of 16,610 bits"),
        ({"decrease": 10**400}, "decrease must be .*, beyond a float.s range"),
    ],
)
def test_bad_admission_settings_are_refused(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfdArgumentError, match=message):
        AdmissionPolicy(**arguments)


@pytest.mark.parametrize(
    "arguments", [{"minimum": 1.5}, {"maximum": True}, {"decrease": "0.5"}, {"enabled": 1}]
)
def test_an_admission_setting_of_the_wrong_type_is_a_type_error(
    arguments: dict[str, Any],
) -> None:
    with pytest.raises(ConfdArgumentTypeError, match=f"{next(iter(arguments))} must be"):
        AdmissionPolicy(**arguments)


def test_a_hedge_goes_to_the_peer_with_most_room() -> None:
    admission = Admission(AdmissionPolicy(initial=8, minimum=8, maximum=8))
    assert admission.admit_nowait([A, B]) is not None
    assert admission.admit_nowait([B]) is not None
    assert admission.roomiest([A, B], rng=random.Random(0)) == A
    assert admission.roomiest([A, B, C], rng=random.Random(0)) == C  # never used: all room


def test_places_are_all_or_nothing_without_waiting() -> None:
    admission = Admission(fixed(1))
    assert admission.admit_nowait([B]) is not None
    assert admission.admit_nowait([A, B]) is None
    assert admission.windows[A].window.in_use == 0  # A's place, taken, was given back


def test_a_copy_to_a_busy_peer_with_a_full_window_is_held_back_once_then_goes() -> None:
    # A's window is full, and A answers others since the request's copy
    # went: it is busy, not silent. The retransmission due is held back
    # (no more load on it at once); the next one goes, room or not, and
    # takes a place; past two places, a copy goes in the place of the oldest.
    admission = Admission(fixed(2))
    places = admission.admit_nowait([A])
    assert places is not None
    assert admission.admit_nowait([A]) is not None
    window = admission.windows[A]
    window.answers += 1  # A answered another request meanwhile
    assert not places.again(A, lost=True)
    assert window.window.in_use == 2
    assert not window.silent
    window.answers += 1
    assert places.again(A, lost=True)  # held back once: this one goes
    assert window.window.in_use == 3
    assert places.again(A, lost=True)  # A answered nothing since: it may be down
    assert window.silent
    assert window.window.in_use == 3  # two places this request's at most
    places.give_back(timed_out=False)
    assert window.window.in_use == 1


async def test_a_parked_sample_is_handed_a_place_by_a_spare_peer_with_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(fixed(1))
    held = {peer: admission.admit_nowait([peer]) for peer in (A, B, C)}
    targets, spare = [C], [A, B]
    admitted: list[Any] = []

    async def wait() -> None:
        admitted.append(await admission.admit(targets, spare))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert admission.samples_waiting == 1
            assert sum(window.waiting for window in admission.windows.values()) == 1
            places = held[B]
            assert places is not None
            places.give_back(timed_out=False)  # B has room and nobody in its line
    assert targets == [B]
    assert sorted(spare) == [A, C]
    assert B in admitted[0].held
    assert admission.windows[B].window.in_use == 1
    assert admission.samples_waiting == 0


async def test_samples_do_not_pass_spare_peers_places_round_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Six samples need A and C (windows of one place, full), and may ask D
    # or E, silent, instead. D's and E's places come back: a sample handed
    # one asks D instead of A, then blocks at C, below D, so it gives D back
    # (places are held in one order of addresses), and D's window hands it
    # to the next sample, which does the same, and so on: the samples passed
    # the two places round, none let in, for as long as their deadlines (for
    # ever on an autojumping clock, which never moves while tasks run). A
    # sample whose swap was in vain is not handed a spare's place again.
    hands = HandsCounted(monkeypatch, limit=1000)
    a, c, d, e = ((f"127.0.1.{i}", 1814) for i in (1, 3, 4, 5))
    admission = Admission(fixed(1))
    held = {peer: admission.admit_nowait([peer]) for peer in (a, c, d, e)}
    for peer in (d, e):
        admission.windows[peer].turn_silent()
    admitted = []

    async def sample() -> None:
        admitted.append(await admission.admit([a, c], [d, e], needed=2))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(sample)
        await trio.testing.wait_all_tasks_blocked()
        for peer in (d, e):
            release(held[peer])
        await trio.testing.wait_all_tasks_blocked()
        assert hands.count <= 12  # each sample's swap in vain once at most
        nursery.cancel_scope.cancel()
    assert admission.windows[a].window.in_use == 1  # held as at the start
    assert admission.windows[c].window.in_use == 1


async def test_a_sample_refused_one_spare_peer_is_still_handed_anothers_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A sample needs A and C (full) and may ask D. D's place comes back: it
    # asks D instead of A, blocks at C, below D, and gives D back. Then A,
    # now its spare, has room: A's window hands it a place, and with D's it
    # goes at once (refused D, it is not refused every spare: it would wait
    # to its deadline with two windows empty).
    a, c, d = ((f"127.0.1.{i}", 1814) for i in (1, 3, 4))
    admission = Admission(fixed(1))
    held = {peer: admission.admit_nowait([peer]) for peer in (a, c, d)}
    admitted: list[Places | None] = []

    async def sample() -> None:
        with trio.move_on_after(10):
            admitted.append(await admission.admit([a, c], [d], needed=2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        await trio.testing.wait_all_tasks_blocked()
        for peer in (d, a):
            release(held[peer])
            await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == 0  # at once, not at its deadline
    assert admitted[0] is not None
    assert sorted(admitted[0].held) == [a, d]


async def test_samples_short_of_the_same_full_peers_are_admitted_in_turn(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each takes A, finds its other target full and gives A back: a place
    # passed round between them for ever would never let simulated time move.
    HandsCounted(monkeypatch, limit=100)
    admission = Admission(fixed(1))
    blocking = [admission.admit_nowait([peer]) for peer in (B, C)]
    done: list[float] = []

    async def wait(targets: list[Any], spare: list[Any]) -> None:
        with trio.move_on_after(5):
            places = await admission.admit(targets, spare)
            assert places is not None
            done.append(trio.current_time())
            await trio.sleep(1)
            places.give_back(timed_out=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, [A, B], [C])
        nursery.start_soon(wait, [A, C], [B])
        await trio.sleep(2)
        for places in blocking:
            assert places is not None
            places.give_back(timed_out=False)
    assert done == [2.0, 3.0]


async def test_a_waiting_query_holds_only_the_places_below_the_one_it_waits_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # As locks taken in one order: no two queries can each hold what the
    # other waits for. And a freed place wakes one query, which keeps it.
    admission = Admission(fixed(1))
    blocker = admission.admit_nowait([B])
    assert blocker is not None

    def in_use() -> list[int]:
        return [admission.window_of(peer).window.in_use for peer in (A, B, C)]

    admitted: list[Any] = []

    async def wait(targets: list[Any]) -> None:
        admitted.append(await admission.admit(targets))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, [A, C, B])
            await trio.testing.wait_all_tasks_blocked()
            assert in_use() == [1, 1, 0]  # A held; C, above B, given back
            other = admission.admit_nowait([C])
            assert other is not None
            blocker.give_back(timed_out=False)  # B to the waiting query ...
            await trio.testing.wait_all_tasks_blocked()
            assert in_use() == [1, 1, 1]  # ... which keeps it, and waits for C
            assert admission.windows[C].waiting == 1
            assert admitted == []
            other.give_back(timed_out=False)
    assert [peer in admitted[0].held for peer in (A, B, C)] == [True] * 3
    admitted[0].give_back(timed_out=False)
    assert in_use() == [0, 0, 0]
    blocker = admission.admit_nowait([C])
    assert blocker is not None
    with trio.move_on_after(1):
        await admission.admit([A, B, C])  # holds A and B while it waits for C
    assert in_use() == [0, 0, 1]  # its deadline: it gives them back


async def test_a_window_with_queries_in_its_line_is_not_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(fixed(1))
    assert admission.admit_nowait([A]) is not None
    admission.window_of(B)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admission.admit, [A])
            await trio.testing.wait_all_tasks_blocked()
            admission.forget([A, B])
            assert list(admission.windows) == [A]  # B had nobody waiting
            admission.close()  # which still reaches the query waiting in A's line


def test_a_window_whose_places_are_held_is_not_forgotten() -> None:
    # Dropped, it would get places back that it could only hand to queries
    # of other lines (which passed them round for ever), and a peer asked
    # again would have two windows.
    admission = Admission(fixed(2))
    places = admission.admit_nowait([A, B])
    assert places is not None
    admission.forget([A, B])
    assert set(admission.windows) == {A, B}
    places.give_back(timed_out=False)  # the last place back: now they go
    assert admission.windows == {}
    # A peer asked again before its window was free keeps it.
    places = admission.admit_nowait([A, B])
    assert places is not None
    admission.forget([A, B])
    admission.forget([], keep=[A])
    places.give_back(timed_out=False)
    assert set(admission.windows) == {A}


async def test_a_query_handed_a_place_as_the_client_closes_does_not_wait_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission, (held_a, _) = full_windows(A, B)  # B full too
    admitted: list[Any] = []

    async def wait() -> None:
        admitted.append(await admission.admit([A, B], []))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            held_a.give_back(timed_out=False)  # A's place to the query ...
            admission.close()  # ... and the client closes before it runs
    assert admitted == [None]
    assert admission.windows[A].window.in_use == 0  # what it was handed went back
    assert admission.windows[B].waiting == 0


async def test_a_query_handed_a_place_after_its_wait_was_cancelled_is_not_woken_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Once the cancel has taken it out of its wait, a window that hands it a
    # place (before its task has run to leave the line) must neither wake it
    # again nor keep the place.
    admission, (held,) = full_windows(A)
    admitted: list[Any] = []
    cancelled = trio.CancelScope()

    async def wait() -> None:
        with cancelled:
            admitted.append(await admission.admit([A], []))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert admission.windows[A].waiting == 1
            cancelled.cancel()  # its wait is aborted now ...
            held.give_back(timed_out=False)  # ... and A hands it the place it gave back
    assert admitted == []  # the cancel won
    assert (admission.windows[A].window.in_use, admission.windows[A].waiting) == (0, 0)


async def test_a_wait_interrupted_as_it_joins_a_line_leaves_no_one_in_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A KeyboardInterrupt can land between joining the line and parking: the
    # waiter must leave the line (else the next freed place goes to no one,
    # and the window stays full for good).
    join = PeerWindow.join

    def interrupted(self: PeerWindow, waiter: Waiter) -> None:
        join(self, waiter)
        raise KeyboardInterrupt

    admission, (held,) = full_windows(A)
    monkeypatch.setattr(PeerWindow, "join", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await admission.admit([A], [])
    monkeypatch.setattr(PeerWindow, "join", join)
    assert admission.windows[A].waiting == 0
    held.give_back(timed_out=False)
    assert admission.windows[A].window.in_use == 0
    assert admission.admit_nowait([A]) is not None


async def test_a_wait_interrupted_as_it_reserves_its_places_undoes_it(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sample holding A's place, waiting for B's (C, its spare, full too): an
    # interrupt just after it reserved A's place leaves nothing reserved nor
    # counted (a place reserved for good would keep A's window from growing).
    reserve = Waiter.reserve

    def interrupted(self: Waiter) -> None:
        reserve(self)
        raise KeyboardInterrupt

    admission, _ = full_windows(B, C)
    monkeypatch.setattr(Waiter, "reserve", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await admission.admit([A, B], [C])
    monkeypatch.setattr(Waiter, "reserve", reserve)
    assert admission.samples_waiting == 0
    assert admission.windows[A].window.reserved == 0
    assert admission.windows[A].window.in_use == 0
    assert admission.windows[B].waiting == 0


async def test_handing_on_a_place_is_protected_from_keyboard_interrupt(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As CapacityLimiter.release is: an interrupt cannot leave a place taken
    # for a waiter still in its line, nor a waiter out of its line unwoken
    # (one woken as the client closes, from code that is not protected).
    protected: list[bool] = []
    hand, set_event = PeerWindow.hand, trio.Event.set

    def handing(self: PeerWindow, waiter: Waiter) -> None:
        protected.append(trio.lowlevel.currently_ki_protected())
        hand(self, waiter)

    def setting(self: trio.Event) -> None:
        protected.append(trio.lowlevel.currently_ki_protected())
        set_event(self)

    monkeypatch.setattr(PeerWindow, "hand", handing)
    admission, (held,) = full_windows(A)
    admitted: list[Any] = []

    async def wait() -> None:
        admitted.append(await admission.admit([A], []))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        held.give_back(timed_out=False)  # handed on by give_back
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(trio.Event, "set", setting)
        admission.close()  # woken by wake, from PeerWindow.close
    assert admitted[0] is not None
    assert admitted[1] is None
    assert protected == [True, True]


async def test_queries_stuck_behind_a_silent_peer_look_again_in_the_order_they_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each place that comes back with B lets the longest stuck behind A (which
    # turned silent) go without it: first queued, first let in (and the same
    # order in every run, which a simulated run's replay needs).
    admission, (held_a, held_b) = full_windows(A, B)
    admitted: list[tuple[int, Any]] = []

    async def wait(index: int) -> None:
        admitted.append((index, await admission.admit([A, B], [], needed=1)))

    async with trio.open_nursery() as nursery:
        for index in range(8):
            nursery.start_soon(wait, index)
            await trio.testing.wait_all_tasks_blocked()
        assert admission.windows[A].waiting == 8
        admission.windows[A].turn_silent()  # B is full: all eight are stuck
        assert len(admission.skippers) == 8
        held_b.give_back(timed_out=False)
        for count in range(1, 9):
            await trio.testing.wait_all_tasks_blocked()
            assert len(admitted) == count
            admitted[-1][1].give_back(timed_out=False)  # B's place, for the next
    assert [index for index, _ in admitted] == list(range(8))
    held_a.give_back(timed_out=False)


# -- the client in simulated time --------------------------------------------


async def test_queries_past_the_window_wait_their_turn_then_go(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(4)) as client,
        trio.open_nursery() as nursery,
    ):
        results = []

        async def one() -> None:
            results.append(await client.query(RequestType.PING))

        for _ in range(10):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert (client.outstanding, client.waiting) == (4, 6)
        assert "outstanding=4 waiting=6" in repr(client)
    assert len(results) == 10
    assert all(result.ok for result in results)
    assert (client.outstanding, client.waiting) == (0, 0)
    for window in client._router.admission.windows.values():
        assert window.window.in_use == 0
    # Six waited; nothing was lost, so no window was cut.
    assert (client.stats.waited, client.stats.window_cuts) == (6, 0)


async def test_a_sample_that_asks_a_spare_peer_instead_has_not_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Peer 0's one place held: a sample of one that draws it swaps it for a
    # spare peer with room at once, parked never: it did not wait.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(1)) as client,
    ):
        held = client._router.admission.admit_nowait([cluster.peers[0]])
        assert held is not None
        for _ in range(30):
            assert (await client.query(RequestType.PING, coverage=1, timeout=2)).ok
        assert client.stats.waited == 0
        held.give_back(timed_out=False)


async def test_window_cuts_are_counted_once_a_round_per_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two silent peers of three, four queries at once. Each silent peer's
    # window is cut (8 places to 4) at the first retransmission of a request
    # let in before any cut (one cut a round: the other three are of the
    # same round), and again only if a request let in after that cut is
    # lost: none is, so two cuts in all; the answering peer's is never cut.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            admission=AdmissionPolicy(initial=8, minimum=2, maximum=8),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(1)
        cluster.crash(2)
        for _ in range(4):
            nursery.start_soon(lambda: client.query(RequestType.PING, coverage=3, timeout=1))
    assert client.stats.retransmitted > 4
    assert (client.stats.waited, client.stats.window_cuts) == (0, 2)
    windows = client._router.admission.windows
    sizes = {peer: window.window.size for peer, window in windows.items()}
    assert sizes == {cluster.peers[0]: 8, cluster.peers[1]: 4, cluster.peers[2]: 4}


async def test_a_request_unanswered_at_its_deadline_counts_a_window_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG], KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, retry=RetryPolicy.off()) as client,
    ):
        cluster.crash(0)
        result = await client.query(RequestType.PING, timeout=1)
        assert result.timed_out
        assert client.stats.window_cuts == 1  # never sent again: cut at its deadline
        result = await client.query(RequestType.PING, timeout=1)
        assert client.stats.window_cuts == 2  # let in after the cut: a new round, 32 to 16
        await client.query(RequestType.PING, timeout=1)
        window = client._router.admission.windows[cluster.peers[0]].window
        assert (window.size, window.round) == (16, 3)  # a round, but not below the minimum
        assert client.stats.as_dict()["window_cuts"] == 2


async def test_a_query_never_let_in_ends_at_its_deadline_unsent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(2)) as client,
        trio.open_nursery() as nursery,
    ):
        for index in range(3):
            cluster.crash(index)
        ended: list[tuple[float, Any]] = []

        async def one() -> None:
            result = await client.query(RequestType.PING, timeout=1.5)
            ended.append((trio.current_time(), result))

        start = trio.current_time()
        for _ in range(5):
            nursery.start_soon(one)
    assert [when - start for when, _ in ended] == [1.5] * 5  # each by its deadline
    unsent = [result for _, result in ended if result.saturated]
    assert len(unsent) == 3
    for result in unsent:
        assert (result.sent, result.received, result.timed_out) == (0, 0, True)
        assert "not sent: the client was saturated" in result.verdict
        assert "saturated" in repr(result)
    sent = [result for _, result in ended if not result.saturated]
    assert [result.sent for result in sent] == [3, 3]
    assert client.stats.saturated == 3


async def test_a_stream_never_let_in_ends_at_its_deadline_unsent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(1)) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(0)
        cluster.crash(1)
        cluster.crash(2)
        nursery.start_soon(lambda: client.query(RequestType.PING, timeout=2))
        await trio.testing.wait_all_tasks_blocked()
        sent_before = cluster.stats(0)["to_server"].received
        async with client.request(RequestType.PING, timeout=1) as replies:
            assert [reply async for reply in replies] == []
            assert replies.timed_out
            result = replies.result()
            assert replies.sent == 0
            assert client.outstanding == 1  # the unsent stream waits for nothing
        assert result.saturated
        assert result.sent == 0
        assert cluster.stats(0)["to_server"].received == sent_before  # nothing went out


async def test_max_outstanding_counts_the_waiting_queries_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(1), max_outstanding=3
        ) as client,
        trio.open_nursery() as nursery,
    ):
        for index in range(3):
            cluster.crash(index)
        for _ in range(3):
            nursery.start_soon(lambda: client.query(RequestType.PING, timeout=1))
        await trio.testing.wait_all_tasks_blocked()
        assert (client.outstanding, client.waiting) == (1, 2)
        with pytest.raises(ConfdClientError, match="3 requests are outstanding or waiting"):
            await client.query(RequestType.PING)
        assert client.stats.refused == 1


async def test_closing_the_client_ends_the_waiting_queries_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[BaseException] = []
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        trio.open_nursery() as nursery,
    ):
        for index in range(3):
            cluster.crash(index)

        async def one(client: Any) -> None:
            try:
                await client.query(RequestType.PING, timeout=100)
            except ConfdClientClosedError as exc:
                errors.append(exc)

        async with open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(1)
        ) as client:
            for _ in range(4):
                nursery.start_soon(one, client)
            await trio.testing.wait_all_tasks_blocked()
            assert client.waiting == 3
            start = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == start
    assert len(errors) == 4


async def test_a_cancelled_waiting_query_holds_nothing_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(1)) as client,
    ):
        for index in range(3):
            cluster.crash(index)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: client.query(RequestType.PING, timeout=10))
            for _ in range(5):
                nursery.start_soon(lambda: client.query(RequestType.PING, timeout=10))
            await trio.testing.wait_all_tasks_blocked()
            assert client.waiting == 5
            nursery.cancel_scope.cancel()
        assert (client.outstanding, client.waiting) == (0, 0)
        for window in client._router.admission.windows.values():
            assert (window.window.in_use, window.waiting) == (0, 0)
        for index in range(3):
            cluster.restart(index)
        assert (await client.query(RequestType.PING)).ok  # and the places are free


async def test_retransmissions_take_places_and_cut_the_window_once_a_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = AdmissionPolicy(initial=64, minimum=4, maximum=64)
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=policy) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(0)
        for _ in range(2):
            cluster.set_faults(0)
        cluster.crash(1)
        cluster.crash(2)
        for _ in range(3):
            nursery.start_soon(lambda: client.query(RequestType.PING, timeout=0.25))
        windows = client._router.admission.windows
        await trio.sleep(0.15)  # past the first retransmission (0.1 s)
        for peer in cluster.peers:
            window = windows[peer].window
            assert window.in_use == 6  # three queries, each sent twice
            assert window.size == 32  # three losses in one round: one cut
        await trio.sleep(0.2)  # the deadlines: losses of the same round cut no more
        for peer in cluster.peers:
            assert (windows[peer].window.in_use, windows[peer].window.size) == (0, 32)


async def test_a_lost_copy_is_sent_again_at_once_while_later_ones_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One request in ten is lost on its way, while the peer answers the
    # others: a request unanswered at its first retransmission (0.1 s) goes
    # again then (its window has room), not a retransmission later (0.3 s).
    lossy = Faults(drop=0.1)
    async with (
        open_simulated_cluster([CONFIG], KEY, capacity=Capacity(rate=1000)) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.set_faults(0, to_server=lossy)
        durations: list[float] = []

        async def timed() -> None:
            started = trio.current_time()
            assert (await client.query(RequestType.PING, timeout=5)).ok
            durations.append(trio.current_time() - started)

        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(timed)
                await trio.sleep(0.001)
            for _ in range(500):
                nursery.start_soon(timed)
                await trio.sleep(0.002)
    assert client.stats.retransmitted > 20  # about one in ten
    # Asked again at 0.1 s: ended by 0.25 s, but for a copy lost twice (one
    # in ten of those). Held back, they would all take 0.3 s or more.
    again_at_once = sum(0.1 < duration < 0.25 for duration in durations)
    lost_twice = sum(duration >= 0.25 for duration in durations)
    assert again_at_once > 20
    assert lost_twice <= again_at_once / 4


async def test_a_request_to_a_silent_peer_holds_two_places_there_at_most(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two peers (the quorum needs both), the second down. A query with a
    # long deadline is sent again and again; each copy took a place, so in
    # 20 s it filled the window (42 places of 32), and a second query was
    # never sent: "the client was saturated", where without admission it
    # says which peer answered and which did not.
    async with (
        open_simulated_cluster([CONFIG] * 2, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(1)
        nursery.start_soon(lambda: client.query(RequestType.PING, timeout=30))
        await trio.sleep(20)
        window = client._router.admission.windows[cluster.peers[1]]
        assert window.window.in_use == 2  # its latest copy's place and the one before's
        assert client.stats.retransmitted > 10
        result = await client.query(RequestType.PING, timeout=2)
        assert not result.saturated
        assert (result.sent, result.received) == (2, 1)
        assert result.silent == (cluster.peers[1],)
        nursery.cancel_scope.cancel()


async def test_queries_go_without_a_silent_peer_whose_window_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three peers, one down; streams with long deadlines hold its four
    # places. Queries that can reach their quorum from the other two ask
    # them alone, rather than wait for a place with the dead one (they all
    # ended "saturated" before).
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(4)) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(2)
        dead = cluster.peers[2]

        for _ in range(2):
            nursery.start_soon(read_to_the_end, client)
        await trio.sleep(1)  # each sent again: two places each
        window = client._router.admission.windows[dead]
        assert (window.window.in_use, window.silent) == (4, True)
        results: list[Any] = []

        async def one() -> None:
            results.append(await client.query(RequestType.PING, timeout=2))

        async with trio.open_nursery() as queries:
            for _ in range(20):
                queries.start_soon(one)
        assert [(result.ok, result.sent) for result in results] == [(True, 2)] * 20
        assert client.stats.skipped == 20
        assert client.stats.saturated == 0
        # Two peers of two cannot do without the third: those wait for it.
        nursery.cancel_scope.cancel()
    async with (
        open_simulated_cluster([CONFIG] * 2, KEY) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(1), retry=RetryPolicy.off()
        ) as client,
    ):
        cluster.crash(1)
        assert (await client.query(RequestType.PING, timeout=0.5)).timed_out  # now silent
        async with trio.open_nursery() as holders:
            holders.start_soon(lambda: client.query(RequestType.PING, timeout=5))
            await trio.testing.wait_all_tasks_blocked()
            result = await client.query(RequestType.PING, timeout=1)
            holders.cancel_scope.cancel()
        assert result.saturated
        assert client.stats.skipped == 0


async def test_a_query_that_leaves_a_silent_peer_out_keeps_the_quorum_it_needed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Four peers, one down, its places held: queries ask the other three,
    # and still need three replies, the quorum of the four chosen (they
    # needed two, the quorum of three, and a stale pair could outvote the
    # peer with the newest configuration). A rule that gives 0 for fewer
    # peers than asked is never asked about them.
    config = make_cluster_config(nodes=4)
    for quorum, needed in ((None, 3), (lambda sent: sent // 2, 2)):
        options: dict[str, Any] = {} if quorum is None else {"quorum": quorum}
        async with (
            open_simulated_cluster([config] * 4, KEY) as cluster,
            open_confd_client(
                KEY, cluster.peers, port=cluster.port, admission=fixed(2), **options
            ) as client,
            trio.open_nursery() as nursery,
        ):
            cluster.crash(3)

            nursery.start_soon(read_to_the_end, client)
            await trio.sleep(1)  # its two places with the dead peer, which is silent
            result = await client.query(RequestType.PING, timeout=2)
            assert result.ok
            assert (result.sent, result.needed) == (3, needed)
            assert client.stats.skipped == 1
            nursery.cancel_scope.cancel()


async def test_queries_queued_for_a_peer_before_it_turns_silent_free_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Queued for the dead peer's window before anyone knew it was dead, 200
    # queries held their places with the live peers, and later queries could
    # not get in until their deadlines. When it turns silent they give those
    # back, and those that find room elsewhere go without it.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(2)

        for _ in range(64):
            nursery.start_soon(read_to_the_end, client)
        await trio.sleep(0.01)
        early: list[Any] = []
        late: list[Any] = []

        async def one(results: list[Any], timeout: float) -> None:
            results.append(await client.query(RequestType.PING, timeout=timeout))

        async with trio.open_nursery() as queries:
            for _ in range(200):
                queries.start_soon(one, early, 5)
            await trio.sleep(1)
            windows = client._router.admission.windows
            for peer in cluster.peers[:2]:
                assert windows[peer].window.reserved == 0
            for _ in range(50):
                queries.start_soon(one, late, 2)
        assert all(result.ok for result in late)
        # Those that found no room when it turned silent look again when a
        # place comes back elsewhere (86 of them waited for it to the end).
        assert all(result.ok for result in early)
        nursery.cancel_scope.cancel()


async def test_samples_do_not_wait_in_a_silent_peers_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One peer of three down, its four places held by long streams; samples
    # of one peer under steady load. A full window's line is chosen by its
    # backlog, and the dead peer's short line looked best: samples parked
    # there until their deadlines while the live peers had room.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY, capacity=Capacity(rate=400, queue=64)) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(4), rng=random.Random(3)
        ) as client,
        trio.open_nursery() as nursery,
    ):
        cluster.crash(2)

        for _ in range(4):
            nursery.start_soon(read_to_the_end, client, -1, 60)
        await trio.sleep(0.5)  # sent again: the dead peer is silent
        results: list[Any] = []
        end = trio.current_time() + 8

        async def worker() -> None:
            while trio.current_time() < end:
                results.append(await client.query(RequestType.PING, coverage=1, timeout=1))

        async with trio.open_nursery() as workers:
            for _ in range(24):
                workers.start_soon(worker)
        assert len(results) > 3000
        assert all(result.ok for result in results)
        nursery.cancel_scope.cancel()


async def test_peers_changed_while_queries_wait_break_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Streams waiting for places keep the five targets they chose when the
    # peers shrink to one: their replies from all five have room (the
    # channel was sized for the one peer, and the receive task died of it),
    # and the removed peers' windows go once nothing holds them (a window
    # made again for a removed peer stayed for ever).
    config = make_cluster_config(nodes=5)
    async with (
        open_simulated_cluster([config] * 5, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(1)) as client,
    ):
        for index in range(5):
            cluster.set_faults(index, to_client=Faults(delay=1.0, delay_range=(0.05, 0.05)))
        results: list[Any] = []

        async def stream() -> None:
            async with client.request(RequestType.PING, timeout=2) as replies:
                async for _ in replies:
                    await trio.sleep(0.1)
                results.append(replies.result())

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(stream)
            await trio.sleep(0.001)
            assert client.waiting == 4
            client.update_peer_list(cluster.peers[:1])
        assert [(result.ok, result.sent) for result in results] == [(True, 5)] * 5
        assert list(client._router.admission.windows) == [cluster.peers[0]]
        assert (await client.query(RequestType.PING)).ok  # the client still works


async def test_places_held_by_waiting_queries_do_not_grow_a_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With the highest peer down, queries wait for its window holding their
    # places with the others: those were counted as in use, and each reply
    # grew the live peers' windows up to the maximum.
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.crash(2)

        async def one() -> None:
            await client.query(RequestType.PING, coverage=-1, timeout=5)

        async with trio.open_nursery() as nursery:
            for _ in range(2000):
                nursery.start_soon(one)
        windows = client._router.admission.windows
        for peer in cluster.peers[:2]:
            # Slow start from 64 to as many as were really sent at once.
            assert windows[peer].window.size < 300
            assert (windows[peer].window.in_use, windows[peer].window.reserved) == (0, 0)


def _parked_waiters(admission: Admission) -> set[Waiter]:
    return {waiter for window in admission.windows.values() for waiter in window.line}


def _check_reserved(admission: Admission) -> int:
    """Each window's reserved places are those parked waiters hold in it; how many wait."""
    parked = _parked_waiters(admission)
    for window in admission.windows.values():
        holding = sum(window.peer in waiter.places.held for waiter in parked)
        assert window.window.reserved == holding, (window, holding)
    for waiter in parked:
        held = [entry[0].window for entry in waiter.places.held.values()]
        assert waiter.reserved == held
    return len(parked)


async def test_places_reserved_while_queries_go_from_line_to_line_are_counted_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Five busy peers, windows of 4: queries asking all of them wait in one
    # line after another, handed a place by each window in turn, parked all
    # the while. The places they hold meanwhile are counted as reserved in
    # their windows, and only those, at every moment; none once they are sent.
    config = make_cluster_config(nodes=5)
    async with (
        open_simulated_cluster(
            [config] * 5, KEY, capacity=Capacity(rate=2000, queue=1000)
        ) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(4)) as client,
    ):
        admission = client._router.admission
        results: list[QueryResult] = []
        most_parked = 0

        async def one(coverage: int) -> None:
            results.append(await client.query(RequestType.PING, coverage=coverage, timeout=30))

        async with trio.open_nursery() as nursery:
            for index in range(300):
                nursery.start_soon(one, -1 if index % 3 else 3)
            while len(results) < 300:
                await trio.sleep(0.0005)
                most_parked = max(most_parked, _check_reserved(admission))
        assert all(result.ok for result in results)
        assert most_parked > 100
        assert _check_reserved(admission) == 0
        for window in admission.windows.values():
            assert (window.window.in_use, window.window.reserved) == (0, 0)


async def test_a_query_kept_waiting_by_a_silent_peer_never_holds_a_place_above_its_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Windows of one place. W asks A, B and C (no spare): it takes A and waits
    # in B's line; B turns silent, so W gives A back and waits on. Q, asking A
    # and B, takes A and waits in B's line. When B's place comes back, W gets
    # it and finds A full: it must not wait in A's line holding B, which Q
    # waits for (each would hold what the other waits for, until their
    # deadlines); it looks again, holding nothing above A.
    admission = Admission(fixed(1))
    in_b, in_c = admission.admit_nowait([B]), admission.admit_nowait([C])
    assert in_b is not None
    assert in_c is not None
    let_in: dict[str, float] = {}

    async def waiting(name: str, targets: list[Any]) -> None:
        with trio.move_on_after(10):
            places = await admission.admit(list(targets), [], needed=2)
            assert places is not None
            let_in[name] = trio.current_time()
            await trio.sleep(0.01)
            places.give_back(timed_out=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting, "W", [A, B, C])
        await trio.sleep(0.01)
        admission.window_of(B).turn_silent()
        in_a = admission.admit_nowait([A])
        assert in_a is not None
        nursery.start_soon(waiting, "Q", [A, B])
        await trio.sleep(0.01)
        in_a.give_back(timed_out=False)  # A goes to Q, which waits for B
        await trio.sleep(0.01)
        in_b.give_back(timed_out=False)  # B goes to W, which finds A full
        await trio.sleep(0.01)
        for window in admission.windows.values():
            for waiter in window.line:
                assert not waiter.places.holds_above(window.peer)
        await trio.sleep(1)
        in_c.give_back(timed_out=False)
    assert set(let_in) == {"Q", "W"}
    assert max(let_in.values()) < 2


async def test_a_request_that_cannot_be_made_gives_its_places_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def broken_rule(sent: int) -> int:
        raise ZeroDivisionError("a bug in the rule")

    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(2), quorum=broken_rule
        ) as client,
    ):
        for _ in range(10):
            with pytest.raises(ConfdClientError, match="rule"):
                await client.query(RequestType.PING)
        for window in client._router.admission.windows.values():
            assert window.window.in_use == 0
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(
            KEY, cluster.peers, port=cluster.port, admission=fixed(2), max_outstanding=2
        ) as client,
        trio.open_nursery() as nursery,
    ):
        for index in range(3):
            cluster.crash(index)
        for _ in range(2):
            nursery.start_soon(lambda: client.query(RequestType.PING, timeout=1))
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(10):
            with pytest.raises(ConfdClientError, match="outstanding"):
                await client.query(RequestType.PING)
        assert [w.window.in_use for w in client._router.admission.windows.values()] == [2] * 3


async def test_one_request_asked_twice_while_waiting_goes_out_under_two_rsalts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=fixed(1)) as client,
        trio.open_nursery() as nursery,
    ):
        request = ConfdRequest(RequestType.PING)
        results: list[Any] = []

        async def ask() -> None:
            results.append(await client.query(request, timeout=5))

        nursery.start_soon(lambda: client.query(RequestType.PING, timeout=0.5))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask)
        nursery.start_soon(ask)
    # Without a fresh rsalt the second would fail: 'duplicate request rsalt'.
    assert [result.ok for result in results] == [True, True]
    assert client.stats.duplicate == 0


async def test_a_peer_that_answers_nothing_does_not_hold_up_samples_without_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        cluster.crash(2)
        results: list[Any] = []

        async def one() -> None:
            results.append(await client.query(RequestType.PING, coverage=2, timeout=5))

        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(one)
    assert sum(result.ok for result in results) >= 990
    assert not any(result.saturated for result in results)


async def test_a_request_never_sent_cuts_no_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port) as client,
    ):
        for _ in range(3):
            result = await client.query(RequestType.PING, timeout=0)
            assert result.received == 0
        assert cluster.stats(0)["to_server"].received == 0
        for window in client._router.admission.windows.values():
            assert window.window.size == AdmissionPolicy().initial


# -- goodput under overload ---------------------------------------------------


async def _in_turn(client: ConfdClient, *, queries: int, in_flight: int) -> list[QueryResult]:
    """``queries`` all-peer pings by ``in_flight`` tasks, each asking in turn."""
    results: list[QueryResult] = []
    left = queries

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            results.append(await client.query(RequestType.PING, coverage=-1, timeout=60))

    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    return results


async def _offer(
    in_flight: int,
    total: int,
    admission: AdmissionPolicy,
    capacity: Capacity,
    *,
    timeout: float = 60.0,
) -> tuple[float, float, int]:
    """(goodput in queries/s, datagrams per answered query, queries late for their deadline)."""
    async with (
        open_simulated_cluster([CONFIG] * 3, KEY, capacity=capacity) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=admission) as client,
    ):
        left = total
        answered = late = 0

        async def worker() -> None:
            nonlocal left, answered, late
            while left > 0:
                left -= 1
                deadline = trio.current_time() + timeout
                result = await client.query(RequestType.PING, timeout=timeout)
                answered += result.ok
                late += trio.current_time() > deadline

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker)
        elapsed = trio.current_time() - start
        stats = client.stats
        datagrams = 3 * total + stats.retransmitted + stats.hedged
        for window in client._router.admission.windows.values():
            assert (window.window.in_use, window.waiting) == (0, 0)  # nothing held after
        return answered / elapsed, datagrams / max(answered, 1), late


async def test_goodput_holds_as_offered_load_rises_to_10_000_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    capacity = Capacity(rate=1000, queue=256)
    goodputs = []
    for in_flight, total in ((10, 1000), (100, 1000), (1000, 1000), (10_000, 10_000)):
        goodput, datagrams, late = await _offer(in_flight, total, AdmissionPolicy(), capacity)
        goodputs.append(goodput)
        assert datagrams <= 4, (in_flight, datagrams)
        assert late == 0
    assert min(goodputs) >= 0.7 * max(goodputs), goodputs
    # Without admission, the peers' queues overflow and each query costs
    # several times the datagrams (and at 10,000 in flight, half the goodput).
    _, datagrams, _ = await _offer(1000, 1000, AdmissionPolicy.off(), capacity)
    assert datagrams > 6


async def test_a_freed_place_wakes_one_waiting_query_not_a_line_of_them(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were a woken query to give its place back whenever another of its
    # windows is full, the next in line would do the same: 16 hand-offs a
    # query at 1,000 in flight, 33 at 10,000, the CPU spent on them alone.
    hands = HandsCounted(monkeypatch)
    _, _, late = await _offer(1000, 1000, AdmissionPolicy(), Capacity(rate=1000, queue=256))
    assert hands.count <= 3 * 1000  # at most one per peer asked
    assert late == 0


@pytest.mark.parametrize("peers", [3, 5])
async def test_a_waiting_query_parks_once_however_many_full_windows_it_passes(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, peers: int
) -> None:
    # Full windows that free up at different times (replies jittered): a
    # query handed a place in one goes on to the next full one's line while
    # its task sleeps (Admission.go_on). Woken at each, a query parked 1.7
    # times at 3 peers, 2.0 at 5 (2.1 and 3.7 against real daemons).
    parks: dict[Waiter, int] = {}  # by waiter (kept: one a query's wait for places)
    join = Admission._join  # once a park

    def counted(self: Admission, line: PeerWindow, waiter: Waiter) -> None:
        parks[waiter] = parks.get(waiter, 0) + 1
        join(self, line, waiter)

    monkeypatch.setattr(Admission, "_join", counted)
    jitter = Faults(delay=1.0, delay_range=(0, 0.02))
    policy = AdmissionPolicy(initial=32, minimum=32, maximum=32)
    async with (
        open_simulated_cluster(
            [CONFIG] * peers, KEY, capacity=Capacity(rate=1000), to_client=jitter
        ) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=policy) as client,
    ):
        results = await _in_turn(client, queries=2000, in_flight=256)
    assert [result.ok for result in results] == [True] * 2000
    assert len(parks) > 1000  # most waited ...
    assert set(parks.values()) == {1}  # ... and each parked its task once
    assert client.stats.retransmitted == 0


async def test_a_waiting_query_waits_for_places_and_replies_in_one_cancel_scope(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A query that waits for places gathers its replies in the cancel scope
    # it waited in: a second scope, nested, cost each waiting query 20-35 µs.
    scopes = 0
    move_on_at = trio.move_on_at
    client_code = Path(_client_module.__file__).parent

    def counted(deadline: float, *, shield: bool = False) -> trio.CancelScope:
        nonlocal scopes
        if Path(sys._getframe(1).f_code.co_filename).parent == client_code:
            scopes += 1
        return move_on_at(deadline, shield=shield)

    waited: set[Waiter] = set()
    join = Admission._join  # once a park

    def counted_wait(self: Admission, line: PeerWindow, waiter: Waiter) -> None:
        waited.add(waiter)
        join(self, line, waiter)

    monkeypatch.setattr(trio, "move_on_at", counted)
    monkeypatch.setattr(Admission, "_join", counted_wait)
    jitter = Faults(delay=1.0, delay_range=(0, 0.02))
    policy = AdmissionPolicy(initial=32, minimum=32, maximum=32)
    async with (
        open_simulated_cluster(
            [CONFIG] * 3, KEY, capacity=Capacity(rate=1000), to_client=jitter
        ) as cluster,
        open_confd_client(KEY, cluster.peers, port=cluster.port, admission=policy) as client,
    ):
        results = await _in_turn(client, queries=2000, in_flight=256)
    assert [result.ok for result in results] == [True] * 2000
    assert len(waited) > 1000  # most waited for places ...
    assert client.stats.retransmitted == 0  # ... and no retransmission woke any
    assert scopes == 2000  # one cancel scope a query, whether it waited or not


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rate=st.floats(200, 3000),
    queue=st.integers(128, 1024),
    load=st.integers(64, 1500),
    timeout=st.floats(0.05, 3),
)
def test_goodput_holds_at_any_rate_queue_and_load(
    rate: float, queue: int, load: int, timeout: float
) -> None:
    # Queues of 128 datagrams and more: a kernel's default UDP buffer holds
    # a few hundred. (A peer whose queue holds fewer than a window's
    # minimum, 16, keeps losing requests: see README.)
    async def main() -> None:
        capacity = Capacity(rate=rate, queue=queue)
        peak = max([(await _offer(n, 300, AdmissionPolicy(), capacity))[0] for n in (16, 64)])
        # About a second of the peers' work at least: a run of 0.1 s is
        # doubled by one query retransmitted 0.1 s after its loss (rate
        # 2864, queue 128, 136 in flight, 300 queries: 0.66 of the peak).
        total = max(load, 300, round(peak))
        goodput, datagrams, late = await _offer(load, total, AdmissionPolicy(), capacity)
        assert late == 0
        assert goodput >= 0.7 * peak, (goodput, peak)
        assert datagrams <= 5  # three first sends, and few again
        # Deadlines that do fall, many of them while the queries wait for
        # places: every query still ends by its own.
        _, _, late = await _offer(load, total, AdmissionPolicy(), capacity, timeout=timeout)
        assert late == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_a_query_let_in_at_its_deadline_says_it_was_never_sent() -> None:
    # 16 places, 32 queries of (nearly) one deadline: the second 16 are
    # handed places as the first give them back, at about that deadline.
    # One let in too late to send says it was never sent, not "the peer
    # asked sent nothing back"; one let in in time has sent. (Which is
    # which depends on the machine's load: the count of requests that
    # really went out must match the verdicts either way.)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        results: list[Any] = []
        async with open_confd_client(KEY, [silent.getsockname()], admission=fixed(16)) as client:

            async def one() -> None:
                results.append(await client.query(RequestType.PING, timeout=0.3))

            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(one)
        asked = set()
        while True:
            try:
                envelope = json.loads(silent.recv(4096)[len(MAGIC) :])
            except BlockingIOError:
                break
            asked.add(json.loads(envelope["msg"])["rsalt"])
    sent = [result for result in results if result.sent]
    assert len(sent) == len(asked) >= 16
    for result in results:
        if not result.sent:  # never let in, or let in too late to send
            assert result.silent == ()
            assert "sent nothing back" not in result.verdict
            assert "not sent" in result.verdict


async def test_a_retransmission_held_back_leaves_the_round_trip_to_be_learned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A busy peer, 50 ms a request, one at a time; a window of 4 with 8
    # queries. Two queries are past their first retransmission time before
    # it serves them, with the window full and the peer answering others:
    # their copies are held back, and each reply (at 0.2 and 0.25 s) answers
    # the one copy that went, 0.2 s before. The estimate learns those round
    # trips. (Counted as sends, the held-back copies would leave each reply
    # 0.05 s after the last "send", which teaches nothing: srtt 68 ms.)
    async with (
        open_simulated_cluster([CONFIG], KEY, capacity=Capacity(rate=20)) as cluster,
        open_confd_client(
            KEY,
            cluster.peers,
            port=cluster.port,
            admission=fixed(4),
            retry=RetryPolicy(adaptive=True, hedge_after=None),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(8):
            nursery.start_soon(lambda: client.query(RequestType.PING, timeout=5))
        await trio.sleep(0.26)
        assert client.stats.held_back == 2
        # Round trips of 0.05, 0.1, 0.15, 0.2 and 0.2 s, smoothed.
        srtt = client._router.rtt[cluster.peers[0]].srtt
        assert srtt == pytest.approx(0.0993, abs=0.001)
