"""A peer's retransmission timeout, estimated from its round trips as TCP does (sans-IO).

RFC 6298: the smoothed round-trip time and its variation give the timeout,
``srtt + 4 * rttvar``. Only replies to requests sent once are measured
(Karn's rule: the reply to a request sent twice could answer either send).
A peer that stays silent past its timeout has the timeout doubled, once per
timeout period however many queries noticed it, so that a slow or
overloaded peer is asked less often, not more; its next measured round trip
sets the timeout afresh. So does a reply to a request sent more than once
that comes within the measured timeout of the last send: the peer is quick,
and its silence was a lost datagram, which waiting longer does not help.
"""

from __future__ import annotations

import math

# RFC 6298's gains and the clock granularity it adds (here: 1 ms).
_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4
_GRANULARITY = 0.001
# A backed-off timeout stops doubling here (RFC 6298 allows 60 s and more).
_MAX_BACKOFF = 60.0


class RttEstimate:
    """One peer's round trips and the retransmission timeout they give."""

    __slots__ = ("_backoff", "_backoff_since", "_quiet_until", "rttvar", "slow", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._backoff = 0.0
        self._backoff_since = -math.inf
        self._quiet_until = -math.inf
        #: Whether its replies have come later than its measured timeout
        #: (a slow or overloaded peer), rather than promptly or not at all.
        self.slow = False

    def __repr__(self) -> str:
        srtt = "unmeasured" if self.srtt is None else f"srtt={self.srtt * 1e3:.2f}ms"
        return f"<RttEstimate {srtt} rto={self.timeout * 1e3:.2f}ms>"

    @property
    def measured(self) -> float:
        """The timeout its round trips give, ``srtt + 4 * rttvar`` (0: none measured yet)."""
        return 0.0 if self.srtt is None else self.srtt + max(_GRANULARITY, _K * self.rttvar)

    @property
    def backoff(self) -> float:
        """The timeout its silences have grown to since its last measured round trip."""
        return self._backoff

    @property
    def timeout(self) -> float:
        """Seconds to wait for a reply before asking again (0: nothing known yet)."""
        return max(self.measured, self._backoff)

    def timeout_for(self, silence_cap: float, known_at: float = math.inf) -> float:
        """The timeout to wait by: measured, or grown by silences (up to ``silence_cap``
        unless the peer is :attr:`slow`), leaving out growth after ``known_at``.

        Silence alone cannot tell a lost datagram from a slow peer; only a
        peer seen to answer late may have its silences stretch the wait
        without bound.
        """
        silence = self._backoff if self._backoff_since <= known_at else 0.0
        if not self.slow:
            silence = min(silence, silence_cap)
        return max(self.measured, silence)

    def sample(self, rtt: float) -> None:
        """A reply came ``rtt`` seconds after the one send of its request."""
        if not rtt >= 0 or rtt == math.inf:
            return  # a clock that went backwards, or nonsense: no information
        self.slow = False
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        self._backoff = 0.0
        self._quiet_until = -math.inf

    def answered_after(self, seconds: float) -> None:
        """A reply came ``seconds`` after the last of several sends (no round trip to measure).

        Within the measured timeout, the peer answered the last send
        promptly: it was a datagram lost, not a peer slowed, so the silences'
        backoff goes. Later, the peer is :attr:`slow`.
        """
        if self.srtt is None or not seconds >= 0:
            return
        if seconds <= self.measured:
            self._backoff = 0.0
            self._quiet_until = -math.inf
            self.slow = False
        else:
            self.slow = True

    def timed_out(self, now: float, waited: float) -> None:
        """The peer was silent for ``waited`` seconds and is asked again at ``now``.

        The timeout doubles, at most once per timeout period: a thousand
        queries that find the peer silent at once back it off once.
        """
        if now < self._quiet_until:
            return
        self._backoff = min(_MAX_BACKOFF, 2 * max(waited, self.timeout))
        self._backoff_since = now
        self._quiet_until = now + self._backoff
