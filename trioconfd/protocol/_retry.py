"""When to ask again: retransmission with backoff, and hedging (sans-IO)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ConfdArgumentError, ConfdArgumentTypeError
from ._numbers import as_number, shown


def _check_seconds(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    rule = "a positive number of seconds"
    seconds = as_number(name, value, rule)
    if not seconds > 0:
        raise ConfdArgumentError(f"{name} must be {rule}, not {shown(value)}")
    if not math.isfinite(seconds):
        raise ConfdArgumentError(f"{name} must be finite, not {shown(value)}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a query asks again, within its deadline, peers that have not answered.

    The request goes again, with the same rsalt (so each peer still counts
    once), ``initial`` seconds after it was first sent, then at intervals
    growing ``multiplier`` times, at most ``max_interval`` apart, until the
    quorum or the deadline. If by ``hedge_after`` seconds fewer replies than
    the quorum have come and some peers were not in the sample, one of them
    is asked too, and another every ``max_interval`` while the quorum is
    still short (hedging; ``None`` never hedges). Hedged peers count towards
    the quorum of the first sample.

    Each peer keeps its own times (:class:`SendSchedule`): a peer whose
    datagram was lost is asked again on its own schedule, whoever else is
    silent. With ``adaptive=True``, a peer's first wait stretches to its
    retransmission timeout, estimated from its replies as TCP does
    (:class:`RttEstimate`, ``srtt + 4 * rttvar``), when that is longer, up
    to ``max_timeout``: a peer seen to answer slowly is asked again when its
    reply is overdue, not before, which saves datagrams to slow peers; and a
    query whose task wakes late (a saturated event loop) puts its
    retransmissions off once (``stats.deferred``). It is off by default
    because it gambles on the peer's reliability: it holds back the early
    copies that, on the fixed schedule, race a slow peer's losses, so a peer
    both slow and lossy answers later. No peer is ever asked sooner than the
    schedule above, adaptive or not.

    The defaults suit a LAN: with 30% of datagrams lost each way, a 3-peer
    query has eight tries per peer in 3 s and fails to reach its quorum about
    once in 10,000 times. ``RetryPolicy.off()`` sends once, as Ganeti does.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    max_interval: float = 0.5
    hedge_after: float | None = 0.5
    enabled: bool = True
    adaptive: bool = False
    max_timeout: float = 4.0

    def __post_init__(self) -> None:
        _check_seconds("initial", self.initial)
        _check_seconds("max_interval", self.max_interval)
        _check_seconds("hedge_after", self.hedge_after, allow_none=True)
        _check_seconds("max_timeout", self.max_timeout)
        for name in ("enabled", "adaptive"):
            # (Not any truthy value: enabled="no" would send again.)
            if not isinstance(getattr(self, name), bool):
                raise ConfdArgumentTypeError(
                    f"{name} must be True or False, not {shown(getattr(self, name))}"
                )
        rule = "a finite number >= 1"
        if not 1 <= as_number("multiplier", self.multiplier, rule) < math.inf:
            raise ConfdArgumentError(f"multiplier must be {rule}, not {shown(self.multiplier)}")

    @classmethod
    def off(cls) -> RetryPolicy:
        """Send each request once and never again."""
        return cls(enabled=False)

    def interval(self, retransmission: int) -> float:
        """Seconds from the previous send to retransmission number ``retransmission`` (from 1).

        Never overflows: past the step at which the growth reaches
        ``max_interval``, the interval is ``max_interval`` without computing
        the power.
        """
        if retransmission <= 1 or self.multiplier == 1:
            return min(self.initial, self.max_interval)
        steps_to_the_cap = math.log(self.max_interval / self.initial) / math.log(self.multiplier)
        if retransmission - 1 >= steps_to_the_cap:
            return self.max_interval
        return min(self.max_interval, self.initial * float(self.multiplier) ** (retransmission - 1))

    def interval_for(self, retransmission: int, timeout: float) -> float:
        """:meth:`interval`, stretched to a peer's measured retransmission ``timeout``
        when adaptive.

        The timeout counts up to ``max_timeout``; the result is never below
        :meth:`interval`.
        """
        scheduled = self.interval(retransmission)
        if not self.adaptive or not timeout > scheduled:
            return scheduled
        return max(scheduled, min(timeout, self.max_timeout))
