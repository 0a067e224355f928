"""The Hypothesis harness for quorum rules, and the client's use of a custom rule."""

from __future__ import annotations

import pytest
from hypothesis import given

from trioconfd import ConfdReply, ReplyAggregator, ReplyStatus, RequestType, needed_replies, query
from trioconfd.testing import strategies
from trioconfd.testing.properties import check_quorum_rule

from .responders import run_responders

KEY = b"k"


def test_the_default_rule_passes() -> None:
    check_quorum_rule(needed_replies)


def test_every_peer_is_a_safe_rule_too() -> None:
    check_quorum_rule(lambda peers: peers)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda peers: peers // 2, "not between 1|strict majority"),
        (lambda peers: peers + 1, "not between 1 and the peer count"),
        # Safe up to 10 peers, then it drops from 10 to 6.
        (lambda peers: peers if peers <= 10 else needed_replies(peers), "one more peer"),
        # Safe for every count checked exhaustively; only sampling finds the flaw.
        (lambda peers: needed_replies(peers) if peers < 300 else peers // 2, "strict majority"),
        (str, "not an integer"),
        # Half, rounded up: a strict majority at odd counts, a tie at even ones.
        (lambda peers: (peers + 1) // 2, "strict majority"),
        # Jumps by two at ten peers (5 at nine, 7 at ten), though each is a majority.
        (lambda peers: needed_replies(peers) + (peers >= 10), "one more peer"),
        # Wrong only at the last count checked exhaustively.
        (lambda peers: 1 if peers == 255 else needed_replies(peers), "rule\\(255\\) = 1"),
        # Wrong only for a single peer.
        (lambda peers: 0 if peers == 1 else needed_replies(peers), "rule\\(1\\) = 0"),
    ],
)
def test_unsafe_rules_are_caught(rule: object, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_quorum_rule(rule)  # type: ignore[arg-type]


@pytest.mark.fuzz
@given(strategies.reply_sets())
def test_aggregation_over_generated_reply_sets(
    replies: list[tuple[tuple[str, int], ConfdReply]],
) -> None:
    aggregator = ReplyAggregator(len(replies))
    for address, reply in replies:
        assert aggregator.add(address, reply)
    assert aggregator.complete
    assert aggregator.best is not None
    assert max((r.ok, r.serial) for _, r in replies) == (aggregator.best.ok, aggregator.best.serial)


async def test_the_client_uses_a_custom_rule() -> None:
    async with run_responders(3, KEY) as responders:
        peers = [r.address for r in responders]
        result = await query(KEY, peers, RequestType.PING, quorum=lambda peers: peers)
        assert (result.needed, result.received) == (3, 3)
        result = await query(KEY, peers, RequestType.PING)
        assert result.needed == 2
        assert result.received >= 2  # and any reply already in when the quorum was


def test_a_verdict_without_a_timeout_is_not_timed_out() -> None:
    aggregator = ReplyAggregator(3)
    assert aggregator.result().timed_out is False
    assert aggregator.result().verdict == "no quorum: 0 of 3 peers replied, 2 needed"


def test_a_jump_names_both_counts() -> None:
    with pytest.raises(AssertionError, match=r"rule\(9\) = 5 but rule\(10\) = 7"):
        check_quorum_rule(lambda peers: needed_replies(peers) + (peers >= 10))


def test_hedged_peers_are_sent_to_but_keep_the_first_quorum() -> None:
    aggregator = ReplyAggregator(2)
    aggregator.ask_more()  # one more, by default
    assert (aggregator.sent, aggregator.needed) == (3, 2)
    reply = ConfdReply(ReplyStatus.OK, "a", 1)
    assert aggregator.add(("192.0.2.1", 1), reply)
    assert not aggregator.add(("192.0.2.1", 1), reply)  # a peer counts once
    assert aggregator.replies == [(("192.0.2.1", 1), reply)]
