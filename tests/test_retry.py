"""The retransmission policy (sans-IO): its schedule, hedging, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioconfd import ConfdArgumentTypeError, ConfdClientError, RetryPolicy


def test_retry_policy_schedule() -> None:
    policy = RetryPolicy(initial=0.1, multiplier=2, max_interval=0.5)
    assert [policy.interval(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert policy.interval(10_000) == 0.5
    assert not RetryPolicy.off().enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": 0}, "initial must be a positive"),
        ({"max_interval": -1}, "max_interval must be"),
        ({"multiplier": 0.5}, "multiplier must be"),
        ({"hedge_after": float("inf")}, "hedge_after must be finite"),
        ({"initial": True}, "initial must be"),
        ({"initial": None}, "initial must be"),
        ({"max_interval": float("inf")}, "max_interval must be finite"),
        ({"multiplier": True}, "multiplier must be"),
        ({"multiplier": float("inf")}, "multiplier must be"),
        ({"multiplier": float("nan")}, "multiplier must be"),
        ({"hedge_after": 0}, "hedge_after must be a positive"),
        ({"initial": 10**400}, "initial must be .*, not an integer of 1,329 bits, beyond"),
        ({"max_timeout": 2**5000}, "max_timeout must be .*, beyond a float.s range"),
        ({"multiplier": -(10**400)}, "multiplier must be .*, not an integer of 1,329 bits, beyond"),
    ],
)
def test_bad_retry_policies_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfdClientError, match=message):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": "1"},
        {"hedge_after": [1]},
        {"multiplier": None},
        {"adaptive": 1},
        {"enabled": "no"},
        {"enabled": 0},
    ],
)
def test_a_retry_policy_of_the_wrong_type_is_a_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfdArgumentTypeError, match=f"{next(iter(kwargs))} must be"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("multiplier", "intervals"),
    [
        (1, [0.1, 0.1, 0.1, 0.1]),  # the least allowed: a constant interval
        (1.5, [0.1, 0.15, 0.225, 0.3375]),
        (3, [0.1, 0.3, 0.5, 0.5]),
    ],
)
def test_retry_intervals_for_other_multipliers(multiplier: float, intervals: list[float]) -> None:
    policy = RetryPolicy(initial=0.1, multiplier=multiplier, max_interval=0.5)
    assert [policy.interval(n) for n in range(1, 5)] == pytest.approx(intervals)
    assert policy.interval(0) == policy.interval(1) == 0.1
    # The first interval, too, is capped by the largest.
    assert RetryPolicy(initial=2.0, max_interval=0.5).interval(1) == 0.5


def test_off_is_off() -> None:
    assert RetryPolicy.off().enabled is False
    assert RetryPolicy().enabled is True


@pytest.mark.parametrize(
    ("multiplier", "retransmission"), [(1e5, 63), (2**20, 53), (1e300, 10**18), (2, 10**9)]
)
def test_large_multipliers_and_counts_do_not_overflow(
    multiplier: float, retransmission: int
) -> None:
    assert RetryPolicy(multiplier=multiplier).interval(retransmission) == 0.5


@given(
    initial=st.floats(min_value=1e-6, max_value=1e6),
    multiplier=st.one_of(st.floats(min_value=1, max_value=1e300), st.integers(1, 2**64)),
    max_interval=st.floats(min_value=1e-6, max_value=1e6),
    retransmission=st.integers(min_value=-5, max_value=10**30),
)
def test_every_interval_is_finite_positive_capped_and_growing(
    initial: float, multiplier: float, max_interval: float, retransmission: int
) -> None:
    policy = RetryPolicy(initial=initial, multiplier=multiplier, max_interval=max_interval)
    interval = policy.interval(retransmission)
    assert 0 < interval <= max_interval
    assert interval <= policy.interval(retransmission + 1)


def test_a_policy_copied_with_changes_schedules_by_its_own_fields() -> None:
    # A schedule reads its policy's first wait, hedging and switch as it is
    # made: a copy made by dataclasses.replace is read as it is now.
    import dataclasses

    from trioconfd.protocol import SendSchedule

    peer, spare = ("127.0.0.1", 1), ("127.0.0.2", 1)
    slow = dataclasses.replace(RetryPolicy(), initial=0.3, hedge_after=None)
    assert SendSchedule(slow, [peer], 10.0, 1, [peer, spare]).wake_at == pytest.approx(10.3)
    hedging = dataclasses.replace(slow, hedge_after=0.2)
    assert SendSchedule(hedging, [peer], 10.0, 1, [peer, spare]).wake_at == pytest.approx(10.2)
    off = dataclasses.replace(hedging, enabled=False)
    assert SendSchedule(off, [peer], 10.0, 1, [peer, spare]).wake_at == float("inf")
    assert off == RetryPolicy(initial=0.3, hedge_after=0.2, enabled=False)
    # Its fields are its arguments, nothing more: a copy by asdict makes it again.
    assert RetryPolicy(**dataclasses.asdict(off)) == off


def test_a_policy_subclass_is_asked_its_first_interval_for_each_schedule() -> None:
    # A schedule reads a RetryPolicy's terms once per policy; a subclass's own
    # interval may answer anew (jitter, a load signal), and is asked each time.
    import dataclasses

    from trioconfd.protocol import SendSchedule

    first = [0.4]

    @dataclasses.dataclass(frozen=True, slots=True)
    class Varying(RetryPolicy):
        def interval(self, retransmission: int) -> float:
            return first[0] if retransmission <= 1 else self.max_interval

    peer = ("127.0.0.1", 1)
    policy = Varying(hedge_after=None)
    assert SendSchedule(policy, [peer], 0.0, 1, [peer]).wake_at == pytest.approx(0.4)
    first[0] = 0.1
    schedule = SendSchedule(policy, [peer], 0.0, 1, [peer])
    assert schedule.wake_at == pytest.approx(0.1)
    assert schedule.due(0.1).peers == [peer]
