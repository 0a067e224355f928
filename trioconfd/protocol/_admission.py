"""How many requests one peer may have in flight: an adaptive window (sans-IO).

Each peer gets a :class:`Window`, grown and shrunk as TCP grows and shrinks
its congestion window (AIMD): every reply while the window is in use lets it
grow (by one per reply until the first loss, "slow start"; then by about one
per window's worth of replies), and a request that needed a retransmission,
or ended at its deadline unanswered, halves it. One halving per round: a
loss of a request let in before the last halving says nothing new (as in
TCP's NewReno), so a burst of losses from one overload halves once.

Why AIMD and not a gradient of the round trip (Netflix's adaptive
concurrency limits, TCP Vegas): the confd client cannot see a peer's queue
in its round trips until the replies come, and a silent or drowning peer
gives no round trip at all; losses and retransmissions are the signal it
always has, and AIMD turns them into a window that provably shares a peer
fairly between clients. The floor (:attr:`AdmissionPolicy.minimum`) keeps
random loss, which halves the window as overload does, from starving the
queries that need retransmissions to get through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ConfdArgumentError, ConfdArgumentTypeError
from ._numbers import as_number, shown

# The most places a window may have: far past any peer's capacity.
_MOST = 1_000_000


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """How many requests the client lets each peer have in flight at once.

    A query sends only once it holds a place in the window of every peer it
    asks; until then it waits in the client, its deadline running. A window
    starts at ``initial`` requests, never falls below ``minimum`` nor grows
    past ``maximum``, and halves (``decrease``) on a loss (see :class:`Window`).
    ``AdmissionPolicy.off()`` lets every query send at once (only
    ``max_outstanding`` bounds them), as before admission existed.
    """

    initial: int = 64
    minimum: int = 16
    maximum: int = 1024
    decrease: float = 0.5
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("initial", "minimum", "maximum"):
            value = getattr(self, name)
            rule = f"an integer from 1 to {_MOST:,}"
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfdArgumentTypeError(f"{name} must be {rule}, not {shown(value)}")
            if not 1 <= value <= _MOST:
                raise ConfdArgumentError(f"{name} must be {rule}, not {shown(value)}")
        if not self.minimum <= self.initial <= self.maximum:
            raise ConfdArgumentError(
                f"the window must start within its bounds: minimum {self.minimum} <= "
                f"initial {self.initial} <= maximum {self.maximum}"
            )
        rule = "a number between 0 and 1"
        if not 0 < as_number("decrease", self.decrease, rule) < 1:
            raise ConfdArgumentError(f"decrease must be {rule}, not {shown(self.decrease)}")
        if not isinstance(self.enabled, bool):
            raise ConfdArgumentTypeError(
                f"enabled must be True or False, not {shown(self.enabled)}"
            )

    @classmethod
    def off(cls) -> AdmissionPolicy:
        """Admit every query at once."""
        return cls(enabled=False)


class Window:
    """One peer's window: its size, the requests in it, and its round of losses."""

    __slots__ = ("_policy", "_threshold", "in_use", "reserved", "round", "size")

    def __init__(self, policy: AdmissionPolicy) -> None:
        self._policy = policy
        #: how many requests may be in flight (a float: it grows by fractions)
        self.size = float(policy.initial if policy.enabled else math.inf)
        #: places taken: one per request let in, one more per retransmission
        self.in_use = 0
        #: of those, places held by queries still waiting for another peer's
        #: window: taken, but nothing sent with them yet
        self.reserved = 0
        #: how many times the window has been cut; a place taken remembers it
        self.round = 0
        self._threshold = math.inf

    def __repr__(self) -> str:
        return f"<Window {self.in_use}/{self.size:.1f} round={self.round}>"

    @property
    def room(self) -> float:
        """Places free now (negative while a cut window is still over-full)."""
        return self.size - self.in_use

    def take(self) -> int:
        """Take a place, room or not (a retransmission, a hedge); returns the round."""
        self.in_use += 1
        return self.round

    def give_back(self, answered: bool) -> None:
        """Give a place back; ``answered``: the peer replied, and the window may grow.

        It grows only while it is in use (half full or more, counting only
        the places of requests sent), so that a quiet client's window, or one
        held by queries waiting for another peer, does not grow without limit
        and then let a burst through all at once.
        """
        in_use = self.in_use
        self.in_use = in_use - 1
        if answered and (in_use - self.reserved) * 2 >= self.size:
            size = self.size
            size += 1.0 if size < self._threshold else 1.0 / size
            self.size = min(size, float(self._policy.maximum))

    def lost(self, round_taken: int) -> bool:
        """A request that took its place in ``round_taken`` was lost (retransmitted,
        or unanswered at its deadline): halve the window, once per round.

        Returns whether the loss began a new round (the window halved, but
        never below its minimum).
        """
        if round_taken != self.round or not self._policy.enabled:
            return False
        policy = self._policy
        self.size = self._threshold = max(float(policy.minimum), self.size * policy.decrease)
        self.round += 1
        return True
