"""Property checks for quorum rules and for the whole client (needs ``hypothesis``).

``check_quorum_rule(rule)`` asserts what makes a quorum rule safe, for any
callable you might pass as ``quorum=`` to :func:`trioconfd.open_confd_client`.
:class:`ClientStateMachine` (and its one-call form :func:`check_client`)
drives a real client against a simulated cluster through crashes,
partitions, new configurations and faults, and checks the quorum claims
after every step.
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "trioconfd.testing.properties needs Hypothesis: pip install 'trioconfd[test]'"
    ) from exc

from hypothesis import given, settings
from hypothesis import strategies as st

from ..protocol import QuorumRule
from ._machine import ClientStateMachine, check_client

__all__ = ["EXHAUSTIVE_UP_TO", "ClientStateMachine", "check_client", "check_quorum_rule"]

#: Peer counts worth checking every one of; larger ones are sampled.
EXHAUSTIVE_UP_TO = 256


def _check_one(rule: QuorumRule, peers: int) -> None:
    needed = rule(peers)
    if not isinstance(needed, int) or isinstance(needed, bool):
        raise AssertionError(f"rule({peers}) = {needed!r} is not an integer")  # noqa: TRY004
    if not 1 <= needed <= peers:
        raise AssertionError(f"rule({peers}) = {needed}: not between 1 and the peer count")
    if 2 * needed <= peers:
        raise AssertionError(
            f"rule({peers}) = {needed} is not a strict majority: two quorums of "
            f"{peers} peers need not share a peer, so they could trust different answers"
        )
    following = rule(peers + 1)
    if not isinstance(following, int) or not 0 <= following - needed <= 1:
        raise AssertionError(
            f"rule({peers}) = {needed} but rule({peers + 1}) = {following}: "
            "one more peer must need the same number of replies or one more"
        )


def check_quorum_rule(
    rule: QuorumRule, *, max_peers: int = 100_000, max_examples: int = 200
) -> None:
    """Raise AssertionError, naming the peer count, unless ``rule`` is a safe quorum rule.

    Safe means, for every peer count n from 1: ``1 <= rule(n) <= n``; a strict
    majority (``2 * rule(n) > n``, so any two quorums intersect); and
    monotonic, growing by at most one per added peer. Counts up to
    :data:`EXHAUSTIVE_UP_TO` are all checked; Hypothesis samples the rest up
    to ``max_peers``.
    """
    for peers in range(1, EXHAUSTIVE_UP_TO + 1):
        _check_one(rule, peers)

    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(st.integers(min_value=EXHAUSTIVE_UP_TO, max_value=max(max_peers, EXHAUSTIVE_UP_TO)))
    def sampled(peers: int) -> None:
        _check_one(rule, peers)

    sampled()
