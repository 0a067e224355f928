"""The whole client under faults, as a Hypothesis state machine; and bugs it must catch."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from trioconfd import PeerReply, ReplyAggregator
from trioconfd.client._gather import RequestInFlight
from trioconfd.testing.properties import ClientStateMachine, check_client

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

QUERIES = {"query", "streamed_query", "concurrent_queries"}

TestTheClient = ClientStateMachine.TestCase
TestTheClient.settings = SETTINGS


@pytest.mark.fuzz
def test_the_client_under_long_fault_schedules() -> None:
    """Long schedules: a few in every run, 3,000 (or TRIOCONFD_MACHINE_EXAMPLES) in nox -s fuzz."""
    fuzzing = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
    examples = int(os.environ.get("TRIOCONFD_MACHINE_EXAMPLES", "3000")) if fuzzing else 10
    check_client(max_examples=examples, steps=50)


def shrunk_steps(failure: pytest.ExceptionInfo[BaseException]) -> list[str]:
    """The steps of the counterexample Hypothesis reported, after shrinking."""
    notes = "\n".join(getattr(failure.value, "__notes__", []))
    steps = re.findall(r"^state\.(\w+)\(", notes, flags=re.MULTILINE)
    return [step for step in steps if step not in {"nothing_left_behind", "teardown"}]


def test_a_non_majority_quorum_rule_is_caught_and_shrunk() -> None:
    with pytest.raises(AssertionError, match="a majority holds serial") as failure:
        check_client(
            quorum=lambda peers: max(1, peers // 2),
            peers=3,
            max_examples=300,
            steps=3,
            derandomize=True,
        )
    # Shrunk to: peers start on mixed versions, one all-peer query trusts a minority.
    steps = shrunk_steps(failure)
    assert steps[0] == "configs"
    assert steps[-1] in QUERIES
    assert len(steps) <= 3, steps


def test_trusting_the_first_reply_is_caught_and_shrunk(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ReplyAggregator.add_reply

    def trust_the_first(self: ReplyAggregator, peer_reply: PeerReply) -> bool:
        first = self.best
        added = original(self, peer_reply)
        if first is not None:
            self.best = first
        return added

    monkeypatch.setattr(ReplyAggregator, "add_reply", trust_the_first)
    with pytest.raises(AssertionError, match="trusted serial") as failure:
        check_client(peers=3, max_examples=300, steps=3, derandomize=True)
    steps = shrunk_steps(failure)
    assert steps[0] == "configs"
    assert steps[-1] in QUERIES
    assert len(steps) <= 3, steps


def test_counting_a_retransmitted_peer_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bug: the client forgets who has answered as soon as it reads a reply,
    # and the aggregator trusts the client never to hand it a peer twice.
    take = RequestInFlight.take

    def forgetful_take(self: RequestInFlight, peer_reply: PeerReply) -> None:
        take(self, peer_reply)
        self.answered = ()

    def add_without_looking(self: ReplyAggregator, peer_reply: PeerReply) -> bool:
        self.replies.append(peer_reply)
        if self.best is None or peer_reply.reply.serial > self.best.serial:
            self.best = peer_reply.reply
        return True

    monkeypatch.setattr(RequestInFlight, "take", forgetful_take)
    monkeypatch.setattr(ReplyAggregator, "add_reply", add_without_looking)
    with pytest.raises(AssertionError, match="counted twice") as failure:
        check_client(peers=3, max_examples=1000, steps=3, derandomize=True)
    steps = shrunk_steps(failure)
    assert steps[-1] in QUERIES
    assert len(steps) <= 3, steps


def test_a_subclass_checks_its_own_rule() -> None:
    asked: list[int] = []

    class EveryPeer(ClientStateMachine):
        peer_count = 3

        def quorum(self, peers: int) -> int:
            asked.append(peers)
            return peers  # safe, if slow: every peer must answer

    run_state_machine_as_test(EveryPeer, settings=SETTINGS)
    assert asked  # the client used this rule...
    assert set(asked) <= {1, 2, 3}  # ...for the peers it asked

    class Unsafe(EveryPeer):
        def quorum(self, peers: int) -> int:
            return 1  # one reply of three trusted: not a majority

    found = settings(SETTINGS, derandomize=True, database=None, phases=[Phase.generate])
    with pytest.raises(AssertionError, match="a majority holds"):
        run_state_machine_as_test(Unsafe, settings=found)
