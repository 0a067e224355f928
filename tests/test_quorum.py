"""The quorum rule and reply aggregation, both pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioconfd import ConfdArgumentError, ConfdReply, ReplyAggregator, ReplyStatus, needed_replies
from trioconfd.protocol import quorum_of
from trioconfd.protocol._aggregate import (
    FEW_ANSWERED,
    Answered,
    with_answered,
    without_answered,
)
from trioconfd.testing import strategies

OK = ReplyStatus.OK
ERROR = ReplyStatus.ERROR


def test_rule_table() -> None:
    expected = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4, 8: 5, 9: 5, 10: 6}
    assert {n: needed_replies(n) for n in expected} == expected


def test_negative_peer_count_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        needed_replies(-1)


peer_counts = st.integers(min_value=1, max_value=10_000)


@pytest.mark.fuzz
@given(peer_counts)
def test_rule_never_decreases_and_grows_by_at_most_one(n: int) -> None:
    assert 0 <= needed_replies(n + 1) - needed_replies(n) <= 1


@pytest.mark.fuzz
@given(peer_counts)
def test_rule_is_a_strict_majority_within_the_peer_count(n: int) -> None:
    needed = needed_replies(n)
    assert needed <= n
    assert 2 * needed > n  # so any two quorums of the same peers intersect


def test_best_prefers_ok_then_highest_serial_then_first() -> None:
    aggregator = ReplyAggregator(5)
    first = ConfdReply(OK, "a", 7)
    aggregator.add(("10.0.0.1", 1), ConfdReply(ERROR, "no", 99))
    assert aggregator.best == ConfdReply(ERROR, "no", 99)
    aggregator.add(("10.0.0.2", 1), first)
    assert aggregator.best is first
    aggregator.add(("10.0.0.3", 1), ConfdReply(OK, "a", 7))
    assert aggregator.best is first  # a tie keeps the earliest
    aggregator.add(("10.0.0.4", 1), ConfdReply(OK, "b", 8))
    assert aggregator.best == ConfdReply(OK, "b", 8)
    aggregator.add(("10.0.0.5", 1), ConfdReply(OK, "old", 3))
    assert aggregator.best == ConfdReply(OK, "b", 8)
    result = aggregator.result()
    assert (result.answer, result.serial, result.status) == ("b", 8, OK)
    assert result.received == result.sent == 5
    assert result.consistent


def test_each_peer_counts_once() -> None:
    aggregator = ReplyAggregator(3)
    assert aggregator.add(("10.0.0.1", 1), ConfdReply(OK, 1, 1))
    assert not aggregator.add(("10.0.0.1", 1), ConfdReply(OK, 2, 9))
    assert aggregator.received == 1
    assert aggregator.best == ConfdReply(OK, 1, 1)
    assert not aggregator.quorum_reached
    assert aggregator.add(("10.0.0.1", 2), ConfdReply(OK, 1, 1))  # another port, another peer
    assert aggregator.quorum_reached
    assert not aggregator.complete
    # The first peer again after a second one (who answered is kept from then on).
    assert not aggregator.add(("10.0.0.1", 1), ConfdReply(OK, 2, 9))
    assert aggregator.received == 2
    assert aggregator.best == ConfdReply(OK, 1, 1)
    assert aggregator.consistent


def test_same_serial_different_answer_is_inconsistent() -> None:
    aggregator = ReplyAggregator(3)
    aggregator.add(("10.0.0.1", 1), ConfdReply(OK, "x", 4))
    aggregator.add(("10.0.0.2", 1), ConfdReply(OK, "y", 5))
    assert aggregator.consistent
    aggregator.add(("10.0.0.3", 1), ConfdReply(OK, "z", 4))
    assert not aggregator.consistent
    assert not aggregator.result().consistent


def test_empty_result() -> None:
    result = ReplyAggregator(3).result(timed_out=True)
    assert (result.answer, result.serial, result.status, result.best) == (None, None, None, None)
    assert result.timed_out
    assert not result.ok
    assert not result.quorum_reached


@pytest.mark.fuzz
@given(st.lists(strategies.replies, min_size=1, max_size=12))
def test_best_is_the_maximum_of_all_replies(replies: list[ConfdReply]) -> None:
    aggregator = ReplyAggregator(len(replies))
    for index, reply in enumerate(replies):
        aggregator.add((f"10.0.0.{index}", 1814), reply)
    best = aggregator.best
    assert best is not None
    assert all((r.ok, r.serial) <= (best.ok, best.serial) for r in replies)
    first_of_best = next(r for r in replies if (r.ok, r.serial) == (best.ok, best.serial))
    assert best is first_of_best
    assert aggregator.quorum_reached == (len(replies) >= needed_replies(len(replies)))
    conflicting = any(
        a.serial == b.serial and a.answer != b.answer for a in replies for b in replies
    )
    assert aggregator.consistent == (not conflicting)


# -- answers nested deeper than the stack allows ------------------------------


def _nested(depth: int, leaf: object = None) -> list[object]:
    value: list[object] = [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


def test_answers_nested_past_the_recursion_limit_are_compared() -> None:
    """``==`` raises RecursionError on these; the aggregator must not."""
    deep, same, differs = _nested(50_000, 1), _nested(50_000, 1), _nested(50_000, 2)
    with pytest.raises(RecursionError):
        _ = deep == same
    agreeing = ReplyAggregator(3)
    agreeing.add(("192.0.2.1", 1814), ConfdReply(ReplyStatus.OK, deep, 4))
    agreeing.add(("192.0.2.2", 1814), ConfdReply(ReplyStatus.OK, same, 4))
    assert agreeing.consistent
    assert agreeing.quorum_reached
    clashing = ReplyAggregator(3)
    clashing.add(("192.0.2.1", 1814), ConfdReply(ReplyStatus.OK, deep, 4))
    clashing.add(("192.0.2.2", 1814), ConfdReply(ReplyStatus.OK, differs, 4))
    assert not clashing.consistent
    shallower = ReplyAggregator(3)
    shallower.add(("192.0.2.1", 1814), ConfdReply(ReplyStatus.OK, deep, 4))
    shallower.add(("192.0.2.2", 1814), ConfdReply(ReplyStatus.OK, _nested(49_999, 1), 4))
    assert not shallower.consistent


@given(strategies.json_values, strategies.json_values)
def test_comparing_without_recursion_agrees_with_equality(first: object, second: object) -> None:
    from trioconfd.protocol._aggregate import _equal_without_recursion

    assert _equal_without_recursion(first, second) == (first == second)
    assert _equal_without_recursion(first, first)
    assert _equal_without_recursion([first, {"k": second}], [first, {"k": second}])


def test_the_default_rule_worked_out_once_gives_what_the_rule_gives() -> None:
    for count in range(200):  # the table's counts, and past them
        assert quorum_of(needed_replies, count) == needed_replies(count)
    with pytest.raises(ConfdArgumentError, match="gave True"):
        quorum_of(needed_replies, True)


@given(st.integers(min_value=0, max_value=20), st.sets(st.integers(min_value=0, max_value=19)))
def test_who_has_answered_grows_and_shrinks_as_a_set_would(count: int, removed: set[int]) -> None:
    # A tuple while few, a set past FEW_ANSWERED; either way the same peers.
    peers = [("127.0.0.1", 1814 + index) for index in range(count)]
    answered: Answered = ()
    for peer in peers:
        answered = with_answered(answered, peer)
    assert isinstance(answered, tuple) == (count <= FEW_ANSWERED)
    assert set(answered) == set(peers)
    assert len(answered) == count
    gone = {("127.0.0.1", 1814 + index) for index in removed}
    answered = without_answered(answered, gone)
    assert set(answered) == set(peers) - gone
    assert len(answered) == len(set(peers) - gone)


def test_replies_tied_on_an_unordered_serial_keep_the_first_as_best() -> None:
    # A serial is compared only where the status ties and the serials differ,
    # as a tuple compares: two replies at the same (here unorderable) serial
    # leave the first one best, with no TypeError.
    aggregator = ReplyAggregator(3)
    first = ConfdReply(ReplyStatus.OK, "x", None)  # type: ignore[arg-type]
    aggregator.add(("127.0.0.1", 1), first)
    aggregator.add(("127.0.0.2", 1), ConfdReply(ReplyStatus.OK, "y", None))  # type: ignore[arg-type]
    assert aggregator.best is first
    newer = ConfdReply(ReplyStatus.OK, "z", 7)
    aggregator.add(("127.0.0.3", 1), ConfdReply(ReplyStatus.ERROR, 2, 9))
    assert aggregator.best is first  # an error never beats an answer
    other = ReplyAggregator(2)
    other.add(("127.0.0.1", 1), ConfdReply(ReplyStatus.ERROR, 2, 9))
    other.add(("127.0.0.2", 1), newer)
    assert other.best is newer  # an answer beats an error at any serial
